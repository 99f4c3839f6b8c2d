"""Every dock of napari.yaml as napari itself creates it (``add_plugin_dock_widget``, and the
``napari FILE -w napari-medsegfm NAME`` command line in a subprocess), two images in one
viewer, and the object/save behaviours of the dock, in real windows under Xvfb.

Screenshots go to the artifacts folder (``entry_*.png``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import key, pump, wait_until

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _dataset_data import make_small_cvpr  # noqa: E402

pytestmark = pytest.mark.gui

PLUGIN = "napari-medsegfm"
MANIFEST = Path(__file__).resolve().parents[2] / "napari_medsegfm" / "napari.yaml"
WIDGETS = [w["display_name"] for w in yaml.safe_load(MANIFEST.read_text())["contributions"]["widgets"]]
HEART = "2DBox_MR_BiomedParse08_heart"


def _grab(viewer, path):
    from qtpy.QtWidgets import QApplication

    QApplication.processEvents()
    viewer.window._qt_window.grab().save(str(path))


def _private_warnings(records) -> list[str]:
    return [str(r.message) for r in records if "Private attribute access" in str(r.message)]


@pytest.fixture
def small_dataset(tmp_path, shared_data):
    return make_small_cvpr(shared_data, tmp_path / "ds", 3)


@pytest.fixture
def heart_case(shared_data, tmp_path) -> Path:
    """The real CVPR24 2D RGB heart image as a CVPR-style file with a placeholder 3-value
    spacing and its ground truth inside (issue 12's failing layout)."""
    with np.load(shared_data / "cvpr24" / "imgs" / f"{HEART}.npz") as z:
        imgs, boxes = z["imgs"], z["boxes"]
    with np.load(shared_data / "cvpr24" / "gts" / f"{HEART}.npz") as z:
        gts = z["gts"]
    p = tmp_path / "heart" / f"{HEART}.npz"
    p.parent.mkdir()
    np.savez(p, imgs=imgs, gts=gts, boxes=boxes, spacing=np.array([1.0, 1.0, 1.0]))
    return p


def test_manifest_lists_the_docks():
    assert WIDGETS == ["Interactive segmentation", "Dataset correction"]


def test_every_dock_through_add_plugin_dock_widget(make_napari_viewer, qtbot, amos_case, small_dataset,
                                                   fake_backend, artifacts_dir):
    """napari instantiates each dock with its public-only viewer proxy: no crash, no private
    attribute access, shortcuts work on napari's window, the docks work together."""
    from napari_medsegfm.widgets import AnnotationWidget, DatasetNavigator

    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1280, 800)
    viewer.open(str(amos_case), plugin=PLUGIN)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        _dock, ann = viewer.window.add_plugin_dock_widget(PLUGIN, "Interactive segmentation")
        assert isinstance(ann, AnnotationWidget)
        c = ann.controller
        wait_until(qtbot, lambda: c.attached, timeout=60)
        c.set_backend("slowfake")
        wait_until(qtbot, lambda: c.backend_name == "slowfake" and not c.busy)
        # (keys go through QTest only after the navigator's: after a QTest key on the canvas, the first
        # QTest Ctrl+PgDown sent to the window is not matched as a shortcut, the second is)
        qtbot.mouseClick(ann.run_all_btn, _left())  # "Run all boxes": the file's 15 boxes
        wait_until(qtbot, lambda: not c.busy and len(c.objects) >= 10, timeout=60)
        _grab(viewer, artifacts_dir / "entry_dock_interactive_segmentation.png")

        _dock2, nav = viewer.window.add_plugin_dock_widget(PLUGIN, "Dataset correction")
        assert isinstance(nav, DatasetNavigator)
        assert nav.annotation_widget() is ann  # found through viewer.window.dock_widgets
        assert nav.open_dataset(small_dataset)
        first = nav.visible_order()[0]
        assert nav.open_case(first)
        assert ann.controller.attached and ann.controller.save_target.startswith("the dataset sidecar")
        win = viewer.window._qt_window
        win.activateWindow()
        qtbot.waitUntil(lambda: win.isActiveWindow(), timeout=3000)
        from qtpy.QtCore import Qt

        qtbot.keyClick(win, Qt.Key.Key_PageDown, Qt.KeyboardModifier.ControlModifier)  # navigator shortcut
        qtbot.waitUntil(lambda: nav.current.case_id == nav.visible_order()[1], timeout=5000)
        key(qtbot, viewer, "B")  # the annotation dock's box tool, on the navigator's case
        assert viewer.layers.selection.active is c.box_layer and c.box_layer.mode == "add_rectangle"
        key(qtbot, viewer, "O")  # a new object of the case
        assert c.current_id in c.objects
        _grab(viewer, artifacts_dir / "entry_dock_dataset_correction.png")
    assert _private_warnings(rec) == []


PROBE = textwrap.dedent('''
    """napari startup script (a public napari setting): report the docks once napari made them."""
    import json, os, time
    import napari
    from qtpy.QtCore import QTimer

    viewer = napari.current_viewer()
    out = os.environ["MEDSEGFM_PROBE_OUT"]
    t0 = time.monotonic()

    def probe():
        if not viewer.window.dock_widgets and time.monotonic() - t0 < 120:
            QTimer.singleShot(300, probe)
            return
        QTimer.singleShot(2000, finish)

    def finish():
        rep = {"docks": {}, "layers": [ly.name for ly in viewer.layers]}
        for name, w in viewer.window.dock_widgets.items():
            w = getattr(w, "__wrapped__", w)
            d = rep["docks"][name] = {"type": type(w).__name__}
            ctrl = getattr(w, "controller", None)
            if ctrl is not None:
                d["attached"] = bool(ctrl.attached)
                d["image"] = ctrl.image_layer.name if ctrl.image_layer is not None else None
                d["boxes"] = len(ctrl.box_layer.data) if ctrl.box_layer is not None else None
            if hasattr(w, "open_dataset"):
                d["opened"] = bool(w.open_dataset(os.environ["MEDSEGFM_PROBE_DATASET"]))
                d["case"] = bool(w.open_case(w.visible_order()[0]))
                d["rows"] = w.model.rowCount()
        viewer.window.resize(1280, 800)
        QTimer.singleShot(500, lambda: shoot(rep))

    def shoot(rep):
        viewer.screenshot(os.path.join(out, "shot.png"), canvas_only=False)
        with open(os.path.join(out, "report.json"), "w") as fh:
            json.dump(rep, fh)
        viewer.close()

    QTimer.singleShot(300, probe)
''')


@pytest.mark.slow
@pytest.mark.parametrize("widget", WIDGETS)
def test_every_dock_through_the_napari_command_line(widget, amos_case, small_dataset, tmp_path, artifacts_dir):
    """``napari FILE --plugin napari-medsegfm -w napari-medsegfm NAME`` in a subprocess on the
    test's Xvfb display; a napari startup script (NAPARI_CONFIG settings) reports what napari
    built and takes the screenshot."""
    import napari
    from packaging.version import Version

    if Version(napari.__version__) < Version("0.7.0"):
        # napari 0.6.x's __main__ puts the viewer, the files, the docks and the event loop in the
        # else-branch of ``if args.plugin:``: with --plugin it exits at once, status 0, no window
        pytest.skip(f"napari {napari.__version__}'s command line opens no window with --plugin (fixed in 0.7.0)")
    (tmp_path / "probe.py").write_text(PROBE)
    (tmp_path / "settings.yaml").write_text(f"application:\n  startup_script: {tmp_path / 'probe.py'}\n")
    env = dict(os.environ, NAPARI_CONFIG=str(tmp_path / "settings.yaml"), MEDSEGFM_PROBE_OUT=str(tmp_path),
               MEDSEGFM_PROBE_DATASET=str(small_dataset), MEDSEGFM_WORKER_NICE="0")
    assert env.get("DISPLAY"), "pytest-xvfb provides the display"
    napari_exe = Path(sys.executable).with_name("napari")
    out = subprocess.run([str(napari_exe), str(amos_case), "--plugin", PLUGIN, "-w", PLUGIN, widget],
                         env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-4000:]
    assert "Traceback" not in out.stderr and "PublicOnlyProxy" not in out.stderr, out.stderr[-4000:]
    rep = json.loads((tmp_path / "report.json").read_text())
    (dock,) = [d for name, d in rep["docks"].items() if name.startswith(widget)]
    if widget == "Interactive segmentation":
        assert dock == {"type": "AnnotationWidget", "attached": True, "image": "CT_AMOS_amos_0018", "boxes": 15}
    else:
        assert dock["type"] == "DatasetNavigator" and dock["opened"] and dock["case"] and dock["rows"] == 3
    shot = artifacts_dir / f"entry_cli_{widget.lower().replace(' ', '_')}.png"
    shot.write_bytes((tmp_path / "shot.png").read_bytes())


def _attach_by_combo(qtbot, w, name):
    w.image_combo.setCurrentText(name)
    qtbot.mouseClick(w.attach_btn, _left())
    wait_until(qtbot, lambda: w.controller.attached and w.controller.image_layer.name == name
               and not w.controller.busy, timeout=30)


def _show_only(viewer, case_name):
    """Show one case's layers (as a user toggling the eyes to look at one image); zoom to it."""
    for ly in viewer.layers:
        ly.visible = ly.name.startswith(case_name) and not ly.name.endswith(" gts")
    viewer.reset_view()


def _left():
    from qtpy.QtCore import Qt

    return Qt.MouseButton.LeftButton


def test_two_cases_in_one_viewer_keep_their_own_prompts_objects_and_files(
        make_napari_viewer, qtbot, amos_case, heart_case, fake_backend, artifacts_dir):
    from napari_medsegfm.io import load_case, safe_load_npz

    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1280, 800)
    viewer.open(str(amos_case), plugin=PLUGIN)
    viewer.open(str(heart_case), plugin=PLUGIN)
    w, c = _annotation_dock(viewer, qtbot)

    # case A (3D CT): its own 15 boxes and class names
    _attach_by_combo(qtbot, w, "CT_AMOS_amos_0018")
    box_a = c.box_layer
    assert len(box_a.data) == 15 and box_a.ndim == 3
    c.run_all_boxes()
    wait_until(qtbot, lambda: not c.busy and c.inflight == 0, timeout=60)
    a_ids = sorted(c.objects)
    assert a_ids and max(a_ids) <= 15 and c.objects[1].name == "spleen"
    key(qtbot, viewer, "Ctrl+S")
    wait_until(qtbot, lambda: not c.dirty and not c.saving)
    a_bytes = amos_case.read_bytes()
    heart_before = heart_case.read_bytes()
    seg_a = np.array(c.session.labels)

    # case B (2D RGB with spacing and gts): picked in the dock, its own 3 boxes, no object of A
    _attach_by_combo(qtbot, w, HEART)
    assert c.volume.is_rgb and c.volume.spatial_shape == (1024, 1024)
    assert c.box_layer is not box_a and len(c.box_layer.data) == 3 and c.box_layer.ndim == 2
    assert c.objects == {} or set(c.objects) <= {1, 2, 3}
    assert not any(info.name == "spleen" for info in c.objects.values())
    c.run_all_boxes()
    wait_until(qtbot, lambda: not c.busy and c.inflight == 0, timeout=60)
    assert sorted(c.objects) == [1, 2, 3]
    assert len(box_a.data) == 15  # A's boxes untouched
    _show_only(viewer, HEART)
    _grab(viewer, artifacts_dir / "entry_two_cases_heart.png")
    key(qtbot, viewer, "Ctrl+S")
    wait_until(qtbot, lambda: not c.dirty and not c.saving)
    assert amos_case.read_bytes() == a_bytes  # saving B never touched A's file
    saved_b = safe_load_npz(heart_case)
    assert saved_b["segs"].shape == (1024, 1024) and set(np.unique(saved_b["segs"])) == {0, 1, 2, 3}
    assert heart_case.read_bytes() != heart_before
    assert load_case(heart_case).image.is_rgb

    # back to A: its boxes, its objects and its labels again
    _attach_by_combo(qtbot, w, "CT_AMOS_amos_0018")
    assert c.box_layer is box_a
    assert sorted(c.objects) == sorted(int(v) for v in np.unique(seg_a) if v)  # (objects come from the labels)
    np.testing.assert_array_equal(c.session.labels, seg_a)
    _show_only(viewer, "CT_AMOS_amos_0018")
    viewer.dims.set_current_step(0, 12)
    _grab(viewer, artifacts_dir / "entry_two_cases_ct.png")


def _annotation_dock(viewer, qtbot, case=None):
    """Open ``case`` with the plugin's reader, dock Interactive segmentation as napari does, switch
    it to the fake backend; returns (widget, controller)."""
    if case is not None:
        viewer.open(str(case), plugin=PLUGIN)
    _dock, w = viewer.window.add_plugin_dock_widget(PLUGIN, "Interactive segmentation")
    c = w.controller
    wait_until(qtbot, lambda: c.attached, timeout=60)
    c.set_backend("slowfake")
    wait_until(qtbot, lambda: c.backend_name == "slowfake" and not c.busy)
    return w, c


def test_shift_del_takes_the_box_and_run_all_never_resurrects(make_napari_viewer, qtbot, amos_case,
                                                             fake_backend, artifacts_dir):
    viewer = make_napari_viewer(show=True)
    w, c = _annotation_dock(viewer, qtbot, amos_case)
    c.run_all_boxes()
    wait_until(qtbot, lambda: not c.busy and c.inflight == 0, timeout=60)
    n_boxes, ids = len(c.box_layer.data), sorted(c.objects)
    victim = ids[2]
    c.select_object(victim)
    key(qtbot, viewer, "Shift+Delete")
    assert victim not in c.objects and not (c.session.labels == victim).any()
    assert len(c.box_layer.data) == n_boxes - 1
    assert victim not in set(np.asarray(c.box_layer.features["object_id"]).tolist())
    qtbot.mouseClick(w.run_all_btn, _left())  # "Run all boxes"
    wait_until(qtbot, lambda: not c.busy and c.inflight == 0, timeout=60)
    assert victim not in c.objects and sorted(c.objects) == [i for i in ids if i != victim]
    # Ctrl+Z brings the object back, with its rectangle
    while victim not in c.objects:
        key(qtbot, viewer, "Ctrl+Z")
    assert len(c.box_layer.data) == n_boxes
    idx = c._object_box_indices(victim)
    assert len(idx) == 1 and int(c.box_layer.features["z_min"].iloc[idx[0]]) >= 0
    _grab(viewer, artifacts_dir / "entry_delete_object.png")


def test_failed_save_leaves_save_and_save_as_usable(make_napari_viewer, qtbot, amos_case, fake_backend, tmp_path):
    viewer = make_napari_viewer(show=True)
    w, c = _annotation_dock(viewer, qtbot, amos_case)
    c.add_object("x")
    w.save_as(str(tmp_path / "no such folder" / "out.npz"))  # fails in the background
    wait_until(qtbot, lambda: not c.saving)
    pump(qtbot, 0.2)
    assert "saving failed" in w.status_label.text() and c.dirty
    assert w.save_btn.isEnabled() and w.saveas_btn.isEnabled()
    w.save_as(str(tmp_path / "out.npz"))
    wait_until(qtbot, lambda: not c.dirty and not c.saving)
    assert (tmp_path / "out.npz").is_file()


@pytest.mark.parametrize("sort_by", [None, "Status"])
def test_double_clicking_a_case_row_opens_that_case(make_napari_viewer, qtbot, small_dataset, sort_by):
    from qtpy.QtCore import Qt
    from qtpy.QtTest import QTest

    from napari_medsegfm.dataset.workspace import COLUMNS

    viewer = make_napari_viewer(show=True)
    _dock, nav = viewer.window.add_plugin_dock_widget(PLUGIN, "Dataset correction")
    nav.use_annotation_widget = False
    assert nav.open_dataset(small_dataset)
    if sort_by:
        nav.table.sortByColumn([h for _, h in COLUMNS].index(sort_by), Qt.SortOrder.AscendingOrder)
    win = viewer.window._qt_window
    win.activateWindow()
    qtbot.waitUntil(lambda: win.isActiveWindow(), timeout=3000)
    for row in (1, 0, 2, 1):
        want = nav.model.rows[row].case_id
        at = nav.table.visualRect(nav.model.index(row, 0)).center()
        # a user's double-click: press/release, then the second press within the interval
        QTest.mouseClick(nav.table.viewport(), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, at)
        QTest.mouseDClick(nav.table.viewport(), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, at)
        qtbot.waitUntil(lambda w=want: nav.current is not None and nav.current.case_id == w, timeout=5000)
        pump(qtbot, 0.2)  # nothing else opens afterwards
        assert nav.current.case_id == want
