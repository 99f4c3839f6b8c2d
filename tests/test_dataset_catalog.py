"""Case discovery across layouts, on datasets built from the real files of shared/data."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from _dataset_data import (
    make_cvpr25,
    make_ivdm3seg,
    make_medsegpy_h5,
    make_medsegpy_slices,
    make_nifti_pairs,
    make_nnunet,
    make_samed2d,
)

from napari_medsegfm.dataset.catalog import discover, existing_labels, modality_from_name


def _check_header_matches_load(cat):
    """The cheap header shape equals the loaded spatial shape for every case that has one."""
    for e in cat:
        hdr = cat.header(e)
        case = cat.load(e)
        if hdr.get("shape"):
            shp = tuple(hdr["shape"])
            assert shp[: len(case.image.array.shape)] == case.image.array.shape[: len(shp)], (e.case_id, shp)
        assert case.meta["case_id"] == e.case_id


def test_cvpr25_imgs_gts(tmp_path, shared_data):
    root = make_cvpr25(shared_data, tmp_path / "cvpr")
    cat = discover(root)
    assert cat.layout == "cvpr_npz" and len(cat) == 3
    e = cat["imgs/CT_AMOS_amos_0018"]  # the path relative to the dataset root, without extension
    assert e.label_path == root / "gts" / "CT_AMOS_amos_0018.npz" and e.modality == "CT"
    assert cat.find("amos").case_id == "imgs/CT_AMOS_amos_0018"
    assert cat.find("CT_AMOS_amos_0018").case_id == "imgs/CT_AMOS_amos_0018"  # by name
    case = cat.load(e)
    role, gts = existing_labels(case)
    assert role == "gts" and gts.shape == (63, 512, 512) and int(gts.max()) == 15
    assert cat.header(e)["shape"] == [63, 512, 512]
    assert case.label_names[1]  # text prompts give names


def test_cvpr_val_layout_with_gt_suffix_folder(tmp_path, shared_data):
    # the challenge's 3D_val_npz + 3D_val_gt/<sub>/ layout
    root = tmp_path / "val"
    make_cvpr25(shared_data, root, ("MR_BraTS-T1c_bratsgli_0017",), img_folder="3D_val_npz",
                gt_folder="3D_val_gt/3D_val_gt_interactive_seg")
    cat = discover(root)
    e = cat[0]
    assert e.case_id == "3D_val_npz/MR_BraTS-T1c_bratsgli_0017"
    assert e.label_path is not None and e.label_path.parent.name == "3D_val_gt_interactive_seg"
    gts = existing_labels(cat.load(e))[1]
    ref = np.load(shared_data / "cvpr25" / "gts" / "MR_BraTS-T1c_bratsgli_0017.npz")["gts"]
    np.testing.assert_array_equal(gts, ref)
    # the same folder without ground truth still lists the case, without labels
    shutil.rmtree(root / "3D_val_gt")
    cat2 = discover(root / "3D_val_npz")
    assert cat2[0].label_path is None and existing_labels(cat2.load(cat2[0])) is None


def test_npz_with_gts_inside_and_cvpr24(tmp_path, shared_data):
    cat = discover(shared_data / "medsam2_recist")
    assert len(cat) == 2 and all(e.label_path is None for e in cat)
    assert existing_labels(cat.load(cat[0]))[0] == "gts"
    root = tmp_path / "c24"
    shutil.copytree(shared_data / "cvpr24", root)
    cat24 = discover(root)
    assert len(cat24) == 3 and all(e.label_path is not None for e in cat24)
    _check_header_matches_load(cat24)
    e2d = cat24.find("2DBox_MR_BiomedParse08_heart")
    case = cat24.load(e2d)
    assert case.image.is_rgb and existing_labels(case)[1].shape == (1024, 1024)
    assert modality_from_name("2DBox_MR_BiomedParse08_heart") == "MR"


def test_nnunet(tmp_path, shared_data):
    root = make_nnunet(shared_data, tmp_path / "Dataset001")
    cat = discover(root)
    assert cat.layout == "nnunet" and cat.ids() == ["imagesTr/ts_001", "imagesTr/ts_002", "imagesTs/ts_101"]
    e = cat["imagesTr/ts_001"]
    assert e.label_path.name == "ts_001.nii.gz" and [c.name for c in e.channels] == ["ts_001_0001.nii.gz"]
    assert cat.label_names == {1: "spleen", 2: "kidney_right"} and e.modality == "CT"
    case = cat.load(e)
    gts = existing_labels(case)[1]
    assert gts.shape == case.image.spatial_shape and "channel 1" in case.images
    assert gts.dtype.kind == "u" and int(gts.max()) > 2
    assert cat["imagesTs/ts_101"].label_path is None
    _check_header_matches_load(cat)


def test_nifti_folders(tmp_path, shared_data):
    root = make_nifti_pairs(shared_data, tmp_path / "nii")
    cat = discover(root)
    assert cat.layout == "nifti" and cat.ids() == ["images/ct", "images/mr"]
    assert cat["images/ct"].label_path == root / "labels" / "ct.nii.gz"
    assert cat["images/mr"].label_path is None
    _check_header_matches_load(cat)
    # flat pair X.nii.gz + X_seg.nii.gz
    flat = tmp_path / "flat"
    flat.mkdir()
    shutil.copy(shared_data / "totalsegmentator" / "example_ct_sm.nii.gz", flat / "ct.nii.gz")
    shutil.copy(shared_data / "totalsegmentator" / "example_seg.nii.gz", flat / "ct_seg.nii.gz")
    cf = discover(flat)
    assert cf.ids() == ["ct"] and cf[0].label_path.name == "ct_seg.nii.gz"
    assert existing_labels(cf.load(cf[0]))[1].shape == (30, 101, 122)


def test_ivdm3seg_samed2d_medsegpy(tmp_path, shared_data):
    iv = discover(make_ivdm3seg(shared_data, tmp_path / "ivdm"))
    assert iv.layout == "ivdm3seg" and iv.ids() == ["01", "02"]
    c = iv.load("01")
    assert set(c.images) >= {"fat", "inn", "opp", "wat"} and existing_labels(c)[1].max() == 1
    assert len(iv["01"].files()) == 5  # only this case's files, not the whole dataset
    _check_header_matches_load(iv)

    sa = discover(make_samed2d(shared_data, tmp_path / "sa"))
    assert sa.layout == "samed2d" and sa.ids() == ["ct_00--AMOS--amos_0004", "ct_00--TotalSeg--s0619"]
    c = sa.load("ct_00--AMOS--amos_0004")
    assert c.image.array.shape[0] == 2 and existing_labels(c)[1].max() >= 3  # 2 slices re-stacked
    assert sa["ct_00--AMOS--amos_0004"].modality == "CT"

    h5 = discover(make_medsegpy_h5(shared_data, tmp_path / "h5"))
    assert h5.layout == "medsegpy_h5" and len(h5) == 2
    _check_header_matches_load(h5)
    sl = discover(make_medsegpy_slices(shared_data, tmp_path / "slices"))
    assert sl.layout == "medsegpy_slices" and sl.ids() == ["0000001_V00-Aug00"]
    c = sl.load(sl[0])
    assert c.image.array.shape == (5, 160, 160) and existing_labels(c)[1].any()


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        discover(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no cases found"):
        discover(tmp_path / "empty")
    with pytest.raises(ValueError, match="unknown layout"):
        discover(tmp_path / "empty", layout="minc")
