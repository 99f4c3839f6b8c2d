"""What a dock widget needs from the window napari puts it in, through public Qt API only.

napari hands plugin widgets a ``PublicOnlyProxy`` of the viewer: its private attributes
(``window._qt_window``, ``window._qt_viewer``) are deprecated for plugins, and a proxy is
not a ``QWidget`` (``QShortcut(keys, proxy)`` raises ``TypeError``). Once docked, the
widget's own Qt parents lead to napari's main window (a ``QMainWindow``), and that is all
the plugin uses: keyboard shortcuts that work whatever has focus (the dock floating
included), the window's actions (to lend Ctrl+S), its close events and its status bar.

* :func:`plain_viewer` — the viewer object behind napari's proxy (the proxy makes a new
  wrapper on every attribute access, so ``layer is layer`` comparisons would fail);
* :func:`main_window_of` — the ``QMainWindow`` a docked widget lives in;
* :class:`HostedShortcuts` — ``QShortcut``\\ s owned by a dock widget that move onto the
  main window once the widget is docked;
* :func:`window_actions` — every ``QAction`` of the main window (its menus' included);
* :class:`CloseGuard` — asks a dock before the main window closes, and tears it down when
  the window really closes.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from typing import Any

from qtpy.QtCore import QEvent, QObject, Qt, QTimer
from qtpy.QtGui import QKeySequence
from qtpy.QtWidgets import QDockWidget, QLabel, QMainWindow, QShortcut, QSizePolicy, QWidget

__all__ = ["plain_viewer", "main_window_of", "fit_dock", "HostedShortcuts", "CloseGuard", "window_actions"]

log = logging.getLogger(__name__)


def plain_viewer(viewer: Any) -> Any:
    """The viewer itself when napari passed a ``PublicOnlyProxy`` of it (identity of layers
    must hold across accesses).

    Public API only: a proxy is recognised by its type differing from the class it reports
    (``type(p) is not p.__class__``), and the viewer is napari's ``current_viewer()`` once
    it is the one proxied (same title and, compared through the proxy, the same layers:
    a proxied layer equals the layer it wraps). Otherwise the proxy itself is used.
    """
    if type(viewer) is viewer.__class__:
        return viewer
    try:
        from napari import current_viewer

        cand = current_viewer()
    except ImportError:  # pragma: no cover - napari is a dependency
        cand = None
    if cand is not None and type(cand) is cand.__class__ and cand.title == viewer.title and \
            len(cand.layers) == len(viewer.layers) and all(a == b for a, b in zip(viewer.layers, cand.layers)):
        return cand
    log.warning("could not find the viewer behind napari's proxy; layer identity checks may fail")
    return viewer


def main_window_of(widget: QWidget) -> QMainWindow | None:
    """The ``QMainWindow`` above ``widget`` in its Qt parents (napari's window once docked;
    a floating dock keeps the main window as its parent), else ``None``."""
    w = widget.parentWidget()
    while w is not None and not isinstance(w, QMainWindow):
        w = w.parentWidget()
    return w


def dock_of(widget: QWidget) -> QDockWidget | None:
    """The ``QDockWidget`` above ``widget`` in its Qt parents, else ``None``."""
    w = widget.parentWidget()
    while w is not None and not isinstance(w, QDockWidget):
        w = w.parentWidget()
    return w


def fit_dock_soon(widget: QWidget) -> None:
    """Fit ``widget``'s dock to its controls once napari's window has laid it out.

    A first pass right after docking and a second once the window settled (the dock title
    and the window's own resizing come in later event-loop turns); nothing happens for a
    widget that is gone or torn down by then.
    """
    ref = weakref.ref(widget)
    _PENDING_FITS[0] += 2

    def fit() -> None:
        _PENDING_FITS[0] -= 1
        me = ref()
        if me is not None and not getattr(me, "_torn_down", False):
            fit_dock(me)

    QTimer.singleShot(0, fit)
    QTimer.singleShot(300, fit)


#: dock fits scheduled by :func:`fit_dock_soon` that have not run yet (see :func:`pending_fits`)
_PENDING_FITS = [0]


def pending_fits() -> int:
    """How many scheduled dock fits have not run yet (0: the docks' sizes are settled).

    Lets a caller that maps canvas pixels (a test driving the mouse) wait until napari's
    window stops resizing the canvas.
    """
    return _PENDING_FITS[0]


def fit_dock(widget: QWidget) -> bool:
    """Let the dock napari made for ``widget`` be as narrow as the widget allows.

    A dock is at least as wide as its title bar asks: napari's title label asks for the
    whole title ("Interactive segmentation (MedSegFM)"), wider than the controls need,
    which takes canvas width on a laptop screen. The title's labels may shrink (Qt elides
    nothing, the text is clipped at the dock's edge; the dock's name is also its tab and
    the Window menu entry), then the dock is resized to the widget's own width hint.
    Public Qt API on the widget's own parents only. Returns True when a dock was fitted.
    """
    dock = dock_of(widget)
    win = main_window_of(widget)
    if dock is None or win is None or dock.isFloating():
        return False
    title = dock.titleBarWidget()
    if title is not None:
        for lab in title.findChildren(QLabel):
            pol = lab.sizePolicy()
            lab.setSizePolicy(QSizePolicy.Policy.Ignored, pol.verticalPolicy())
            lab.setMinimumWidth(0)
    # a dock's layout only ever raises its minimum width (Qt keeps the largest one it set while
    # an explicit minimum exists): start again from the content's minimum as it is now
    dock.setMinimumWidth(50)  # (napari's own explicit minimum)
    dock.layout().invalidate()
    # the docks of one side share a column: size them together (to the widest one's need)
    area = win.dockWidgetArea(dock)
    column = [d for d in win.findChildren(QDockWidget)
              if d.isVisible() and not d.isFloating() and win.dockWidgetArea(d) == area]
    def hint(w: QWidget) -> int:
        body = getattr(w, "scroll", None)  # our docks: the scrolling body knows its width live
        return int((body if isinstance(body, QWidget) else w).sizeHint().width())

    need = max([hint(widget)] + [hint(d.widget()) for d in column if d.widget() is not None])
    win.resizeDocks(column or [dock], [need] * max(len(column), 1), Qt.Orientation.Horizontal)
    if len(column) > 1:
        # stacked docks share the height as their contents ask (napari gives the newest the most)
        win.resizeDocks(column, [max(int(d.widget().sizeHint().height()), 50) if d.widget() is not None else 50
                                 for d in column], Qt.Orientation.Vertical)
    return True


class HostedShortcuts:
    """Keyboard shortcuts of a dock widget.

    They are created on the widget itself (``WindowShortcut`` context) and moved onto
    napari's main window by :meth:`attach` once the widget is docked, so they fire
    wherever the focus is in that window; :meth:`remove` deletes them.
    """

    def __init__(self, owner: QWidget) -> None:
        self.owner = owner
        self.shortcuts: list[QShortcut] = []
        self.host: QWidget = owner

    def add(self, keys: str, fn: Callable[[], Any], *, enabled: bool = True) -> QShortcut:
        q = QShortcut(QKeySequence(keys), self.host)
        q.setContext(Qt.ShortcutContext.WindowShortcut)
        q.activated.connect(fn)
        q.setEnabled(enabled)
        self.shortcuts.append(q)
        return q

    def attach(self) -> QMainWindow | None:
        """Move the shortcuts to the owner's main window (if docked); returns it."""
        win = main_window_of(self.owner)
        host = win if win is not None else self.owner
        if host is not self.host:
            for q in self.shortcuts:
                q.setParent(host)
            self.host = host
        return win

    def remove(self) -> None:
        for q in self.shortcuts:
            try:
                q.setEnabled(False)
                q.setParent(None)
                q.deleteLater()
            except RuntimeError:  # already deleted with its window
                pass
        self.shortcuts.clear()
        self.host = self.owner


def window_actions(qwin: Any) -> list[Any]:
    """Every QAction of napari's main window: its children and its menus' (app-model actions are
    parented to the application, so ``findChildren`` alone misses them)."""
    from qtpy.QtGui import QAction

    seen: dict[int, Any] = {id(a): a for a in qwin.findChildren(QAction)}

    def walk(menu: Any) -> None:
        for a in menu.actions():
            seen.setdefault(id(a), a)
            if a.menu() is not None:
                walk(a.menu())

    bar = qwin.menuBar() if hasattr(qwin, "menuBar") else None
    if bar is not None:
        walk(bar)
    return list(seen.values())


class CloseGuard(QObject):
    """Asks before napari's window closes with unsaved annotations, and stops the session
    when the window really closes (napari's ``Window.close`` included)."""

    def __init__(self, widget: Any, window: Any) -> None:
        super().__init__()
        self._widget = widget
        self._window = window
        # File > Close Window / Exit call the main window's close(confirm_need=True): ask there too
        orig = window.close
        self._orig_close = orig

        def close(*args: Any, **kwargs: Any) -> Any:
            confirm = kwargs.get("confirm_need", args[1] if len(args) > 1 else False)
            if confirm and not widget.confirm_discard():
                return None
            return orig(*args, **kwargs)

        window.close = close
        window.installEventFilter(self)

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt API)
        if event.type() == QEvent.Type.Close and obj is self._window:
            if not event.spontaneous():
                # napari closing its window (Window.close, File > Close after our question): it
                # does not refuse these, so stop the session now, before napari tears down
                self._widget.teardown()
                return False
            if not self._widget.confirm_discard():
                event.ignore()
                return True
            # a user's close: napari may still refuse (its own confirmation dialog), so decide
            # once the event is done
            QTimer.singleShot(0, self._after_close)
        return False

    def _after_close(self) -> None:
        try:
            closed = not self._window.isVisible()
        except RuntimeError:  # the window is gone
            closed = True
        if closed:
            self._widget.teardown()

    def remove(self) -> None:
        try:
            self._window.removeEventFilter(self)
            if "close" in self._window.__dict__:
                del self._window.close
        except RuntimeError:  # window already deleted
            pass
