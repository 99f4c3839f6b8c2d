"""Layer data -> prompts (headless: numpy and napari's Qt-free layer models only)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medsegfm.types import Box2D, Box3D, Capability, Point
from napari_medsegfm.widgets.prompts import (
    PromptOutsideError,
    box_rectangle_vertices,
    paint_atoms_to_voxels,
    point_to_prompt,
    points_of,
    rectangle_extent,
    rectangle_to_prompt,
    scribbles_from_atoms,
)
from napari_medsegfm.widgets.shortcuts import (
    SHORTCUTS,
    help_html,
    help_rows,
    keys_text,
    shortcut_for,
)

SHAPE = (20, 64, 80)


def rect(z, y0, x0, y1, x1):
    return np.array([[z, y0, x0], [z, y0, x1], [z, y1, x1], [z, y1, x0]], dtype=float)


def test_rectangle_covers_every_touched_voxel_and_clips():
    # integer corners (the reader's CVPR boxes) map to exactly those voxels
    assert rectangle_extent(rect(5, 10, 20, 30, 40), SHAPE) == dict(z=5, y_min=10, y_max=30, x_min=20, x_max=40)
    # a drawn rectangle touching voxel 10 from 10.2 (voxel 10 spans 9.5..10.5) to 30.7 (touches voxel 31)
    ext = rectangle_extent(rect(5.0, 10.2, 20.6, 30.7, 39.4), SHAPE)
    assert (ext["y_min"], ext["y_max"], ext["x_min"], ext["x_max"]) == (10, 31, 21, 39)
    # partly outside: clipped to the image
    ext = rectangle_extent(rect(2, -30, -5, 10, 200), SHAPE)
    assert (ext["y_min"], ext["y_max"], ext["x_min"], ext["x_max"]) == (0, 10, 0, 79)
    # drawn from the other corner: same box
    assert rectangle_extent(rect(5, 30, 40, 10, 20), SHAPE) == rectangle_extent(rect(5, 10, 20, 30, 40), SHAPE)


def test_rectangle_outside_or_on_missing_slice_is_an_error():
    with pytest.raises(PromptOutsideError, match="outside the image on axis x"):
        rectangle_extent(rect(5, 10, 100, 30, 120), SHAPE)
    with pytest.raises(PromptOutsideError, match="slice z=25"):
        rectangle_extent(rect(25, 10, 10, 30, 30), SHAPE)
    with pytest.raises(ValueError, match="vertices must be"):
        rectangle_extent(np.zeros((4, 2)), SHAPE)


def test_rectangle_to_prompt_kinds_and_z_extent():
    p = rectangle_to_prompt(rect(7, 10, 20, 30, 40), SHAPE, 3, z_min=4, z_max=12)
    assert p == Box3D(4, 12, 10, 20, 30, 40, object_id=3, z_mid=7)
    # extent given in reverse order and not containing the drawn slice: widened to contain it
    p = rectangle_to_prompt(rect(7, 10, 20, 30, 40), SHAPE, 3, z_min=3, z_max=1)
    assert (p.z_min, p.z_max, p.z_mid) == (1, 7, 7)
    # one slice with a 2D-only backend -> Box2D on that slice
    p = rectangle_to_prompt(rect(7, 10, 20, 30, 40), SHAPE, 2, capabilities=Capability.BOX2D)
    assert p == Box2D(10, 20, 30, 40, z=7, object_id=2)
    # a 3D-capable backend gets a one-slice Box3D
    assert isinstance(rectangle_to_prompt(rect(7, 10, 20, 30, 40), SHAPE, 2), Box3D)
    # 2D image
    p = rectangle_to_prompt(np.array([[1.0, 2.0], [1.0, 9.0], [5.0, 9.0], [5.0, 2.0]]), (32, 32), 1)
    assert p == Box2D(1, 2, 5, 9, z=None, object_id=1)
    with pytest.raises(PromptOutsideError):
        rectangle_to_prompt(rect(7, 10, 20, 30, 40), SHAPE, 1, z_min=30, z_max=40)


def test_box_vertices_round_trip():
    for box, nd in ((Box3D(2, 9, 10, 20, 30, 40, object_id=1, z_mid=5), 3), (Box2D(3, 4, 10, 12), 2)):
        verts = box_rectangle_vertices(box, nd)
        shape = SHAPE if nd == 3 else (32, 32)
        z = {} if nd == 2 else {"z_min": box.z_min, "z_max": box.z_max}
        assert rectangle_to_prompt(verts, shape, box.object_id, **z) == box


def test_point_rounding_and_outside():
    assert point_to_prompt((3.4, 10.5, 19.6), SHAPE, 2, positive=False) == Point((3, 11, 20), False, 2)
    assert point_to_prompt((0.0, 0.0), (8, 8), 1) == Point((0, 0), True, 1)
    with pytest.raises(PromptOutsideError, match="outside the image"):
        point_to_prompt((3, 70, 10), SHAPE, 1)
    with pytest.raises(PromptOutsideError):
        point_to_prompt((-0.6, 5, 5), SHAPE, 1)
    with pytest.raises(ValueError, match="coordinates"):
        point_to_prompt((1, 2), SHAPE, 1)
    coords, pos = points_of([Point((1, 2, 3), True, 1), Point((4, 5, 6), False, 1)])
    assert coords.tolist() == [[1, 2, 3], [4, 5, 6]] and pos.tolist() == [True, False]


def test_paint_strokes_on_a_real_labels_layer_become_scribbles():
    from napari.layers import Labels

    layer = Labels(np.zeros(SHAPE, dtype=np.uint8))
    events = []
    layer.events.paint.connect(lambda e: events.append(e.value))
    layer.brush_size = 5
    layer.paint((4, 20, 30), 1)  # brush stroke (masked atoms)
    layer.paint((4, 40, 50), 2)
    layer.data_setitem((np.array([6, 6]), np.array([1, 2]), np.array([3, 3])), 2)  # index atoms
    assert len(events) == 3
    vox = paint_atoms_to_voxels(events[0], 3)
    assert list(vox) == [1]
    painted = np.argwhere(layer.data == 1)
    assert sorted(map(tuple, vox[1])) == sorted(map(tuple, painted))
    s = scribbles_from_atoms(events[1], SHAPE, object_id=4)
    assert len(s) == 1 and not s[0].positive and s[0].object_id == 4
    assert np.all(layer.data[tuple(s[0].voxels.T)] == 2)
    s = scribbles_from_atoms(events[2], SHAPE, object_id=1)
    assert s[0].voxels.tolist() == [[6, 1, 3], [6, 2, 3]]
    # erasing gives no prompt
    layer.paint((4, 20, 30), 0)
    assert scribbles_from_atoms(events[3], SHAPE, object_id=1) == []


def test_shortcut_table_is_complete_and_unique():
    keys = [k for s in SHORTCUTS for k in s.keys]
    assert len(keys) == len(set(keys)), "a key is bound twice"
    for needed in ("undo", "redo", "save", "tool_box", "tool_click", "tool_scribble", "tool_brush",
                   "set_z_min", "set_z_max", "cancel", "run_all_boxes", "accept_object"):
        assert shortcut_for(needed).keys
    assert keys_text("undo") == "Ctrl+Z" and keys_text("redo") == "Ctrl+Shift+Z" and keys_text("save") == "Ctrl+S"
    # napari's brush keys stay napari's
    assert not {"P", "E", "[", "]", "M", "Z"} & set(keys)
    import html as _html

    page = help_html()
    assert all(_html.escape(desc) in page for _, _, desc in help_rows())
    assert "&lt;" in page  # the '<' key is text, not a tag
    with pytest.raises(KeyError, match="known"):
        shortcut_for("fly")
