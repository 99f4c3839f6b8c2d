"""tasks.clicks: the CVPR 2025 click simulation."""

from __future__ import annotations

import cc3d
import numpy as np
import pytest
from _eval_cases import amos_crop
from scipy import ndimage

from napari_medsegfm.tasks.clicks import empty_clicks, simulate_click, simulate_clicks


def _reference_click(gt, seg, label):
    """The challenge's procedure on the whole volume (no ROI), for comparison."""
    err = ((seg == label) != (gt == label)).astype(np.uint8)
    if not err.any():
        return None
    lab = cc3d.connected_components(err, connectivity=26 if err.ndim == 3 else 8)
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    comp = lab == np.argmax(sizes)
    coords = np.argwhere(comp)
    lo, hi = coords.min(0), coords.max(0) + 1
    shape = hi - lo
    pad = np.maximum((shape * 0.25).astype(int), 1)
    crop = np.zeros(shape + 2 * pad, np.uint8)
    crop[tuple(slice(p, p + s) for p, s in zip(pad, shape))] = comp[tuple(slice(a, b) for a, b in zip(lo, hi))]
    edt = ndimage.distance_transform_edt(crop)[tuple(slice(p, p + s) for p, s in zip(pad, shape))]
    full = np.zeros(gt.shape)
    full[tuple(slice(a, b) for a, b in zip(lo, hi))] = edt
    cand = np.argwhere(full == full.max())
    c = tuple(int(v) for v in cand[np.random.RandomState(42).choice(len(cand))])
    return c, ("fg" if gt[c] == label else "bg")


def test_foreground_click_at_center_of_largest_missed_region():
    gt = np.zeros((20, 30, 30), np.uint8)
    gt[2:18, 2:28, 2:28] = 1
    seg = gt.copy()
    seg[5:12, 5:12, 5:12] = 0  # missed 7^3 block (largest error)
    seg[15:17, 20:22, 20:22] = 0  # small missed block
    c = simulate_click(gt, seg, 1)
    assert c is not None and c.kind == "fg"
    assert c.position == (8, 8, 8)
    assert c.component_size == 343


def test_background_click_on_largest_false_positive():
    gt = np.zeros((16, 40, 40), np.uint8)
    gt[4:12, 4:14, 4:14] = 1
    seg = gt.copy()
    seg[4:12, 25:35, 25:35] = 1  # large false positive
    seg[4:6, 15:17, 15:17] = 1  # small one, touching nothing
    c = simulate_click(gt, seg, 1)
    assert c.kind == "bg"
    assert 4 <= c.position[0] < 12 and 25 <= c.position[1] < 35 and 25 <= c.position[2] < 35
    assert seg[c.position] == 1 and gt[c.position] == 0


def test_perfect_prediction_gets_no_click_and_boxless_first_click_is_edt_max_of_largest_component():
    gt = np.zeros((12, 30, 30), np.uint8)
    gt[1:10, 1:10, 1:10] = 2  # large component of class 2 (a 9^3 cube: one centre)
    gt[2:5, 20:23, 20:23] = 2  # small one
    assert simulate_click(gt, gt, 2) is None
    c = simulate_click(gt, np.zeros_like(gt), 2)
    assert c.kind == "fg"
    assert c.position == (5, 5, 5)


def test_roi_computation_equals_whole_volume_reference(shared_data):
    """On a real crop with a box-filled prediction: same clicks as the challenge's procedure."""
    imgs, gts, _ = amos_crop(str(shared_data))
    seg = np.zeros_like(gts)
    for lab in (1, 2):
        zz, yy, xx = np.nonzero(gts == lab)
        zm = int(np.median(zz))
        ys, xs = np.nonzero(gts[zm] == lab)
        seg[zz.min():zz.max() + 1, ys.min():ys.max() + 1, xs.min():xs.max() + 1] = lab
    for lab in (1, 2):
        ref = _reference_click(gts, seg, lab)
        c = simulate_click(gts, seg, lab)
        assert (c.position, c.kind) == ref
    # 2D too
    ref = _reference_click(gts[8], seg[8], 1)
    c = simulate_click(gts[8], seg[8], 1)
    assert (c.position, c.kind) == ref


def test_simulate_clicks_accumulates_per_class_in_order():
    gt = np.zeros((10, 20, 20), np.uint8)
    gt[1:9, 1:9, 1:9] = 1
    gt[1:9, 11:19, 11:19] = 2
    seg = gt.copy()
    seg[gt == 2] = 0
    clicks, order = empty_clicks(2)
    added = simulate_clicks(gt, seg, clicks, order)
    assert added[0] is None and added[1].kind == "fg"
    assert clicks[0] == {"fg": [], "bg": []} and order[0] == []
    assert order[1] == ["fg"] and len(clicks[1]["fg"]) == 1
    seg2 = gt.copy()
    seg2[0:10, 0:10, 10] = 1  # a false-positive wall for class 1
    simulate_clicks(gt, seg2, clicks, order)
    assert order[0] == ["bg"]
    with pytest.raises(ValueError, match="classes"):
        simulate_clicks(gt, seg, clicks[:1], order)
