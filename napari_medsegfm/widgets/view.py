"""The annotation dock widget: Qt widgets wired to an :class:`AnnotationController`.

Nothing here decides anything: every button, shortcut and list row calls a
controller method, and controller events update the widgets. Worker results reach
the GUI thread through :class:`_Invoker`, a Qt signal (queued across threads).

The widget is assembled from Qt mixins: :mod:`.view_build` creates the widgets,
:mod:`.view_objects` keeps the object table, :mod:`.view_saving` holds Save, Save as… and
the question before closing; the main window's close guard and actions are in
:mod:`._host`. This module wires them to the controller and keeps the shortcuts, the
backend list, the tool buttons, the busy line and teardown.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from qtpy.QtCore import QEvent, QObject, Qt, QTimer, Signal
from qtpy.QtGui import QKeySequence, QShortcut
from qtpy.QtWidgets import QLabel, QProgressBar, QWidget

from ..backends.base import BackendStatus, capability_names
from ..types import Capability
from ._host import CloseGuard as _CloseGuard
from ._host import HostedShortcuts, fit_dock_soon, main_window_of, plain_viewer
from ._host import window_actions as _window_actions
from .controller import AnnotationController
from .objects import latency_text
from .shortcuts import SHORTCUTS, keys_text
from .view_build import AnnotationLayout
from .view_objects import ObjectsTable
from .view_saving import SaveDialogs

__all__ = ["AnnotationWidget"]

log = logging.getLogger(__name__)

_STATE_MARK = {"ready": "", "weights missing": " — weights missing", "package missing": " — package missing",
               "error": " — error"}


class _Invoker(QObject):
    """Runs callables on the thread that owns it (the GUI thread); emit from any thread."""

    call = Signal(object)

    def __init__(self) -> None:
        super().__init__()
        self.call.connect(self._run, Qt.ConnectionType.QueuedConnection)

    def _run(self, fn: Any) -> None:
        try:
            fn()
        except Exception:
            log.exception("posted call failed")

    def post(self, fn: Any) -> None:
        self.call.emit(fn)


class AnnotationWidget(AnnotationLayout, ObjectsTable, SaveDialogs, QWidget):
    """napari dock widget for interactive segmentation (Plugins > napari-medsegfm).

    Parameters
    ----------
    napari_viewer : napari.Viewer
        The viewer (napari passes it).
    backend : str or backend instance, optional
        Backend to start with (default: the registry's default).
    auto_attach : bool
        Attach to the image layer as soon as there is one.
    """

    #: the object list always has room for this many rows
    TABLE_MIN_ROWS = 4

    def __init__(self, napari_viewer: Any, backend: Any = "default", *, auto_attach: bool = True) -> None:
        super().__init__()
        # napari hands plugin widgets a public-only proxy, which wraps every layer anew on each
        # access: the controller compares layers by identity, so it gets the viewer itself (and
        # uses public API only); napari's main window comes from the dock's Qt parents (_host)
        napari_viewer = plain_viewer(napari_viewer)
        self.viewer = napari_viewer
        self._invoker = _Invoker()
        self.controller = AnnotationController(napari_viewer, post=self._invoker.post, notify=self._notify,
                                               backend=backend)
        self._hosted = HostedShortcuts(self)
        self._shortcuts: list[QShortcut] = self._hosted.shortcuts
        self._docked_in: Any = None
        self._save_action_keys: list[tuple[Any, Any]] = []
        self._close_guard: _CloseGuard | None = None
        self._torn_down = False
        self._updating = False
        self._shown_rows: Any = None
        self.ask_discard = self._ask_discard_dialog  # replaceable (tests)
        self._build()
        self._wire()
        self._busy_timer = QTimer(self)
        self._busy_timer.setInterval(250)
        self._busy_timer.timeout.connect(self._tick_busy)
        self._install_shortcuts()
        self._refresh_all()
        if auto_attach:
            self.viewer.layers.events.inserted.connect(self._maybe_auto_attach)
            self._maybe_auto_attach()

    # ================================================================ wiring
    def _wire(self) -> None:
        c = self.controller
        ev = c.events
        ev.busy.connect(self._on_busy)
        ev.objects.connect(self._refresh_objects)
        ev.current.connect(self._on_current)
        ev.status.connect(self._on_status)
        ev.tools.connect(self._refresh_tools)
        ev.backends.connect(self._on_backends)
        ev.backend.connect(self._on_backend)
        ev.history.connect(self._refresh_history)
        ev.saved.connect(self._on_saved)
        ev.attached.connect(self._on_attached)

        self.attach_btn.clicked.connect(self._attach_selected)
        self.backend_combo.activated.connect(self._on_backend_picked)
        self.new_btn.clicked.connect(lambda: self._guard(c.add_object))
        self.accept_btn.clicked.connect(lambda: self._guard(c.accept_object))
        self.reset_btn.clicked.connect(lambda: self._guard(c.reset_object))
        self.delete_btn.clicked.connect(lambda: self._guard(c.delete_object))
        self.text_btn.clicked.connect(self._on_text)
        self.name_edit.returnPressed.connect(self._on_text)
        self.table.itemSelectionChanged.connect(self._on_table_selection)
        self.table.itemChanged.connect(self._on_table_edit)
        self.table.cellDoubleClicked.connect(lambda row, col: self._pick_color(row) if col == 0 else None)
        self.table.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.table.customContextMenuRequested.connect(self._table_menu)
        for tool, b in self.tool_buttons.items():
            b.clicked.connect(lambda _=False, t=tool: self._guard(c.activate_tool, t))
        self.negative_btn.toggled.connect(lambda on: c.set_negative(on) if on != c.negative else None)
        self.autorun_check.toggled.connect(lambda on: setattr(c, "auto_run", bool(on)))
        self.zmin_btn.clicked.connect(lambda: self._guard(c.set_z_bound, "min"))
        self.zmax_btn.clicked.connect(lambda: self._guard(c.set_z_bound, "max"))
        self.zmin_spin.valueChanged.connect(lambda v: self._on_spin("min", v))
        self.zmax_spin.valueChanged.connect(lambda v: self._on_spin("max", v))
        self.run_box_btn.clicked.connect(lambda: self._guard(c.run_box))
        self.run_all_btn.clicked.connect(lambda: self._guard(c.run_all_boxes))
        self.undo_btn.clicked.connect(lambda: self._guard(c.undo))
        self.redo_btn.clicked.connect(lambda: self._guard(c.redo))
        self.save_btn.clicked.connect(self.save)
        self.saveas_btn.clicked.connect(self.save_as)
        self.cancel_btn.clicked.connect(c.cancel)
        self.help_btn.toggled.connect(self.help_panel.setVisible)
        self.viewer.layers.events.inserted.connect(self._refresh_images)
        self.viewer.layers.events.removed.connect(self._refresh_images)
        self.viewer.dims.events.current_step.connect(self._on_step)

    def _stop_stale_activity_spinner(self) -> None:
        """Stop an animated "in progress" spinner of napari's window when no progress bar shows.

        napari 0.9 leaves the spinner of its "Opening Files" progress animating after
        ``viewer.open`` has finished. Each frame of that GIF re-composes the whole window,
        OpenGL canvas included; without a GPU (software OpenGL, remote desktops) that kept
        ~0.7 of a CPU core busy, taken from inference (measured: 15 CT_AMOS boxes, llvmpipe
        threads at 68-79 % CPU; 35 frames/s with nothing moving). Found through public Qt API
        only (labels showing a running ``QMovie``; napari's progress items are progress bars):
        while any progress bar outside this dock is visible, nothing is touched.
        """
        from qtpy.QtGui import QMovie

        win = main_window_of(self)
        if win is None:
            return
        try:
            if any(b.isVisible() and not self.isAncestorOf(b) for b in win.findChildren(QProgressBar)):
                return
            for lbl in win.findChildren(QLabel):
                mov = lbl.movie()
                if mov is not None and mov.state() == QMovie.MovieState.Running and not self.isAncestorOf(lbl):
                    mov.stop()
                    lbl.hide()
        except RuntimeError:  # widgets deleted meanwhile
            pass

    def _on_attached(self, attached: bool) -> None:
        self._stop_stale_activity_spinner()
        if attached:
            # the case's own class names first in the name/text completer
            self._set_completer(sorted(set(self.controller.label_names.values())))
        self._refresh_all()

    def _guard(self, fn: Any, *args: Any) -> Any:
        """Run a controller action; a ValueError becomes a notification instead of a traceback."""
        try:
            return fn(*args)
        except ValueError as exc:
            self._notify("warning", str(exc))
            return None

    def _notify(self, level: str, message: str) -> None:
        from napari.utils import notifications

        {"error": notifications.show_error, "warning": notifications.show_warning}.get(
            level, notifications.show_info)(message)

    # ================================================================ shortcuts
    def _window(self) -> Any:
        """napari's main window (a ``QMainWindow``) once docked, else ``None`` (public Qt API)."""
        return main_window_of(self)

    def _shortcut_actions(self) -> dict[str, Any]:
        c = self.controller
        return {
            "tool_box": lambda: c.activate_tool("box"),
            "tool_click": lambda: c.activate_tool("click"),
            "toggle_negative": c.toggle_negative,
            "tool_scribble": lambda: c.activate_tool("scribble"),
            "tool_brush": lambda: c.activate_tool("brush"),
            "tool_pan": lambda: c.activate_tool("pan"),
            "set_z_min": lambda: c.set_z_bound("min"),
            "set_z_max": lambda: c.set_z_bound("max"),
            "run_box": c.run_box,
            "run_all_boxes": c.run_all_boxes,
            "new_object": c.add_object,
            "next_object": lambda: c.step_object(1),
            "previous_object": lambda: c.step_object(-1),
            "focus_name": self._focus_name,
            "accept_object": c.accept_object,
            "reset_object": c.reset_object,
            "delete_object": c.delete_object,
            "undo": c.undo,
            "redo": c.redo,
            "save": self.save,
            "cancel": c.cancel,
            "toggle_help": lambda: self.help_btn.toggle(),
        }

    def _fit_dock_soon(self) -> None:
        fit_dock_soon(self)

    def _install_shortcuts(self) -> None:
        """Create the dock's shortcuts (on the widget; :meth:`_on_docked` moves them onto napari's
        main window)."""
        actions = self._shortcut_actions()
        for sc in SHORTCUTS:
            fn = actions[sc.action]
            for key in sc.keys:
                q = self._hosted.add(key, lambda f=fn, a=sc.action: self._run_shortcut(a, f),
                                     enabled=not sc.only_when_busy)
                if sc.only_when_busy:
                    q._only_when_busy = True  # type: ignore[attr-defined]
        self._on_docked()

    def _on_docked(self) -> None:
        """Once in napari's window: shortcuts onto it, Ctrl+S lent by File > Save Selected Layers,
        the close guard. Called again on every re-parenting (no-op when nothing changed)."""
        if getattr(self, "_hosted", None) is None or self._torn_down:
            return
        qwin = self._hosted.attach()
        if qwin is None or qwin is self._docked_in:
            return
        self._release_window()
        self._docked_in = qwin
        self._fit_dock_soon()  # as narrow as the controls allow: the canvas keeps its width
        # napari's File > Save Selected Layers owns Ctrl+S: lend it to us while docked
        taken = {QKeySequence(k) for sc in SHORTCUTS for k in sc.keys}
        for act in _window_actions(qwin):
            if act.shortcut() in taken:
                self._save_action_keys.append((act, act.shortcut()))
                act.setShortcut(QKeySequence())
        self._close_guard = _CloseGuard(self, qwin)

    def _release_window(self) -> None:
        for act, key in self._save_action_keys:
            try:
                act.setShortcut(key)
            except RuntimeError:
                pass
        self._save_action_keys.clear()
        if self._close_guard is not None:
            self._close_guard.remove()
            self._close_guard = None
        self._docked_in = None

    def _run_shortcut(self, action: str, fn: Any) -> None:
        if self.controller.session is None and action not in ("toggle_help", "save"):
            self._notify("info", "open an image first")
            return
        self._guard(fn)

    def _remove_shortcuts(self) -> None:
        self._hosted.remove()
        self._release_window()

    def _focus_name(self) -> None:
        self.name_edit.setFocus()
        self.name_edit.selectAll()

    # ================================================================ attach
    def _images(self) -> list[Any]:
        from napari.layers import Image

        return [ly for ly in self.viewer.layers if isinstance(ly, Image)]

    def _refresh_images(self, event: Any = None) -> None:
        if self._torn_down:
            return
        names = [ly.name for ly in self._images()]
        cur = self.image_combo.currentText()
        self.image_combo.blockSignals(True)
        self.image_combo.clear()
        self.image_combo.addItems(names)
        attached = self.controller.image_layer
        if attached is not None and attached.name in names:
            self.image_combo.setCurrentText(attached.name)
        elif cur in names:
            self.image_combo.setCurrentText(cur)
        self.image_combo.blockSignals(False)
        self.attach_btn.setEnabled(bool(names))

    def _maybe_auto_attach(self, event: Any = None) -> None:
        if self._torn_down or self.controller.attached:
            return
        if event is not None:
            QTimer.singleShot(0, self._maybe_auto_attach)  # let the reader add all its layers first
            return
        if self.controller.find_image_layer() is not None:
            try:
                self.controller.attach()
            except ValueError as exc:
                self._notify("warning", str(exc))

    def _attach_selected(self) -> None:
        name = self.image_combo.currentText()
        layer = next((ly for ly in self._images() if ly.name == name), None)
        if layer is None:
            return
        if self.controller.attached and layer is self.controller.image_layer:
            return
        if self.controller.dirty and not self.confirm_discard():
            return
        self._guard(self.controller.attach, layer)

    # ================================================================ backends
    def _on_backends(self, statuses: dict[str, BackendStatus]) -> None:
        from qtpy.QtGui import QStandardItemModel

        self._updating = True
        self.backend_combo.clear()
        for name, st in statuses.items():
            self.backend_combo.addItem(f"{name}{_STATE_MARK.get(st.state, ' — ' + st.state)}", name)
            i = self.backend_combo.count() - 1
            caps = ", ".join(capability_names(st.capabilities or Capability.NONE)) or "—"
            tip = f"{name}: {st.state}; device {st.device}; prompts: {caps}"
            if st.message:
                tip += f"\n{st.message}"
            self.backend_combo.setItemData(i, tip, Qt.ItemDataRole.ToolTipRole)
            if not st.ready:
                model = self.backend_combo.model()
                if isinstance(model, QStandardItemModel):
                    item = model.item(i)
                    item.setEnabled(False)
        self._select_backend_item(self.controller.backend_name)
        self._updating = False

    def _select_backend_item(self, name: str) -> None:
        i = self.backend_combo.findData(name)
        if i >= 0:
            self.backend_combo.setCurrentIndex(i)

    def _on_backend_picked(self, index: int) -> None:
        if self._updating:
            return
        name = self.backend_combo.itemData(index)
        if name and name != self.controller.backend_name:
            self._guard(self.controller.set_backend, name)

    def _on_backend(self, name: str, status: BackendStatus | None) -> None:
        self._updating = True
        self._select_backend_item(name)
        self._updating = False
        if status is None:
            self.backend_info.setText("no backend")
            return
        caps = ", ".join(c.lower() for c in capability_names(status.capabilities or Capability.NONE)) or "—"
        weights = status.weights or ("not needed" if status.state == "ready" else status.state)
        w = weights if len(weights) < 48 else "…" + weights[-46:]
        self.backend_info.setText(f"{status.state} · device {status.device} · weights {w}<br>prompts: {caps}")
        self.backend_info.setToolTip(f"weights: {weights}\n{status.message}".strip())

    # ================================================================ refresh
    def _refresh_all(self) -> None:
        if self._torn_down:
            return
        self._refresh_images()
        self._refresh_objects()
        self._refresh_tools()
        self._refresh_history()
        self._on_busy(self.controller.busy)

    def _refresh_tools(self) -> None:
        if self._torn_down:
            return
        states = self.controller.tool_states()
        for tool, b in self.tool_buttons.items():
            st = states[tool]
            b.setEnabled(st.enabled)
            base = b._base_tip  # type: ignore[attr-defined]
            b.setToolTip(base if st.enabled else f"{base}\nUnavailable: {st.reason}")
        for b, tool in ((self.run_box_btn, "run_boxes"), (self.run_all_btn, "run_boxes"),
                        (self.zmin_btn, "z_extent"), (self.zmax_btn, "z_extent"),
                        (self.zmin_spin, "z_extent"), (self.zmax_spin, "z_extent")):
            st = states[tool]
            b.setEnabled(st.enabled)
            if not st.enabled:
                b.setToolTip(f"Unavailable: {st.reason}")
            elif hasattr(b, "_base_tip"):
                b.setToolTip(b._base_tip)
        # what the backend cannot do is said in the tooltips, not in a permanent warning line (the
        # status line says it once when the user names an object the backend cannot segment)
        st = states["text"]
        note = "" if st.enabled or not self.controller.attached else st.reason
        self.text_btn.setText("Name / segment" if st.enabled else "Name")
        self.text_btn.setToolTip(self.text_btn._base_tip + (f"\n{note}" if note else ""))  # type: ignore[attr-defined]
        self.name_edit.setToolTip(self._name_tip + (f"\n{note}" if note else ""))
        self.negative_btn.blockSignals(True)
        self.negative_btn.setChecked(self.controller.negative)
        self.negative_btn.blockSignals(False)
        self.negative_btn.setEnabled(states["click"].enabled or states["scribble"].enabled)
        active = self.viewer.layers.selection.active
        c = self.controller
        current_tool = {id(c.box_layer): "box", id(c.click_layer): "click", id(c.scribble_layer): "scribble",
                        id(c.seg_layer): "brush"}.get(id(active)) if active is not None else None
        for tool, b in self.tool_buttons.items():
            b.setChecked(tool == current_tool and getattr(active, "mode", "") != "pan_zoom")
        self._refresh_z()

    def _refresh_z(self) -> None:
        c = self.controller
        vol3d = c.volume is not None and c.volume.ndim == 3
        n = c.volume.spatial_shape[0] - 1 if vol3d else 0
        ext = c.box_extent() if vol3d else None
        if ext is None and vol3d:
            z = c.current_z() or 0
            lo, hi = c.pending_z
            ext = (z if lo is None else lo, z if hi is None else hi)
        self._updating = True
        for sp, v in ((self.zmin_spin, ext[0] if ext else 0), (self.zmax_spin, ext[1] if ext else 0)):
            sp.blockSignals(True)
            sp.setRange(0, max(n, 0))
            sp.setValue(int(v))
            sp.blockSignals(False)
        self._updating = False

    def _on_spin(self, which: str, value: int) -> None:
        if self._updating:
            return
        self._guard(self.controller.set_z_bound, which, int(value))

    def _on_step(self, event: Any = None) -> None:
        if self.controller.box_extent() is None:
            self._refresh_z()

    def _refresh_history(self) -> None:
        if self._torn_down:
            return
        c = self.controller
        s = c.session
        self.undo_btn.setEnabled(c.can_undo)
        self.redo_btn.setEnabled(c.can_redo)
        self.undo_btn.setToolTip(f"Undo {s.undo_description} ({keys_text('undo')})" if s and c.can_undo
                                 else f"Undo ({keys_text('undo')})")
        self.redo_btn.setToolTip(f"Redo {s.redo_description} ({keys_text('redo')})" if s and c.can_redo
                                 else f"Redo ({keys_text('redo')})")
        self.save_btn.setEnabled(c.attached and not c.saving)
        self.saveas_btn.setEnabled(c.attached and not c.saving)
        self.save_btn.setText("Save*" if c.dirty else "Save")
        tip = f"Save into {c.save_target}" if c.has_save_handler else "Save into the case's own file"
        if getattr(self, "_save_tip", None) != tip:
            self._save_tip = tip
            self.save_btn._base_tip = f"{tip} ({keys_text('save')})"  # type: ignore[attr-defined]
            self.save_btn.setToolTip(self.save_btn._base_tip)  # type: ignore[attr-defined]

    # ================================================================ busy
    def _on_busy(self, busy: bool) -> None:
        if self._torn_down:
            return
        self.progress.setVisible(busy)
        self.cancel_btn.setEnabled(busy)
        for q in self._shortcuts:
            if getattr(q, "_only_when_busy", False):
                q.setEnabled(busy)
        if busy and not self._busy_timer.isActive():
            self._busy_timer.start()
        if not busy:
            self._busy_timer.stop()
            self.busy_label.setText("idle")
        else:
            self._stop_stale_activity_spinner()
        self._tick_busy()
        c = self.controller
        if c.last_backend_s is not None:
            self.latency_label.setText(latency_text(c.last_backend_s, c.last_roundtrip_s or 0.0,
                                                    c.last_queued_s, c.last_warmup_wait_s))
        self._refresh_objects()

    def _tick_busy(self) -> None:
        c = self.controller
        if not c.busy:
            return
        since = c.busy_since
        if since is None:
            self.busy_label.setText(f"loading {c._backend_loading or 'backend'}…")
            return
        n = c.inflight
        what = "waiting for the model's warm-up (encoding the image)" if c.warming_up else \
            f"segmenting{f' ({n})' if n > 1 else ''}"
        self.busy_label.setText(f"{what}… {time.perf_counter() - since:.1f} s")

    def _on_status(self, text: str) -> None:
        if self._torn_down:
            return
        self.status_label.setText(text)
        self.status_label.setToolTip(text)

    # ================================================================ text
    def _on_text(self) -> None:
        text = self.name_edit.text().strip()
        if not text or not self.controller.attached:
            return
        self._guard(self.controller.text_prompt, text)

    # ================================================================ teardown
    def event(self, e: QEvent) -> bool:
        if e.type() == QEvent.Type.ParentChange and self.parent() is None and not self._torn_down \
                and getattr(self, "_was_docked", False):
            self.teardown()
        elif e.type() == QEvent.Type.ParentChange and self.parent() is not None:
            self._was_docked = True
            self._on_docked()
        elif e.type() == QEvent.Type.Show:
            self._on_docked()
        return super().event(e)

    def teardown(self) -> None:
        """Disconnect from the viewer, give Ctrl+S back to napari, stop the session."""
        if self._torn_down:
            return
        self._torn_down = True
        self._busy_timer.stop()
        self._remove_shortcuts()
        for emitter in self.controller.events.signals():  # late posts (backend list, saves) find no widget
            emitter.disconnect()
        for emitter, fn in ((self.viewer.layers.events.inserted, self._maybe_auto_attach),
                            (self.viewer.layers.events.inserted, self._refresh_images),
                            (self.viewer.layers.events.removed, self._refresh_images),
                            (self.viewer.dims.events.current_step, self._on_step)):
            try:
                emitter.disconnect(fn)
            except (ValueError, RuntimeError, TypeError):
                pass
        self.controller.close()
