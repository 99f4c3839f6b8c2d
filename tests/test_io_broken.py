"""Claim-time behaviour and broken input: None for what is not ours, ValueError naming
file, key and expectation for what is ours but broken."""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from napari_medsegfm.io import detect_format, load_case
from napari_medsegfm.io import fixtures as fx
from napari_medsegfm.io.reader import napari_get_reader


def _npy(arr) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asanyarray(arr), allow_pickle=True)
    return buf.getvalue()


def _npz(path: Path, members: dict, *, stored: bool = False) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED) as zf:
        for k, v in members.items():
            zf.writestr(f"{k}.npy", _npy(v))
    return path


def _obj(*items) -> np.ndarray:
    a = np.empty(len(items), dtype=object)
    for i, x in enumerate(items):
        a[i] = x
    return a


IMG = np.zeros((5, 7, 11), np.uint8)
SP = np.array([0.5, 0.7, 2.0])
BOX = {"z_min": 1, "z_max": 3, "z_mid": 2, "z_mid_x_min": 2, "z_mid_y_min": 1, "z_mid_x_max": 9, "z_mid_y_max": 5}


def _truncated(tmp: Path) -> Path:
    p = _npz(tmp / "case.npz", {"imgs": np.random.default_rng(0).integers(0, 255, (5, 7, 11), np.uint8), "spacing": SP})
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    return p


def _crc(tmp: Path) -> Path:
    p = _npz(tmp / "case.npz", {"imgs": np.arange(5 * 7 * 11, dtype=np.uint8).reshape(5, 7, 11), "spacing": SP},
             stored=True)
    data = bytearray(p.read_bytes())
    i = data.index(bytes(range(60, 70)))  # inside the imgs payload
    data[i] ^= 0xFF
    p.write_bytes(bytes(data))
    return p


# (id, builder(tmp) -> path, fragments the message must contain)
NPZ_CASES = [
    ("truncated_zip", _truncated, ["not a valid npz"]),
    ("crc_mismatch", _crc, ["'imgs'", "CRC"]),
    ("missing_imgs", lambda t: _npz(t / "case.npz", {"spacing": SP, "boxes": _obj(BOX)}), ["'imgs'", "expected"]),
    ("imgs_wrong_dtype", lambda t: _npz(t / "case.npz", {"imgs": np.full((5, 7, 11), "a"), "spacing": SP}),
     ["'imgs'", "dtype", "expected a numeric image"]),
    ("imgs_wrong_ndim", lambda t: _npz(t / "case.npz", {"imgs": np.zeros((2, 5, 7, 11), np.uint8), "spacing": SP}),
     ["'imgs'", "ndim 4", "expected"]),
    ("gts_shape_mismatch", lambda t: _npz(t / "case.npz", {"imgs": IMG, "gts": np.zeros((5, 11, 7), np.uint8),
                                                            "spacing": SP}),
     ["'gts'", "(5, 11, 7)", "(5, 7, 11)"]),
    ("gts_fractional_float", lambda t: _npz(t / "case.npz", {"imgs": IMG, "gts": np.full((5, 7, 11), 1.5, np.float32),
                                                              "spacing": SP}),
     ["'gts'", "float32", "1.5 at voxel (0, 0, 0)", "whole numbers"]),
    ("segs_negative", lambda t: _npz(t / "case.npz", {"imgs": IMG, "segs": np.full((5, 7, 11), -1, np.int8),
                                                       "spacing": SP}),
     ["'segs'", "negative"]),
    ("nan_spacing", lambda t: _npz(t / "case.npz", {"imgs": IMG, "spacing": np.array([0.5, np.nan, 2.0])}),
     ["'spacing'", "finite positive"]),
    ("spacing_wrong_length", lambda t: _npz(t / "case.npz", {"imgs": IMG, "spacing": np.array([0.5, 0.7])}),
     ["'spacing'", "expected 3"]),
    ("box_wholly_outside", lambda t: _npz(t / "case.npz", {"imgs": IMG, "spacing": SP,
                                                            "boxes": _obj({**BOX, "z_mid_y_min": 7, "z_mid_y_max": 9})}),
     ["'boxes'[0] lies outside the image", "z_mid_y_min..z_mid_y_max = 7..9", "axis 1 has size 7"]),
    ("box_missing_key", lambda t: _npz(t / "case.npz", {"imgs": IMG, "spacing": SP,
                                                         "boxes": _obj({k: v for k, v in BOX.items() if k != "z_max"})}),
     ["'boxes'[0]", "z_max"]),
    ("box_inverted", lambda t: _npz(t / "case.npz", {"imgs": IMG, "spacing": SP,
                                                      "boxes": _obj(BOX, {**BOX, "z_min": 4, "z_mid": 4})}),
     ["'boxes'[1]", "z_min=4 > z_max=3"]),
    ("cvpr24_boxes_bad_shape", lambda t: _npz(t / "case.npz", {"imgs": np.zeros((9, 8, 3), np.uint8),
                                                                "boxes": np.zeros((2, 5), np.int64)}),
     ["'boxes'", "(2, 5)", "(N, 4)"]),
    ("text_prompts_not_dict", lambda t: _npz(t / "case.npz", {"imgs": IMG, "spacing": SP,
                                                               "text_prompts": np.array(None, dtype=object)}),
     ["'text_prompts'", "expected a dict"]),
    ("clicks_out_of_bounds", lambda t: _npz(t / "case.npz", {"imgs": IMG, "spacing": SP,
                                                              "clicks": _obj({"fg": [[1, 2, 11]], "bg": []})}),
     ["'clicks'[0]['fg'][0]", "outside"]),
    ("pickled_imgs_wrong_type", lambda t: _npz(t / "case.npz", {"imgs": _obj("not", "an", "image"), "spacing": SP}),
     ["'imgs'", "dtype object"]),
]


@pytest.mark.parametrize("builder,fragments", [c[1:] for c in NPZ_CASES], ids=[c[0] for c in NPZ_CASES])
def test_broken_npz(tmp_path, builder, fragments):
    path = builder(tmp_path)
    fmt = detect_format(path)  # never raises
    assert fmt in ("cvpr25_npz", "cvpr24_npz")
    reader = napari_get_reader(str(path))
    assert reader is not None
    with pytest.raises(ValueError) as ei:
        load_case(path)
    msg = str(ei.value)
    assert str(path) in msg, msg
    for frag in fragments:
        assert frag in msg, f"{frag!r} not in {msg!r}"
    with pytest.raises(ValueError):
        reader(str(path))


# ------------------------------------------------------------------------- other formats
def _nifti(tmp: Path, data, zooms=(1.0, 1.0, 1.0), name="img.nii.gz") -> Path:
    import nibabel as nib

    img = nib.Nifti1Image(np.asarray(data), np.diag([*zooms[:3], 1.0]))
    img.header.set_zooms(zooms)
    p = tmp / name
    nib.save(img, str(p))
    return p


def _truncated_nifti(t: Path) -> Path:
    p = _nifti(t, np.random.default_rng(1).integers(0, 1000, (20, 30, 40)).astype(np.int16))
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    return p


def _nan_zoom_nifti(t: Path) -> Path:
    p = _nifti(t, np.zeros((4, 5, 6), np.int16), name="img.nii")
    data = bytearray(p.read_bytes())
    data[76 + 4 * 2 : 76 + 4 * 3] = np.float32(np.nan).tobytes()  # pixdim[2] (y voxel size) = NaN
    p.write_bytes(bytes(data))
    return p


def _h5(t: Path, **datasets) -> Path:
    import h5py

    p = t / "scan.h5"
    with h5py.File(p, "w") as f:
        for k, v in datasets.items():
            f.create_dataset(k, data=v)
    return p


def _slices_missing(t: Path, shared: Path) -> Path:
    info = fx.make_medsegpy_slices(shared, t / "slices", sidecar=False)
    (info["path"] / f"{info['scan']}_004.im").unlink()
    return info["path"]


def _samed2d_bad_mask(t: Path, shared: Path) -> Path:
    info = fx.make_samed2d(shared, t / "sa", volume_case=False)
    stem = info["slices"][0]
    mask = next((info["root"] / "masks").glob(f"{stem}--*.png"))
    from PIL import Image

    Image.fromarray(np.zeros((10, 10), np.uint8)).save(mask)
    return info["root"] / "images" / f"{stem}.png"


def _samed2d_bad_mapping(t: Path, shared: Path) -> Path:
    info = fx.make_samed2d(shared, t / "sa", volume_case=False)
    (info["root"] / "SAMed2D_v1_class_mapping_id.json").write_text("{not json")
    return info["root"] / "images" / f"{info['slices'][0]}.png"


def _ivdm_misregistered(t: Path, shared: Path) -> Path:
    import nibabel as nib

    fx.make_ivdm3seg(shared, t / "iv", cases=("01",), flat=False)
    p = t / "iv" / "01" / "01_opp.nii"
    img = nib.load(str(p))
    data = np.array(img.dataobj)  # a copy: the .nii is memory-mapped and is about to be rewritten
    nib.save(nib.Nifti1Image(data[:-3], img.affine, img.header), str(p))
    return t / "iv" / "01"


OTHER_CASES = [
    ("nifti_truncated", lambda t, s: _truncated_nifti(t), ["img.nii.gz", "truncated"]),
    ("nifti_nan_voxel_size", lambda t, s: _nan_zoom_nifti(t), ["img.nii", "pixdim", "finite positive"]),
    ("nifti_4d", lambda t, s: _nifti(t, np.zeros((4, 5, 6, 3), np.int16), zooms=(1.0, 1.0, 1.0, 1.0)),
     ["img.nii.gz", "4D"]),
    ("medsegpy_no_volume", lambda t, s: _h5(t, seg=np.zeros((4, 5, 6, 2), np.uint8)), ["scan.h5", "'volume'"]),
    ("medsegpy_seg_shape", lambda t, s: _h5(t, volume=np.zeros((4, 5, 6), np.int16), seg=np.zeros((4, 5, 7, 2), np.uint8)),
     ["scan.h5", "'seg'", "(4, 5, 6)"]),
    ("medsegpy_truncated", lambda t, s: (lambda p: (p.write_bytes(p.read_bytes()[:700]), p)[1])(
        _h5(t, volume=np.arange(4 * 5 * 600, dtype=np.int16).reshape(4, 5, 600))), ["scan.h5", "HDF5"]),
    ("medsegpy_missing_slice", _slices_missing, ["lacks slice", "[4]"]),
    ("samed2d_mask_size", _samed2d_bad_mask, ["mask has shape (10, 10)"]),
    ("samed2d_mapping_json", _samed2d_bad_mapping, ["SAMed2D_v1_class_mapping_id.json", "JSON"]),
    ("ivdm3seg_not_coregistered", _ivdm_misregistered, ["01_opp.nii", "co-registered"]),
]


@pytest.mark.parametrize("builder,fragments", [c[1:] for c in OTHER_CASES], ids=[c[0] for c in OTHER_CASES])
def test_broken_other_formats(tmp_path, shared_data, builder, fragments):
    path = builder(tmp_path, shared_data)
    assert detect_format(path) is not None
    assert napari_get_reader(str(path)) is not None
    with pytest.raises(ValueError) as ei:
        load_case(path)
    msg = str(ei.value)
    for frag in fragments:
        assert frag in msg, f"{frag!r} not in {msg!r}"


def test_not_claimed(tmp_path, shared_data):
    """Files and folders that are not ours: None, without raising."""
    (tmp_path / "notes.txt").write_text("hello")
    _npz(tmp_path / "other.npz", {"weights": np.zeros(3)})
    (tmp_path / "fake.h5").write_bytes(b"not hdf5 at all")
    _h5(tmp_path, other=np.zeros(3))
    shutil.copy(shared_data / "sammed2d_demo/data_demo/images/amos_0004_75.png", tmp_path / "amos_0004_75.png")
    (tmp_path / "0001.im").write_bytes(b"x")
    (tmp_path / "empty").mkdir()
    (tmp_path / "meta.json").write_text(json.dumps({}))
    for p in ["notes.txt", "other.npz", "fake.h5", "scan.h5", "amos_0004_75.png", "0001.im", "empty", "meta.json",
              "does_not_exist.npz"]:
        assert detect_format(tmp_path / p) is None, p
        assert napari_get_reader(str(tmp_path / p)) is None, p
    assert napari_get_reader(None) is None
    assert napari_get_reader([str(tmp_path / "notes.txt"), str(tmp_path / "other.npz")]) is None
    with pytest.raises(FileNotFoundError):
        load_case(tmp_path / "does_not_exist.npz")
    with pytest.raises(ValueError, match="not a supported case"):
        load_case(tmp_path / "notes.txt")


def test_number_of_distinct_broken_inputs():
    assert len(NPZ_CASES) + len(OTHER_CASES) >= 15
