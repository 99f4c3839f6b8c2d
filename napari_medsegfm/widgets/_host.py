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
  main window once the widget is docked.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtGui import QKeySequence
from qtpy.QtWidgets import QMainWindow, QShortcut, QWidget

__all__ = ["plain_viewer", "main_window_of", "HostedShortcuts"]


def plain_viewer(viewer: Any) -> Any:
    """The viewer itself when napari passed a ``PublicOnlyProxy`` of it (identity of layers
    must hold across accesses); only public attributes are used on it."""
    return getattr(viewer, "__wrapped__", viewer)


def main_window_of(widget: QWidget) -> QMainWindow | None:
    """The ``QMainWindow`` above ``widget`` in its Qt parents (napari's window once docked;
    a floating dock keeps the main window as its parent), else ``None``."""
    w = widget.parentWidget()
    while w is not None and not isinstance(w, QMainWindow):
        w = w.parentWidget()
    return w


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
