"""The weight-free ``classic`` backend on crops of real cases."""

from __future__ import annotations

import numpy as np
import pytest
from _eval_cases import amos_crop

from napari_medsegfm.backends.boxfill import BoxFillBackend
from napari_medsegfm.backends.classic import ClassicBackend, graph_cut
from napari_medsegfm.io.cvpr import parse_boxes
from napari_medsegfm.tasks.clicks import simulate_click
from napari_medsegfm.tasks.evaluation import synthesize_boxes
from napari_medsegfm.tasks.metrics import dsc
from napari_medsegfm.types import Box2D, Cancelled, CancelToken, Point, Scribble, Volume


@pytest.fixture(scope="module")
def crop(shared_data):
    imgs, gts, spacing = amos_crop(str(shared_data))
    vol = Volume(imgs, spacing=tuple(float(s) for s in spacing[::-1]))
    boxes = parse_boxes(synthesize_boxes(gts, [1, 2], seed=3), gts.shape)
    return vol, gts, boxes


def test_graph_cut_separates_two_flat_regions():
    img = np.zeros((20, 20), np.float32)
    img[:, 10:] = 200
    cost_fg = np.where(img > 100, 0.2, 2.0).astype(np.float32)
    cost_bg = np.where(img > 100, 2.0, 0.2).astype(np.float32)
    m = graph_cut(img, cost_fg, cost_bg, (1.0, 1.0), lam=1.0)
    assert m[:, 10:].all() and not m[:, :10].any()
    hard = np.zeros_like(m)
    hard[5, 2] = True
    m2 = graph_cut(img, cost_fg, cost_bg, (1.0, 1.0), lam=1.0, hard_fg=hard)
    assert m2[5, 2]


def test_box_beats_box_filling_and_stays_in_the_box_z_range(crop):
    vol, gts, boxes = crop
    b = ClassicBackend()
    b.set_image(vol)
    fill = BoxFillBackend()
    fill.set_image(vol)
    for box in boxes:
        gt = gts == box.object_id
        m = b.predict([box], None, CancelToken())
        assert m.dtype == bool and m.shape == gts.shape
        d_classic = dsc(gt, m)
        d_fill = dsc(gt, fill.predict([box], None, CancelToken()))
        assert d_classic > 0.8, (box, d_classic)
        assert d_classic > d_fill + 0.15, (box, d_classic, d_fill)
        assert not m[: box.z_min].any() and not m[box.z_max + 1:].any()


def test_deterministic(crop):
    vol, gts, boxes = crop
    b = ClassicBackend()
    b.set_image(vol)
    m1 = b.predict([boxes[0]], None, CancelToken())
    c = simulate_click(gts, m1.astype(np.uint8), 1)
    p = Point(c.position, c.kind == "fg", object_id=1)
    r1 = b.predict([boxes[0], p], m1, CancelToken())
    b2 = ClassicBackend()
    b2.set_image(Volume(vol.array.copy(), spacing=vol.spacing))
    assert np.array_equal(b2.predict([boxes[0]], None, CancelToken()), m1)
    assert np.array_equal(b2.predict([boxes[0], p], m1, CancelToken()), r1)


def test_clicks_fix_the_errors_they_mark(crop):
    """Five simulated clicks on a deliberately bad start: the DSC goes up and each click's voxel is fixed."""
    vol, gts, boxes = crop
    gt = gts == 1
    b = ClassicBackend()
    b.set_image(vol)
    mask = gt.copy()
    mask[:, :, : int(np.nonzero(gt)[2].mean())] = False  # half the spleen missing
    mask[4:9, 10:40, 10:40] = True  # and a false-positive block
    start = dsc(gt, mask)
    prompts: list = [boxes[0]]
    for _ in range(5):
        c = simulate_click(gt.astype(np.uint8), mask.astype(np.uint8), 1)
        p = Point(c.position, c.kind == "fg", object_id=1)
        prompts.append(p)
        new = b.predict(prompts, mask, CancelToken())
        assert new[c.position] == p.positive
        mask = new
    assert dsc(gt, mask) > start + 0.08


def test_negative_click_removes_a_false_positive_blob(crop):
    vol, gts, boxes = crop
    gt = gts == 2
    mask = gt.copy()
    blob = np.zeros_like(mask)
    blob[2:6, 150:175, 20:45] = True
    mask |= blob
    b = ClassicBackend()
    b.set_image(vol)
    c = simulate_click(gt.astype(np.uint8), mask.astype(np.uint8), 1)
    assert c.kind == "bg" and blob[c.position]
    new = b.predict([boxes[1], Point(c.position, False, object_id=2)], mask, CancelToken())
    assert np.count_nonzero(new & blob) < 0.5 * np.count_nonzero(blob)
    assert dsc(gt, new) > dsc(gt, mask)


def test_first_click_without_mask_and_scribbles(crop):
    vol, gts, _ = crop
    gt = gts == 1
    c = simulate_click(gts, np.zeros_like(gts), 1)  # the box-less protocol's first click
    b = ClassicBackend()
    b.set_image(vol)
    m = b.predict([Point(c.position, True, object_id=1)], None, CancelToken())
    # a conservative blob around the click, inside the organ
    assert m[c.position] and np.count_nonzero(m) > 500
    assert np.count_nonzero(m & gt) > 0.9 * np.count_nonzero(m)
    z = c.position[0]
    ys, xs = np.nonzero(gt[z])
    stroke = np.stack([np.full(5, z), ys[:5], xs[:5]], axis=1)
    m2 = b.predict([Point(c.position, True, object_id=1), Scribble(stroke, True, object_id=1)], m, CancelToken())
    assert m2[tuple(stroke.T)].all()


def test_2d_rgb_box(shared_data):
    from napari_medsegfm.io import safe_load_npz

    d = safe_load_npz(shared_data / "cvpr24" / "imgs" / "2DBox_MR_BiomedParse08_heart.npz")
    g = safe_load_npz(shared_data / "cvpr24" / "gts" / "2DBox_MR_BiomedParse08_heart.npz")["gts"]
    b = ClassicBackend()
    b.set_image(Volume.rgb(d["imgs"]))
    x0, y0, x1, y1 = (int(v) for v in d["boxes"][0])
    m = b.predict([Box2D(y0, x0, y1, x1, object_id=1)], None, CancelToken())
    assert m.shape == g.shape
    assert dsc(g == 1, m) > 0.85


def test_cancel_is_honoured(crop):
    vol, _, boxes = crop
    b = ClassicBackend()
    b.set_image(vol)
    tok = CancelToken()
    tok.cancel("user")
    with pytest.raises(Cancelled):
        b.predict([boxes[0]], None, tok)
    with pytest.raises(RuntimeError, match="set_image"):
        ClassicBackend().predict([boxes[0]], None, CancelToken())
