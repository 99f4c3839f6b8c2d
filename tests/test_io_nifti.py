"""NIfTI: canonical display orientation, array order, bit-exact label export; IVDM3Seg cases."""

from __future__ import annotations

import shutil

import nibabel as nib
import numpy as np
import pytest

from napari_medsegfm.io import (
    GroundTruthProtected,
    detect_format,
    list_cases,
    load_case,
    save_labels,
)
from napari_medsegfm.io import fixtures as fx
from napari_medsegfm.io.layers import case_to_layers


def test_lps_mr_is_shown_canonical(shared_data):
    path = shared_data / fx.TOTALSEG_MR
    img = nib.load(str(path))
    assert "".join(nib.orientations.aff2axcodes(img.affine)) == "LPS"
    case = load_case(path)
    assert case.format == "nifti" and not case.labels
    canon = np.asanyarray(nib.as_closest_canonical(img).dataobj)
    assert np.array_equal(case.image.array, canon.transpose(2, 1, 0))
    assert case.image.array.shape == (20, 91, 117)
    # the affine maps (z, y, x) indices to RAS: +x index goes right (+R)
    aff = case.image.affine
    assert aff[0, 2] > 0 and aff[1, 1] > 0 and aff[2, 0] > 0
    assert case.meta["axcodes"] == "LPS" and np.array_equal(case.meta["nifti_affine"], img.affine)


@pytest.mark.parametrize("name", [fx.TOTALSEG_MR_SEG, fx.TOTALSEG_CT_SEG])
def test_label_map_roundtrip_bit_exact(shared_data, tmp_path, name):
    src = tmp_path / "labels_seg.nii.gz"
    shutil.copyfile(shared_data / name, src)  # writable: the sample files are read-only
    case = load_case(src)
    assert case.meta["labels_only"] and "gts" in case.labels
    layers = case_to_layers(case)
    assert [t for _d, _k, t in layers] == ["labels"]
    out = tmp_path / "out.nii.gz"
    save_labels(case.labels["gts"], out, case=case)
    a, b = nib.load(str(src)), nib.load(str(out))
    assert np.array_equal(np.asanyarray(a.dataobj), np.asanyarray(b.dataobj))
    assert a.get_data_dtype() == b.get_data_dtype()
    assert np.array_equal(a.affine, b.affine)
    assert a.header.binaryblock == b.header.binaryblock
    # writing over the source label map is overwriting ground truth
    edited = case.labels["gts"].copy()
    edited[0, 0, 0] = 1
    before = src.read_bytes()
    with pytest.raises(GroundTruthProtected):
        save_labels(edited, src, case=case)
    assert src.read_bytes() == before
    save_labels(edited, src, case=case, overwrite_gt=True)
    assert (tmp_path / "labels_seg.nii.gz.bak").read_bytes() == before
    assert load_case(src).labels["gts"][0, 0, 0] == 1


def test_oblique_permuted_asymmetric_volume(tmp_path):
    """Stored (x, y, z) with a permuted, flipped affine and voxel sizes 2.0 / 1.5 / 3.0."""
    data = np.random.default_rng(3).integers(0, 6, (5, 7, 11)).astype(np.uint8)
    aff = np.array([[0, 0, -2.0, 10], [1.5, 0, 0, -5], [0, -3.0, 0, 7], [0, 0, 0, 1]])  # axcodes A I L
    src = tmp_path / "case_labels.nii.gz"
    nib.save(nib.Nifti1Image(data, aff), str(src))
    case = load_case(src)
    canon = nib.as_closest_canonical(nib.load(str(src)))
    assert case.image.array.shape == canon.shape[::-1] == (7, 5, 11)
    assert case.image.spacing == (3.0, 1.5, 2.0)  # (z, y, x) of the canonical image
    # world position of a voxel is the same through our affine and the file's
    z, y, x = 4, 3, 9
    val = case.image.array[z, y, x]
    world = case.image.affine @ [z, y, x, 1]
    ijk = np.linalg.inv(aff) @ world
    assert data[tuple(int(round(v)) for v in ijk[:3])] == val
    layers = case_to_layers(case)
    assert layers[0][1]["scale"] == (3.0, 1.5, 2.0)
    out = tmp_path / "roundtrip.nii"
    save_labels(case.labels["gts"], out, case=case)
    back = nib.load(str(out))
    assert np.array_equal(np.asanyarray(back.dataobj), data) and np.allclose(back.affine, aff)


def test_labels_from_npz_case_to_nifti(shared_data, tmp_path):
    case = load_case(shared_data / "medsam2_recist/CT_Lesion_000001_02_01_008-023.npz")
    out = tmp_path / "lesion.nii.gz"
    save_labels(case.labels["gts"], out, case=case)
    raw = nib.load(str(out))  # stored as is, (z, y, x) -> (x, y, z), with the npz's direction as affine
    assert np.array_equal(np.asanyarray(raw.dataobj), case.labels["gts"].transpose(2, 1, 0))
    assert np.allclose(raw.affine, case.image.affine[:, [2, 1, 0, 3]], atol=1e-5)
    assert raw.header.get_zooms() == pytest.approx(case.image.spacing[::-1])
    # without direction/origin the array and spacing come back unchanged
    amos = load_case(shared_data / "cvpr25/imgs/CT_AMOS_amos_0018.npz")
    save_labels(amos.labels["gts"], tmp_path / "amos.nii.gz", case=amos)
    back = load_case(tmp_path / "amos.nii.gz", as_labels=True)
    assert back.image.spacing == pytest.approx(amos.image.spacing)
    assert np.array_equal(back.labels["gts"], amos.labels["gts"])


# ------------------------------------------------------------------------------- IVDM3Seg
@pytest.fixture(scope="module")
def ivdm(shared_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("ivdm3seg")
    return fx.make_ivdm3seg(shared_data, root)


def test_ivdm3seg_layouts(ivdm):
    root = ivdm["root"]
    refs = list_cases(root)
    assert [r.case_id for r in refs] == ["01", "02"]
    for path in (root / "01", root / "01" / "01_inn.nii", root / "dataset", root / "dataset" / "01_fat.nii",
                 root / "label" / "01_Labels.nii", root):
        assert detect_format(path) == "ivdm3seg", path
        case = load_case(path)
        assert case.name == "01" and set(case.images) == {"fat", "inn", "opp", "wat"}
        lab_xyz = ivdm["cases"]["01"]["labels_xyz"]
        canon = nib.as_closest_canonical(nib.Nifti1Image(lab_xyz, ivdm["affine"]))
        assert np.array_equal(case.labels["gts"], np.asanyarray(canon.dataobj).transpose(2, 1, 0))
        for s, arr in ivdm["cases"]["01"]["sequences_xyz"].items():
            c = np.asanyarray(nib.as_closest_canonical(nib.Nifti1Image(arr, ivdm["affine"])).dataobj)
            assert np.array_equal(case.images[s].array, c.transpose(2, 1, 0)), s
    two = load_case(root / "dataset", case_id="02")
    assert two.name == "02" and not np.array_equal(two.labels["gts"], case.labels["gts"])
    layers = case_to_layers(case)
    kinds = [t for _d, _k, t in layers]
    assert kinds == ["image"] * 4 + ["labels"]
    visible = [kw["name"] for _d, kw, t in layers if t == "image" and kw["visible"]]
    assert visible == ["01_wat"]


def test_ivdm3seg_labels_back_to_source(ivdm, tmp_path):
    case = load_case(ivdm["root"] / "01")
    src = ivdm["root"] / "01" / "01_Labels.nii"
    before = src.read_bytes()
    with pytest.raises(GroundTruthProtected):
        save_labels(case.labels["gts"], src, case=case)
    out = tmp_path / "01_Labels.nii"
    save_labels(case.labels["gts"], out, case=case)
    assert out.read_bytes() == before  # same voxels, header and affine: the identical file
