"""tasks.predict: the challenge-compatible step (parsing, merge order, clicks, errors)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medsegfm.backends.base import UnsupportedPromptError
from napari_medsegfm.backends.boxfill import BoxFillBackend
from napari_medsegfm.io.cvpr import click_prompts, parse_boxes, read_cvpr_members
from napari_medsegfm.tasks.predict import PredictInfo, predict_case
from napari_medsegfm.types import Box2D, Box3D, Capability


def box_dict(z0, z1, zm, y0, x0, y1, x1):
    return {"z_min": np.int64(z0), "z_max": np.int64(z1), "z_mid": np.int64(zm), "z_mid_x_min": np.int64(x0),
            "z_mid_y_min": np.int64(y0), "z_mid_x_max": np.int64(x1), "z_mid_y_max": np.int64(y1)}


def obj_array(items):
    a = np.empty(len(items), dtype=object)
    for i, v in enumerate(items):
        a[i] = v
    return a


def test_volume_spacing_is_reversed_and_rgb_detected():
    v = read_cvpr_members({"imgs": np.zeros((4, 5, 6), np.uint8), "spacing": np.array([0.8, 0.9, 5.0])}).image
    assert v.spacing == (5.0, 0.9, 0.8) and v.spatial_shape == (4, 5, 6)
    v2 = read_cvpr_members({"imgs": np.zeros((7, 9, 3), np.uint8)}).image
    assert v2.is_rgb and v2.spatial_shape == (7, 9)
    with pytest.raises(ValueError, match="imgs"):
        read_cvpr_members({"spacing": [1, 1, 1]})


def test_parse_boxes_all_layouts_and_clipping():
    b = parse_boxes(obj_array([box_dict(2, 5, 3, 10, 20, 30, 40)]), (8, 64, 64))
    assert b == [Box3D(2, 5, 10, 20, 30, 40, object_id=1, z_mid=3)]
    b = parse_boxes(np.array([[20, 10, 2, 40, 30, 5], [0, 0, 0, 99, 99, 99]]), (8, 64, 64))  # CVPR24 3D
    assert b[0] == Box3D(2, 5, 10, 20, 30, 40, object_id=1)
    assert b[1] == Box3D(0, 7, 0, 0, 63, 63, object_id=2)  # clipped to the volume
    b = parse_boxes(np.array([[20, 10, 40, 30]]), (64, 64))  # CVPR24 2D: x_min, y_min, x_max, y_max
    assert b == [Box2D(10, 20, 30, 40, object_id=1)]
    with pytest.raises(ValueError, match="expected .N, 4."):
        parse_boxes(np.array([[1, 2, 3]]), (8, 64, 64))
    with pytest.raises(ValueError, match="lacks"):
        parse_boxes(obj_array([{"z_min": 1}]), (8, 64, 64))


def _clicks_of(clicks, order, shape=(10, 10, 10)):
    members = {"imgs": np.zeros(shape, np.uint8), "spacing": [1.0, 1.0, 1.0], "clicks": clicks}
    if order is not None:
        members["clicks_order"] = order
    return click_prompts(read_cvpr_members(members))


def test_parse_clicks_follows_clicks_order():
    clicks = obj_array([{"fg": [[1, 2, 3], [4, 5, 6]], "bg": [[7, 8, 9]]}, {"fg": [], "bg": []}])
    order = obj_array([["fg", "bg", "fg"], []])
    pts = _clicks_of(clicks, order)
    assert list(pts) == [1]
    assert [(p.zyx, p.positive) for p in pts[1]] == [((1, 2, 3), True), ((7, 8, 9), False), ((4, 5, 6), True)]
    # the 2-D string array np.savez makes of equal-length order lists works too
    pts = _clicks_of(clicks[:1], np.array([["bg", "fg", "fg"]]))
    assert [p.positive for p in pts[1]] == [False, True, True]
    # an order that does not match the clicks falls back to fg first
    pts = _clicks_of(clicks[:1], obj_array([["bg"]]))
    assert [p.positive for p in pts[1]] == [True, True, False]
    with pytest.raises(ValueError, match="outside the image"):
        _clicks_of(obj_array([{"fg": [[1, 2]], "bg": []}]), None)


def test_boxes_prompt_label_i_plus_1_and_small_objects_stay_on_top():
    img = np.zeros((6, 40, 40), np.uint8)
    boxes = obj_array([box_dict(0, 5, 2, 2, 2, 37, 37), box_dict(1, 3, 2, 10, 10, 15, 15)])
    info = PredictInfo()
    segs = predict_case({"imgs": img, "spacing": np.array([1.0, 1.0, 2.0]), "boxes": boxes}, BoxFillBackend(), info=info)
    assert segs.dtype == np.uint8 and segs.shape == img.shape
    assert info.mode == "boxes" and sorted(info.predicted) == [1, 2]
    assert (segs[1:4, 10:16, 10:16] == 2).all()  # the small box inside the big one keeps its voxels
    assert segs[0, 10, 10] == 1 and segs[4, 3, 3] == 1 and segs[0, 0, 0] == 0


def test_click_step_refines_clicked_objects_and_keeps_the_others():
    img = np.zeros((6, 40, 40), np.uint8)
    prev = np.zeros(img.shape, np.uint8)
    prev[1:4, 2:10, 2:10] = 1
    prev[1:4, 20:30, 20:30] = 2
    clicks = obj_array([{"fg": [], "bg": []}, {"fg": [[2, 35, 35]], "bg": []}])
    order = obj_array([[], ["fg"]])
    inputs = {"imgs": img, "spacing": np.array([1.0, 1.0, 1.0]), "clicks": clicks, "clicks_order": order,
              "prev_pred": prev}
    info = PredictInfo()
    segs = predict_case(inputs, BoxFillBackend(click_radius_mm=2.0), info=info)
    assert info.mode == "clicks" and info.predicted == [2] and info.kept == [1]
    assert (segs[prev == 1] == 1).all()
    assert segs[2, 35, 35] == 2 and (segs[prev == 2] == 2).all()


def test_text_only_input_needs_a_text_backend_and_no_prompts_is_an_error():
    img = np.zeros((4, 16, 16), np.uint8)
    text = np.array({"1": "liver", "instance_label": 0}, dtype=object)
    with pytest.raises(UnsupportedPromptError, match="text"):
        predict_case({"imgs": img, "spacing": [1, 1, 1], "text_prompts": text}, BoxFillBackend())
    with pytest.raises(ValueError, match="no prompts"):
        predict_case({"imgs": img, "spacing": [1, 1, 1]}, BoxFillBackend())

    class BoxOnly(BoxFillBackend):
        capabilities = Capability.BOX3D

    clicks = obj_array([{"fg": [[1, 2, 3]], "bg": []}])
    with pytest.raises(UnsupportedPromptError, match="point"):
        predict_case({"imgs": img, "spacing": [1, 1, 1], "clicks": clicks}, BoxOnly())


def test_2d_rgb_input(shared_data):
    from napari_medsegfm.io import safe_load_npz

    d = safe_load_npz(shared_data / "cvpr24" / "imgs" / "2DBox_MR_BiomedParse08_heart.npz")
    segs = predict_case(d, BoxFillBackend())
    assert segs.shape == d["imgs"].shape[:2] and segs.dtype == np.uint8
    assert set(np.unique(segs)) == {0, 1, 2, 3}
