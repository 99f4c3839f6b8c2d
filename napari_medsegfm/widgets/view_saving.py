"""Saving from the annotation dock: Save, Save as…, and the question before closing with
unsaved changes.

:class:`SaveDialogs` is a mixin of :class:`~napari_medsegfm.widgets.view.AnnotationWidget`;
the writing itself is the controller's (:mod:`.saving`).
"""

from __future__ import annotations

from pathlib import Path

from qtpy.QtWidgets import QFileDialog, QMessageBox

__all__ = ["SaveDialogs"]


class SaveDialogs:
    """Save, Save as… and the discard question of the annotation dock (mixin; see module docstring)."""

    def save(self) -> None:
        """Save into the case's own file, or where the host routes saves (the dataset navigator:
        the case's sidecar correction); Save as… when there is neither."""
        c = self.controller
        if not c.attached:
            return
        if c.case_path is None and not c.has_save_handler:
            self.save_as()
            return
        self._guard(c.save)
        self._refresh_history()

    def save_as(self, path: str | None = None) -> None:
        c = self.controller
        if not c.attached:
            return
        if path is None:
            start = str(c.case_path) if c.case_path else str(Path.home() / "segmentation.npz")
            path, _ = QFileDialog.getSaveFileName(
                self, "Save segmentation", start,
                "npz (*.npz);;NIfTI (*.nii.gz *.nii);;medsegpy (*.seg *.h5);;PNG masks (*.png)")
            if not path:
                return
        self._guard(c.save, path)
        self._refresh_history()

    def _on_saved(self, path: Path) -> None:
        msg = self.controller.last_message
        qwin = self._window()
        bar = qwin.statusBar() if qwin is not None else None
        if bar is not None:
            bar.showMessage(msg, 8000)
        self._refresh_history()

    def _ask_discard_dialog(self) -> str:
        box = QMessageBox(self)
        box.setIcon(QMessageBox.Icon.Warning)
        box.setWindowTitle("Unsaved segmentation")
        box.setText("The segmentation has unsaved changes.")
        c = self.controller
        where = c.save_target if c.has_save_handler else "the case file"
        box.setInformativeText(f"Save them into {where} before closing?")
        box.setStandardButtons(QMessageBox.StandardButton.Save | QMessageBox.StandardButton.Discard
                               | QMessageBox.StandardButton.Cancel)
        box.setDefaultButton(QMessageBox.StandardButton.Save)
        r = box.exec()
        return {QMessageBox.StandardButton.Save: "save", QMessageBox.StandardButton.Discard: "discard"}.get(
            QMessageBox.StandardButton(r), "cancel")

    def confirm_discard(self) -> bool:
        """True when it is fine to close (nothing unsaved, saved now, or discarded)."""
        c = self.controller
        if not c.dirty:
            return True
        answer = self.ask_discard()
        if answer == "discard":
            return True
        if answer != "save":
            return False
        path = None
        if c.case_path is None and not c.has_save_handler:
            path, _ = QFileDialog.getSaveFileName(self, "Save segmentation", str(Path.home() / "segmentation.npz"),
                                                  "npz (*.npz);;NIfTI (*.nii.gz *.nii)")
            if not path:
                return False
        try:
            fut = c.save(path)
            assert fut is not None
            fut.result(timeout=600)
        except (ValueError, OSError) as exc:
            self._notify("error", f"not closing: saving failed: {exc}")
            return False
        return True
