"""Both docks on a laptop screen and a desktop screen: canvas share, object rows, no overlap, nothing cut off.

A new user opens the Interactive segmentation and the Dataset correction docks at
1280x800 (and 1920x1080), on a 3D CT case and a 2D image, with 1 and then 8 objects.
Checked on each screenshot (saved to the artifacts folder for a person to look at):

* the main window keeps its size (a dock never grows it);
* the canvas keeps at least half of the window's width;
* the object list shows at least four rows when there are eight objects;
* no two controls of a dock overlap, and none is cut off at a dock's or the window's edge
  (controls below a dock's visible part are reachable with its scroll bar);
* the dataset dock's case navigation (Previous, Next, Jump, the open case and its place) is in the
  dock's visible part without scrolling, wherever its body is scrolled to.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import pump, wait_until

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _dataset_data import make_small_cvpr  # noqa: E402

pytestmark = pytest.mark.gui

HEART = "cvpr24/imgs/2DBox_MR_BiomedParse08_heart.npz"
CONTROL_TYPES = ("QPushButton", "QToolButton", "QComboBox", "QLineEdit", "QSpinBox", "QCheckBox",
                 "QTableWidget", "QTableView", "QLabel", "QProgressBar", "QTextBrowser")


def _canvas_width(win) -> int:
    from qtpy.QtWidgets import QWidget

    cands = [w for w in win.findChildren(QWidget) if type(w).__name__.startswith("CanvasBackend") and w.isVisible()]
    assert cands, "no canvas widget found"
    return max(w.width() for w in cands)


def _controls(dock_widget):
    """The visible leaf controls of a dock's content, with their rectangles in the content's coordinates."""
    from qtpy.QtCore import QRect
    from qtpy.QtWidgets import QAbstractScrollArea, QWidget

    content = dock_widget.content
    out = []
    for w in content.findChildren(QWidget):
        if not w.isVisibleTo(content) or type(w).__name__ not in CONTROL_TYPES and not any(
                c.__name__ in CONTROL_TYPES for c in type(w).__mro__[:3]):
            continue
        if type(w).__name__ == "QLabel" and not w.text():
            continue
        # skip the parts of composite controls (a table's viewport and headers, a spin box's line edit)
        p, inside = w.parentWidget(), False
        while p is not None and p is not content:
            if isinstance(p, QAbstractScrollArea) or type(p).__name__ in ("QSpinBox", "QComboBox"):
                inside = True
                break
            p = p.parentWidget()
        if inside:
            continue
        top_left = w.mapTo(content, w.rect().topLeft())
        out.append((w, QRect(top_left, w.size())))
    return out


def _check_dock(name, dock_widget, win, report):
    from qtpy.QtCore import QRect

    ctrls = _controls(dock_widget)
    assert len(ctrls) > 8, f"{name}: only {len(ctrls)} controls found"
    content = dock_widget.content
    viewport_w = dock_widget.scroll.viewport().width()
    # nothing cut off at the right edge: the content fits the dock's width, each control the content
    assert content.width() <= viewport_w + 1, f"{name}: content {content.width()} px wider than the dock {viewport_w}"
    for w, r in ctrls:
        assert r.left() >= 0 and r.right() <= content.width(), f"{name}: {type(w).__name__} {w.objectName() or getattr(w, 'text', lambda: '')()!r} cut off: {r}"
        assert r.height() >= min(w.minimumSizeHint().height(), 12), f"{name}: {type(w).__name__} squeezed to {r.height()} px"
    # no two controls overlap
    for i, (a, ra) in enumerate(ctrls):
        for b, rb in ctrls[i + 1:]:
            if a.isAncestorOf(b) or b.isAncestorOf(a):
                continue
            inter = ra.intersected(rb)
            assert inter.isEmpty() or inter.width() * inter.height() <= 2, (
                f"{name}: {type(a).__name__} {getattr(a, 'text', lambda: '')()!r} {ra} overlaps "
                f"{type(b).__name__} {getattr(b, 'text', lambda: '')()!r} {rb}")
    # the dock itself lies inside the window
    tl = dock_widget.mapTo(win, dock_widget.rect().topLeft())
    dr = QRect(tl, dock_widget.size())
    assert QRect(0, 0, win.width(), win.height()).contains(dr), f"{name}: dock {dr} outside the window"
    report[name] = {"width": dock_widget.width(), "height": dock_widget.height(), "controls": len(ctrls)}


def _check_case_bar(nav, win, report):
    """The navigator's case navigation lies fully visible inside its dock and the window, outside
    the scrolling body, with the body scrolled to its top and to its end."""
    from qtpy.QtCore import QRect

    def rect_in_win(w):
        return QRect(w.mapTo(win, w.rect().topLeft()), w.size())

    bar = nav.scroll.verticalScrollBar()
    body = rect_in_win(nav.scroll)
    dock = rect_in_win(nav)
    for value in (bar.minimum(), bar.maximum()):
        bar.setValue(value)
        for w in (nav.prev_btn, nav.next_btn, nav.jump_btn, nav.case_label):
            r = rect_in_win(w)
            what = f"navigator: {type(w).__name__} {getattr(w, 'text', lambda: '')()!r} {r}"
            assert w.isVisible() and r.height() >= min(w.minimumSizeHint().height(), 12), f"{what} hidden or squeezed"
            assert w.visibleRegion().boundingRect() == w.rect(), f"{what} partly clipped"
            assert dock.contains(r) and QRect(0, 0, win.width(), win.height()).contains(r), f"{what} outside the dock {dock}"
            assert not body.intersects(r), f"{what} inside the scrolling body {body}"
    bar.setValue(bar.minimum())
    report["navigator_case_bar"] = rect_in_win(nav.nav_bar).getRect()
    report["navigator_body_scrolls"] = bar.maximum() > 0


def _eight_objects_3d(c, n=8):
    names = ["liver", "spleen", "left kidney", "right kidney", "aorta", "stomach", "pancreas", "gallbladder"]
    while len(c.objects) < n:
        lid = c.add_object(names[len(c.objects)])
        z = int(c.current_z() or 0)
        y0 = 10 + 12 * (lid % 8)
        c.box_layer.add(np.array([[z, y0, 20], [z, y0, 60], [z, y0 + 10, 60], [z, y0 + 10, 20]], float),
                        shape_type="rectangle")


def _eight_objects_2d(c, n=8):
    while len(c.objects) < n:
        lid = c.add_object(f"structure {len(c.objects) + 1}")
        y0 = 100 + 80 * (lid % 8)
        c.box_layer.add(np.array([[y0, 300], [y0, 500], [y0 + 50, 500], [y0 + 50, 300]], float),
                        shape_type="rectangle")


@pytest.mark.parametrize("size", [(1280, 800), (1920, 1080)], ids=["1280x800", "1920x1080"])
@pytest.mark.parametrize("case", ["3d", "2d"])
def test_both_docks_fit_the_screen(make_napari_viewer, qtbot, amos_case, fake_backend, shared_data, tmp_path,
                                   artifacts_dir, size, case):
    from qtpy.QtCore import QPoint, QRect, Qt

    from napari_medsegfm.widgets import AnnotationWidget, DatasetNavigator

    viewer = make_napari_viewer(show=True)
    win = viewer.window._qt_window
    win.resize(*size)
    pump(qtbot, 0.2)
    path = amos_case if case == "3d" else shared_data / HEART
    viewer.open(str(path), plugin="napari-medsegfm")
    nav = DatasetNavigator(viewer, root=make_small_cvpr(shared_data, tmp_path / "ds", 3), autosave_s=30,
                           use_annotation_widget=False)
    viewer.window.add_dock_widget(nav, name="Dataset correction", area="right")
    w = AnnotationWidget(viewer, backend="slowfake")
    viewer.window.add_dock_widget(w, name="Interactive segmentation", area="right")
    c = w.controller
    wait_until(qtbot, lambda: c.attached and c.backend_name == "slowfake")
    pump(qtbot, 0.5)  # (the docks fit themselves to their controls once the window settled)
    if case == "3d":
        viewer.dims.set_point(0, 12 * c.image_layer.scale[0])
    report: dict = {}
    tag = f"{case}_{size[0]}x{size[1]}"
    for n_obj in (1, 8):
        (_eight_objects_3d if case == "3d" else _eight_objects_2d)(c, n_obj)
        wait_until(qtbot, lambda: not c.busy, timeout=30)
        c.select_object(min(c.objects))
        viewer.reset_view()
        pump(qtbot, 0.3)
        win.grab().save(str(artifacts_dir / f"layout_{tag}_{n_obj}obj.png"))
        report[f"dock_widths_{n_obj}"] = (w.width(), nav.width())
        assert (win.width(), win.height()) == size, f"the window was resized to {win.width()}x{win.height()}"
        share = _canvas_width(win) / win.width()
        report[f"canvas_share_{n_obj}"] = round(share, 3)
        assert share >= 0.5, f"the canvas keeps {share:.0%} of the window's width ({report})"
        assert len(c.objects) == n_obj and w.table.rowCount() == n_obj
        # rows on screen: the table's part inside the dock's visible (scrolled) area
        vp = w.scroll.viewport()
        tv = w.table.viewport()
        shown = QRect(tv.mapTo(vp, QPoint(0, 0)), tv.size()).intersected(vp.rect())
        rows_visible = max(shown.height(), 0) // w.table.verticalHeader().defaultSectionSize()
        report[f"table_rows_visible_{n_obj}"] = int(rows_visible)
        assert rows_visible >= AnnotationWidget.TABLE_MIN_ROWS
        # names too long for the Name column are elided on screen; each row's tooltip names it whole
        fm = w.table.fontMetrics()
        elided = 0
        for r in range(w.table.rowCount()):
            it = w.table.item(r, 1)
            lid = it.data(Qt.ItemDataRole.UserRole)
            assert it.toolTip().split("\n")[0] == c.objects[lid].name
            st = w.table.item(r, 2)  # the status is one sign, its word in the tooltip (room for the name)
            assert len(st.text()) == 1 and st.toolTip() in ("empty", "prompted", "edited", "accepted", "running")
            elided += fm.horizontalAdvance(it.text()) + 8 > w.table.columnWidth(1)
        report[f"names_elided_{n_obj}"] = elided
        _check_dock("annotation", w, win, report)
        _check_dock("navigator", nav, win, report)
        _check_case_bar(nav, win, report)
    # pressing Segment… in the dataset dock (the annotation dock is already there) keeps the window's size
    nav.open_case(nav.visible_order()[0])
    assert nav.dock_annotation_widget() is w  # the docked one is used, no second dock
    pump(qtbot, 0.3)
    assert [n for n in viewer.window.dock_widgets if "Interactive segmentation" in n] == ["Interactive segmentation"]
    assert (win.width(), win.height()) == size
    _check_case_bar(nav, win, report)  # (a case open: its name, position and status in the bar)
    assert nav.case_label.text().startswith("<b>")
    win.grab().save(str(artifacts_dir / f"layout_{tag}_case_open.png"))
    print(f"layout {tag}: {report}")
    w.teardown()


def test_readme_screenshot_of_a_real_correction(make_napari_viewer, qtbot, amos_case, artifacts_dir):
    """The README's picture: a laptop-sized window, the default (classic) backend segments the
    file's boxes, then one organ is corrected with a negative click."""
    from napari_medsegfm.widgets import AnnotationWidget

    viewer = make_napari_viewer(show=True)
    win = viewer.window._qt_window
    win.resize(1280, 800)
    viewer.open(str(amos_case), plugin="napari-medsegfm")
    w = AnnotationWidget(viewer)  # the registry's default backend
    viewer.window.add_dock_widget(w, name="Interactive segmentation", area="right")
    c = w.controller
    wait_until(qtbot, lambda: c.attached and c.backend_name == "classic" and not c.busy, timeout=60)
    pump(qtbot, 0.5)
    viewer.dims.set_point(0, 12 * c.image_layer.scale[0])
    c.run_all_boxes()
    wait_until(qtbot, lambda: not c.busy, timeout=120)
    assert len(c.objects) >= 10
    # a correction: the largest object on this slice loses what a negative click marks as background
    sl = c.session.labels[12]
    lid = max((i for i in c.objects if (sl == i).any()), key=lambda i: int((sl == i).sum()))
    before = int((c.session.labels == lid).sum())
    c.select_object(lid)
    zz, yy, xx = np.nonzero(c.session.labels == lid)
    edge = int(np.argmax(xx))  # a voxel at the object's border
    c.add_click((int(zz[edge]), int(yy[edge]), int(xx[edge])), positive=False)
    wait_until(qtbot, lambda: not c.busy, timeout=60)
    assert int((c.session.labels == lid).sum()) != before
    assert c.session.prompts_in_effect(lid)[-1].positive is False
    c.box_layer.visible = False
    viewer.reset_view()
    pump(qtbot, 0.5)
    win.grab().save(str(artifacts_dir / "readme_annotation_widget.png"))
    assert _canvas_width(win) / win.width() >= 0.5
    w.teardown()
