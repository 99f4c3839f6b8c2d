"""Saving of the annotation controller: the case's own file, "Save as", or a host's save handler.

Qt-free. Labels are snapshotted on the GUI thread and written by the plugin's writer
on the controller's I/O thread; the dirty flag compares the session's change count
with the one last saved. :class:`Saving` is a mixin of
:class:`~napari_medsegfm.widgets.controller.AnnotationController`.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["Saving"]

class Saving:
    """The controller's saving (mixin; see module docstring)."""

    @property
    def dirty(self) -> bool:
        """True when the labels or objects changed since the last save (or since opening)."""
        return self.session is not None and self._version != self._saved_version

    @property
    def saving(self) -> bool:
        return self._saving

    def set_save_handler(self, handler: Callable[[], Any] | None, *, target: str = "") -> None:
        """Route Save (Ctrl+S, the Save button, "Save" when closing) to ``handler``.

        For hosts that keep the annotation somewhere else than in the case's file, e.g.
        the dataset navigator, whose corrections go to the dataset's sidecar folder so
        the original files stay untouched.

        Parameters
        ----------
        handler : callable or None
            ``handler()`` is called on the GUI thread without arguments; it takes its
            snapshot of the labels there and returns the path written, or a
            ``concurrent.futures.Future`` of it (written in the background). Raising
            ``ValueError``/``OSError`` (or a failing future) reports "saving failed" and
            keeps the annotation unsaved. ``None``: the default, the case's own file
            (:meth:`default_save_path`).
        target : str
            Where saves go, in words, for buttons, the close question and the status line
            (e.g. ``"the dataset's correction (sidecar folder)"``).

        "Save as…" (:meth:`save` with an explicit path) is not affected. :meth:`detach`
        (and so every :meth:`attach`) clears the handler: set it after attaching.
        """
        if handler is not None and not callable(handler):
            raise ValueError(f"save handler must be callable or None; got {handler!r}")
        self._save_handler = handler
        self._save_target = str(target) if handler is not None else ""

    @property
    def has_save_handler(self) -> bool:
        """True when Save goes to a handler set with :meth:`set_save_handler`."""
        return self._save_handler is not None

    @property
    def save_target(self) -> str:
        """Where Save (no path) writes, in words: the handler's target or the default file's name."""
        if self._save_handler is not None:
            return self._save_target or "the host's store"
        p = self.default_save_path()
        return "the case's own file" if p is None else f"{p.name}"

    def save(self, path: str | Path | None = None, *, key: str | None = None, fmt: str | None = None,
             wait: bool = False) -> concurrent.futures.Future[Path] | None:
        """Save the labels through the plugin's writer, off the GUI thread.

        ``path`` defaults to the case's own file (npz: written as key ``segs``, every
        other key kept), or goes to the save handler when one is set
        (:meth:`set_save_handler`). Raises ``ValueError`` when there is no path to save
        into. ``events.saved`` fires and the status line confirms when the file is written.
        """
        self._require_session()
        if path is None and self._save_handler is not None:
            return self._save_through_handler(wait)
        target = Path(path) if path is not None else self.default_save_path()
        if target is None:
            raise ValueError("this image has no file to save into in its own format; choose a file (Save as…)")
        from ..io import case_from_layer_metadata, save_labels

        labels = self.session.labels.copy()
        names = {lid: info.name for lid, info in self.session.objects.items()}
        colors = {lid: tuple(int(round(float(c) * 255)) for c in info.color[:3])
                  for lid, info in self.session.objects.items() if info.color is not None}
        version = self._version
        k = key or self.save_key or "segs"
        lower = target.name.lower()
        case: Any = None
        if not lower.endswith(".npz"):
            # geometry/header for write-back: what the reader stored, else re-read the source
            case = case_from_layer_metadata(self._labels_meta, labels.shape, names) if self._labels_meta else None
            if case is None and self.case_path is not None and self.case_path.exists():
                case = self.case_path
        f = fmt
        self._saving = True
        self._message(f"saving to {target.name}…")

        def work() -> Path:
            out = save_labels(labels, target, case=case, key=k, fmt=f, label_names=names, colors=colors or None)
            return Path(out) if out is not None else target

        fut = self._executor.submit(work)
        fut.add_done_callback(lambda fu: self._post(lambda: self._on_saved(fu, version, k)))
        if wait:
            concurrent.futures.wait([fut])
            self.process_pending()
        return fut

    def default_save_path(self) -> Path | None:
        """Where Save (Ctrl+S) writes: the case's own npz (member ``segs``), a
        ``<name>_segs.nii.gz`` beside a NIfTI image, or ``None`` (ask) for other formats."""
        src = self.case_path
        if src is None:
            return None
        if self._save_path_override is not None:
            return self._save_path_override
        fmt = self.case_format
        name = src.name.lower()
        if name.endswith(".npz") or fmt in ("cvpr25_npz", "cvpr24_npz"):
            return src
        if fmt in ("nifti", "ivdm3seg") or name.endswith((".nii", ".nii.gz")):
            if src.is_dir():
                return src / "segs.nii.gz"
            stem = src.name[:-7] if name.endswith(".nii.gz") else src.stem
            return src.with_name(f"{stem}_segs.nii.gz")
        # DICOM -> <series folder>_seg.dcm, NRRD/MHA -> <stem>_segs.nrrd/.mha, .seg.nrrd -> <stem>_segs.seg.nrrd
        from ..io.clinical import default_labels_path

        return default_labels_path(src, fmt)

    def _save_through_handler(self, wait: bool) -> concurrent.futures.Future[Path]:
        handler, target = self._save_handler, self.save_target
        assert handler is not None
        version = self._version
        self._saving = True
        self._message(f"saving to {target}…")
        fut: concurrent.futures.Future[Path]
        try:
            out = handler()
            if out is None:
                raise ValueError(f"nothing to save into ({target} is gone)")
        except (ValueError, OSError) as exc:
            fut = concurrent.futures.Future()
            fut.set_exception(exc)
        else:
            if isinstance(out, concurrent.futures.Future):
                fut = out
            else:
                fut = concurrent.futures.Future()
                fut.set_result(Path(out))
        fut.add_done_callback(lambda fu: self._post(lambda: self._on_saved(fu, version, "", target=target)))
        if wait:
            concurrent.futures.wait([fut])
            self.process_pending()
        return fut

    def _on_saved(self, fut: concurrent.futures.Future[Path], version: int, key: str, *,
                  target: str | None = None) -> None:
        self._saving = False
        exc = fut.exception()
        if exc is not None:
            where = "" if target is None else f" to {target}"
            self._message(f"saving{where} failed: {exc}. The annotation is still here"
                          + ("." if target is not None else "; try another file."), "error")
            self.events.history.emit()  # Save / Save as… are usable again (the view listens)
            return
        path = Path(fut.result())
        self._saved_version = version
        n = len(self.objects)
        if target is not None:
            self._message(f"saved {n} object(s) to {target}: {path}")
            self.events.saved.emit(path)
            self.events.history.emit()
            return
        if self.default_save_path() is None or path != self.default_save_path():
            self._save_path_override = path  # Ctrl+S keeps saving where "Save as" went
        self._message(f"saved {n} object(s) to {path} [{key}]")
        self.events.saved.emit(path)
        self.events.history.emit()
