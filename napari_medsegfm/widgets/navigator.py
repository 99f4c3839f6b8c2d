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
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtCore import QModelIndex, Qt, QTimer, Signal
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QInputDialog,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QShortcut,
    QSizePolicy,
    QStyle,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from ..dataset.status import STATUSES, CaseLockedError, LockLostError
from ..dataset.workspace import DICE_METRIC, DatasetWorkspace, OpenCase
from ._host import HostedShortcuts, fit_dock_soon, plain_viewer
from ._layout import ScrollingBody
from .case_editor import AnnotationEditor, LayerEditor
from .case_table import STATUS_FILTERS, CaseTableModel

__all__ = ["DatasetNavigator", "CaseTableModel", "NAVIGATOR_SHORTCUTS"]

logger = logging.getLogger(__name__)

#: action -> (keys, description)
NAVIGATOR_SHORTCUTS: dict[str, tuple[str, str]] = {
    "next_case": ("Ctrl+PgDown", "Next case (autosaves the current one)"),
    "previous_case": ("Ctrl+PgUp", "Previous case"),
    "jump": ("Ctrl+J", "Jump to a case by name"),
    "done_and_next": ("Ctrl+Shift+D", "Mark the case done and go to the next"),
}

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



class DatasetNavigator(QWidget):
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
    def _build(self) -> None:
        # the content scrolls inside the dock: docking the annotation widget beside it on a laptop
        # screen never grows napari's window (see _layout.ScrollingBody)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        self.content = QWidget()
        self.scroll = ScrollingBody(self.content, self)
        # no taller than its controls with a few table rows: the annotation dock below gets the rest
        self.scroll.max_hint_height = 340
        outer.addWidget(self.scroll)
        lay = QVBoxLayout(self.content)
        lay.setContentsMargins(4, 2, 4, 4)
        lay.setSpacing(3)
        top = QHBoxLayout()
        self.path_edit = QLineEdit()
        self.path_edit.setPlaceholderText("dataset folder")
        self.path_edit.returnPressed.connect(lambda: self.open_dataset(self.path_edit.text()))
        self.browse_btn = QPushButton("Open dataset…")
        self.browse_btn.clicked.connect(self._browse)
        top.addWidget(self.path_edit, 1)
        top.addWidget(self.browse_btn)
        lay.addLayout(top)

        flt = QHBoxLayout()
        self.status_filter = QComboBox()
        self.status_filter.addItems(STATUS_FILTERS)
        self.status_filter.currentTextChanged.connect(lambda s: self.model.set_filter(status=s))
        self.search_edit = QLineEdit()
        self.search_edit.setPlaceholderText("filter by name / comment")
        self.search_edit.textChanged.connect(lambda t: self.model.set_filter(text=t))
        self.search_edit.returnPressed.connect(self._open_first_match)
        self.review_check = QCheckBox("Review queue")
        self.review_check.setToolTip("Sort by disagreement (1 - Dice) between the pre-segmentation and the labels, worst first")
        self.review_check.toggled.connect(self._set_review)
        flt.addWidget(self.status_filter)
        flt.addWidget(self.search_edit, 1)
        self.status_filter.setToolTip("Show the cases of one status")
        lay.addLayout(flt)
        lay.addWidget(self.review_check)

        self.model = CaseTableModel(self)
        self.table = QTableView()
        self.table.setModel(self.model)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setSortIndicator(0, Qt.SortOrder.AscendingOrder)
        self.table.setSortingEnabled(True)
        self.table.horizontalHeader().setSortIndicatorShown(True)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.verticalHeader().setVisible(False)
        self.table.setWordWrap(False)
        vh = self.table.verticalHeader()
        vh.setDefaultSectionSize(max(self.fontMetrics().height() + 6, 20))
        self.table.setMinimumHeight(int(self.table.horizontalHeader().sizeHint().height()
                                        + 4.4 * vh.defaultSectionSize() + 2 * self.table.frameWidth()
                                        + self.style().pixelMetric(QStyle.PixelMetric.PM_ScrollBarExtent)))
        self.table.horizontalHeader().sortIndicatorChanged.connect(self._header_sorted)
        # one double-click emits doubleClicked and activated: both take the case id now and open it
        # after the click is handled (opening refreshes the table, so a later index is stale)
        self.table.doubleClicked.connect(self._open_index)
        self.table.activated.connect(self._open_index)
        lay.addWidget(self.table, 1)

        nav = QHBoxLayout()
        self.prev_btn = QPushButton("◀ Previous")
        self.prev_btn.clicked.connect(self.previous_case)
        self.next_btn = QPushButton("Next ▶")
        self.next_btn.clicked.connect(self.next_case)
        self.jump_btn = QPushButton("Jump…")
        self.jump_btn.clicked.connect(lambda: self.jump())
        for b, act in ((self.prev_btn, "previous_case"), (self.next_btn, "next_case"), (self.jump_btn, "jump")):
            b.setToolTip(f"{NAVIGATOR_SHORTCUTS[act][1]} ({NAVIGATOR_SHORTCUTS[act][0]})")
            nav.addWidget(b)
        lay.addLayout(nav)

        self.case_label = QLabel("no case open")
        self.case_label.setWordWrap(True)
        self.case_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        lay.addWidget(self.case_label)
        cur = QHBoxLayout()
        self.status_combo = QComboBox()
        self.status_combo.addItems(STATUSES)
        self.status_combo.activated.connect(lambda i: self.set_status(STATUSES[i]))
        cur.addWidget(self.status_combo)
        self.done_btn = QPushButton("Done ✓ → next")
        self.done_btn.setToolTip(f"{NAVIGATOR_SHORTCUTS['done_and_next'][1]} ({NAVIGATOR_SHORTCUTS['done_and_next'][0]})")
        self.done_btn.clicked.connect(self.done_and_next)
        cur.addWidget(self.done_btn)
        lay.addLayout(cur)
        self.comment_edit = QLineEdit()
        self.comment_edit.setPlaceholderText("comment on this case (Enter to save)")
        self.comment_edit.editingFinished.connect(self._comment_changed)
        lay.addWidget(self.comment_edit)

        bottom = QGridLayout()
        bottom.setHorizontalSpacing(3)
        self.scan_btn = QPushButton("Count labels")
        self.scan_btn.setToolTip("Load every case once to count its labels and compute Dice of stored predictions")
        self.scan_btn.clicked.connect(lambda: self.scan_in_background())
        self.save_btn = QPushButton("Save now")
        self.save_btn.clicked.connect(lambda: self.save_now())
        self.export_btn = QPushButton("Export…")
        self.export_btn.clicked.connect(self._export_dialog)
        self.annotate_btn = QPushButton("Segment…")
        self.annotate_btn.setToolTip("Dock the interactive segmentation widget and edit cases with prompts")
        self.annotate_btn.clicked.connect(lambda: self.dock_annotation_widget())
        bottom.addWidget(self.annotate_btn, 0, 0)
        bottom.addWidget(self.scan_btn, 0, 1)
        bottom.addWidget(self.save_btn, 1, 0)
        bottom.addWidget(self.export_btn, 1, 1)
        lay.addLayout(bottom)
        self.message = QLabel("")
        self.message.setWordWrap(True)
        self.message.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        lay.addWidget(self.message)
        self._update_enabled()

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
        self.case_label.setText(f"<b>{oc.entry.name}</b> ({self.visible_order().index(case_id) + 1 if case_id in self.visible_order() else '?'}"
                                f"/{len(self.visible_order())})")
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
        aw = self.annotation_widget()
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

    # ------------------------------------------------------------------ editing / autosave
    def _on_edit(self) -> None:
        if self.current is not None and self.current.autosaver is not None:
            self.current.autosaver.mark_dirty()

    def _emit_edited(self, accepted: bool) -> None:
        try:
            self._edited.emit(bool(accepted))
        except RuntimeError:  # widget deleted
            pass

    def _handle_edit(self, accepted: bool) -> None:
        aus = self.current.autosaver if self.current is not None else None
        if aus is None or aus.closed:
            return
        if accepted:
            aus.accepted()
        else:
            aus.mark_dirty()

    def save_correction(self) -> concurrent.futures.Future[Path | None]:
        """Save the open case's labels to its sidecar correction now; returns the write's future.

        This is where the annotation widget's Save goes while the navigator drives it
        (status and history are updated like an autosave; the original files are never
        written). ``ValueError`` when no case is open for editing.
        """
        oc = self.current
        if oc is None or self.workspace is None:
            raise ValueError("no case is open in the dataset navigator; open one, or use Save as… to write a file")
        if oc.read_only or oc.autosaver is None or oc.autosaver.closed:
            raise ValueError(f"{oc.case_id} is open read-only here ({oc.message()}); use Save as… to write a copy")
        fut = oc.autosaver.save("manual", force=True)
        assert fut is not None
        self.show_message(f"saving {oc.case_id} to {self.workspace.corrections.path_for(oc.case_id)} "
                          "(the original files stay unchanged)")
        return fut

    def save_now(self) -> bool:
        if self.current is None or self.current.autosaver is None:
            return False
        self.current.autosaver.save("manual", force=True, wait=True)
        self.refresh()
        self.show_message(f"saved {self.current.case_id} to {self.workspace.corrections.path_for(self.current.case_id)}")
        return True

    def _tick(self) -> None:
        if self.current is not None and self.current.autosaver is not None and not self.current.autosaver.closed:
            self.current.autosaver.tick()

    def _emit_saved(self, case_id: str) -> None:
        # called on the autosave writer thread: hop to the GUI thread through a signal
        try:
            self.autosaved.emit(case_id)
        except RuntimeError:  # the widget is being deleted
            pass

    def _after_autosave(self, case_id: str) -> None:
        # queued to the GUI thread by the signal
        if self.current is not None and self.current.case_id == case_id and self.workspace is not None:
            rec = self.workspace.store.get(case_id)
            if rec.status in STATUSES:
                self.status_combo.setCurrentIndex(STATUSES.index(rec.status))
            self.refresh()

    def _autosave_error_threadsafe(self, exc: BaseException) -> None:
        msg = f"autosave failed: {exc}"
        QTimer.singleShot(0, lambda: self.show_message(msg, error=True))

    # ------------------------------------------------------------------ status
    def set_status(self, status: str) -> None:
        if self.current is None or self.workspace is None:
            return
        self.workspace.set_status(self.current.case_id, status)
        i = STATUSES.index(status)
        if self.status_combo.currentIndex() != i:
            self.status_combo.setCurrentIndex(i)
        self.refresh()

    def _comment_changed(self) -> None:
        if self.current is None or self.workspace is None:
            return
        text = self.comment_edit.text()
        if text != self.workspace.store.get(self.current.case_id).comment:
            self.workspace.set_comment(self.current.case_id, text)
            self.refresh()

    # ------------------------------------------------------------------ export
    def _export_dialog(self) -> None:
        if self.workspace is None:
            return
        d = QFileDialog.getExistingDirectory(self, "Export corrected cases to", str(Path.home()))
        if not d:
            return
        fmt, ok = QInputDialog.getItem(self, "Export format", "Format:", ["npz", "nifti", "same"], 0, False)
        if ok:
            self.export(d, fmt)

    def export(self, out_dir: str | Path, fmt: str = "npz", **kw: Any) -> Any:
        """Export every corrected case (saving the open one first); returns the report."""
        from ..dataset.export import export_corrections

        if self.workspace is None:
            return None
        if self.current is not None and self.current.autosaver is not None:
            self.current.autosaver.save("export", wait=True)
        rep = export_corrections(self.workspace, out_dir, fmt=fmt, **kw)
        self.show_message(f"exported {len(rep.exported)} case(s), {len(rep.failed)} failed — manifest {rep.manifest_path}",
                          error=bool(rep.failed))
        return rep

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
