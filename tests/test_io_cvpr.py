"""CVPR 2025 / 2024 npz: reading the real files, axis order, and writing labels back."""

from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from napari_medsegfm.io import GroundTruthProtected, detect_format, load_case, save_labels
from napari_medsegfm.io.layers import case_to_layers
from napari_medsegfm.io.npzfile import NpzReader
from napari_medsegfm.types import Box2D, Box3D

AMOS = "cvpr25/imgs/CT_AMOS_amos_0018.npz"


def _raw_entries(path: Path) -> dict[str, bytes]:
    """Every member's raw zip entry bytes (local header + compressed data)."""
    out = {}
    with NpzReader(path) as r, open(path, "rb") as fh:
        for k in r.keys():
            _info, start, end = r.raw_entry(k)
            fh.seek(start)
            out[k] = fh.read(end - start)
    return out


def test_amos_case(shared_data):
    path = shared_data / AMOS
    ref = np.load(path, allow_pickle=True)
    case = load_case(path)
    assert case.format == "cvpr25_npz" and detect_format(path) == "cvpr25_npz"
    assert case.image.array.shape == (63, 512, 512)
    # spacing stored (x, y, z) = (0.846, 0.846, 5.0) -> array order (z, y, x)
    assert case.image.spacing == pytest.approx((5.0, 0.846, 0.846))
    assert case.meta["spacing_xyz"] == pytest.approx((0.846, 0.846, 5.0))
    assert len(case.boxes) == 15
    for i, (b, d) in enumerate(zip(case.boxes, ref["boxes"])):
        assert isinstance(b, Box3D) and b.object_id == i + 1
        assert (b.z_min, b.z_max, b.z_mid) == (d["z_min"], d["z_max"], d["z_mid"])
        assert (b.y_min, b.x_min, b.y_max, b.x_max) == (d["z_mid_y_min"], d["z_mid_x_min"], d["z_mid_y_max"],
                                                        d["z_mid_x_max"])
    tp = ref["text_prompts"].item()
    assert case.text_prompts[6] == tp["6"] and case.instance_label == 0
    assert case.label_names[15] == tp["15"]
    # the challenge's sibling gts/ file supplies the ground truth
    assert case.meta["gts_source"].endswith("gts/CT_AMOS_amos_0018.npz")
    gts = np.load(shared_data / "cvpr25/gts/CT_AMOS_amos_0018.npz")["gts"]
    assert np.array_equal(case.labels["gts"], gts)
    # the boxes enclose their label on z_mid
    b = case.boxes[5]
    sl = case.labels["gts"][b.z_mid] == b.object_id
    ys, xs = np.nonzero(sl)
    assert b.y_min <= ys.min() and ys.max() <= b.y_max and b.x_min <= xs.min() and xs.max() <= b.x_max


def test_brats_and_microscopy(shared_data):
    brats = load_case(shared_data / "cvpr25/imgs/MR_BraTS-T1c_bratsgli_0017.npz")
    assert brats.boxes == [] and len(brats.text_prompts) == 4 and brats.instance_label == 0
    micro = load_case(shared_data / "cvpr25/imgs/Microscopy_SELMA3D_patchvolume_nuclei_004.npz")
    assert micro.instance_label == 1 and len(micro.boxes) == 255
    layers = case_to_layers(micro)
    lab = next(kw for _d, kw, t in layers if t == "labels")
    assert lab["metadata"]["medsegfm_instance_label"] == 1
    assert lab["features"]["instance"][1] is True


def test_cvpr24_2d_rgb_and_3d(shared_data):
    c2 = load_case(shared_data / "cvpr24/imgs/2DBox_MR_BiomedParse08_heart.npz")
    assert c2.format == "cvpr24_npz"
    assert c2.image.is_rgb and c2.image.array.shape == (1024, 1024, 3) and c2.image.spatial_shape == (1024, 1024)
    raw = np.load(shared_data / "cvpr24/imgs/2DBox_MR_BiomedParse08_heart.npz")["boxes"]
    assert [type(b) for b in c2.boxes] == [Box2D] * 3
    for b, r in zip(c2.boxes, raw):  # [x_min, y_min, x_max, y_max]
        assert (b.x_min, b.y_min, b.x_max, b.y_max) == tuple(r)
    assert c2.labels["gts"].shape == (1024, 1024)
    c3 = load_case(shared_data / "cvpr24/imgs/3DBox_CT_Lesion_000001_02_01_008-023.npz")
    raw3 = np.load(shared_data / "cvpr24/imgs/3DBox_CT_Lesion_000001_02_01_008-023.npz")["boxes"][0]
    b = c3.boxes[0]  # [x_min, y_min, z_min, x_max, y_max, z_max]
    assert (b.x_min, b.y_min, b.z_min, b.x_max, b.y_max, b.z_max) == tuple(raw3)
    lab = c3.labels["gts"]
    zz, yy, xx = np.nonzero(lab)
    assert (zz.min(), zz.max(), yy.min(), xx.min()) == (b.z_min, b.z_max, b.y_min, b.x_min)


def test_axis_order_with_asymmetric_volume(tmp_path):
    """(5, 7, 11) volume, spacing (x, y, z) = (0.5, 0.7, 2.0): nothing may be swapped."""
    img = np.arange(5 * 7 * 11, dtype=np.uint8).reshape(5, 7, 11)
    gts = np.zeros_like(img)
    gts[1:4, 2:5, 3:10] = 1
    box = np.empty(1, dtype=object)
    box[0] = {"z_min": 1, "z_max": 3, "z_mid": 2, "z_mid_x_min": 3, "z_mid_y_min": 2, "z_mid_x_max": 9,
              "z_mid_y_max": 4}
    clicks = np.empty(1, dtype=object)
    clicks[0] = {"fg": [[2, 3, 10]], "bg": [[4, 6, 0]]}
    p = tmp_path / "CT_asym.npz"
    np.savez_compressed(p, imgs=img, gts=gts, spacing=np.array([0.5, 0.7, 2.0]), boxes=box, clicks=clicks)
    case = load_case(p)
    assert case.image.spacing == (2.0, 0.7, 0.5)
    assert case.image.array[4, 6, 10] == img[4, 6, 10]
    assert case.boxes[0] == Box3D(z_min=1, z_max=3, y_min=2, x_min=3, y_max=4, x_max=9, object_id=1, z_mid=2)
    assert case.clicks == [{"fg": [[2, 3, 10]], "bg": [[4, 6, 0]]}]
    layers = {t: (d, kw) for d, kw, t in case_to_layers(case)}
    assert layers["image"][1]["scale"] == (2.0, 0.7, 0.5)
    assert layers["labels"][1]["scale"] == (2.0, 0.7, 0.5)
    rect, kw = layers["shapes"]
    assert np.array_equal(rect[0], [[2, 2, 3], [2, 2, 9], [2, 4, 9], [2, 4, 3]])
    assert kw["features"] == {"label": [1], "z_min": [1], "z_max": [3], "z_mid": [2]}
    pts, pkw = layers["points"]
    assert pts.tolist() == [[2, 3, 10], [4, 6, 0]] and pkw["features"]["positive"] == [True, False]
    # x_max = 9 is valid on the x axis (11) but would not be on y (7): a swap would raise
    box[0]["z_mid_x_max"] = 10
    np.savez_compressed(p, imgs=img, spacing=np.array([0.5, 0.7, 2.0]), boxes=box)
    assert load_case(p).boxes[0].x_max == 10


def test_save_segs_keeps_every_other_member_byte_for_byte(shared_data, tmp_path):
    src = tmp_path / "CT_AMOS_amos_0018.npz"
    shutil.copyfile(shared_data / AMOS, src)  # a writable copy (the sample files are read-only)
    before = _raw_entries(src)
    case = load_case(src, gts_path=None)
    segs = np.zeros(case.image.spatial_shape, np.int32)
    segs[20:30, 100:200, 150:300] = 3
    save_labels(segs, src, case=case)
    after = _raw_entries(src)
    assert set(after) == set(before) | {"segs"}
    for k in before:  # imgs, boxes (pickled), spacing, text_prompts (pickled): identical raw entries
        assert after[k] == before[k], k
    assert zipfile.ZipFile(src).testzip() is None
    again = load_case(src, gts_path=None)
    assert again.labels["segs"].dtype == np.uint8 and np.array_equal(again.labels["segs"], segs)
    assert again.boxes == case.boxes and again.text_prompts == case.text_prompts
    # save again: the old segs member is replaced, not duplicated
    segs[0, 0, 0] = 7
    save_labels(segs, src, case=case)
    names = zipfile.ZipFile(src).namelist()
    assert names.count("segs.npy") == 1
    assert np.load(src, allow_pickle=False, mmap_mode=None)["segs"][0, 0, 0] == 7
    assert [p.name for p in tmp_path.iterdir()] == [src.name]  # no temp files, no backup


def test_gts_protected_and_backed_up(shared_data, tmp_path):
    src = tmp_path / "case.npz"
    shutil.copyfile(shared_data / "medsam2_recist/CT_Lesion_000001_02_01_008-023.npz", src)  # writable copy
    old = src.read_bytes()
    case = load_case(src)
    new = np.zeros_like(case.labels["gts"])
    with pytest.raises(GroundTruthProtected, match="overwrite ground truth"):
        save_labels(new, src, case=case, key="gts")
    assert src.read_bytes() == old
    save_labels(new, src, case=case, key="gts", overwrite_gt=True)
    bak = tmp_path / "case.npz.bak"
    assert bak.read_bytes() == old
    assert not load_case(src).labels["gts"].any()
    assert np.array_equal(load_case(bak, "cvpr25_npz").labels["gts"], case.labels["gts"])
    with pytest.raises(ValueError, match="imgs"):
        save_labels(new, src, key="imgs")


def test_stored_npz_stays_stored_and_new_files(tmp_path):
    img = np.random.default_rng(0).integers(0, 255, (4, 6, 8), np.uint8)
    src = tmp_path / "u.npz"
    np.savez(src, imgs=img, spacing=np.array([1.0, 2.0, 3.0]))
    lab = np.zeros((4, 6, 8), np.uint16)
    lab[1, 2, 3] = 300
    save_labels(lab, src)
    with zipfile.ZipFile(src) as zf:
        assert {i.compress_type for i in zf.infolist()} == {zipfile.ZIP_STORED}
    got = np.load(src)
    assert got["segs"].dtype == np.uint16 and got["segs"][1, 2, 3] == 300
    with pytest.raises(ValueError, match=r"shape \(4, 8, 6\)"):
        save_labels(np.zeros((4, 8, 6), np.uint8), src)
    # a new file from a case: segs + the case's spacing in (x, y, z)
    case = load_case(src)
    out = tmp_path / "pred" / "u.npz"
    out.parent.mkdir()
    save_labels(lab.astype(np.int64), out, case=case)
    got = np.load(out)
    assert sorted(got.files) == ["segs", "spacing"] and got["spacing"].tolist() == [1.0, 2.0, 3.0]
    with pytest.raises(FileNotFoundError):
        save_labels(lab, tmp_path / "missing" / "x.npz")


def test_writer_fortran_and_permissions(tmp_path):
    src = tmp_path / "f.npz"
    np.savez_compressed(src, imgs=np.zeros((3, 4, 5), np.uint8))
    os.chmod(src, 0o640)
    lab = np.asfortranarray(np.arange(60, dtype=np.uint8).reshape(3, 4, 5) % 3)
    save_labels(lab, src)
    assert np.array_equal(np.load(src)["segs"], lab)
    assert (src.stat().st_mode & 0o777) == 0o640
