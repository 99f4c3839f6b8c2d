"""Editing, saving and export in the dataset navigator: edits mark the open case dirty, the
autosaver writes it to the dataset's sidecar, "Save now", the annotation widget's Save routed
here, the case's status and comment, and the export of corrected cases.

:class:`CaseSaving` is a mixin of :class:`~napari_medsegfm.widgets.navigator.DatasetNavigator`.
"""

from __future__ import annotations

import concurrent.futures
from pathlib import Path
from typing import Any

from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QFileDialog, QInputDialog

from ..dataset.status import STATUSES

__all__ = ["CaseSaving"]


class CaseSaving:
    """Editing, autosave, status, comment and export of the navigator (mixin; see module docstring)."""

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
