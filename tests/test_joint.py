"""The click contract of the default ``classic`` backend and of ``joint`` on a real crop (CT_AMOS spleen + left kidney).

A step goes through :func:`~napari_medsegfm.tasks.predict.predict_case`, as ``medsegfm
predict`` and ``evaluate`` run it, with the challenge's members (``prev_pred``, ``clicks``,
``clicks_order``, ``boxes``). The previous labels are the ground truth with one error made
on purpose, so every change the click causes can be checked against it.
"""

from __future__ import annotations

import numpy as np
import pytest
from _eval_cases import amos_crop
from scipy import ndimage

from napari_medsegfm.backends.joint import JointClassicBackend, box_volume, newest_edit
from napari_medsegfm.backends.registry import get_backend
from napari_medsegfm.tasks.clicks import empty_clicks, simulate_clicks
from napari_medsegfm.tasks.evaluation import _as_saved, _clicks_array, synthesize_boxes
from napari_medsegfm.tasks.predict import predict_case
from napari_medsegfm.types import Box3D, Point, Volume


@pytest.fixture(params=["classic", "joint"])
def backend_name(request):
    """The default backend (classic) and the joint one: both must keep the click contract."""
    return request.param


@pytest.fixture(scope="module")
def crop(shared_data):
    imgs, gts, spacing = amos_crop(str(shared_data))
    boxes = synthesize_boxes(gts, [1, 2], seed=3)
    return imgs, gts, spacing, boxes


def _step(backend, imgs, gts, spacing, boxes, prev):
    """One click step from ``prev``: the protocol's click(s), then predict_case."""
    clicks, order = empty_clicks(2)
    added = simulate_clicks(gts, prev, clicks, order, [1, 2])
    inputs = {"imgs": imgs, "spacing": spacing, "boxes": boxes, "prev_pred": prev,
              "clicks": _clicks_array(clicks), "clicks_order": _as_saved([list(o) for o in order])}
    return predict_case(inputs, backend), added


def _spleen_chunk(gts: np.ndarray) -> np.ndarray:
    """The spleen's voxels in a slab of 5 slices x 24 rows at one side of its middle."""
    spleen = gts == 1
    zs, ys, _ = np.nonzero(spleen)
    zc, yc = int(np.median(zs)), int(np.percentile(ys, 85))
    chunk = np.zeros_like(spleen)
    chunk[zc - 2:zc + 3, yc - 12:yc + 12, :] = True
    return chunk & spleen


def _distance_mm(mask: np.ndarray, point: tuple[int, ...], spacing_zyx) -> np.ndarray:
    """Distance (mm) of each True voxel of ``mask`` to ``point``."""
    idx = np.argwhere(mask)
    return np.sqrt((((idx - np.asarray(point)) * np.asarray(spacing_zyx)) ** 2).sum(axis=1))


def test_positive_click_adds_the_missed_part_and_nothing_far_away_changes(crop, backend_name):
    imgs, gts, spacing, boxes = crop
    sp = tuple(float(s) for s in spacing[::-1])
    spleen = gts == 1
    missed = _spleen_chunk(gts)  # a missed part of the spleen
    prev = gts.copy()
    prev[missed] = 0
    be = get_backend(backend_name, device="cpu")
    new, added = _step(be, imgs, gts, spacing, boxes, prev)
    click = added[0]
    assert click is not None and click.kind == "fg" and missed[click.position]
    assert added[1] is None  # the kidney had no error: no click, so it must stay exactly as it was
    gained = (new == 1) & (prev != 1)
    assert new[click.position] == 1
    assert np.count_nonzero(gained & missed) >= 0.15 * np.count_nonzero(missed)  # adds voxels there (a click grows a region, not a dot)
    assert np.array_equal(new == 2, gts == 2)  # the other object is untouched
    changed = new != prev
    assert _distance_mm(changed, click.position, sp).max() <= 2.5 * be.click_radius_max_mm
    # the correction is a correction: more of it is right than wrong
    assert np.count_nonzero(gained & spleen) > np.count_nonzero(gained & ~spleen)


def test_negative_click_removes_the_wrong_component_only(crop, backend_name):
    imgs, gts, spacing, boxes = crop
    kidney = gts == 2
    # a wrong separate component of the spleen label: a blob of background beside the kidney
    dist = ndimage.distance_transform_edt(gts == 0)
    zs, ys, xs = np.nonzero(kidney)
    z = int(np.median(zs))
    cand = np.argwhere((dist > 6) & (np.arange(gts.shape[0])[:, None, None] == z))
    yx = cand[np.argmin(np.abs(cand[:, 1] - np.median(ys)) + np.abs(cand[:, 2] - np.median(xs)))]
    blob = np.zeros_like(kidney)
    blob[z - 1:z + 2, yx[1] - 4:yx[1] + 5, yx[2] - 4:yx[2] + 5] = True
    blob &= gts == 0
    prev = gts.copy()
    prev[blob] = 1
    be = get_backend(backend_name, device="cpu")
    new, added = _step(be, imgs, gts, spacing, boxes, prev)
    click = added[0]
    assert click is not None and click.kind == "bg" and blob[click.position]
    assert not np.any((new == 1) & blob)  # the wrong component is gone
    assert np.array_equal(new == 1, gts == 1)  # and the spleen itself is as it was
    assert np.array_equal(new == 2, gts == 2)


def test_positive_click_inside_another_objects_wrong_voxels_sticks(crop, backend_name):
    """A part of the spleen wrongly labelled as the kidney: the spleen's click takes it back,
    and the kidney keeps its own voxels away from that part."""
    imgs, gts, spacing, boxes = crop
    wrong = _spleen_chunk(gts)
    prev = gts.copy()
    prev[wrong] = 2
    be = get_backend(backend_name, device="cpu")
    new, added = _step(be, imgs, gts, spacing, boxes, prev)
    assert added[0] is not None and added[0].kind == "fg" and wrong[added[0].position]
    assert np.count_nonzero((new == 1) & wrong) >= 0.15 * np.count_nonzero(wrong)
    kidney_far = (gts == 2) & (ndimage.distance_transform_edt(~wrong) > 10)
    assert np.all(new[kidney_far] == 2)


def test_predict_case_hands_the_whole_step_to_predict_labels():
    calls = {"labels": 0, "predict": 0}

    class Fake:
        name = "fake"
        from napari_medsegfm.types import Capability

        capabilities = Capability.BOX3D | Capability.POINTS

        def set_image(self, volume):
            self.vol = volume

        def predict(self, prompts, prev_mask, cancel=None):  # pragma: no cover - must not be called
            calls["predict"] += 1
            raise AssertionError("predict must not be called when predict_labels exists")

        def predict_labels(self, objects, prev, cancel=None):
            calls["labels"] += 1
            out = np.zeros(self.vol.spatial_shape, np.uint8)
            for lab in objects:
                out[0, 0, lab] = lab
            return out

        def reset(self):
            pass

    boxes = np.empty(2, dtype=object)
    boxes[0] = {"z_min": 0, "z_max": 1, "z_mid": 0, "z_mid_x_min": 0, "z_mid_y_min": 0, "z_mid_x_max": 3, "z_mid_y_max": 3}
    boxes[1] = {"z_min": 0, "z_max": 1, "z_mid": 0, "z_mid_x_min": 2, "z_mid_y_min": 2, "z_mid_x_max": 5, "z_mid_y_max": 5}
    segs = predict_case({"imgs": np.zeros((2, 8, 8), np.uint8), "spacing": np.ones(3), "boxes": boxes}, Fake())
    assert calls == {"labels": 1, "predict": 0}
    assert segs[0, 0, 1] == 1 and segs[0, 0, 2] == 2 and segs.dtype == np.uint8


def test_box_step_writes_nested_boxes_on_top(crop):
    """The object whose box lies inside another's is written last (a core inside its oedema)."""
    imgs, gts, spacing, _ = crop
    be = JointClassicBackend()
    be.set_image(Volume(imgs, spacing=tuple(float(s) for s in spacing[::-1])))
    z0, z1 = 4, 10
    outer = Box3D(z0, z1, 5, 5, imgs.shape[1] - 6, imgs.shape[2] - 6, object_id=1)
    spleen = np.argwhere(gts == 1)
    lo, hi = spleen.min(axis=0), spleen.max(axis=0)
    inner = Box3D(z0, z1, int(lo[1]), int(lo[2]), int(hi[1]), int(hi[2]), object_id=2)
    assert box_volume([outer]) > box_volume([inner])
    labels = be.predict_labels({1: [outer], 2: [inner]}, None)
    m_inner = be.predict([inner], None)
    assert np.all(labels[m_inner] == 2)


def test_newest_edit():
    b = Box3D(0, 1, 0, 0, 3, 3, object_id=1)
    p1, p2 = Point((0, 1, 1), True, object_id=1), Point((1, 2, 2), False, object_id=1)
    assert newest_edit([b]) is None and newest_edit([b, p1, p2]) is p2
