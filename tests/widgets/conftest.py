"""Fixtures for the widget tests: a registered fake backend, a cropped real CVPR case, GUI helpers."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from _fakes import SlowFake  # noqa: E402

AMOS = "cvpr25/imgs/CT_AMOS_amos_0018.npz"
AMOS_GTS = "cvpr25/gts/CT_AMOS_amos_0018.npz"
#: crop of the AMOS case used by the GUI tests: 24 slices of 256 x 256 around the kidneys
CROP = (slice(24, 48), slice(150, 406), slice(110, 366))


class FakeHolder:
    """The backend instances the registry made for ``slowfake`` (settings apply to new ones)."""

    name = "slowfake"

    def __init__(self) -> None:
        self.instances: list[SlowFake] = []
        self.delay_s = 0.0
        self.capabilities = SlowFake.capabilities  # what the registry lists; set before the backend loads
        self.fail_on: str | None = None

    def __call__(self) -> SlowFake:
        b = SlowFake(self.delay_s, capabilities=self.capabilities, fail_on=self.fail_on)
        self.instances.append(b)
        return b

    @property
    def last(self) -> SlowFake:
        return self.instances[-1]


@pytest.fixture
def fake_backend():
    """Registers the ``slowfake`` backend for one test; yields the holder of its instances."""
    from napari_medsegfm.backends.registry import register_backend, unregister_backend

    holder = FakeHolder()
    register_backend("slowfake", holder)
    yield holder
    unregister_backend("slowfake")


def _clip_box(b: dict, crop: tuple[slice, ...]) -> dict:
    z, y, x = crop

    def c(v: int, s: slice) -> int:
        return int(min(max(int(v) - s.start, 0), s.stop - s.start - 1))

    out = {"z_min": c(b["z_min"], z), "z_max": c(b["z_max"], z), "z_mid": c(b["z_mid"], z),
           "z_mid_x_min": c(b["z_mid_x_min"], x), "z_mid_y_min": c(b["z_mid_y_min"], y),
           "z_mid_x_max": c(b["z_mid_x_max"], x), "z_mid_y_max": c(b["z_mid_y_max"], y)}
    return {k: np.int64(v) for k, v in out.items()}


@pytest.fixture(scope="session")
def amos_crop_dir(shared_data, tmp_path_factory) -> Path:
    """A cropped copy of the real CT_AMOS_amos_0018 case (imgs/ + gts/ files, every key kept).

    Boxes are clipped to the crop (label i+1 keeps box i); ``text_prompts`` unchanged.
    """
    from napari_medsegfm.io import safe_load_npz

    root = tmp_path_factory.mktemp("amos_crop")
    (root / "imgs").mkdir()
    (root / "gts").mkdir()
    src = safe_load_npz(shared_data / AMOS)
    gts = safe_load_npz(shared_data / AMOS_GTS)
    out = dict(src)
    out["imgs"] = np.ascontiguousarray(src["imgs"][CROP])
    out["boxes"] = np.array([_clip_box(b, CROP) for b in src["boxes"]], dtype=object)
    out["text_prompts"] = np.array(src["text_prompts"], dtype=object)
    np.savez(root / "imgs" / "CT_AMOS_amos_0018.npz", **out)
    np.savez(root / "gts" / "CT_AMOS_amos_0018.npz", gts=np.ascontiguousarray(gts["gts"][CROP]),
             spacing=gts["spacing"])
    return root


@pytest.fixture
def amos_case(amos_crop_dir, tmp_path) -> Path:
    """A private copy of the cropped case (tests write ``segs`` into it)."""
    import shutil

    (tmp_path / "imgs").mkdir()
    (tmp_path / "gts").mkdir()
    for sub in ("imgs", "gts"):
        shutil.copy(amos_crop_dir / sub / "CT_AMOS_amos_0018.npz", tmp_path / sub / "CT_AMOS_amos_0018.npz")
    return tmp_path / "imgs" / "CT_AMOS_amos_0018.npz"


# ------------------------------------------------------------------ GUI helpers
def pump(qtbot, seconds: float = 0.05) -> None:
    """Let the Qt event loop run for a while."""
    qtbot.wait(int(seconds * 1000))


def wait_until(qtbot, cond, timeout: float = 20.0) -> None:
    qtbot.waitUntil(cond, timeout=int(timeout * 1000))


def to_canvas(viewer, world_yx):
    """Canvas pixel (QPoint) of a world ``(y, x)`` position on napari's 2D canvas."""
    from qtpy.QtCore import QPoint

    view = viewer.window._qt_viewer.canvas.view
    tr = view.transform * view.scene.transform
    p = tr.map([float(world_yx[1]), float(world_yx[0])])
    return QPoint(int(round(p[0])), int(round(p[1])))


def settle(qtbot, viewer) -> None:
    """Wait until the docks stopped fitting themselves and the canvas keeps its size.

    Mouse positions are mapped to canvas pixels once; a canvas that is resized between the
    press and the release (a dock fitting itself late on a loaded machine) moves the drag.
    """
    from napari_medsegfm.widgets._host import pending_fits

    native = viewer.window._qt_viewer.canvas.native
    wait_until(qtbot, lambda: pending_fits() == 0)
    last, same = None, 0
    for _ in range(100):
        size = (native.width(), native.height())
        same = same + 1 if size == last else 0
        if same >= 3:
            return
        last = size
        pump(qtbot, 0.05)


def drag(qtbot, viewer, a_yx, b_yx, steps: int = 6) -> None:
    """Press at world ``a``, move to ``b`` and release (a real mouse drag on the canvas)."""
    from qtpy.QtCore import QPoint, Qt
    from qtpy.QtTest import QTest

    settle(qtbot, viewer)
    native = viewer.window._qt_viewer.canvas.native
    a, b = to_canvas(viewer, a_yx), to_canvas(viewer, b_yx)
    QTest.mousePress(native, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, a)
    for t in np.linspace(0, 1, steps + 1)[1:]:
        QTest.mouseMove(native, QPoint(int(a.x() + (b.x() - a.x()) * t), int(a.y() + (b.y() - a.y()) * t)))
        pump(qtbot, 0.01)
    QTest.mouseRelease(native, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, b)
    pump(qtbot, 0.05)


def click(qtbot, viewer, yx, shift: bool = False) -> None:
    """A real mouse click on the canvas at world ``(y, x)``."""
    from qtpy.QtCore import Qt
    from qtpy.QtTest import QTest

    settle(qtbot, viewer)
    native = viewer.window._qt_viewer.canvas.native
    mod = Qt.KeyboardModifier.ShiftModifier if shift else Qt.KeyboardModifier.NoModifier
    QTest.mouseClick(native, Qt.MouseButton.LeftButton, mod, to_canvas(viewer, yx))
    pump(qtbot, 0.05)


def key(qtbot, viewer, text: str) -> None:
    """Press a key sequence (e.g. ``"Ctrl+Shift+Z"``) with the canvas focused."""
    from qtpy.QtGui import QKeySequence
    from qtpy.QtTest import QTest
    from qtpy.QtWidgets import QApplication

    qwin = viewer.window._qt_window
    if QApplication.activeWindow() is not qwin:  # no window manager under Xvfb: activate it ourselves
        qwin.activateWindow()
        qwin.raise_()
        pump(qtbot, 0.05)
    native = viewer.window._qt_viewer.canvas.native
    native.setFocus()
    seq = QKeySequence(text)
    combo = seq[0]
    QTest.keyClick(native, combo.key(), combo.keyboardModifiers())
    pump(qtbot, 0.03)


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0
