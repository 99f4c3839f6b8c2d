"""Screenshots of the widget's main states (saved to the artifacts folder for a person to look at).

Each state is also checked: the picture must show the dock and a non-empty canvas, and
the segmentation must be drawn where the labels are (canvas-only screenshot pixels).
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import key, pump, wait_until

pytestmark = pytest.mark.gui


def _grab(viewer, path):
    from qtpy.QtWidgets import QApplication

    QApplication.processEvents()
    img = viewer.window._qt_window.grab()
    img.save(str(path))
    return img


def _canvas(viewer) -> np.ndarray:
    return np.asarray(viewer.screenshot(canvas_only=True, flash=False))


def test_screenshots_of_the_main_states(make_napari_viewer, qtbot, amos_case, fake_backend, artifacts_dir,
                                        shared_data):
    from napari_medsegfm.widgets import AnnotationWidget

    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1500, 950)
    viewer.open(str(amos_case), plugin="napari-medsegfm")
    w = AnnotationWidget(viewer, backend="slowfake")
    viewer.window.add_dock_widget(w, name="Interactive segmentation", area="right")
    c = w.controller
    wait_until(qtbot, lambda: c.attached and c.backend_name == "slowfake")
    viewer.reset_view()
    viewer.dims.set_point(0, 12 * c.image_layer.scale[0])
    pump(qtbot, 0.2)
    before = _canvas(viewer)
    pix = _grab(viewer, artifacts_dir / "widget_1_opened_with_file_boxes.png")
    assert pix.width() >= 1400 and w.isVisible()

    # the file's 15 boxes run at once; the list fills with named objects and volumes
    c.run_all_boxes()
    wait_until(qtbot, lambda: not c.busy, timeout=30)
    c.select_object(2)
    c.box_layer.visible = False
    pump(qtbot, 0.2)
    after = _canvas(viewer)
    _grab(viewer, artifacts_dir / "widget_2_file_boxes_segmented.png")
    # the segmentation is drawn: the canvas changed, in the colours of the objects on this slice
    # (the dock may widen by a scrollbar once the list fills: compare the common part of the canvas)
    h, wd = min(before.shape[0], after.shape[0]), min(before.shape[1], after.shape[1])
    assert np.abs(after[:h, :wd].astype(int) - before[:h, :wd].astype(int)).sum() > 0
    assert w.table.rowCount() == 15 and w.table.item(1, 1).text() == "right kidney"
    assert all(w.table.item(r, 3).text().endswith("mL") for r in range(15))

    # help panel open and a running prompt (busy row + Cancel)
    fake_backend.last.delay_s = 2.0
    key(qtbot, viewer, "F1")
    c.add_click((12, 128, 128))
    pump(qtbot, 0.4)
    assert w.progress.isVisible() and w.cancel_btn.isEnabled()
    _grab(viewer, artifacts_dir / "widget_3_busy_with_help.png")
    c.cancel()
    wait_until(qtbot, lambda: not c.busy)
    key(qtbot, viewer, "F1")

    # napari's 3D canvas showing the result (software OpenGL under Xvfb: the labels alone, one frame)
    # (each software-rendered 3D frame costs seconds: small window, one grab)
    c.image_layer.visible = False
    viewer.window._qt_window.resize(1150, 650)
    viewer.dims.ndisplay = 3
    viewer.reset_view()
    viewer.scene.camera.angles = (0, -30, 60)
    shot3d = viewer.window._qt_window.grab()
    shot3d.save(str(artifacts_dir / "widget_4_3d_view.png"))
    assert not w.box_btn.isEnabled() and "2D view" in w.box_btn.toolTip()
    img = shot3d.toImage()
    canvas_px = [img.pixelColor(x, y).red() for x in range(350, 700, 10) for y in range(150, 500, 10)]
    assert np.std(canvas_px) > 5  # the labels were drawn
    viewer.dims.ndisplay = 2
    c.image_layer.visible = True


def test_screenshot_2d_rgb_with_file_boxes(make_napari_viewer, qtbot, fake_backend, artifacts_dir, shared_data):
    from napari_medsegfm.widgets import AnnotationWidget

    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1300, 850)
    viewer.open(str(shared_data / "cvpr24/imgs/2DBox_MR_BiomedParse08_heart.npz"), plugin="napari-medsegfm")
    w = AnnotationWidget(viewer, backend="slowfake")
    viewer.window.add_dock_widget(w, area="right")
    c = w.controller
    wait_until(qtbot, lambda: c.attached and c.backend_name == "slowfake")
    assert c.volume.is_rgb and c.seg_layer.ndim == 2 and len(c.box_layer.data) == 3
    c.run_all_boxes()  # three 2D boxes from the file
    wait_until(qtbot, lambda: not c.busy and len(c.objects) == 3)
    assert all(type(c.session.prompts_of(i)[0]).__name__ == "Box2D" for i in (1, 2, 3))
    c.add_click((500, 500), positive=False)  # a negative click refines the current object
    wait_until(qtbot, lambda: not c.busy)
    viewer.reset_view()
    pump(qtbot, 0.2)
    _grab(viewer, artifacts_dir / "widget_5_rgb_2d.png")
    assert not w.zmin_spin.isEnabled() and w.table.rowCount() == 3
