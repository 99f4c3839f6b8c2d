"""Smoke test of the plugin through napari's own paths, for checking an older napari.

Run under a display (e.g. ``xvfb-run -a python scripts/smoke_napari.py OUT.png``) in an
environment that has the plugin and the napari version to check. It opens the bundled CT
lesion sample with the plugin's reader, docks both widgets through
``add_plugin_dock_widget``, runs the box around the sample's lesion with the default backend on the
worker thread, waits for the masks, saves a screenshot and exits 0; anything else exits 1.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import napari
import numpy as np
from qtpy.QtWidgets import QApplication

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "resources" / "samples" / "CT_Lesion_000001_02_01_008-023.npz"


def main(out: str) -> int:
    print(f"napari {napari.__version__}", flush=True)
    viewer = napari.Viewer(show=True)
    layers = viewer.open(str(SAMPLE), plugin="napari-medsegfm")
    assert layers, "the plugin's reader returned no layers"
    _, dock = viewer.window.add_plugin_dock_widget("napari-medsegfm", "Interactive segmentation")
    viewer.window.add_plugin_dock_widget("napari-medsegfm", "Dataset correction")
    app = QApplication.instance()
    ctl = getattr(dock, "controller", None)
    deadline = time.monotonic() + 120
    while ctl is not None and not ctl.attached and time.monotonic() < deadline:
        app.processEvents()
        time.sleep(0.05)
    if ctl is None or not ctl.attached:
        print("the dock did not attach to the opened case", flush=True)
        return 1
    # a box around the sample's lesion (from its gts), drawn into the dock's boxes layer
    rect = np.array([[8, 226, 262], [8, 226, 328], [8, 286, 328], [8, 286, 262]], dtype=float)
    ctl.box_layer.add(rect, shape_type="rectangle")
    app.processEvents()
    if not np.any(ctl.session.labels) and not ctl.busy:
        ctl.run_all_boxes()
    while time.monotonic() < deadline and (ctl.busy or not np.any(ctl.session.labels)):
        app.processEvents()
        time.sleep(0.05)
    n = int(len(np.unique(ctl.session.labels)) - 1)
    print(f"objects segmented: {n}", flush=True)
    viewer.screenshot(out, canvas_only=False)
    viewer.close()
    return 0 if n > 0 else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1] if len(sys.argv) > 1 else "smoke.png"))
