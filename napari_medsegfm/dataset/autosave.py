"""Autosave of label corrections to the dataset's sidecar folder, and crash recovery.

Sidecar layout (default ``<dataset>/.medsegfm/``; any folder may be configured, e.g.
when the dataset itself is read-only)::

    status.sqlite                 status, comments, history, locks (dataset.status)
    corrections/<case>.npz        the latest saved correction of each case
    backups/<UTC time>/...        originals replaced by an "export over originals"
    logs/<case>.jsonl             prompt logs of annotation sessions (optional)

A correction file is an ordinary ``.npz`` readable with ``np.load`` (no pickles):

``labels``
    The label image, spatial shape of the case image (``(Z, Y, X)`` or ``(Y, X)``),
    uint8/uint16.
``meta``
    A 0-d unicode array holding JSON: ``case_id``, ``saved_at`` (epoch s), ``saved_by``,
    ``seq`` (save counter of the writer), ``reason`` ("accepted prompt", "interval",
    "switch case", "close", ...), ``label_names`` (``{"1": "liver"}``), ``objects``
    (list of dicts with ``label_id``, ``name``, ``color``), ``shape``, ``dtype``,
    ``source`` and ``format`` of the case.

Files are written atomically (temp file in the same folder, fsync, rename), so a kill
at any moment leaves either the previous or the new correction, never a torn file.
The originals of the dataset are never touched here.

:class:`Autosaver` decides *when*: after each accepted prompt (:meth:`Autosaver.accepted`),
and while edits keep coming at the latest ``interval_s`` seconds after the first unsaved
edit (:meth:`Autosaver.tick`, called by a GUI timer or by its own thread). The copy of
the label image is taken on the calling thread (milliseconds); compression and the
write run on one background thread, in order. The correction files themselves
(:class:`~napari_medsegfm.dataset.corrections.CorrectionStore`) are
:mod:`~napari_medsegfm.dataset.corrections`; their names stay importable from here.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..io.atomic import atomic_write_bytes
from ._util import label_ids
from .corrections import (
    Correction,
    CorrectionStore,
    encode_correction,
    safe_case_filename,
)
from .status import LockLostError, StatusStore

__all__ = [
    "SIDECAR_NAME",
    "DEFAULT_AUTOSAVE_INTERVAL_S",
    "sidecar_dir",
    "safe_case_filename",
    "Correction",
    "CorrectionStore",
    "Autosaver",
    "encode_correction",
]

logger = logging.getLogger(__name__)

SIDECAR_NAME = ".medsegfm"
#: Seconds after the first unsaved edit by which an autosave happens (the issue asks for at most 30 s;
#: a short default keeps what a crash can lose to a few seconds). ``$MEDSEGFM_AUTOSAVE_S`` overrides it.
DEFAULT_AUTOSAVE_INTERVAL_S = 5.0


def default_interval() -> float:
    env = os.environ.get("MEDSEGFM_AUTOSAVE_S", "").strip()
    if env:
        try:
            v = float(env)
        except ValueError:
            raise ValueError(f"MEDSEGFM_AUTOSAVE_S={env!r} is not a number of seconds") from None
        if not 0 < v <= 30:
            raise ValueError(f"MEDSEGFM_AUTOSAVE_S={env!r} must be in (0, 30] seconds")
        return v
    return DEFAULT_AUTOSAVE_INTERVAL_S


def sidecar_dir(dataset_root: str | os.PathLike[str], sidecar: str | os.PathLike[str] | None = None,
                *, create: bool = True) -> Path:
    """The sidecar folder of a dataset.

    Parameters
    ----------
    dataset_root : path-like
        The dataset folder (or a single case file: its folder is used).
    sidecar : path-like, optional
        Explicit folder. Otherwise ``$MEDSEGFM_SIDECAR`` if set (a folder under which one
        sub-folder per dataset is made, named after the dataset and a hash of its path),
        else ``<dataset_root>/.medsegfm``.
    create : bool
        Create the folder; a read-only dataset raises ``ValueError`` naming the option to use.
    """
    root = Path(dataset_root).expanduser().resolve()
    if root.is_file():
        root = root.parent
    if sidecar is not None:
        out = Path(sidecar).expanduser().resolve()
    elif os.environ.get("MEDSEGFM_SIDECAR", "").strip():
        base = Path(os.environ["MEDSEGFM_SIDECAR"]).expanduser().resolve()
        tag = hashlib.sha1(str(root).encode()).hexdigest()[:8]
        out = base / f"{root.name}-{tag}"
    else:
        out = root / SIDECAR_NAME
    if create:
        try:
            out.mkdir(parents=True, exist_ok=True)
            (out / "corrections").mkdir(exist_ok=True)
        except OSError as exc:
            raise ValueError(
                f"cannot create the sidecar folder {out} ({exc.strerror}); the dataset may be read-only: "
                "choose another sidecar folder (navigator settings, --sidecar, or $MEDSEGFM_SIDECAR)"
            ) from exc
        readme = out / "README.txt"
        if not readme.exists():
            try:
                atomic_write_bytes(readme, _README.encode())
            except OSError:
                pass
    return out


_README = """This folder is written by napari-medsegfm (dataset correction workflow).
status.sqlite       case status, comments, edit history and edit locks (SQLite, WAL mode)
corrections/*.npz   autosaved label corrections ('labels' array + 'meta' JSON); the
                    original dataset files are never modified by autosave
backups/            originals kept when corrections were exported over them
Delete it only if you want to throw away all corrections and statuses.
"""

class Autosaver:
    """Autosaves one open case.

    Parameters
    ----------
    corrections : CorrectionStore
        Where to write.
    case_id : str
        The case being edited.
    get_labels : callable
        Returns the current label image; called on the thread calling :meth:`save`,
        :meth:`tick`, :meth:`accepted` (the GUI thread in the widget). Its result is copied.
    interval_s : float, optional
        Longest time an edit stays unsaved while edits go on (default
        :data:`DEFAULT_AUTOSAVE_INTERVAL_S` or ``$MEDSEGFM_AUTOSAVE_S``); at most 30 s.
    get_meta : callable, optional
        Returns extra JSON-able metadata (``label_names``, ``objects``, ``source``...).
    status : StatusStore, optional
        Records *last edited* and history, and verifies this viewer still holds the case's
        lock before each write (a lost lock stops autosave with :class:`LockLostError`
        passed to ``on_error``: two viewers never write the same correction).
    check_lock : bool
        Verify the lock with ``status`` before each write (False: record edits only).
    on_saved, on_error : callable, optional
        Called on the writer thread with ``(path, meta)`` / ``(exception)``.
    clock : callable, optional
        Monotonic seconds the interval is measured on (default :func:`time.monotonic`;
        tests pass a manual clock).
    """

    def __init__(
        self,
        corrections: CorrectionStore,
        case_id: str,
        get_labels: Callable[[], np.ndarray],
        *,
        interval_s: float | None = None,
        get_meta: Callable[[], dict[str, Any]] | None = None,
        status: StatusStore | None = None,
        check_lock: bool = True,
        on_saved: Callable[[Path, dict[str, Any]], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.corrections = corrections
        self._clock = clock
        self.case_id = str(case_id)
        self._get_labels = get_labels
        self._get_meta = get_meta
        self.interval_s = float(interval_s) if interval_s is not None else default_interval()
        if not 0 < self.interval_s <= 30:
            raise ValueError(f"autosave interval_s must be in (0, 30] seconds; got {interval_s}")
        self.status = status
        self.check_lock = check_lock
        self.on_saved = on_saved
        self.on_error = on_error
        self._mutex = threading.Lock()
        self._dirty_since: float | None = None
        self._edits = 0
        self._seq = 0
        self._pending: list[concurrent.futures.Future[Path | None]] = []
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="medsegfm-autosave")
        self._timer_stop = threading.Event()
        self._timer: threading.Thread | None = None
        self.last_saved_at: float | None = None
        self.last_error: BaseException | None = None
        self.closed = False

    # ------------------------------------------------------------------ state
    @property
    def dirty(self) -> bool:
        """True while some edit is not yet handed to the writer."""
        return self._dirty_since is not None

    def mark_dirty(self) -> None:
        """Record that the labels changed (cheap; call on every edit)."""
        with self._mutex:
            self._edits += 1
            if self._dirty_since is None:
                self._dirty_since = self._clock()

    def due(self) -> bool:
        """True when an edit has waited at least ``interval_s`` (on the autosaver's clock)."""
        d = self._dirty_since
        return d is not None and self._clock() - d >= self.interval_s

    # ------------------------------------------------------------------ saving
    def tick(self) -> concurrent.futures.Future[Path | None] | None:
        """Save if an edit has waited ``interval_s``; call often (e.g. every 0.5-1 s)."""
        if self.closed or not self.due():
            return None
        return self.save("interval")

    def accepted(self) -> concurrent.futures.Future[Path | None] | None:
        """An accepted prompt (or any completed operation): save now if anything changed."""
        if self.closed:
            return None
        self.mark_dirty()
        return self.save("accepted prompt")

    def save(self, reason: str = "manual", *, force: bool = False,
             wait: bool = False) -> concurrent.futures.Future[Path | None] | None:
        """Snapshot the labels now (on the calling thread) and write them in the background.

        Parameters
        ----------
        reason : str
            Recorded in the correction's metadata and the history.
        force : bool
            Save even when nothing is dirty.
        wait : bool
            Block until written and re-raise a write error.

        Returns
        -------
        concurrent.futures.Future or None
            The write's future (its result is the file); ``None`` when nothing was dirty and
            not ``force``.

        Raises
        ------
        ValueError
            The autosaver is closed.
        LockLostError, OSError
            With ``wait``: the write failed.
        """
        if self.closed:
            raise ValueError(f"autosaver of case {self.case_id!r} is closed")
        with self._mutex:
            if self._dirty_since is None and not force:
                return None
            edits = self._edits
            self._dirty_since = None
            self._edits = 0
            self._seq += 1
            seq = self._seq
        labels = np.array(self._get_labels(), copy=True)
        meta: dict[str, Any] = {}
        if self._get_meta is not None:
            meta.update(self._get_meta() or {})
        meta.update(reason=reason, seq=seq, saved_at=time.time(), edits=edits)
        if self.status is not None:
            meta["saved_by"] = self.status.user
        fut = self._executor.submit(self._write, labels, meta)
        self._pending = [f for f in self._pending if not f.done()] + [fut]
        if wait:
            fut.result()
        return fut

    def _write(self, labels: np.ndarray, meta: dict[str, Any]) -> Path | None:
        try:
            if self.status is not None and self.check_lock:
                self.status.check_lock(self.case_id)
            path = self.corrections.save(self.case_id, labels, meta)
            self.last_saved_at = meta["saved_at"]
            if self.status is not None:
                detail = f"{meta.get('reason', '')}; {len(label_ids(labels))} labels"
                self.status.record_edit(self.case_id, detail)
            logger.debug("autosaved %s (%s) to %s", self.case_id, meta.get("reason"), path)
            if self.on_saved is not None:
                self.on_saved(path, meta)
            return path
        except (OSError, ValueError, LockLostError, RuntimeError) as exc:
            self.last_error = exc
            logger.error("autosave of case %s failed: %s", self.case_id, exc)
            if isinstance(exc, LockLostError):
                self.closed = True
            if self.on_error is not None:
                self.on_error(exc)
            raise

    def flush(self, timeout: float | None = 30.0) -> None:
        """Wait for every queued write (errors are logged, not raised).

        Parameters
        ----------
        timeout : float or None
            Seconds to wait per write (a warning when exceeded).
        """
        for f in list(self._pending):
            try:
                f.result(timeout=timeout)
            except concurrent.futures.TimeoutError:
                logger.warning("autosave of %s still running after %s s", self.case_id, timeout)
            except (OSError, ValueError, RuntimeError):
                pass

    # ------------------------------------------------------------------ timer (headless use)
    def start_timer(self, period_s: float | None = None) -> None:
        """Run :meth:`tick` on an own daemon thread (the widget uses a Qt timer instead).

        Only for label arrays that are not modified concurrently with the copy, or where a
        snapshot taken mid-edit is acceptable (the next save corrects it).

        Parameters
        ----------
        period_s : float, optional
            Seconds between ticks (default ``interval_s / 4``, between 0.1 and 1 s).
        """
        if self._timer is not None:
            return
        period = period_s or max(0.1, min(1.0, self.interval_s / 4))

        def run() -> None:
            while not self._timer_stop.wait(period):
                try:
                    self.tick()
                except (OSError, ValueError, RuntimeError) as exc:
                    logger.error("autosave timer: %s", exc)

        self._timer = threading.Thread(target=run, name="medsegfm-autosave-timer", daemon=True)
        self._timer.start()

    def close(self, save: bool = True, reason: str = "close", *, wait: bool = True
              ) -> concurrent.futures.Future[None]:
        """Final save (if dirty) and stop.

        The final snapshot is always taken now, on the calling thread.

        Parameters
        ----------
        save : bool
            Save pending edits first.
        reason : str
            The final save's reason.
        wait : bool
            Block until every queued write is on disk. False: the write finishes in the
            background (switching cases does not wait for compression and fsync).

        Returns
        -------
        concurrent.futures.Future
            Completes once every queued write is on disk.
        """
        if self._timer is not None:
            self._timer_stop.set()
            self._timer.join(timeout=5)
            self._timer = None
        if not self.closed and save and self.dirty:
            try:
                self.save(reason)
            except (OSError, ValueError, RuntimeError) as exc:
                logger.error("final autosave of %s failed: %s", self.case_id, exc)
        self.closed = True
        done: concurrent.futures.Future[None] = self._executor.submit(lambda: None)  # after every queued write
        self._executor.shutdown(wait=False)
        if wait:
            self.flush()
            done.result()
        return done
