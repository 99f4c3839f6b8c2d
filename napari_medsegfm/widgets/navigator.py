"""The dataset navigator dock widget: walk a dataset case by case, with status, autosave and locks.

The widget is a thin Qt view over :class:`~napari_medsegfm.dataset.workspace.DatasetWorkspace`
(Qt-free, tested headless): a table of cases (case, modality, shape, number of labels,
status, comment, last edited, by, Dice of the pre-segmentation against the labels),
status filter, text filter, sorting by any column (click a header), a review queue
(worst agreement first), next/previous/jump with keyboard shortcuts, status and
comment of the open case, export.

Opening a case: the previous case is autosaved first (and its lock released), then
the new case's lock is taken (a case being edited in another viewer opens read-only,
or not at all, after a clear message), the case is loaded (usually already prefetched
in the background) and shown with its saved correction, else its existing labels.
Edits on the segmentation layer are autosaved to the dataset's sidecar folder at the
latest ``autosave_s`` seconds after the first unsaved edit, and right after each accepted
prompt when the annotation widget drives the case.

Keyboard shortcuts (on napari's main window, so they work whatever has focus):
``Ctrl+PgDown`` next case, ``Ctrl+PgUp`` previous case, ``Ctrl+J`` jump to a case,
``Ctrl+Shift+D`` mark done and go to the next case.

Parts: :mod:`.navigator_build` creates the widgets, :mod:`.navigator_saving` holds editing,
autosave, status, comment and export; the Qt-free case display is :mod:`.case_editor`, the
table model :mod:`.case_table`. This module keeps the dataset, the case navigation and
opening, the choice of editor and teardown.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtCore import QModelIndex, Qt, QTimer, Signal
from qtpy.QtWidgets import QFileDialog, QInputDialog, QMessageBox, QShortcut, QWidget

from ..dataset.status import STATUSES, CaseLockedError, LockLostError
from ..dataset.workspace import DICE_METRIC, DatasetWorkspace, OpenCase
from ._host import HostedShortcuts, fit_dock_soon, plain_viewer
from .case_editor import AnnotationEditor, LayerEditor
from .case_table import CaseTableModel
from .navigator_build import NAVIGATOR_SHORTCUTS, NavigatorLayout
from .navigator_saving import CaseSaving

__all__ = ["DatasetNavigator", "CaseTableModel", "NAVIGATOR_SHORTCUTS"]

logger = logging.getLogger(__name__)


def _weak(method: Callable[..., Any]) -> Callable[..., Any]:
    """A callable holding only a weak reference to a bound method's object (no reference cycles
    between the widget and the objects it hands callbacks to)."""
    ref = weakref.WeakMethod(method)

    def call(*args: Any) -> Any:
        m = ref()
        return None if m is None else m(*args)

    return call


#: How the annotation widget describes where its Save goes while the navigator drives it.
SAVE_TARGET = "the dataset sidecar (original files untouched)"


class DatasetNavigator(NavigatorLayout, CaseSaving, QWidget):
    """Dock widget: a dataset's case table and the case-by-case correction workflow.

    Parameters
    ----------
    napari_viewer : napari.Viewer
    root : path-like, optional
        Dataset folder to open right away.
    sidecar : path-like, optional
        Sidecar folder (default ``<dataset>/.medsegfm``).
    autosave_s : float, optional
        Autosave interval (default 5 s, ``$MEDSEGFM_AUTOSAVE_S``).
    """

    case_opened = Signal(str)
    dataset_opened = Signal(str)
    autosaved = Signal(str)
    _edited = Signal(bool)  # (accepted prompt?) from session listeners, queued to the GUI thread
    _scanned = Signal(int)  # background label counting finished (number of cases scanned)

    def __init__(self, napari_viewer: Any, *, root: str | Path | None = None, sidecar: str | Path | None = None,
                 autosave_s: float | None = None, use_annotation_widget: bool = True,
                 auto_scan: bool = True, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        # napari passes a public-only proxy of the viewer; layer identity needs the viewer itself
        # (only public attributes are used; napari's window comes from the Qt parents, see _host)
        napari_viewer = plain_viewer(napari_viewer)
        self.viewer = napari_viewer
        self.sidecar = sidecar
        self.autosave_s = autosave_s
        self.use_annotation_widget = use_annotation_widget
        self.auto_scan = auto_scan
        self._scan_thread: threading.Thread | None = None
        self._scan_stop = threading.Event()
        self.workspace: DatasetWorkspace | None = None
        self.current: OpenCase | None = None
        self.editor: Any = LayerEditor(napari_viewer, _weak(self._on_edit))
        self.last_switch_s: float | None = None
        self._build()
        self.autosaved.connect(self._after_autosave)
        self._edited.connect(self._handle_edit, Qt.ConnectionType.QueuedConnection)
        self._scanned.connect(self._after_scan, Qt.ConnectionType.QueuedConnection)
        self._timer = QTimer(self)
        self._timer.setInterval(500)
        self._timer.timeout.connect(self._tick)
        self._timer.start()
        self._install_shortcuts()
        self._window: Any = None
        self.destroyed.connect(self._shutdown)
        if root is not None:
            self.open_dataset(root)

    # ------------------------------------------------------------------ UI
    def _fit_dock_soon(self) -> None:
        fit_dock_soon(self)

    def _install_shortcuts(self) -> None:
        """The navigator's shortcuts: on the widget, moved onto napari's main window once docked
        (:meth:`_on_docked`), so they work whatever has focus."""
        self._hosted = HostedShortcuts(self)
        self._shortcuts: list[QShortcut] = self._hosted.shortcuts
        for action, (keys, _desc) in NAVIGATOR_SHORTCUTS.items():
            self._hosted.add(keys, getattr(self, action))

    def _on_docked(self) -> None:
        win = self._hosted.attach()
        if win is not None and win is not self._window:
            self._window = win
            self._fit_dock_soon()  # as narrow as the controls allow: the canvas keeps its width
            win.destroyed.connect(self._shutdown)  # napari's window goes: autosave and unlock

    def event(self, e: Any) -> bool:  # noqa: D102 (Qt API)
        from qtpy.QtCore import QEvent

        if e.type() in (QEvent.Type.ParentChange, QEvent.Type.Show) and getattr(self, "_hosted", None) is not None:
            self._on_docked()
        return super().event(e)

    def _update_enabled(self) -> None:
        has_ds = self.workspace is not None
        has_case = self.current is not None
        for w in (self.prev_btn, self.next_btn, self.jump_btn, self.scan_btn, self.export_btn, self.review_check,
                  self.status_filter, self.search_edit):
            w.setEnabled(has_ds)
        for w in (self.status_combo, self.comment_edit, self.done_btn):
            w.setEnabled(has_case)
        self.save_btn.setEnabled(has_case and not (self.current and self.current.read_only))

    def show_message(self, text: str, error: bool = False) -> None:
        self.message.setText(text)
        self.message.setStyleSheet("color: #e74c3c;" if error else "")
        if error:
            logger.warning("%s", text)

    # ------------------------------------------------------------------ dataset
    def _browse(self) -> None:
        d = QFileDialog.getExistingDirectory(self, "Open dataset folder", self.path_edit.text() or str(Path.home()))
        if d:
            self.open_dataset(d)

    def open_dataset(self, root: str | Path) -> bool:
        """Open a dataset folder (closing the current one, autosaving its open case)."""
        try:
            ws = DatasetWorkspace(root, sidecar=self.sidecar, autosave_s=self.autosave_s)
        except (FileNotFoundError, ValueError, OSError) as exc:
            self.show_message(f"cannot open {root}: {exc}", error=True)
            return False
        self.close_dataset()
        self.workspace = ws
        self.path_edit.setText(str(ws.root))
        self.refresh()
        self.show_message(f"{ws.catalog.describe()} — sidecar {ws.sidecar}")
        self._update_enabled()
        if self.auto_scan:
            self.scan_in_background()
        self.dataset_opened.emit(str(ws.root))
        return True

    def scan_in_background(self) -> None:
        """Count the labels of every case not counted yet, on a background thread (cached)."""
        if self.workspace is None or (self._scan_thread is not None and self._scan_thread.is_alive()):
            return
        ws, stop = self.workspace, self._scan_stop
        stop.clear()
        done = _weak(self._emit_scanned)

        def run() -> None:
            try:
                n = ws.scan(stop=stop)
            except (OSError, ValueError, RuntimeError) as exc:  # e.g. the database closed under us
                logger.warning("background label counting stopped: %s", exc)
                return
            if not stop.is_set():
                done(n)

        self._scan_thread = threading.Thread(target=run, name="medsegfm-scan", daemon=True)
        self._scan_thread.start()

    def _emit_scanned(self, n: int) -> None:
        try:
            self._scanned.emit(n)
        except RuntimeError:
            pass

    def _after_scan(self, n: int) -> None:
        if n:
            self.refresh()

    def _stop_scan(self) -> None:
        self._scan_stop.set()
        if self._scan_thread is not None:
            self._scan_thread.join(timeout=30)
            self._scan_thread = None

    def close_dataset(self) -> None:
        self._stop_scan()
        self.close_case()
        if self.workspace is not None:
            self.workspace.close()
            self.workspace = None
        self.model.set_rows([])
        self._update_enabled()

    def refresh(self) -> None:
        """Re-read statuses, locks and metrics into the table (keeps filter and sort)."""
        if self.workspace is None:
            return
        self.model.set_rows(self.workspace.rows())
        self.table.resizeColumnsToContents()
        self._select_current()

    def _select_current(self) -> None:
        if self.current is None:
            return
        self.model.current_id = self.current.case_id
        r = self.model.row_of(self.current.case_id)
        if r >= 0:
            self.table.selectRow(r)
            self.table.scrollTo(self.model.index(r, 0))

    def _header_sorted(self, section: int, order: Any) -> None:
        if section >= 0 and self.review_check.isChecked():
            self.review_check.blockSignals(True)
            self.review_check.setChecked(False)
            self.review_check.blockSignals(False)

    def _set_review(self, on: bool) -> None:
        if on:
            self.table.horizontalHeader().setSortIndicator(-1, Qt.SortOrder.AscendingOrder)
        self.model.set_review(on)
        self._select_current()

    def scan(self) -> int:
        """Count labels (and Dice of in-file predictions) of cases not scanned yet."""
        if self.workspace is None:
            return 0
        n = self.workspace.scan()
        self.refresh()
        self.show_message(f"scanned {n} case(s)")
        return n

    # ------------------------------------------------------------------ cases
    def visible_order(self) -> list[str]:
        return self.model.order()

    def next_case(self) -> bool:
        return self._step(+1)

    def previous_case(self) -> bool:
        return self._step(-1)

    def _step(self, step: int) -> bool:
        if self.workspace is None:
            return False
        order = self.visible_order()
        cur = self.current.case_id if self.current else None
        nxt = DatasetWorkspace.neighbour(order, cur, step)
        if nxt is None or nxt == cur:
            self.show_message("no further case in this view" if order else "no case matches the filter")
            return False
        return self.open_case(nxt)

    def done_and_next(self) -> bool:
        if self.current is None:
            return False
        self.set_status("done")
        return self.next_case()

    def jump(self, text: str | None = None) -> bool:
        """Open the case named ``text`` (asks for it when None)."""
        if self.workspace is None:
            return False
        if text is None:
            text, ok = QInputDialog.getText(self, "Jump to case", "Case name or id:")
            if not ok or not text:
                return False
        e = self.workspace.catalog.find(text)
        if e is None:
            self.show_message(f"no case matches {text!r}", error=True)
            return False
        return self.open_case(e.case_id)

    def _open_index(self, index: QModelIndex) -> None:
        """Open the case of a table row (double-click, Enter): the case id is read from the index
        while it is current, the case opened once the event is done (duplicates are no-ops)."""
        if not index.isValid() or not 0 <= index.row() < len(self.model.rows):
            return
        case_id = self.model.rows[index.row()].case_id
        QTimer.singleShot(0, lambda: self.open_case(case_id) if self.workspace is not None else None)

    def _open_first_match(self) -> None:
        if self.model.rows:
            self.open_case(self.model.rows[0].case_id)

    def ask_when_locked(self, exc: CaseLockedError) -> str:
        """What to do with a case being edited elsewhere: ``"read_only"``, ``"steal"`` or ``"cancel"``."""
        box = QMessageBox(self)
        box.setIcon(QMessageBox.Icon.Warning)
        box.setWindowTitle("Case is being edited elsewhere")
        box.setText(str(exc))
        ro = box.addButton("Open read-only", QMessageBox.ButtonRole.AcceptRole)
        steal = box.addButton("Take over (the other viewer loses its lock)", QMessageBox.ButtonRole.DestructiveRole)
        box.addButton(QMessageBox.StandardButton.Cancel)
        box.exec()
        clicked = box.clickedButton()
        return "read_only" if clicked is ro else "steal" if clicked is steal else "cancel"

    def open_case(self, case_id: str) -> bool:
        """Autosave and close the current case, then open ``case_id``; returns False if not opened."""
        if self.workspace is None:
            return False
        if self.current is not None and self.current.case_id == case_id:
            self._select_current()
            return True
        t0 = time.perf_counter()
        ws = self.workspace
        try:
            holder = ws.store.lock_holder(case_id)
            read_only = steal = False
            if holder is not None and holder.owner != ws.store.owner:
                choice = self.ask_when_locked(CaseLockedError(case_id, holder))
                if choice == "cancel":
                    self.show_message(f"{case_id} is being edited elsewhere ({holder.describe()}); not opened", error=True)
                    return False
                read_only, steal = choice == "read_only", choice == "steal"
            self.close_case()
            oc = ws.open(case_id, read_only=read_only, steal=steal)
        except CaseLockedError as exc:  # lost a race with another viewer
            self.show_message(str(exc), error=True)
            self.refresh()
            return False
        except (FileNotFoundError, ValueError, OSError, KeyError) as exc:
            self.show_message(f"cannot open {case_id}: {exc}", error=True)
            return False
        self.current = oc
        self._choose_editor()
        try:
            self.editor.show(oc, prediction=self._prediction_for(case_id))
        except (ValueError, OSError) as exc:
            self.show_message(f"cannot show {case_id}: {exc}", error=True)
        if not oc.read_only:
            saved, failed, labels = _weak(self._emit_saved), _weak(self._autosave_error_threadsafe), _weak(
                self._current_labels)
            oc.start_autosave(labels, on_saved=lambda p, m, cid=case_id: saved(cid), on_error=failed)
        order = self.visible_order()
        where = f"{order.index(case_id) + 1 if case_id in order else '?'}/{len(order)}"
        self.case_label.setText(f"<b>{oc.entry.name}</b> ({where})")
        self.case_label.setToolTip(f"{oc.entry.name}: case {where} of this view")
        rec = ws.store.get(case_id)
        self.status_combo.setCurrentIndex(STATUSES.index(rec.status) if rec.status in STATUSES else 0)
        self.comment_edit.setText(rec.comment)
        self.show_message(oc.message(), error=oc.read_only)
        self.refresh()
        self._update_enabled()
        nxt = DatasetWorkspace.neighbour(self.visible_order(), case_id, +1)
        if nxt and nxt != case_id:
            ws.prefetch(nxt)
        self.last_switch_s = time.perf_counter() - t0
        self.case_opened.emit(case_id)
        return True

    def annotation_widget(self) -> Any:
        """The interactive segmentation widget docked in this viewer, if any (and wanted)."""
        if not self.use_annotation_widget:
            return None
        return self._docked_annotation_widget()

    def _docked_annotation_widget(self) -> Any:
        """The interactive segmentation widget docked in this viewer, if any."""
        try:
            from .view import AnnotationWidget

            docked = list(self.viewer.window.dock_widgets.values())  # public: the docks' inner widgets
            found = [plain_viewer(w) for w in docked]
            found = [w for w in found if isinstance(w, AnnotationWidget) and not getattr(w, "_torn_down", False)]
        except (AttributeError, RuntimeError, ImportError):
            return None
        return found[0] if found else None

    def _choose_editor(self) -> None:
        aw = self.annotation_widget()
        if aw is not None:
            if not (isinstance(self.editor, AnnotationEditor) and self.editor.widget is aw):
                self.editor.clear()
                self.editor = AnnotationEditor(self.viewer, aw, _weak(self._emit_edited), save=_weak(self.save_correction),
                                                save_target=SAVE_TARGET)
        elif not isinstance(self.editor, LayerEditor):
            self.editor.clear()
            self.editor = LayerEditor(self.viewer, _weak(self._on_edit))

    def dock_annotation_widget(self) -> Any:
        """Dock the interactive segmentation widget (if missing) and show the open case through it."""
        aw = self._docked_annotation_widget()
        if aw is None:
            from .view import AnnotationWidget

            aw = AnnotationWidget(self.viewer, auto_attach=False)
            self.viewer.window.add_dock_widget(aw, name="Interactive segmentation", area="right")
        if self.current is not None:
            oc = self.current
            if oc.autosaver is not None and oc.autosaver.dirty:
                oc.autosaver.save("switch editor", wait=True)
            oc.labels = np.array(self._current_labels(), copy=True)
            self._choose_editor()
            self.editor.show(oc, prediction=self._prediction_for(oc.case_id))
        return aw

    def _prediction_for(self, case_id: str) -> np.ndarray | None:
        assert self.workspace is not None
        det = self.workspace.store.metric_details(DICE_METRIC).get(case_id) or {}
        p = det.get("pred_path")
        if not p or not Path(p).is_file():
            return None
        try:
            from ..dataset.batch import read_segs

            return read_segs(p)
        except (OSError, ValueError) as exc:
            logger.warning("cannot read the pre-segmentation %s: %s", p, exc)
            return None

    def _current_labels(self) -> np.ndarray:
        arr = self.editor.labels()
        if arr is None:
            assert self.current is not None
            return self.current.labels
        return arr

    def close_case(self) -> None:
        """Autosave (if anything is unsaved) and release the open case."""
        if self.current is None or self.workspace is None:
            self.current = None
            return
        oc = self.current
        self.current = None
        try:
            # the snapshot is taken now; compression and fsync finish in the background
            self.workspace.close_case(oc, wait=False)
        except (OSError, ValueError, LockLostError) as exc:
            self.show_message(f"final save of {oc.case_id} failed: {exc}", error=True)
        self.model.current_id = None
        self._update_enabled()

    # ------------------------------------------------------------------ teardown
    def _shutdown(self, *args: Any) -> None:
        if getattr(self, "_down", False):
            return
        self._down = True
        try:
            self._timer.stop()
        except RuntimeError:
            pass
        self.close_dataset()

    def closeEvent(self, event: Any) -> None:  # noqa: N802
        self._shutdown()
        super().closeEvent(event)
