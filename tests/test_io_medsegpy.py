"""medsegpy h5: 3D volumes and 2D slice folders built from the real TotalSegmentator CT."""

from __future__ import annotations

import json

import h5py
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
from napari_medsegfm.io.medsegpy import labels_to_seg, parse_slice_name, seg_to_labels


@pytest.fixture(scope="module")
def vol3d(shared_data, tmp_path_factory):
    return fx.make_medsegpy_h5(shared_data, tmp_path_factory.mktemp("m3d"))


@pytest.fixture(scope="module")
def slices(shared_data, tmp_path_factory):
    return fx.make_medsegpy_slices(shared_data, tmp_path_factory.mktemp("m2d"))


def _expected_labels(chans):
    lab = np.zeros(chans.shape[:-1], np.uint8)
    for c in range(chans.shape[-1] - 1, -1, -1):
        lab[chans[..., c] > 0] = c + 1
    return lab


def test_slice_names():
    assert parse_slice_name("0123456_V00-Aug04_999") == ("0123456_V00-Aug04", 999)
    assert parse_slice_name("0123456_V00_999") is None


def test_3d_volume(vol3d):
    path = vol3d["path"]
    assert detect_format(path) == "medsegpy_h5"
    case = load_case(path)
    with h5py.File(path) as f:
        raw = f["volume"][()]
    assert raw.shape[2] == case.image.array.shape[0]  # H x W x D -> (D, H, W)
    assert np.array_equal(case.image.array, raw.transpose(2, 0, 1))
    assert np.array_equal(case.image.array, vol3d["image"])
    assert case.image.spacing == pytest.approx(vol3d["spacing"])
    assert np.array_equal(case.labels["gts"], _expected_labels(vol3d["channels"]))
    assert case.label_names == {1: "liver", 2: "spleen", 3: "kidney_right", 4: "liver+kidney"}
    kw = next(kw for _d, kw, t in case_to_layers(case) if t == "labels")
    assert kw["colormap"][1] == pytest.approx((220 / 255, 120 / 255, 60 / 255, 1.0))
    assert kw["features"]["name"][:3] == ["background", "liver", "spleen"]


def test_collated_category(vol3d):
    case = load_case(vol3d["path"], category_ids=[(0, 2), 1])
    ch = vol3d["channels"]
    assert np.array_equal(case.labels["gts"] == 1, (ch[..., 0] > 0) | (ch[..., 2] > 0))
    assert np.array_equal(case.labels["gts"] == 2, (ch[..., 1] > 0) & ~((ch[..., 0] > 0) | (ch[..., 2] > 0)))
    assert case.label_names[1] == "liver+kidney"
    with pytest.raises(ValueError, match="channel 5"):
        load_case(vol3d["path"], category_ids=[5])


def test_asymmetric_axes_and_sidecar_spacing(tmp_path):
    h, w, d = 7, 11, 5
    vol = np.arange(h * w * d, dtype=np.int16).reshape(h, w, d)
    seg = np.zeros((h, w, d, 2), np.uint8)
    seg[1:3, 2:9, 4, 1] = 1
    p = tmp_path / "asym.h5"
    with h5py.File(p, "w") as f:
        f["volume"] = vol
        f["seg"] = seg
    (tmp_path / "asym.json").write_text(json.dumps({"spacing": [0.7, 0.5, 2.0]}))  # dH, dW, dD
    case = load_case(p)
    assert case.image.array.shape == (5, 7, 11) and case.image.spacing == (2.0, 0.7, 0.5)
    assert case.image.array[3, 6, 10] == vol[6, 10, 3]
    assert case.labels["gts"][4, 1, 2] == 2 and case.labels["gts"].sum() == 2 * 2 * 7


def test_3d_roundtrip(vol3d, tmp_path):
    case = load_case(vol3d["path"])
    out = tmp_path / "out.h5"
    save_labels(case.labels["gts"], out, case=case)
    with h5py.File(vol3d["path"]) as a, h5py.File(out) as b:
        assert set(a) == set(b)
        assert np.array_equal(a["volume"][()], b["volume"][()])
        assert np.array_equal(a["seg"][()], b["seg"][()]) and a["seg"].dtype == b["seg"].dtype
    back = load_case(out)
    assert np.array_equal(back.labels["gts"], case.labels["gts"])
    with pytest.raises(GroundTruthProtected):
        save_labels(case.labels["gts"], vol3d["path"], case=case)


def test_channel_conversion_helpers():
    lab = np.array([[0, 1], [2, 3]])
    seg = labels_to_seg(lab, 3, [0, 1, 2])
    assert seg.shape == (2, 2, 3) and np.array_equal(seg_to_labels(seg, [0, 1, 2]), lab)
    with pytest.raises(ValueError, match="only 2 categories"):
        labels_to_seg(lab, 2, [0, 1])


def test_slices_restack(slices):
    folder = slices["path"]
    assert detect_format(folder) == "medsegpy_slices"
    assert [r.case_id for r in list_cases(folder)] == [slices["scan"]]
    one = next(folder.glob("*_007.im"))
    case = load_case(one)
    assert case.name == slices["scan"] and case.image.array.shape == slices["image"].shape
    with h5py.File(one) as f:
        assert np.array_equal(case.image.array[6], f["data"][()][..., 0])  # slice 7 = index 6
    assert np.array_equal(case.image.array, slices["image"])
    assert np.array_equal(case.labels["gts"], _expected_labels(slices["channels"]))
    assert case.image.spacing == pytest.approx(slices["spacing"])
    assert case.label_names == {1: "liver", 2: "spleen", 3: "kidney_right"}


def test_slices_roundtrip_and_protection(slices, tmp_path):
    case = load_case(slices["path"])
    out = tmp_path / "pred"
    save_labels(case.labels["gts"], out, case=case, fmt="medsegpy_slices")
    files = sorted(out.glob("*.seg"))
    assert len(files) == case.image.array.shape[0]
    for f in files:
        with h5py.File(f) as a, h5py.File(slices["path"] / f.name) as b:
            assert a["data"].shape == b["data"].shape and np.array_equal(a["data"][()], b["data"][()])
    with pytest.raises(GroundTruthProtected):
        save_labels(case.labels["gts"], slices["path"], case=case, fmt="medsegpy_slices")
