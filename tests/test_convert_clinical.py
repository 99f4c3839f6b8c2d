"""``medsegfm convert`` with labels files and the clinical formats; the dataset workflow on DICOM/NRRD cases."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from _clinical_data import DICOM_DIR, SEG_DIR, copy_real_series  # noqa: E402

from napari_medsegfm.cli import main  # noqa: E402
from napari_medsegfm.io import load_case  # noqa: E402

AMOS = "cvpr25/imgs/CT_AMOS_amos_0018.npz"


def test_npz_to_nifti_pair_and_back_round_trips(shared_data, tmp_path, capsys):
    """Issue 12 item 7: npz -> nii.gz (+ _seg) -> npz gives the same image and labels."""
    src = shared_data / AMOS
    assert main(["convert", str(src), str(tmp_path / "amos.nii.gz")]) == 0
    assert (tmp_path / "amos_seg.nii.gz").is_file()
    capsys.readouterr()
    assert main(["convert", str(tmp_path / "amos.nii.gz"), str(tmp_path / "back.npz")]) == 0
    err = capsys.readouterr().err
    assert "using labels from" in err and "amos_seg.nii.gz" in err
    orig, back = load_case(src), load_case(tmp_path / "back.npz", gts_path=None)
    np.testing.assert_array_equal(back.image.array, orig.image.array)
    np.testing.assert_array_equal(back.labels["gts"], orig.labels["gts"])
    assert back.image.spacing == pytest.approx(orig.image.spacing)
    # the same through an explicit --labels-file, and the labels file chosen over the sibling
    other = tmp_path / "other_labels.nii.gz"
    shutil.copy(tmp_path / "amos_seg.nii.gz", other)
    assert main(["convert", str(tmp_path / "amos.nii.gz"), str(tmp_path / "b2.npz"), "--labels-file", str(other)]) == 0
    np.testing.assert_array_equal(load_case(tmp_path / "b2.npz", gts_path=None).labels["gts"], orig.labels["gts"])


def test_labels_file_to_every_clinical_output(shared_data, tmp_path):
    series = shared_data / DICOM_DIR
    nrrd_labels = shared_data / SEG_DIR / "liver_spine_seg.nrrd"
    ref = load_case(series, labels_file=nrrd_labels).labels["gts"]
    outs = {"seg.dcm": None, "c.seg.nrrd": None, "lab.nrrd": None, "lab.mha": None, "lab.nii.gz": None}
    for name in outs:
        assert main(["convert", str(series), str(tmp_path / name), "--labels-file", str(nrrd_labels)]) == 0, name
        got = load_case(series, labels_file=tmp_path / name).labels["gts"]
        np.testing.assert_array_equal(got, ref, err_msg=name)
    # a DICOM-SEG input converts on: SEG -> .seg.nrrd for the same series
    assert main(["convert", str(series), str(tmp_path / "from_seg.seg.nrrd"), "--labels-file",
                 str(tmp_path / "seg.dcm")]) == 0
    np.testing.assert_array_equal(load_case(tmp_path / "from_seg.seg.nrrd").labels["gts"], ref)
    # a series to images (+ labels beside) in NIfTI and NRRD: the same voxels as the series
    assert main(["convert", str(series), str(tmp_path / "ct.nrrd")]) == 0
    assert main(["convert", str(series), str(tmp_path / "ct.nii.gz")]) == 0
    img = load_case(series).image.array
    for name in ("ct.nrrd", "ct.nii.gz"):
        np.testing.assert_array_equal(load_case(tmp_path / name).image.array, img, err_msg=name)


def test_convert_refusals_write_nothing(shared_data, tmp_path):
    series = shared_data / DICOM_DIR
    assert main(["convert", str(series), str(tmp_path / "x.dcm")]) == 2  # no labels to write
    nii = shared_data / "totalsegmentator/example_ct_sm.nii.gz"
    assert main(["convert", str(series), str(tmp_path / "y.dcm"), "--labels-file", str(nii)]) == 2  # other grid
    assert main(["convert", str(nii), str(tmp_path / "z.dcm"), "--labels-file",
                 str(shared_data / "totalsegmentator/example_seg.nii.gz")]) == 2  # a SEG needs a DICOM series
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_dataset_dicom_layout_lists_series_and_exports_dicom_seg(shared_data, tmp_path):
    from napari_medsegfm.dataset.catalog import discover
    from napari_medsegfm.dataset.export import export_corrections
    from napari_medsegfm.dataset.workspace import DatasetWorkspace

    root = tmp_path / "ds"
    copy_real_series(shared_data, root / "patient1" / "ct")
    (root / "segs").mkdir(parents=True)
    shutil.copy(shared_data / SEG_DIR / "liver_SEG.dcm", root / "segs" / "liver_SEG.dcm")
    cat = discover(root)
    assert cat.layout == "dicom" and len(cat) == 1
    e = cat.entries[0]
    assert e.fmt == "dicom" and e.label_path.name == "liver_SEG.dcm" and e.label_fmt == "dicom_seg"
    case = cat.load(e)
    liver = load_case(shared_data / SEG_DIR / "liver_seg.nrrd").labels["gts"]
    np.testing.assert_array_equal(case.labels["gts"], liver)
    with DatasetWorkspace(root) as ws:
        oc = ws.open(e.case_id)
        oc.labels[1, 50:90, 50:90] = 2  # the correction adds an object
        oc.start_autosave().mark_dirty()
        ws.close_case(oc)
        rep = export_corrections(ws, tmp_path / "out", fmt="same")
    assert not rep.failed, rep.failed
    out = tmp_path / "out" / rep.exported[0]["output"]
    assert out.suffix == ".dcm"
    back = load_case(root / "patient1" / "ct", labels_file=out).labels["gts"]
    expected = liver.copy()
    expected[1, 50:90, 50:90] = 2
    np.testing.assert_array_equal(back, expected)
    assert (root / "segs" / "liver_SEG.dcm").read_bytes() == (shared_data / SEG_DIR / "liver_SEG.dcm").read_bytes()


def test_dataset_itk_layout(shared_data, tmp_path):
    import SimpleITK as sitk

    from napari_medsegfm.dataset.catalog import discover

    root = tmp_path / "nr"
    root.mkdir()
    assert main(["convert", str(shared_data / DICOM_DIR), str(root / "ct1.nrrd")]) == 0
    shutil.copy(shared_data / SEG_DIR / "liver_seg.nrrd", root / "ct1_seg.nrrd")
    sitk.WriteImage(sitk.ReadImage(str(root / "ct1.nrrd")), str(root / "ct2.mha"))
    cat = discover(root)
    assert cat.layout == "itk" and cat.ids() == ["ct1", "ct2"]
    assert cat["ct1"].label_path.name == "ct1_seg.nrrd" and cat["ct2"].label_path is None
    np.testing.assert_array_equal(cat.load("ct1").labels["gts"],
                                  load_case(shared_data / SEG_DIR / "liver_seg.nrrd").labels["gts"])
