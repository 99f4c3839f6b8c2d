"""The Qt-free annotation controller on a headless napari ViewerModel (no Qt, no display)."""

from __future__ import annotations

import types

import numpy as np
import pytest
from _fakes import SlowFake

from napari_medsegfm.types import Box3D, Capability, Point
from napari_medsegfm.widgets.controller import AnnotationController, short_class_name

SPACING = (5.0, 0.8, 0.8)


@pytest.fixture
def viewer():
    from napari.components import ViewerModel

    v = ViewerModel()
    rng = np.random.default_rng(0)
    v.add_image(rng.integers(0, 255, (20, 64, 80), dtype=np.uint8), scale=SPACING, name="ct")
    return v


def make(viewer, backend=None, **kw):
    notes: list[tuple[str, str]] = []
    c = AnnotationController(viewer, backend=backend if backend is not None else SlowFake(),
                             notify=lambda lvl, msg: notes.append((lvl, msg)), **kw)
    c.attach()
    c.notes = notes
    return c


def rect(z, y0, x0, y1, x1):
    return np.array([[z, y0, x0], [z, y0, x1], [z, y1, x1], [z, y1, x0]], dtype=float)


def goto(viewer, z):
    viewer.dims.set_point(0, z * SPACING[0])


def test_attach_makes_layers_on_the_image_grid(viewer):
    c = make(viewer)
    names = [ly.name for ly in viewer.layers]
    assert names == ["ct", "ct segmentation", "ct boxes", "ct clicks", "ct scribbles", "ct box extents"]
    for ly in viewer.layers:
        np.testing.assert_allclose(ly.scale, SPACING)
    # the Labels layer shows the session's own array (brush strokes paint into it)
    assert c.seg_layer.data is c.session.labels
    assert c.volume.spacing == SPACING and c.volume.voxel_volume_ml == pytest.approx(5 * 0.8 * 0.8 / 1000)
    assert all(st.enabled for st in c.tool_states().values())
    c.close()


def test_box_z_extent_clicks_scribbles_brush_undo_redo(viewer):
    c = make(viewer)
    liver = c.add_object("liver")
    goto(viewer, 10)
    assert c.current_z() == 10
    c.box_layer.add(rect(10, 5, 5, 30, 20), shape_type="rectangle")  # as napari's rectangle tool does
    assert c.wait_idle(10)
    lab = c.session.labels
    assert (lab == liver).sum() == 26 * 16 and (lab[10, 5:31, 5:21] == liver).all()
    # z extent from the current slice: "," then "."
    goto(viewer, 7)
    c.set_z_bound("min")
    goto(viewer, 12)
    c.set_z_bound("max")
    assert c.wait_idle(10)
    assert c.box_extent() == (7, 12)
    assert (lab == liver).sum() == 6 * 26 * 16
    rows = c.object_rows()
    assert rows[0].name == "liver" and rows[0].voxels == 6 * 26 * 16
    assert rows[0].volume_ml == pytest.approx(6 * 26 * 16 * 5 * 0.8 * 0.8 / 1000)

    kidney = c.add_object("kidney")
    # a Shift+click in the clicks layer is negative; plain is positive
    press = types.SimpleNamespace(modifiers=("Shift",))
    c.click_layer.mode = "add"
    c._on_points_press(c.click_layer, types.SimpleNamespace(modifiers=()))
    c.click_layer.add(np.array([[3.0, 40.0, 60.0]]))
    assert c.wait_idle(10)
    assert (lab == kidney).sum() == 7 ** 3
    c._on_points_press(c.click_layer, press)
    c.click_layer.add(np.array([[3.0, 40.0, 60.0]]))
    assert c.wait_idle(10)
    assert (lab == kidney).sum() == 0
    assert [bool(x) for x in c.click_layer.features["positive"]] == [True, False]
    assert c.session.prompts_of(kidney)[-1] == Point((3, 40, 60), False, kidney)

    # a scribble stroke (label 1) on the scribbles layer
    c.scribble_layer.brush_size = 3
    c.scribble_layer.selected_label = 1
    c.scribble_layer.paint((3, 50, 70), 1)
    assert c.wait_idle(10)
    n_scr = (lab == kidney).sum()
    assert n_scr > 0 and lab[3, 50, 70] == kidney

    # napari's brush on the segmentation layer is one undoable edit of the session
    before = lab.copy()
    c.activate_tool("brush")
    assert viewer.layers.selection.active is c.seg_layer and c.seg_layer.selected_label == kidney
    c.seg_layer.brush_size = 5
    c.seg_layer.paint((15, 50, 50), kidney)
    c.process_pending()  # the stroke is committed once napari has written it
    assert (lab != before).sum() > 0 and c.session.objects[kidney].status.value == "edited"
    c.undo()
    np.testing.assert_array_equal(lab, before)
    c.redo()
    assert (lab != before).sum() > 0
    # undo the brush and the scribble: the scribble disappears from its layer too
    c.undo()
    c.undo()
    assert (lab == kidney).sum() == 0 and not (c.scribble_layer.data == 1).any()
    c.redo()
    assert (lab == kidney).sum() == n_scr and (c.scribble_layer.data == 1).any()
    assert c.dirty
    c.close()


def test_edited_or_deleted_box_replaces_the_old_one(viewer):
    c = make(viewer)
    lid = c.add_object("liver")
    goto(viewer, 10)
    c.box_layer.add(rect(10, 5, 5, 30, 20), shape_type="rectangle")
    c.add_click((10, 50, 60))  # a click on the same object survives box edits
    assert c.wait_idle(10)
    lab = c.session.labels
    n_click = 7 ** 3
    assert (lab == lid).sum() == 26 * 16 + n_click
    # the user shrinks the rectangle: the mask follows (no union with the old box)
    c.box_layer.data = [rect(10, 5, 5, 15, 10)]
    assert c.wait_idle(10)
    assert (lab == lid).sum() == 11 * 6 + n_click
    boxes = [p for p in c.session.prompts_of(lid) if isinstance(p, Box3D)]
    assert len(boxes) == 1 and (boxes[0].y_max, boxes[0].x_max) == (15, 10)
    # a second rectangle adds to the object; deleting it takes it away again
    c.box_layer.add(rect(10, 40, 40, 44, 44), shape_type="rectangle")
    assert c.wait_idle(10)
    assert (lab == lid).sum() == 11 * 6 + 25 + n_click
    c.box_layer.selected_data = {1}
    c.box_layer.remove_selected()
    assert c.wait_idle(10)
    assert (lab == lid).sum() == 11 * 6 + n_click
    # one undo brings the deleted box back (the re-segmentation is a single step)
    c.undo()
    assert (lab == lid).sum() == 11 * 6 + 25 + n_click
    c.close()


def test_moved_box_is_one_undo_step(viewer):
    c = make(viewer)
    lid = c.add_object("liver")
    goto(viewer, 10)
    c.box_layer.add(rect(10, 5, 5, 30, 20), shape_type="rectangle")
    c.add_click((10, 50, 60))
    assert c.wait_idle(10)
    s = c.session
    before, prompts_before = s.labels.copy(), s.prompts_of(lid)
    n = len(s.undo_stack)
    c.box_layer.data = [rect(10, 20, 30, 40, 50)]  # the user moves the rectangle
    assert c.wait_idle(10)
    moved = s.labels.copy()
    assert (moved[10, 20:41, 30:51] == lid).all() and not (moved[10, 5:19, 5:21] == lid).any()
    assert len(s.undo_stack) == n + 1, [e.description for e in s.undo_stack.undo_entries[n:]]
    assert "re-segment" in s.undo_description
    c.undo()
    assert np.array_equal(s.labels, before) and s.prompts_of(lid) == prompts_before
    assert c.object_rows()[0].voxels == int((s.labels == lid).sum())
    c.redo()
    assert np.array_equal(s.labels, moved)
    # deleting the object's only box (its click stays) is one step too
    c.box_layer.selected_data = {0}
    c.box_layer.remove_selected()
    assert c.wait_idle(10)
    assert len(s.undo_stack) == n + 2 and (s.labels == lid).sum() == 7 ** 3
    c.undo()
    assert np.array_equal(s.labels, moved)
    c.close()


def test_stale_results_never_overwrite_newer_ones(viewer):
    c = make(viewer, backend=SlowFake(delay_s=0.3))
    lid = c.add_object()
    old = c.add_click((5, 10, 10))
    new = c.add_click((5, 40, 40))
    assert old is not None and new is not None and new > old
    assert c.wait_idle(10)
    lab = c.session.labels
    assert lab[5, 40, 40] == lid  # newest prompt's result is the one shown
    # a late result for the old generation (e.g. queued behind) is refused
    from napari_medsegfm.engine.session import InferenceResult

    mask = np.ones(c.volume.spatial_shape, bool)
    late = InferenceResult(old, lid, Point((5, 10, 10), True, lid), mask=mask)
    c._on_result(c.session, late, 0.0)
    assert not late.applied and late.stale and (lab == lid).sum() < mask.sum()
    c.close()


def test_errors_are_notifications_and_nothing_is_lost(viewer):
    fake = SlowFake(fail_on="Point")
    c = make(viewer, backend=fake)
    lid = c.add_object("liver")
    goto(viewer, 4)
    c.box_layer.add(rect(4, 5, 5, 20, 20), shape_type="rectangle")
    assert c.wait_idle(10)
    before = c.session.labels.copy()
    c.add_click((4, 10, 10))  # the backend raises
    assert c.wait_idle(10)
    np.testing.assert_array_equal(c.session.labels, before)
    assert c.notes[-1][0] == "error" and "fake backend refuses Point" in c.notes[-1][1]
    assert c.session.pending_prompts(lid) == [] and len(c.click_layer.data) == 0
    # outside the volume
    assert c.add_click((4, 500, 10)) is None
    assert c.notes[-1][0] == "error" and "outside the image" in c.notes[-1][1]
    c.box_layer.add(rect(30, 5, 5, 20, 20), shape_type="rectangle")
    assert "outside the volume" in c.notes[-1][1]
    np.testing.assert_array_equal(c.session.labels, before)
    c.close()


def test_capabilities_disable_tools_with_reasons(viewer):
    c = make(viewer, backend=SlowFake(capabilities=Capability.BOX3D | Capability.BOX2D))
    st = c.tool_states()
    assert st["box"].enabled and not st["click"].enabled and not st["scribble"].enabled
    assert "cannot use clicks" in st["click"].reason and "slowfake" in st["click"].reason
    assert not st["text"].enabled and "box" in st["text"].reason
    c.add_object()
    assert c.add_click((1, 1, 1)) is None and "cannot use a click" in c.notes[-1][1]
    # text only names the object when the backend cannot read text
    assert c.text_prompt("left kidney") is None
    assert c.objects[c.current_id].name == "left kidney"
    assert "cannot segment from text" in c.last_message
    # the 3D canvas: slice tools are off, running boxes still works
    viewer.dims.ndisplay = 3
    st = c.tool_states()
    assert not st["box"].enabled and "2D view" in st["box"].reason and st["run_boxes"].enabled
    viewer.dims.ndisplay = 2
    assert c.tool_states()["box"].enabled
    c.close()


def test_text_prompt_and_backend_loaded_off_thread(viewer, fake_backend):
    fake_backend.delay_s = 0.05
    c = make(viewer, backend="slowfake")
    assert c.busy and c.session.backend is None  # loading on a helper thread
    c.add_object()
    gen = c.text_prompt("spleen")  # queued until the backend is there
    assert gen is None and "queued" in c.last_message
    assert c.wait_idle(10)
    assert c.backend_name == "slowfake" and c.objects[1].name == "spleen"
    assert (c.session.labels == 1).sum() == 125
    c.set_backend("no-such-backend")
    assert c.wait_idle(10)
    assert c.backend_name == "slowfake" and "could not be loaded" in c.notes[-1][1]
    c.close()


def test_cvpr_file_boxes_run_all_and_save_back(amos_case):
    from napari.components import ViewerModel

    from napari_medsegfm.io import safe_load_npz
    from napari_medsegfm.io.reader import read_layers

    v = ViewerModel()
    for data, kw, kind in read_layers(amos_case):
        getattr(v, f"add_{kind}")(data, **kw)
    gt_layer = next(ly for ly in v.layers if (ly.metadata or {}).get("medsegfm_key") == "gts")
    gts = np.asarray(gt_layer.data).copy()
    c = make(v)
    assert c.case_path == amos_case and c.default_save_path() == amos_case
    assert c.box_layer is not None and len(c.box_layer.data) == 15 and not gt_layer.visible
    # selecting a file box starts its object (named from the file); new objects keep clear of the file's ids
    c.box_layer.selected_data = {2}
    assert c.current_id == 3 and c.objects[3].name == "left kidney"
    assert c.add_object("mine") == 16
    gens = c.run_all_boxes()
    assert len(gens) == 15 and c.wait_idle(30)
    names = [r.name for r in c.object_rows()]
    assert names[:3] == ["spleen", "right kidney", "left kidney"] and names[-1] == "mine"
    # each object is its (clipped) file box, first come first served where boxes overlap
    src = safe_load_npz(amos_case)
    expect = np.zeros_like(c.session.labels)
    for i, b in enumerate(src["boxes"]):
        reg = expect[b["z_min"]:b["z_max"] + 1, b["z_mid_y_min"]:b["z_mid_y_max"] + 1,
                     b["z_mid_x_min"]:b["z_mid_x_max"] + 1]
        reg[reg == 0] = i + 1
    np.testing.assert_array_equal(c.session.labels, expect)
    fut = c.save(wait=True)
    assert fut.exception() is None and not c.dirty
    saved = safe_load_npz(amos_case)
    assert set(saved) == set(src) | {"segs"}
    np.testing.assert_array_equal(saved["segs"], expect)
    np.testing.assert_array_equal(saved["imgs"], src["imgs"])
    assert saved["text_prompts"] == src["text_prompts"]
    np.testing.assert_array_equal(gt_layer.data, gts)  # ground truth untouched
    c.close()


def test_save_handler_routes_save_elsewhere_and_detach_restores_the_default(amos_case, tmp_path):
    """A host (the dataset navigator) can take Save over; without one, Save writes the case file."""
    import concurrent.futures
    import hashlib

    from napari.components import ViewerModel

    from napari_medsegfm.io.reader import read_layers

    v = ViewerModel()
    for data, kw, kind in read_layers(amos_case):
        getattr(v, f"add_{kind}")(data, **kw)
    c = make(v)
    sha = hashlib.sha256(amos_case.read_bytes()).hexdigest()
    got = []

    def handler():
        got.append(c.session.labels.copy())
        fut = concurrent.futures.Future()
        fut.set_result(tmp_path / "store" / "case.npz")
        return fut

    c.set_save_handler(handler, target="the test store")
    assert c.has_save_handler and c.save_target == "the test store"
    c.add_object("x")
    assert c.dirty
    fut = c.save(wait=True)
    assert fut.result() == tmp_path / "store" / "case.npz" and len(got) == 1 and not c.dirty
    assert "the test store" in c.last_message and str(tmp_path / "store" / "case.npz") in c.last_message
    assert hashlib.sha256(amos_case.read_bytes()).hexdigest() == sha  # the case file was not written

    def broken():
        raise ValueError("store is offline")

    c.set_save_handler(broken, target="the test store")
    c.add_object("y")
    c.save(wait=True)
    assert c.dirty and "failed: store is offline" in c.last_message and not c.saving
    # Save as (an explicit path) is not routed; a new attach starts with the default again
    out = c.save(tmp_path / "copy.npz", wait=True)
    assert out.exception() is None and (tmp_path / "copy.npz").is_file()
    c.attach(c.image_layer)
    assert not c.has_save_handler and c.default_save_path() == amos_case
    c.add_object("z")
    assert c.save(wait=True).exception() is None
    assert hashlib.sha256(amos_case.read_bytes()).hexdigest() != sha  # standalone: segs into the case file
    c.close()


def test_2d_rgb_image_box(shared_data):
    from napari.components import ViewerModel
    from PIL import Image

    v = ViewerModel()
    rgb = np.asarray(Image.open(shared_data / "sammed2d_demo/data_demo/images/s0114_111.png").convert("RGB"))
    v.add_image(rgb, rgb=True, name="slice")
    c = make(v)
    assert c.volume.is_rgb and c.volume.spatial_shape == rgb.shape[:2]
    assert c.seg_layer.data.shape == rgb.shape[:2] and c.click_layer.ndim == 2
    st = c.tool_states()
    assert not st["z_extent"].enabled and "2D image" in st["z_extent"].reason
    c.add_object("heart")
    c.box_layer.add(np.array([[50.0, 60.0], [50.0, 120.0], [100.0, 120.0], [100.0, 60.0]]),
                    shape_type="rectangle")
    assert c.wait_idle(10)
    assert (c.session.labels == 1).sum() == 51 * 61
    assert c.session.prompts_of(1)[0].z is None
    c.close()


def test_objects_accept_reset_delete_and_dirty(viewer):
    c = make(viewer)
    assert not c.dirty
    a = c.add_object("a")
    b = c.add_object("b")
    assert c.current_id == b and c.dirty
    c.step_object(-1)
    assert c.current_id == a
    c.add_click((2, 10, 10))
    assert c.wait_idle(10)
    c.accept_object()
    assert c.object_rows()[0].status == "accepted"
    c.reset_object()
    assert (c.session.labels == a).sum() == 0 and c.object_rows()[0].status == "empty"
    c.delete_object()
    assert list(c.objects) == [b] and c.current_id == b
    c.undo()
    assert a in c.objects
    c.close()


def test_short_class_names():
    assert short_class_name("CT imaging of the spleen within the abdomen") == "spleen"
    assert short_class_name("left kidney") == "left kidney"
    assert short_class_name("Box3D") == "Box3D"


def test_volume_from_box3d_prompt_direct(viewer):
    c = make(viewer)
    lid = c.add_object()
    c.submit(Box3D(2, 3, 1, 1, 2, 2, object_id=lid))
    assert c.wait_idle(10)
    assert c.object_rows()[0].voxels == 8
    c.close()


def test_nifti_case_saves_beside_the_image_in_its_orientation(shared_data, tmp_path):
    """A NIfTI image (LPS on disk) saves as <name>_segs.nii.gz with the source's header/orientation."""
    import shutil

    import nibabel as nib
    from napari.components import ViewerModel

    from napari_medsegfm.io.reader import read_layers

    src = tmp_path / "mr.nii.gz"
    shutil.copy(shared_data / "totalsegmentator/example_mr_sm.nii.gz", src)
    v = ViewerModel()
    for data, kw, kind in read_layers(src):
        getattr(v, f"add_{kind}")(data, **kw)
    c = make(v)
    target = c.default_save_path()
    assert target == tmp_path / "mr_segs.nii.gz"
    lid = c.add_object("liver")
    c.submit(Box3D(2, 6, 10, 20, 30, 45, object_id=lid))
    assert c.wait_idle(10)
    fut = c.save(wait=True)
    assert fut.exception() is None and target.exists() and not c.dirty
    img_src, img_out = nib.load(str(src)), nib.load(str(target))
    np.testing.assert_allclose(img_out.affine, img_src.affine)
    assert img_out.shape == img_src.shape
    # read back through the plugin: the same voxels in array (z, y, x) order
    lab = next(d for d, kw, k in read_layers(target) if k in ("labels", "image"))
    np.testing.assert_array_equal(np.asarray(lab).astype(np.uint8), c.session.labels)
    c.close()


def test_stepping_away_from_a_box_warms_the_slices_it_will_span(viewer):
    class WarmFake(SlowFake):
        def __init__(self) -> None:
            super().__init__()
            self.warm_calls: list[list[int]] = []

        def warm(self, zs, cancel=None) -> int:
            self.warm_calls.append([int(z) for z in zs])
            return len(zs)

    be = WarmFake()
    c = make(viewer, backend=be)
    c.add_object("liver")
    goto(viewer, 10)
    assert not be.warm_calls  # no box yet: nothing to anticipate
    c.box_layer.add(rect(10, 5, 5, 30, 20), shape_type="rectangle")
    assert c.wait_idle(10)
    def warmed_since(n):
        return [z for call in be.warm_calls[n:] for z in call]

    goto(viewer, 7)  # the user looks for the bottom of the object
    assert c.session.worker.wait_idle(5)
    assert warmed_since(0) == [7, 8, 9, 6, 5]  # shown slice, the ones up to the box, two beyond
    c.set_z_bound("min")
    assert c.wait_idle(10)
    n = len(be.warm_calls)
    goto(viewer, 8)  # inside the box now: nothing new to encode
    assert c.session.worker.wait_idle(5) and len(be.warm_calls) == n
    goto(viewer, 13)
    assert c.session.worker.wait_idle(5)
    assert warmed_since(n) == [13, 12, 11, 14, 15]
    c.close()


def test_a_box_is_outlined_on_every_slice_of_its_z_extent(viewer):
    """A 3D box is drawn on one slice; the other slices of its z extent show its outline (faint,
    in the object's colour, in the box extents layer), and the object list gives its z range."""
    c = make(viewer)
    lid = c.add_object("liver")
    goto(viewer, 10)
    c.box_layer.add(rect(10, 5, 5, 30, 20), shape_type="rectangle")
    c.set_box_extent(0, z_min=7, z_max=12)
    ext = c.extent_layer
    assert ext is not None and ext.opacity < 1
    shown = {}
    for z in range(0, 16):
        goto(viewer, z)
        shown[z] = [np.asarray(v) for v in ext.data]
    assert [z for z, rects in shown.items() if rects] == [7, 8, 9, 11, 12]  # slice 10: the box itself
    np.testing.assert_allclose(shown[8][0], rect(8, 5, 5, 30, 20))
    goto(viewer, 8)
    np.testing.assert_allclose(ext.edge_color[0], c.objects[lid].color)
    assert c.object_rows()[0].z_range == "7–12"
    # deleting the object takes its outline with it
    c.delete_object(lid)
    c.process_pending()
    assert len(ext.data) == 0


def test_object_sizes_in_ml_only_with_a_physical_spacing(viewer):
    from napari.components import ViewerModel

    c = make(viewer)  # a 3D image with its spacing as the layer's scale
    c.add_object("x")
    assert c.size_unit == "" and c.object_rows()[0].volume_text.endswith("mL")
    v2 = ViewerModel()
    v2.add_image(np.zeros((40, 50), np.float32), name="photo")  # a 2D image: pixels are counted
    c2 = AnnotationController(v2, backend=None)
    c2.attach()
    c2.add_object("y")
    assert c2.size_unit == "px" and c2.object_rows()[0].volume_text == "0 px"
    v3 = ViewerModel()
    v3.add_image(np.zeros((4, 40, 50), np.float32), name="stack")  # 3D without spacing: voxels
    c3 = AnnotationController(v3, backend=None)
    c3.attach()
    c3.add_object("z")
    assert c3.size_unit == "vox" and c3.object_rows()[0].volume_text == "0 vox"
    for ctl in (c2, c3):
        ctl.close()


def test_latency_line_separates_warm_up_from_queueing(viewer):
    from napari_medsegfm.widgets.objects import latency_text

    line = latency_text(0.42, 2.31, queued_s=0.4, warmup_wait_s=1.5)
    assert "model 0.42 s" in line and "warm-up 1.5 s" in line and "queued 0.4 s behind" in line
    assert line.endswith("prompt→mask 2.31 s")
    quiet = latency_text(0.42, 0.45)
    assert "warm-up" not in quiet and "queued" not in quiet
    c = make(viewer)
    c._warmup_span = [100.0, 101.0]  # the image was being prepared from t=100 s to t=101 s
    assert c.warmup_overlap(99.5, 100.5) == pytest.approx(0.5)  # half of the wait was the warm-up
    assert c.warmup_overlap(101.5, 103.0) == 0.0
