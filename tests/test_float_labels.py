"""Float-typed label images: whole-number values accepted, fractional ones refused (naming the
file and a sample value), in every reader that takes labels — one rule (io._common.integer_labels).

SA-Med2D masks are PNGs, whose samples are integers by format; they are not repeated here."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from napari_medsegfm.io import load_case, save_labels

TS = "totalsegmentator"


def _nifti_float(src: Path, dst: Path, *, fractional: bool) -> tuple[Path, np.ndarray]:
    """A copy of a real label NIfTI stored as float32 (one voxel made 2.5 when ``fractional``)."""
    import nibabel as nib

    img = nib.load(str(src))
    ints = np.asanyarray(img.dataobj).copy()  # read before dst (possibly src itself) is written
    data = ints.astype(np.float32)
    if fractional:
        data[tuple(int(i) for i in np.argwhere(data > 0)[0])] = 2.5
    hdr = img.header.copy()
    hdr.set_data_dtype(np.float32)
    nib.save(nib.Nifti1Image(data, img.affine, hdr), str(dst))
    return dst, ints


def _fractional_msg(exc: pytest.ExceptionInfo, path: Path) -> None:
    msg = str(exc.value)
    assert str(path) in msg and "2.5 at voxel" in msg and "whole numbers" in msg, msg


def test_nifti_label_map(shared_data, tmp_path):
    ref = load_case(shared_data / TS / "example_seg.nii.gz")
    p, _ = _nifti_float(shared_data / TS / "example_seg.nii.gz", tmp_path / "ct_seg.nii.gz", fractional=False)
    case = load_case(p)  # named like labels, float32, whole numbers: a label map
    assert "gts" in case.labels and case.labels["gts"].dtype == np.uint8
    np.testing.assert_array_equal(case.labels["gts"], ref.labels["gts"])
    bad, _ = _nifti_float(shared_data / TS / "example_seg.nii.gz", tmp_path / "bad_seg.nii.gz", fractional=True)
    with pytest.raises(ValueError) as ei:
        load_case(bad, as_labels=True)
    _fractional_msg(ei, bad)
    # by name only (no as_labels): a probability-like map is shown as an image, not rounded into labels
    as_image = load_case(bad)
    assert "gts" not in as_image.labels and as_image.image.array.dtype.kind == "f"
    # the writer takes whole-number floats and refuses fractional ones
    out = save_labels(case.labels["gts"].astype(np.float32), tmp_path / "back.nii.gz", case=case)
    np.testing.assert_array_equal(load_case(out, as_labels=True).labels["gts"], ref.labels["gts"])
    with pytest.raises(ValueError, match=r"0\.5 at voxel"):
        save_labels(np.full(case.labels["gts"].shape, 0.5, np.float32), tmp_path / "x.nii.gz", case=case)


def test_ivdm3seg_float32_labels(shared_data, tmp_path):
    """IVDM3Seg ships NN_Labels.nii as float32."""
    from napari_medsegfm.io.fixtures import make_ivdm3seg

    make_ivdm3seg(shared_data, tmp_path / "ivdm", cases=("01",), flat=False)
    lab = tmp_path / "ivdm" / "01" / "01_Labels.nii"
    _, ints = _nifti_float(lab, lab, fractional=False)
    case = load_case(tmp_path / "ivdm" / "01")
    assert case.labels["gts"].dtype == np.uint8 and case.labels["gts"].sum() == ints.sum() > 0
    _nifti_float(lab, lab, fractional=True)
    with pytest.raises(ValueError) as ei:
        load_case(tmp_path / "ivdm" / "01")
    _fractional_msg(ei, lab)


def test_npz_members(tmp_path):
    img = np.zeros((4, 6, 8), np.uint8)
    gts = np.zeros(img.shape, np.float32)
    gts[1, 2, 3] = 7.0
    p = tmp_path / "case.npz"
    np.savez(p, imgs=img, gts=gts, spacing=np.array([1.0, 1.0, 2.0]))
    case = load_case(p)
    assert case.labels["gts"].dtype == np.uint8 and case.labels["gts"][1, 2, 3] == 7
    gts[0, 0, 1] = 2.5
    np.savez(p, imgs=img, gts=gts, prev_pred=gts, spacing=np.array([1.0, 1.0, 2.0]))
    with pytest.raises(ValueError) as ei:
        load_case(p)
    _fractional_msg(ei, p)
    assert "'gts'" in str(ei.value) and "(0, 0, 1)" in str(ei.value)


def test_medsegpy_h5_and_slices(shared_data, tmp_path):
    import h5py

    from napari_medsegfm.io.fixtures import make_medsegpy_h5, make_medsegpy_slices

    ref = make_medsegpy_h5(shared_data, tmp_path / "h5")
    p = ref["path"]
    with h5py.File(p, "r+") as f:
        seg = f["seg"][()].astype(np.float32)
        del f["seg"]
        f.create_dataset("seg", data=seg)
    case = load_case(p)
    assert case.labels["gts"].max() == 3 and np.count_nonzero(case.labels["gts"]) == np.count_nonzero(
        ref["channels"].any(axis=-1))
    out = save_labels(case.labels["gts"], p, case=case, overwrite_gt=True)  # write back in the file's float dtype
    with h5py.File(out, "r") as f:
        assert f["seg"].dtype == np.float32
    np.testing.assert_array_equal(load_case(out).labels["gts"], case.labels["gts"])
    with h5py.File(p, "r+") as f:
        seg = f["seg"][()]
        seg[tuple(np.argwhere(seg > 0)[0])] = 2.5
        del f["seg"]
        f.create_dataset("seg", data=seg)
    with pytest.raises(ValueError) as ei:
        load_case(p)
    _fractional_msg(ei, p)

    sl = make_medsegpy_slices(shared_data, tmp_path / "slices")
    first = sorted(Path(sl["path"]).glob("*_001.seg"))[0]
    with h5py.File(first, "r+") as f:
        d = f["data"][()].astype(np.float32)
        d.flat[0] = 2.5
        del f["data"]
        f.create_dataset("data", data=d)
    with pytest.raises(ValueError) as ei:
        load_case(sl["path"])
    _fractional_msg(ei, first)


def test_dataset_catalog_label_files(shared_data, tmp_path):
    """An nnU-Net dataset whose label file is float32: whole numbers load, fractional ones are
    refused instead of being rounded (0.4 -> 0, 1.6 -> 2 before)."""
    from _dataset_data import make_nnunet

    from napari_medsegfm.dataset.catalog import discover

    root = make_nnunet(shared_data, tmp_path / "nn")
    lab = root / "labelsTr" / "ts_001.nii.gz"
    _, ints = _nifti_float(shared_data / TS / "example_seg.nii.gz", lab, fractional=False)
    cat = discover(root)
    case = cat.load("imagesTr/ts_001")
    assert case.labels["gts"].dtype == np.uint8 and case.labels["gts"].sum() == load_case(
        shared_data / TS / "example_seg.nii.gz").labels["gts"].sum()
    _nifti_float(shared_data / TS / "example_seg.nii.gz", lab, fractional=True)
    with pytest.raises(ValueError) as ei:
        discover(root).load("imagesTr/ts_001")
    _fractional_msg(ei, lab)
    shutil.rmtree(root)
