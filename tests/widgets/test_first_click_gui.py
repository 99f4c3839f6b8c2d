"""A box-less first click in the dock, as napari builds it, with the default backend.

The Interactive segmentation dock comes from ``add_plugin_dock_widget``; one positive click
on an empty layer of the real dev3d BraTS 2013 FLAIR volume (1280x800 window) must grow the
oedema region it points at on the worker thread (DSC above 0.25; the old ball first click
reached 0.06), land in the Labels layer as one object, and be drawn there. Screenshot:
``first_click_boxless_brats.png``.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import pump, wait_until

pytestmark = pytest.mark.gui

PLUGIN = "napari-medsegfm"
CASE = "dev3d/MR_BraTS2013_pat0006_Flair.npz"


def test_first_click_on_an_empty_layer_grows_the_region(make_napari_viewer, qtbot, shared_data, artifacts_dir):
    from napari_medsegfm.io.cvpr import load_cvpr_npz
    from napari_medsegfm.tasks.clicks import simulate_click
    from napari_medsegfm.tasks.metrics import dsc

    path = shared_data / CASE
    if not path.is_file():
        pytest.skip(f"{CASE} is not in the shared data")
    gts = load_cvpr_npz(path).labels["gts"]
    lab = 2
    click = simulate_click(gts, np.zeros_like(gts), lab)

    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1280, 800)
    viewer.open(str(path), plugin=PLUGIN)
    _dock, ann = viewer.window.add_plugin_dock_widget(PLUGIN, "Interactive segmentation")
    c = ann.controller
    wait_until(qtbot, lambda: c.attached and not c.busy, timeout=60)
    assert c.backend_name == "classic"  # the default
    viewer.dims.set_point(0, click.position[0] * c.image_layer.scale[0])
    viewer.reset_view()
    pump(qtbot, 0.2)
    before = np.asarray(viewer.screenshot(canvas_only=True, flash=False))

    assert c.add_click(click.position) is not None
    lid = c.current_id
    wait_until(qtbot, lambda: not c.busy and (np.asarray(c.seg_layer.data) == lid).any(), timeout=60)
    kinds = [type(p).__name__ for p in c.session.prompts_of(lid)]
    assert kinds == ["Point"]  # no box: the first-click path
    seg = np.asarray(c.seg_layer.data)
    mask = seg == lid
    assert mask[click.position] and set(np.unique(seg)) == {0, lid}
    assert dsc(gts == lab, mask) > 0.25
    pump(qtbot, 0.3)
    after = np.asarray(viewer.screenshot(canvas_only=True, flash=False))
    viewer.window._qt_window.grab().save(str(artifacts_dir / "first_click_boxless_brats.png"))
    h, w = min(before.shape[0], after.shape[0]), min(before.shape[1], after.shape[1])
    assert np.abs(after[:h, :w].astype(int) - before[:h, :w].astype(int)).sum() > 0  # drawn
