"""The navigator's case editors on a headless napari ``ViewerModel`` (no Qt)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _dataset_data import make_small_cvpr  # noqa: E402

from napari_medsegfm.dataset.workspace import DatasetWorkspace  # noqa: E402


@pytest.fixture
def workspace(tmp_path, shared_data):
    ws = DatasetWorkspace(make_small_cvpr(shared_data, tmp_path / "ds", 2))
    yield ws
    ws.close()


def test_layer_editor_shows_cases_and_reuses_layers(workspace):
    from napari.components import ViewerModel

    from napari_medsegfm.widgets.case_editor import LayerEditor

    viewer = ViewerModel()
    edits = []
    ed = LayerEditor(viewer, lambda: edits.append(1))
    ids = [r.case_id for r in workspace.rows()]
    oc = workspace.open(ids[0])
    ed.show(oc)
    lab = ed.labels_layer
    assert lab in viewer.layers and lab.editable
    assert np.shares_memory(lab.data, oc.labels)  # brush edits land in the open case's labels
    img = viewer.layers[LayerEditor.IMAGE]
    np.testing.assert_array_equal(img.data, oc.case.image.array)
    # a 3D case opens on its middle slice
    assert viewer.dims.current_step[0] == oc.case.image.array.shape[0] // 2
    lab.paint((1, 5, 5), 3)
    assert edits
    workspace.close_case(oc, save=False)
    oc2 = workspace.open(ids[1])
    ed.show(oc2, prediction=np.zeros_like(oc2.labels))
    assert ed.labels_layer is lab  # the same layer, the new case's labels swapped in
    assert viewer.layers[LayerEditor.PRED].visible is False
    np.testing.assert_array_equal(ed.labels(), oc2.labels)
    ed.clear()
    assert len(viewer.layers) == 0
    workspace.close_case(oc2, save=False)


def test_annotation_editor_attaches_the_controller_headless(workspace):
    from napari.components import ViewerModel

    from napari_medsegfm.widgets.case_editor import AnnotationEditor
    from napari_medsegfm.widgets.controller import AnnotationController

    viewer = ViewerModel()
    ctrl = AnnotationController(viewer, backend=None)
    changes, saves = [], []
    ed = AnnotationEditor(viewer, SimpleNamespace(controller=ctrl), changes.append,
                          save=lambda: saves.append(1) or Path("x.npz"), save_target="the sidecar")
    ids = [r.case_id for r in workspace.rows()]
    oc = workspace.open(ids[0])
    try:
        ed.show(oc)
        assert ctrl.attached and ctrl.seg_layer is ed.labels_layer
        np.testing.assert_array_equal(ed.labels(), oc.labels)
        assert ctrl.has_save_handler and ctrl.save_target == "the sidecar"
        lid = ctrl.add_object("liver")
        assert changes and changes[-1] is False  # an edit, not an accepted prompt
        ctrl.accept_object(lid)
        assert changes[-1] is True
        layers_before = {id(ly) for ly in viewer.layers}
        workspace.close_case(oc, save=False)
        oc = workspace.open(ids[1])
        ed.show(oc)
        # the segmentation, boxes, clicks and scribbles layers are reused from case to case
        assert {id(ctrl.seg_layer), id(ctrl.click_layer), id(ctrl.scribble_layer)} <= layers_before
        ed.clear()
        assert not ctrl.attached and len(viewer.layers) == 0
    finally:
        workspace.close_case(oc, save=False)
        ctrl.close()


def test_qt_free_widget_modules_import_no_qt():
    """The controller's parts and the case editor import no Qt binding (the dock's logic stays headless)."""
    code = textwrap.dedent(
        """
        import importlib, sys
        for m in ("controller", "layer_sync", "box_tool", "backend_picker", "saving", "case_editor", "events",
                  "objects", "prompts", "object_list", "prompt_tools", "inference"):
            importlib.import_module("napari_medsegfm.widgets." + m)
        print(",".join(sorted(m for m in sys.modules if m.split(".")[0] in
                              {"qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui", "superqt"})))
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "", f"Qt-free widget modules pulled in: {proc.stdout.strip()}"
