"""The one CVPR npz parser (io.cvpr.read_cvpr_members): 2D RGB vs 3D from all the evidence,
the box out-of-bounds policy in every entry point, hostile members."""

from __future__ import annotations

import io
import logging
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

from napari_medsegfm.cli import main as cli_main
from napari_medsegfm.io import load_case, save_labels
from napari_medsegfm.io.cvpr import click_prompts, read_cvpr_members
from napari_medsegfm.tasks.predict import predict_case
from napari_medsegfm.types import Box2D, Box3D

HEART = "2DBox_MR_BiomedParse08_heart"


def _obj(*items) -> np.ndarray:
    a = np.empty(len(items), dtype=object)
    for i, x in enumerate(items):
        a[i] = x
    return a


def _npy(arr) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asanyarray(arr), allow_pickle=True)
    return buf.getvalue()


def _npz(path: Path, members: dict) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for k, v in members.items():
            zf.writestr(f"{k}.npy", v if isinstance(v, bytes) else _npy(v))
    return path


def _box(z0=1, z1=3, zm=2, y0=1, x0=2, y1=5, x1=9):
    return {"z_min": z0, "z_max": z1, "z_mid": zm, "z_mid_x_min": x0, "z_mid_y_min": y0, "z_mid_x_max": x1,
            "z_mid_y_max": y1}


# ------------------------------------------------------------------ 2D RGB or 3D volume
RGB = np.zeros((20, 30, 3), np.uint8)
SP3 = np.array([1.0, 1.0, 1.0])


@pytest.mark.parametrize("members,rgb", [
    ({"imgs": RGB}, True),  # CVPR24 2D layout
    ({"imgs": RGB, "spacing": SP3}, True),  # a placeholder spacing alone does not make it 3D
    ({"imgs": RGB, "spacing": SP3, "gts": np.zeros((20, 30), np.uint8)}, True),
    ({"imgs": RGB, "spacing": SP3, "boxes": np.array([[2, 3, 10, 12]])}, True),
    ({"imgs": RGB, "spacing": SP3, "clicks": _obj({"fg": [[4, 5]], "bg": []})}, True),
    ({"imgs": RGB, "spacing": SP3, "gts": np.zeros((20, 30, 3), np.uint8)}, False),
    ({"imgs": RGB, "spacing": SP3, "boxes": np.array([[2, 3, 0, 10, 12, 2]])}, False),
    ({"imgs": RGB, "spacing": SP3, "boxes": _obj(_box(z0=0, z1=2, zm=1, x0=0, x1=2))}, False),
    ({"imgs": RGB, "spacing": SP3, "prev_pred": np.zeros((20, 30, 3), np.uint8)}, False),
    ({"imgs": RGB.astype(np.float32)}, True),
    ({"imgs": RGB.astype(np.float32), "spacing": SP3, "segs": np.zeros((20, 30), np.uint8)}, True),
    ({"imgs": np.zeros((20, 30, 4), np.uint8), "spacing": SP3, "gts": np.zeros((20, 30, 4), np.uint8)}, False),
], ids=["no_spacing", "placeholder_spacing", "gts_2d", "boxes_n4", "clicks_2d", "gts_3d", "boxes_n6",
        "boxes_dicts", "prev_pred_3d", "float_no_spacing", "float_segs_2d", "width4_gts_3d"])
def test_2d_rgb_or_3d_from_the_evidence(members, rgb):
    case = read_cvpr_members(members, "case.npz")
    assert case.image.is_rgb is rgb
    assert case.image.spatial_shape == ((20, 30) if rgb else members["imgs"].shape)
    for k in ("gts", "segs", "prev_pred"):
        if k in members:
            assert case.labels[k].shape == case.image.spatial_shape


def test_ambiguous_or_contradicting_files_say_how_to_disambiguate():
    with pytest.raises(ValueError) as ei:
        read_cvpr_members({"imgs": RGB.astype(np.float32), "spacing": SP3}, "amb.npz")
    msg = str(ei.value)
    for frag in ("amb.npz", "(20, 30, 3)", "3 values", "To read it as 2D RGB", "'gts' of shape (20, 30)",
                 "as 3D, add 'gts' of shape (20, 30, 3)"):
        assert frag in msg, msg
    with pytest.raises(ValueError) as ei:
        read_cvpr_members({"imgs": RGB, "gts": np.zeros((20, 30), np.uint8),
                           "boxes": np.array([[2, 3, 0, 10, 12, 2]])}, "both.npz")
    msg = str(ei.value)
    assert "both.npz" in msg and "contradicts" in msg and "'gts' (20, 30) says 2D" in msg and "says 3D" in msg


@pytest.fixture
def rgb_case_files(shared_data, tmp_path):
    """The real CVPR24 2D heart case as CVPR-style files: with/without a placeholder 3-value
    spacing and with/without the ground truth inside the file (taken from its gts/ file)."""
    with np.load(shared_data / "cvpr24" / "imgs" / f"{HEART}.npz") as z:
        imgs, boxes = z["imgs"], z["boxes"]
    with np.load(shared_data / "cvpr24" / "gts" / f"{HEART}.npz") as z:
        gts = z["gts"]
    out = {}
    for spacing in (True, False):
        for in_gts in (True, False):
            m = {"imgs": imgs, "boxes": boxes}
            if spacing:
                m["spacing"] = np.array([1.0, 1.0, 1.0])
            if in_gts:
                m["gts"] = gts
            name = f"{HEART}{'_sp' if spacing else ''}{'_gts' if in_gts else ''}.npz"
            np.savez(tmp_path / name, **m)
            out[(spacing, in_gts)] = tmp_path / name
    return out, imgs, gts, boxes


@pytest.mark.parametrize("spacing,in_gts", [(True, True), (True, False), (False, True), (False, False)])
def test_real_2d_rgb_file_opens_predicts_evaluates_and_saves(rgb_case_files, tmp_path, capsys, spacing, in_gts):
    files, imgs, gts, boxes = rgb_case_files
    path = files[(spacing, in_gts)]
    case = load_case(path)
    assert case.image.is_rgb and case.image.spatial_shape == (1024, 1024)
    assert case.boxes == [Box2D(int(b[1]), int(b[0]), int(b[3]), int(b[2]), object_id=i + 1) for i, b in enumerate(boxes)]
    if in_gts:
        np.testing.assert_array_equal(case.labels["gts"], gts)
    # medsegfm predict: exit 0, segs of the image's spatial shape with the 3 objects
    out = tmp_path / "pred.npz"
    assert cli_main(["predict", "-i", str(path), "-o", str(out), "--backend", "classic", "--no-progress"]) == 0
    with np.load(out) as z:
        segs = z["segs"]
    assert segs.shape == (1024, 1024) and set(np.unique(segs)) == {0, 1, 2, 3}
    assert "1 of 1 file(s)" in capsys.readouterr().err
    if in_gts:  # medsegfm evaluate scores it (no failed case)
        assert cli_main(["evaluate", "--cases", str(path), "--backend", "classic", "--clicks", "1", "--json",
                         "--no-progress"]) == 0
        res = capsys.readouterr()
        assert '"error": ""' in res.out and "1 of 1 case(s)" in res.err
    # saving into the case's own file and reading it back
    save_labels(segs, path, case=case)
    again = load_case(path)
    assert again.image.is_rgb
    np.testing.assert_array_equal(again.labels["segs"], segs)
    # and without the Case (the writer decides the layout from the file alone)
    save_labels(segs[::-1].copy(), path)
    np.testing.assert_array_equal(load_case(path).labels["segs"], segs[::-1])


# ------------------------------------------------------------------ box out-of-bounds policy
IMG3 = np.zeros((5, 7, 11), np.uint8)
SP = np.array([0.5, 0.7, 2.0])


def _partial_and_outside(tmp_path):
    part = _npz(tmp_path / "part.npz", {"imgs": IMG3, "spacing": SP,
                                        "boxes": _obj(_box(y1=9, x0=-2, zm=7, z1=6))})
    out = _npz(tmp_path / "outside.npz", {"imgs": IMG3, "spacing": SP,
                                          "boxes": _obj(_box(), _box(x0=11, x1=15))})
    return part, out


EXPECTED_CLIPPED = Box3D(z_min=1, z_max=4, y_min=1, x_min=0, y_max=6, x_max=9, object_id=1, z_mid=4)


def test_box_policy_reader(tmp_path, caplog):
    part, outside = _partial_and_outside(tmp_path)
    with caplog.at_level(logging.WARNING, logger="napari_medsegfm.io.cvpr"):
        case = load_case(part)
    assert case.boxes == [EXPECTED_CLIPPED]
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert str(part) in warned and "'boxes'[0].z_mid_y_max 9 -> 6" in warned and "z_mid_x_min -2 -> 0" in warned
    assert "'boxes'[0].z_max 6 -> 4" in case.meta["clipped_boxes"]
    with pytest.raises(ValueError) as ei:
        load_case(outside)
    msg = str(ei.value)
    assert str(outside) in msg and "'boxes'[1] lies outside the image" in msg and "axis 2 has size 11" in msg


def test_box_policy_predict_cli_and_batch(tmp_path, capsys):
    part, outside = _partial_and_outside(tmp_path)
    seen = []

    class Spy:
        from napari_medsegfm.types import Capability

        name, capabilities = "spy", Capability.BOX3D

        def set_image(self, volume):
            self.shape = volume.spatial_shape

        def predict(self, prompts, prev, cancel):
            seen.append(list(prompts))
            return np.ones(self.shape, bool)

    # predict_case (what medsegfm predict and evaluate run) reads the same box as the reader
    predict_case(dict(np.load(part, allow_pickle=True)), Spy(), source=part)
    assert seen[-1] == [EXPECTED_CLIPPED]
    assert cli_main(["predict", "-i", str(part), "-o", str(tmp_path / "p.npz"), "--backend", "boxfill",
                     "--no-progress"]) == 0
    assert cli_main(["predict", "-i", str(outside), "-o", str(tmp_path / "o.npz"), "--backend", "boxfill",
                     "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "outside.npz" in err and "'boxes'[1] lies outside the image" in err
    # medsegfm batch: the clipped box is segmented, the wholly outside one is a recorded failure
    from napari_medsegfm.dataset.batch import read_segs, run_batch

    ds = tmp_path / "ds"
    ds.mkdir()
    for p in (part, outside):
        (ds / p.name).write_bytes(p.read_bytes())
    rep = run_batch(ds, "boxfill", tmp_path / "batch", scheduler="sync", progress=False)
    assert rep.failed == ["outside"], rep.records
    assert "lies outside the image" in rep.records["outside"]["error"]
    segs = read_segs(tmp_path / "batch" / rep.records["part"]["output"])
    assert segs[1:5, 1:7, 0:10].all() and segs.sum() == 4 * 6 * 10  # exactly the clipped box


# ------------------------------------------------------------------ hostile members
def _deep_pickled(depth: int, wrap) -> bytes:
    """An npy member whose pickle holds ``wrap(<a list nested depth levels>)`` (built by the
    unpickler without recursion, as a hostile file can)."""
    marker = "DEEP_PLACEHOLDER"
    arr = np.empty(1, dtype=object)
    arr[0] = wrap(marker)
    data = _npy(arr)
    needle = next(n for n in (b"\x8c" + bytes([len(marker)]) + marker.encode(),  # SHORT_BINUNICODE
                              b"X" + struct.pack("<I", len(marker)) + marker.encode()) if n in data)
    assert data.count(needle) == 1
    return data.replace(needle, b"]" * depth + b"a" * (depth - 1))


HOSTILE = [
    ("box_inf", {"boxes": _obj({**_box(), "z_mid_x_max": float("inf")})}, ["'boxes'[0].z_mid_x_max", "inf", "not finite"]),
    ("box_nan_array", {"boxes": np.array([[1.0, 2.0, 0.0, np.nan, 4.0, 2.0]])}, ["'boxes'[0].x_max", "nan"]),
    ("box_fraction", {"boxes": _obj({**_box(), "z_min": 1.5})}, ["'boxes'[0].z_min", "1.5", "whole number"]),
    ("box_string", {"boxes": _obj({**_box(), "z_max": "3"})}, ["'boxes'[0].z_max", "'3'", "not an integer"]),
    ("box_huge", {"boxes": _obj({**_box(), "z_mid_x_max": 10**400})}, ["'boxes'[0].z_mid_x_max", "bits", "out of range"]),
    ("box_list_value", {"boxes": _obj({**_box(), "z_min": [[1, 2], [3]]})}, ["'boxes'[0].z_min", "[[1, 2], [3]]"]),
    ("boxes_not_dicts", {"boxes": _obj("a", "b")}, ["'boxes'[0]", "str", "expected a dict"]),
    ("boxes_scalar", {"boxes": np.array(7, dtype=object)}, ["'boxes'", "expected a list of dicts"]),
    ("click_inf", {"clicks": _obj({"fg": [[1, float("-inf"), 3]], "bg": []})}, ["'clicks'[0]['fg'][0][1]", "-inf"]),
    ("click_nan_array", {"clicks": _obj({"fg": np.array([[1.0, np.nan, 3.0]]), "bg": []})},
     ["'clicks'[0]['fg'][0][1]", "nan"]),
    ("click_not_list", {"clicks": _obj({"fg": 5, "bg": []})}, ["'clicks'[0]['fg']", "int", "expected a list"]),
    ("click_too_deep", {"clicks": _obj({"fg": [[[1, 2, 3]]], "bg": []})}, ["'clicks'[0]['fg'][0]", "1 values"]),
    ("click_wrong_len", {"clicks": _obj({"fg": [[1, 2, 3, 4]], "bg": []})}, ["'clicks'[0]['fg'][0]", "4 values"]),
    ("click_string_coord", {"clicks": _obj({"fg": [["1", "2", "3"]], "bg": []})}, ["'clicks'[0]['fg'][0][0]", "'1'"]),
    ("clicks_entry_str", {"clicks": _obj("fg")}, ["'clicks'[0]", "str", "expected {'fg'"]),
    ("clicks_scalar", {"clicks": np.array(3.5)}, ["'clicks'", "expected a list"]),
    ("clicks_order_bad", {"clicks": _obj({"fg": [[1, 2, 3]], "bg": []}), "clicks_order": _obj(["fg", 7])},
     ["'clicks_order'[0][1] = 7", "expected 'fg' or 'bg'"]),
    ("clicks_order_dict", {"clicks_order": _obj({"a": 1})}, ["'clicks_order'[0]", "dict"]),
    ("instance_inf", {"text_prompts": np.array({"1": "liver", "instance_label": float("inf")}, dtype=object)},
     ["'text_prompts'['instance_label']", "inf", "expected 0 or 1"]),
    ("text_value_list", {"text_prompts": np.array({"1": ["liver"] * 1000}, dtype=object)},
     ["'text_prompts'['1']", "list", "expected a string", "..."]),
]


@pytest.mark.parametrize("extra,fragments", [h[1:] for h in HOSTILE], ids=[h[0] for h in HOSTILE])
def test_hostile_members_give_a_clear_value_error(tmp_path, extra, fragments):
    members = {"imgs": IMG3, "spacing": SP, **extra}
    path = _npz(tmp_path / "hostile.npz", members)
    for call in (lambda: read_cvpr_members(members, path), lambda: load_case(path)):
        with pytest.raises(ValueError) as ei:
            call()
        msg = str(ei.value)
        assert str(path) in msg, msg
        for frag in fragments:
            assert frag in msg, f"{frag!r} not in {msg!r}"
        assert len(msg) < 800, msg  # bounded: never the repr of a whole object


@pytest.mark.parametrize("member,wrap,fragments", [
    ("clicks", lambda m: {"fg": m, "bg": []}, ["'clicks'[0]['fg'][0]", "1 values"]),
    ("clicks", lambda m: m, ["'clicks'[0]", "list", "expected {'fg'"]),
    ("boxes", lambda m: m, ["'boxes'[0]", "list", "expected a dict"]),
    ("clicks_order", lambda m: m, ["'clicks_order'[0][0]", "expected 'fg' or 'bg'"]),
])
def test_deeply_nested_pickles_never_recurse(tmp_path, member, wrap, fragments):
    members = {"imgs": _npy(IMG3), "spacing": _npy(SP), member: _deep_pickled(5_000, wrap)}
    path = _npz(tmp_path / "deep.npz", members)
    with pytest.raises(ValueError) as ei:
        load_case(path)
    msg = str(ei.value)
    assert str(path) in msg and f"'{member}'" in msg and len(msg) < 800, msg
    # refused by the bounded unpickler (depth limit) or, below that limit, by the parser
    assert "deeper than" in msg or all(frag in msg for frag in fragments), msg
    assert cli_main(["predict", "-i", str(path), "-o", str(tmp_path / "o.npz"), "--backend", "boxfill",
                     "--no-progress"]) == 2


def test_clicks_none_entries_keep_their_label_and_order_is_honoured():
    case = read_cvpr_members({"imgs": IMG3, "spacing": SP, "clicks": _obj(None, {"fg": [[1, 2, 3]], "bg": [[2, 2, 2]]}),
                              "clicks_order": np.array([[], ["bg", "fg"]], dtype=object)}, "c.npz")
    pts = click_prompts(case)
    assert list(pts) == [2] and [(p.zyx, p.positive) for p in pts[2]] == [((2, 2, 2), False), ((1, 2, 3), True)]
