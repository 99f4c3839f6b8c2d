"""A dataset opened for correction: catalog + status database + autosave store, Qt-free.

:class:`DatasetWorkspace` is what the navigator widget drives (and what scripts and the
CLI may use): the table rows, filtering, sorting, the review queue, opening a case
(lock, load, restore an autosaved correction), closing it (final autosave, unlock),
status/comment changes, and prefetching the next case so switching is fast.

Typical use::

    ws = DatasetWorkspace("/data/AMOS")
    rows = ws.review_queue(ws.rows())          # worst agreement first
    oc = ws.open(rows[0].case_id)              # CaseLockedError if edited elsewhere
    oc.start_autosave(lambda: my_labels)       # or use oc.labels in place
    ...                                        # edit; oc.autosaver.mark_dirty() per edit
    ws.close_case(oc)                          # final save, unlock
    ws.close()

Which labels a case opens with: the autosaved correction if there is one (that is
crash recovery: the last autosave before a crash), else the existing labels
(``gts``, else ``segs``...), else an empty label image.

Case ids of older sidecars (the folders shared by every case were stripped, so
``imgs/CT_x`` was ``CT_x``) are migrated when the dataset is opened: a status row or
correction whose id is a trailing part of exactly one current id moves to it (see
:meth:`DatasetWorkspace.migrate_case_ids`). A damaged status database raises
:class:`~napari_medsegfm.dataset.status.StatusDatabaseError`;
:func:`~napari_medsegfm.dataset.recovery.recover_status` (also importable from here)
rebuilds it from the corrections.

The rows and the opened case it hands out (:class:`CaseRow`, :class:`OpenCase`, and
:data:`COLUMNS`, :data:`DICE_METRIC`) are :mod:`~napari_medsegfm.dataset.open_case`;
they stay importable from here.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from ..types import Case
from ._util import label_ids
from .autosave import Correction, CorrectionStore, safe_case_filename, sidecar_dir
from .catalog import CaseEntry, Catalog, discover, existing_labels, scan_entry
from .open_case import COLUMNS, DICE_METRIC, CaseRow, OpenCase
from .recovery import recover_status
from .status import ID_SCHEME, StatusStore

__all__ = ["CaseRow", "OpenCase", "DatasetWorkspace", "COLUMNS", "DICE_METRIC", "recover_status"]

logger = logging.getLogger(__name__)

class DatasetWorkspace:
    """One dataset opened by one viewer.

    Parameters
    ----------
    root : path-like
        Dataset folder (any layout :func:`~napari_medsegfm.dataset.catalog.discover` knows).
    sidecar : path-like, optional
        Sidecar folder (default ``<root>/.medsegfm``, see
        :func:`~napari_medsegfm.dataset.autosave.sidecar_dir`).
    user : str, optional
        Name for history and locks.
    lease_s : float
        Lock lease (see :class:`~napari_medsegfm.dataset.status.StatusStore`).
    autosave_s : float, optional
        Autosave interval in seconds (default: the autosave module's).
    layout : str, optional
        Force a catalog layout.
    catalog : Catalog, optional
        An already discovered catalog.
    """

    def __init__(self, root: str | os.PathLike[str], *, sidecar: str | os.PathLike[str] | None = None,
                 user: str | None = None, lease_s: float = 60.0, autosave_s: float | None = None,
                 layout: str | None = None, catalog: Catalog | None = None) -> None:
        self.catalog = catalog if catalog is not None else discover(root, layout=layout)
        self.root = self.catalog.root
        self.sidecar = sidecar_dir(self.root, sidecar)
        self.store = StatusStore(self.sidecar / "status.sqlite", user=user, lease_s=lease_s)
        try:
            self.corrections = CorrectionStore(self.sidecar)
            self.autosave_s = autosave_s
            self.migrated = self.migrate_case_ids()
            self.store.ensure_cases(self.catalog.ids())
        except BaseException:
            self.store.close()
            raise
        self._prefetch_pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="medsegfm-prefetch")
        self._prefetched: dict[str, concurrent.futures.Future[Case]] = {}
        self._mutex = threading.Lock()
        self._headers: dict[str, dict[str, Any]] = {}
        self._closing: dict[str, concurrent.futures.Future[None]] = {}

    # ------------------------------------------------------------------ id migration
    def migrate_case_ids(self) -> dict[str, str]:
        """Move statuses, history, metrics and corrections stored under old-style case ids to the
        current ids; returns ``{old id: new id}`` of what moved.

        An old id (the current one with leading folders stripped) maps to the one current id that
        equals it or ends with ``/<old id>``; an id matching several cases, or whose new id already
        has work of its own, is left as it is (logged). Status rows are considered once (the
        database then records ``id_scheme``); correction files whenever one carries an old id.
        """
        ids = self.catalog.ids()
        current = set(ids)
        candidates: set[str] = set()
        if self.store.meta_value("id_scheme") != ID_SCHEME:
            candidates |= self.store.known_case_ids() - current
        wanted = {safe_case_filename(c) for c in ids}
        if any(p.stem not in wanted for p in self.corrections.folder.glob("*.npz")):
            corr_files = self.corrections.files()
            candidates |= {c for c, p in corr_files.items() if c not in current and p.stem not in wanted}
        moved: dict[str, str] = {}
        for old in sorted(candidates):
            matches = [c for c in ids if c == old or c.endswith("/" + old)]
            if len(matches) != 1:
                if matches:
                    logger.warning("dataset %s: old case id %r matches %d cases (%s); left as it is", self.root, old,
                                   len(matches), ", ".join(matches[:5]))
                continue
            new = matches[0]
            ok_db = self.store.rename_case(old, new, why="case ids are now paths relative to the dataset root")
            if not ok_db:
                logger.warning("dataset %s: case %r already has a status of its own; the records of old id %r were "
                               "left as they are", self.root, new, old)
            moved_corr = self.corrections.rename(old, new)
            if self.corrections.path_for(old).is_file() and moved_corr is None:
                logger.warning("dataset %s: case %r already has a correction; the correction saved under old id %r "
                               "(%s) was left as it is", self.root, new, old, self.corrections.path_for(old))
            if ok_db or moved_corr is not None:
                moved[old] = new
                logger.info("dataset %s: case id %r is now %r", self.root, old, new)
        if self.store.meta_value("id_scheme") != ID_SCHEME:
            self.store.set_meta("id_scheme", ID_SCHEME)
        return moved

    # ------------------------------------------------------------------ rows
    def rows(self) -> list[CaseRow]:
        """A row per case, in catalog order (cheap: headers are read once and cached)."""
        recs = self.store.records()
        dice = self.store.metrics(DICE_METRIC)
        locks = self.store.locks()
        corrected = {p.stem for p in self.corrections.folder.glob("*.npz")}
        out = []
        from .autosave import safe_case_filename

        for e in self.catalog:
            rec = recs.get(e.case_id)
            info = rec.info if rec else {}
            if e.case_id not in self._headers:
                self._headers[e.case_id] = self.catalog.header(e)
            hdr = self._headers[e.case_id]
            valid = info.get("signature") == e.signature() if info else False
            shape = tuple(info["shape"]) if valid and info.get("shape") else (
                tuple(hdr["shape"]) if hdr.get("shape") else None)
            lk = locks.get(e.case_id)
            out.append(CaseRow(
                case_id=e.case_id, name=e.name,
                modality=(info.get("modality") if valid else "") or e.modality,
                shape=shape,
                n_labels=info.get("n_labels") if valid else None,
                status=rec.status if rec else "todo", comment=rec.comment if rec else "",
                last_edited=rec.last_edited if rec else None, last_by=(rec.last_by or "") if rec else "",
                dice=dice.get(e.case_id),
                has_correction=safe_case_filename(e.case_id) in corrected,
                locked_by="" if lk is None or lk.owner == self.store.owner else f"{lk.user}@{lk.host}",
            ))
        return out

    def row(self, case_id: str) -> CaseRow:
        """The table row of one case.

        Parameters
        ----------
        case_id : str
            Case id.

        Returns
        -------
        CaseRow

        Raises
        ------
        KeyError
            No such case.
        """
        for r in self.rows():
            if r.case_id == case_id:
                return r
        raise KeyError(f"no case {case_id!r} in {self.catalog.describe()}")

    @staticmethod
    def filter(rows: Iterable[CaseRow], statuses: Iterable[str] | None = None, text: str = "") -> list[CaseRow]:
        """Rows whose status is in ``statuses`` and whose name, id or comment contains ``text``.

        Parameters
        ----------
        rows : iterable of CaseRow
            The rows.
        statuses : iterable of str, optional
            Wanted statuses (``None``: all).
        text : str
            Case-insensitive substring (empty: no filter).

        Returns
        -------
        list of CaseRow
            In their order.
        """
        st = None if statuses is None else set(statuses)
        t = text.strip().lower()
        return [r for r in rows if (st is None or r.status in st)
                and (not t or t in r.case_id.lower() or t in r.name.lower() or t in r.comment.lower())]

    @staticmethod
    def sort(rows: Iterable[CaseRow], column: str, descending: bool = False) -> list[CaseRow]:
        """Rows sorted by a :data:`COLUMNS` attribute (empty values last either way).

        Parameters
        ----------
        rows : iterable of CaseRow
            The rows.
        column : str
            A :data:`COLUMNS` attribute, ``case_id``, ``disagreement`` or ``last_edited``.
        descending : bool
            Reverse order (empty values stay last).

        Returns
        -------
        list of CaseRow

        Raises
        ------
        ValueError
            An unknown column.
        """
        valid = {c for c, _ in COLUMNS} | {"case_id", "disagreement", "last_edited"}
        if column not in valid:
            raise ValueError(f"cannot sort by {column!r}; expected one of {', '.join(sorted(valid))}")
        rows = list(rows)
        filled = [r for r in rows if r.sort_key(column)[0] == 0]
        empty = [r for r in rows if r.sort_key(column)[0] == 1]
        filled.sort(key=lambda r: r.sort_key(column), reverse=descending)
        return filled + empty

    @staticmethod
    def review_queue(rows: Iterable[CaseRow]) -> list[CaseRow]:
        """Rows by disagreement ``1 - Dice`` between pre-segmentation and labels, worst first.

        Cases without a Dice come last, in their original order.

        Parameters
        ----------
        rows : iterable of CaseRow
            The rows.

        Returns
        -------
        list of CaseRow
        """
        return DatasetWorkspace.sort(rows, "disagreement", descending=True)

    # ------------------------------------------------------------------ scanning (labels count, Dice of file segs)
    def scan(self, case_ids: Sequence[str] | None = None, *, force: bool = False,
             progress: Callable[[int, int, str], None] | None = None,
             stop: threading.Event | None = None) -> int:
        """Load cases whose cached facts are missing or outdated and cache shape, modality, label count.

        When a case holds both ``segs`` (a prediction) and ``gts``, their Dice is stored as
        :data:`DICE_METRIC` (unless a batch run already stored one).

        Parameters
        ----------
        case_ids : sequence of str, optional
            The cases (default all).
        force : bool
            Scan even cases whose cache is current.
        progress : callable, optional
            ``progress(done, total, case_id)`` after each case.
        stop : threading.Event, optional
            Stops between cases when set.

        Returns
        -------
        int
            Cases scanned.
        """
        ids = list(case_ids) if case_ids is not None else self.catalog.ids()
        recs = self.store.records()
        have_dice = self.store.metrics(DICE_METRIC)
        n = 0
        for i, cid in enumerate(ids):
            if stop is not None and stop.is_set():
                break
            e = self.catalog[cid]
            info = recs[cid].info if cid in recs else {}
            if not force and info.get("signature") == e.signature() and "n_labels" in info:
                continue
            try:
                facts, case = self._scan_one(e)
            except (OSError, ValueError, KeyError) as exc:
                logger.warning("cannot scan case %s: %s", cid, exc)
                self.store.update_info(cid, error=str(exc), signature=e.signature())
                continue
            self.store.update_info(cid, **facts)
            if cid not in have_dice and "segs" in case.labels and "gts" in case.labels:
                from ..tasks.metrics import per_class_dsc

                per = per_class_dsc(case.labels["gts"], case.labels["segs"])
                vals = [v for v in per.values() if not np.isnan(v)]
                if vals:
                    self.store.set_metric(cid, DICE_METRIC, float(np.mean(vals)), source="segs in case file",
                                          detail={"per_label": {str(k): v for k, v in per.items()}})
            n += 1
            if progress is not None:
                progress(i + 1, len(ids), cid)
        return n

    def _scan_one(self, e: CaseEntry) -> tuple[dict[str, Any], Case]:
        case = self.catalog.load(e)
        ex = existing_labels(case)
        ids = label_ids(ex[1]) if ex is not None else []
        return ({"shape": list(case.image.spatial_shape), "modality": case.image.meta.get("modality") or e.modality,
                 "n_labels": len(ids), "label_ids": ids, "labels_role": ex[0] if ex else "",
                 "signature": e.signature()}, case)

    scan_entry = staticmethod(scan_entry)

    # ------------------------------------------------------------------ navigation helpers
    @staticmethod
    def neighbour(order: Sequence[str], current: str | None, step: int) -> str | None:
        """The id ``step`` places after ``current`` in ``order`` (clamped to the ends).

        Parameters
        ----------
        order : sequence of str
            Case ids as the table shows them.
        current : str or None
            The open case; absent from ``order``: the first (``step >= 0``) or last id.
        step : int
            +1 next, -1 previous.

        Returns
        -------
        str or None
            ``None`` for an empty ``order``.
        """
        if not order:
            return None
        if current not in order:
            return order[0] if step >= 0 else order[-1]
        i = order.index(current) + step
        i = min(max(i, 0), len(order) - 1)
        return order[i]

    # ------------------------------------------------------------------ prefetch
    def prefetch(self, case_id: str) -> None:
        """Start loading a case (image, labels and its saved correction) in the background.

        One case is kept; :meth:`open` uses it when the files did not change meanwhile.

        Parameters
        ----------
        case_id : str
            Case id (unknown ids are ignored).
        """
        if case_id not in self.catalog:
            return
        with self._mutex:
            if case_id in self._prefetched:
                return
            for k in list(self._prefetched):
                self._prefetched.pop(k).cancel()
            self._prefetched[case_id] = self._prefetch_pool.submit(self._load_for_open, case_id)

    def _correction_sig(self, case_id: str) -> tuple[int, int] | None:
        try:
            st = self.corrections.path_for(case_id).stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def _load_for_open(self, case_id: str) -> tuple[Case, Correction | None, tuple[int, int] | None]:
        self._wait_closing(case_id)
        sig = self._correction_sig(case_id)
        case = self.catalog.load(self.catalog[case_id])
        corr = self.corrections.load(case_id) if sig is not None else None
        if corr is None:
            ex = existing_labels(case)
            if ex is not None:  # the editable copy is made here rather than on the GUI thread
                case.meta["_medsegfm_start"] = (ex[0], np.array(ex[1], copy=True))
        return case, corr, sig

    def _take_prefetched(self, case_id: str) -> tuple[Case, Correction | None, tuple[int, int] | None] | None:
        with self._mutex:
            fut = self._prefetched.pop(case_id, None)
        if fut is None or fut.cancelled():
            return None
        try:
            return fut.result()
        except (OSError, ValueError, KeyError) as exc:
            logger.warning("prefetch of %s failed: %s", case_id, exc)
            return None

    # ------------------------------------------------------------------ open / close
    def open(self, case_id: str, *, read_only: bool = False, steal: bool = False,
             case: Case | None = None) -> OpenCase:
        """Open a case for editing.

        Takes the case's edit lock, loads it (using a prefetched copy when there is one) and
        picks its labels: the autosaved correction if any, else the existing labels, else zeros.

        Parameters
        ----------
        case_id : str
            Case id.
        read_only : bool
            Open without the lock (shows who holds it).
        steal : bool
            Take the lock from a live holder.
        case : Case, optional
            An already loaded case to use instead of reading it.

        Returns
        -------
        OpenCase

        Raises
        ------
        CaseLockedError
            Another viewer holds the lock (unless ``read_only`` or ``steal``).
        KeyError
            No such case.
        ValueError
            A correction of another shape than the image, or an unreadable case.
        """
        entry = self.catalog[case_id]
        self._wait_closing(case_id)  # its last autosave (from a quick switch) must be on disk first
        lock = holder = None
        if not read_only:
            lock = self.store.acquire(case_id, steal=steal)
        else:
            holder = self.store.lock_holder(case_id)
        try:
            pre = self._take_prefetched(case_id) if case is None else None
            if pre is not None:
                case, corr, sig = pre
                if sig != self._correction_sig(case_id):  # written again since the prefetch
                    corr = self.corrections.load(case_id)
            else:
                case = case or self.catalog.load(entry)
                corr = self.corrections.load(case_id)
            shape = tuple(case.image.spatial_shape)
            if corr is not None and tuple(corr.labels.shape) != shape:
                logger.error("case %s: autosaved correction has shape %s, image %s; ignored", case_id,
                             corr.labels.shape, shape)
                corr = None
            names = dict(case.label_names)
            start = case.meta.pop("_medsegfm_start", None)
            if corr is not None:
                labels = corr.labels if corr.labels.flags.writeable else np.array(corr.labels)
                source = "correction"
                names.update(corr.label_names)
            elif start is not None:
                source, labels = start
            else:
                ex = existing_labels(case)
                if ex is not None:
                    source, labels = ex[0], np.array(ex[1], copy=True)
                else:
                    source, labels = "empty", np.zeros(shape, np.uint8)
            if labels.dtype not in (np.uint8, np.uint16, np.uint32):
                labels = labels.astype(np.uint16 if labels.max(initial=0) > 255 else np.uint8)
        except BaseException:
            if lock is not None:
                self.store.release(case_id)
            raise
        oc = OpenCase(entry=entry, case=case, labels=labels, labels_source=source, read_only=read_only,
                      correction=corr, lock=lock, locked_by=holder, label_names=names, _workspace=self)
        if not read_only:
            self.store.add_history(case_id, "restore" if corr is not None else "open", oc.message())
            self.store.update_info(case_id, shape=list(shape),
                                   modality=case.image.meta.get("modality") or entry.modality,
                                   signature=entry.signature())
        return oc

    def close_case(self, oc: OpenCase, *, save: bool = True, wait: bool = True) -> concurrent.futures.Future[None]:
        """Final autosave (if anything is unsaved), then release the lock.

        The snapshot of the labels is taken now.

        Parameters
        ----------
        oc : OpenCase
            From :meth:`open`.
        save : bool
            Save pending edits.
        wait : bool
            Block until written. False: compression and writing finish in the background and
            the lock is released once the correction is on disk (reopening the case meanwhile
            waits for it), so switching cases stays fast.

        Returns
        -------
        concurrent.futures.Future
            Completes when the correction is on disk and the lock released.
        """
        done: concurrent.futures.Future[None]
        if oc.autosaver is not None:
            done = oc.autosaver.close(save=save, reason="switch case", wait=wait)
        else:
            done = concurrent.futures.Future()
            done.set_result(None)
        cid = oc.case_id

        def finish(_: Any = None) -> None:
            try:
                if oc.lock is not None and not self.store._closed:
                    self.store.release(cid)
            except (sqlite3.Error, ValueError) as exc:
                logger.warning("could not release the lock on %s: %s", cid, exc)
            finally:
                with self._mutex:
                    if self._closing.get(cid) is done:
                        self._closing.pop(cid, None)

        if done.done():
            finish()
        else:
            with self._mutex:
                self._closing[cid] = done
            done.add_done_callback(finish)
        return done

    def _wait_closing(self, case_id: str | None = None, timeout: float = 120.0) -> None:
        with self._mutex:
            futs = [f for c, f in self._closing.items() if case_id is None or c == case_id]
        for f in futs:
            try:
                f.result(timeout=timeout)
            except concurrent.futures.TimeoutError:
                logger.warning("a pending autosave is still running after %s s", timeout)

    # ------------------------------------------------------------------ status
    def set_status(self, case_id: str, status: str, comment: str | None = None) -> None:
        """Set a case's status (and comment), as :meth:`StatusStore.set_status`.

        Parameters
        ----------
        case_id : str
            Case id.
        status : str
            One of :data:`~napari_medsegfm.dataset.status.STATUSES`.
        comment : str, optional
            Replaces the comment when given.

        Raises
        ------
        ValueError
            An unknown status.
        """
        self.store.set_status(case_id, status, comment)

    def set_comment(self, case_id: str, comment: str) -> None:
        """Set a case's free-text comment.

        Parameters
        ----------
        case_id : str
            Case id.
        comment : str
            The new comment.
        """
        self.store.set_comment(case_id, comment)

    def close(self) -> None:
        """Finish pending autosaves, stop the prefetcher, release locks, close the database."""
        self._wait_closing()
        with self._mutex:
            for f in self._prefetched.values():
                f.cancel()
            self._prefetched.clear()
        self._prefetch_pool.shutdown(wait=True, cancel_futures=True)
        self.store.close()

    def __enter__(self) -> DatasetWorkspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
