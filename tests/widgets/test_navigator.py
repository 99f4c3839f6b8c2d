"""The dataset navigator dock widget in a real napari viewer (pytest-xvfb)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _dataset_data import make_small_cvpr  # noqa: E402

from napari_medsegfm.dataset.batch import run_batch  # noqa: E402
from napari_medsegfm.dataset.workspace import COLUMNS, DatasetWorkspace  # noqa: E402

pytestmark = pytest.mark.gui


@pytest.fixture
def dataset(tmp_path, shared_data):
    root = make_small_cvpr(shared_data, tmp_path / "ds", 4)
    ws = DatasetWorkspace(root)
    run_batch(root, "boxfill", tmp_path / "pred", scheduler="sync", progress=False, status_store=ws.store)
    ws.close()
    return root


def _col(header: str) -> int:
    return [h for _, h in COLUMNS].index(header)


def _screenshot(viewer, path):
    from qtpy.QtWidgets import QApplication

    QApplication.processEvents()
    viewer.window._qt_window.grab().save(str(path))


def test_navigator_table_navigation_autosave_restore_locks(make_napari_viewer, qtbot, dataset, tmp_path,
                                                           artifacts_dir):
    from qtpy.QtCore import Qt

    from napari_medsegfm.widgets import DatasetNavigator

    viewer = make_napari_viewer(show=True)
    nav = DatasetNavigator(viewer, root=dataset, autosave_s=1, use_annotation_widget=False)
    viewer.window.add_dock_widget(nav, name="Dataset correction", area="right")
    m = nav.model
    assert m.rowCount() == 4
    assert m.index(0, _col("Shape")).data() == "12×160×160"
    assert m.index(0, _col("Modality")).data() == "CT"
    dices = [float(m.index(r, _col("Dice")).data()) for r in range(4)]
    assert all(0 < d < 1 for d in dices)
    # labels are counted in the background
    qtbot.waitUntil(lambda: all(m.index(r, _col("Labels")).data() for r in range(4)), timeout=10000)
    assert int(m.index(0, _col("Labels")).data()) == len(np.unique(
        nav.workspace.catalog.load(nav.model.rows[0].case_id).labels["gts"])) - 1

    # sort by any column (header click), review queue = worst Dice first
    nav.table.sortByColumn(_col("Dice"), Qt.SortOrder.DescendingOrder)
    assert [float(m.index(r, _col("Dice")).data()) for r in range(4)] == sorted(dices, reverse=True)
    nav.review_check.setChecked(True)
    queue = nav.visible_order()
    assert [float(m.index(r, _col("Dice")).data()) for r in range(4)] == sorted(dices)

    # open the worst case: image + its labels
    assert nav.open_case(queue[0])
    lab = nav.editor.labels_layer
    gts = nav.workspace.catalog.load(queue[0]).labels["gts"]
    np.testing.assert_array_equal(lab.data, gts)
    assert lab.editable and "labels from the case's 'gts'" in nav.message.text()

    # keyboard: Ctrl+PgDown = next case (in the review order)
    win = viewer.window._qt_window
    win.activateWindow()
    qtbot.waitUntil(lambda: win.isActiveWindow(), timeout=3000)
    qtbot.keyClick(win, Qt.Key.Key_PageDown, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: nav.current.case_id == queue[1], timeout=3000)
    qtbot.keyClick(win, Qt.Key.Key_PageUp, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: nav.current.case_id == queue[0], timeout=3000)

    # a brush edit is autosaved within the interval, the case becomes "in progress"
    lab = nav.editor.labels_layer
    lab.brush_size = 9
    z = int(np.argwhere(gts > 0)[0][0])
    lab.paint((z, 80, 80), 9)
    assert nav.current.autosaver.dirty
    ws = nav.workspace
    qtbot.waitUntil(lambda: ws.corrections.exists(queue[0]), timeout=5000)
    saved = ws.corrections.load(queue[0]).labels
    assert saved[z, 80, 80] == 9

    def row():
        return nav.model.rows[nav.model.row_of(queue[0])]

    qtbot.waitUntil(lambda: row().status == "in progress" and row().has_correction, timeout=3000)
    assert "✎" in nav.model.index(nav.model.row_of(queue[0]), 0).data()

    # an unsaved edit is saved when moving to the next case
    lab.paint((z, 20, 20), 11)
    assert nav.next_case()
    assert ws.corrections.load(queue[0]).labels[z, 20, 20] == 11
    # and reopening restores the correction
    assert nav.previous_case()
    assert nav.current.restored and "restored the correction" in nav.message.text()
    assert nav.editor.labels_layer.data[z, 20, 20] == 11

    # status, comment, filter
    nav.set_status("flagged")
    nav.comment_edit.setText("leak into the liver")
    nav.comment_edit.editingFinished.emit()
    assert ws.store.get(queue[0]).comment == "leak into the liver"
    nav.status_filter.setCurrentText("flagged")
    assert nav.visible_order() == [queue[0]]
    nav.status_filter.setCurrentText("all")
    nav.review_check.setChecked(False)
    nav.table.sortByColumn(_col("Status"), Qt.SortOrder.AscendingOrder)
    _screenshot(viewer, artifacts_dir / "navigator_table.png")

    # a case being edited elsewhere opens read-only after the question
    other = DatasetWorkspace(dataset, user="bob")
    other.store.acquire(queue[2])
    asked = []
    nav.ask_when_locked = lambda exc: (asked.append(str(exc)), "read_only")[1]
    assert nav.open_case(queue[2])
    assert "being edited elsewhere by bob" in asked[0]
    assert nav.current.read_only and not nav.editor.labels_layer.editable
    assert "read-only" in nav.message.text()
    _screenshot(viewer, artifacts_dir / "navigator_locked.png")
    nav.ask_when_locked = lambda exc: "cancel"
    assert nav.open_case(queue[0]) and not nav.current.read_only
    assert not nav.open_case(queue[2])  # cancel: stays on the current case
    assert nav.current.case_id == queue[0]
    other.close()

    # jump, done & next, export
    assert nav.jump("MR_small03") and nav.current.case_id == "imgs/MR_small03"  # jumped to by name
    rep = nav.export(tmp_path / "export")
    man = json.loads((tmp_path / "export" / "export_manifest.json").read_text())
    assert [c["case_id"] for c in man["cases"]] == [queue[0]] and not rep.failed
    nav.close_dataset()


def test_navigator_drives_annotation_widget(make_napari_viewer, qtbot, dataset, artifacts_dir):
    from napari_medsegfm.widgets import AnnotationWidget, DatasetNavigator

    viewer = make_napari_viewer()
    aw = AnnotationWidget(viewer, backend="boxfill", auto_attach=False)
    viewer.window.add_dock_widget(aw, name="Interactive segmentation", area="right")
    nav = DatasetNavigator(viewer, root=dataset, autosave_s=30)  # long interval: only acceptance saves
    viewer.window.add_dock_widget(nav, name="Dataset correction", area="right", tabify=True)
    ws = nav.workspace
    assert nav.open_case("imgs/CT_small00")
    ctrl = aw.controller
    assert ctrl.attached and ctrl.box_layer is not None and len(ctrl.box_layer.data) > 0
    gts = ws.catalog.load("imgs/CT_small00").labels["gts"]
    np.testing.assert_array_equal(ctrl.session.labels, gts)
    qtbot.waitUntil(lambda: ctrl.backend_name == "boxfill" and not ctrl.busy, timeout=20000)
    # wipe one object, then let the model redo it from the file's boxes: each accepted result autosaves
    ctrl.session.reset_object(1)
    qtbot.waitUntil(lambda: not nav.current.autosaver.dirty or ws.corrections.exists("imgs/CT_small00"), timeout=3000)
    ctrl.run_all_boxes()
    qtbot.waitUntil(lambda: not ctrl.busy, timeout=20000)
    # (the autosave of the last accepted result may still be on its way: wait for it)
    qtbot.waitUntil(lambda: ws.corrections.exists("imgs/CT_small00")
                    and ws.corrections.load("imgs/CT_small00").meta.get("reason") == "accepted prompt"
                    and np.array_equal(ws.corrections.load("imgs/CT_small00").labels, ctrl.session.labels), timeout=5000)
    saved = ws.corrections.load("imgs/CT_small00").labels
    assert (saved == 1).sum() > 0
    _screenshot(viewer, artifacts_dir / "navigator_with_annotation.png")
    # next case: the widget follows; its layers are reused (no napari layer added or removed: that
    # is what made switching slow), emptied of the previous case's prompts; the backend is kept
    ctrl.add_click((6, 80, 80))
    ctrl.scribble_layer.data[6, 10:12, 10:12] = 1
    qtbot.waitUntil(lambda: not ctrl.busy, timeout=20000)
    layers = list(viewer.layers)
    kept = (ctrl.click_layer, ctrl.scribble_layer, ctrl.box_layer, ctrl.seg_layer, ctrl.image_layer)
    backend = ctrl.session.backend
    assert nav.next_case()
    assert ctrl.attached and ctrl.volume.spatial_shape == (12, 160, 160)
    assert nav.current.case_id == nav.visible_order()[1]
    assert (ctrl.click_layer, ctrl.scribble_layer, ctrl.box_layer, ctrl.seg_layer, ctrl.image_layer) == kept
    assert list(viewer.layers) == layers
    assert len(ctrl.click_layer.data) == 0 and ctrl.scribble_layer.data.max() == 0
    assert ctrl.session.backend is backend and ctrl.backend_name == "boxfill"
    names = [ly.name for ly in viewer.layers]
    assert not any("CT_small00" in n for n in names), names
    nav.close_dataset()
    # the annotation widget's close guard keeps a reference cycle on the main window until its
    # teardown; make_napari_viewer's leak check would flag it
    aw.teardown()


def _sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_ctrl_s_in_the_annotation_widget_saves_to_the_sidecar_not_the_original(make_napari_viewer, qtbot, tmp_path,
                                                                                shared_data):
    from conftest import key

    from napari_medsegfm.widgets import AnnotationWidget, DatasetNavigator

    root = make_small_cvpr(shared_data, tmp_path / "ds", 2)
    originals = sorted(p for p in root.rglob("*.npz") if ".medsegfm" not in p.parts)
    sha_before = {p: _sha(p) for p in originals}
    viewer = make_napari_viewer(show=True)
    aw = AnnotationWidget(viewer, backend="boxfill", auto_attach=False)
    viewer.window.add_dock_widget(aw, name="Interactive segmentation", area="right")
    nav = DatasetNavigator(viewer, root=root, autosave_s=30, auto_scan=False)  # long interval: no autosave
    viewer.window.add_dock_widget(nav, name="Dataset correction", area="right", tabify=True)
    ws = nav.workspace
    cid = "imgs/CT_small00"
    assert nav.open_case(cid)
    ctrl = aw.controller
    qtbot.waitUntil(lambda: ctrl.backend_name == "boxfill" and not ctrl.busy, timeout=20000)
    assert ctrl.has_save_handler and "sidecar" in aw.save_btn.toolTip()
    ctrl.session.delete_object(1)  # an edit (not an accepted prompt: nothing autosaved yet)
    assert ctrl.dirty and not ws.corrections.exists(cid)
    key(qtbot, viewer, "Ctrl+S")
    qtbot.waitUntil(lambda: not ctrl.dirty and not ctrl.saving, timeout=10000)
    # the originals are byte-identical; the correction is in the sidecar, the case in progress
    assert {p: _sha(p) for p in originals} == sha_before
    corr = ws.corrections.path_for(cid)
    assert corr.is_file() and ".medsegfm" in corr.parts
    saved = ws.corrections.load(cid).labels
    np.testing.assert_array_equal(saved, ctrl.session.labels)
    assert (saved == 1).sum() == 0
    assert str(corr) in aw.status_label.text() and "sidecar" in aw.status_label.text()
    assert str(corr) in viewer.window._qt_window.statusBar().currentMessage()
    qtbot.waitUntil(lambda: ws.store.get(cid).status == "in progress", timeout=5000)
    # reopening the case restores the saved correction
    assert nav.next_case() and nav.previous_case()
    assert nav.current.case_id == cid and nav.current.restored
    np.testing.assert_array_equal(ctrl.session.labels, saved)
    # once the navigator has closed the dataset, Save refuses instead of writing the original
    nav.close_dataset()
    ctrl.session.delete_object(2)
    key(qtbot, viewer, "Ctrl+S")
    qtbot.waitUntil(lambda: not ctrl.saving, timeout=5000)
    assert "saving" in aw.status_label.text() and "failed" in aw.status_label.text() and ctrl.dirty
    assert {p: _sha(p) for p in originals} == sha_before
    aw.teardown()
