"""Per-dataset status database: case status, comments, edit history, metrics and edit locks.

One SQLite file lives in the dataset's sidecar folder (``<dataset>/.medsegfm/status.sqlite``
by default). Several viewers (processes, users) may open the same dataset at once:

* The database runs in WAL mode with a busy timeout, and every write is one short
  ``BEGIN IMMEDIATE`` transaction, so concurrent writers queue instead of corrupting
  the file or failing with "database is locked".
* Editing a case takes a **lease**: a row in ``locks`` naming the holder (user, host,
  pid, a per-store token) that expires ``lease_s`` seconds after its last heartbeat.
  A background thread renews the leases this store holds. A second viewer asking for
  the case gets a :class:`CaseLockedError` whose message says who edits it, where and
  since when. A lease whose holder is a dead process on this host, or whose
  heartbeat stopped longer than ``lease_s`` ago, is stale and taken over silently
  (that is how reopening after a crash works).

SQLite relies on working file locks: on a network share without them (some NFS/SMB
set-ups) WAL cannot be enabled; the store then logs a warning and falls back to the
rollback journal, which is still safe where locks work.

A damaged or foreign database is never repaired or emptied silently: a file that is not
SQLite, a SQLite file of another program, one that fails SQLite's ``quick_check``, or a
``-wal`` file whose header is not a valid write-ahead log (SQLite would discard it, and with
it the changes it holds) raises :class:`StatusDatabaseError` and leaves every file as it
is (those checks are :mod:`~napari_medsegfm.dataset.status_db`). The corrections folder is
the record of the work: :func:`~napari_medsegfm.dataset.recovery.recover_status`
(``medsegfm dataset recover``) moves the damaged files aside and rebuilds the database
from the corrections, keeping what the old file still yields.

Times are UNIX epoch seconds (float). Case ids are the catalog's ids (strings).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sqlite3
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from ._util import json_default
from .status_db import _close_connection, open_database, retry_busy
from .status_leases import LeaseMixin
from .status_records import (  # noqa: F401 - _SCHEMA, ID_SCHEME, SCHEMA_VERSION re-exported
    _SCHEMA,
    DONE,
    FLAGGED,
    ID_SCHEME,
    IN_PROGRESS,
    SCHEMA_VERSION,
    STATUSES,
    TODO,
    CaseLockedError,
    CaseRecord,
    HistoryEvent,
    LockInfo,
    LockLostError,
    StatusDatabaseError,
    _pid_alive,
    check_database_files,
    current_user,
    format_time,
)

__all__ = [
    "STATUSES",
    "TODO",
    "IN_PROGRESS",
    "DONE",
    "FLAGGED",
    "StatusStore",
    "CaseRecord",
    "HistoryEvent",
    "LockInfo",
    "CaseLockedError",
    "LockLostError",
    "StatusDatabaseError",
    "check_database_files",
    "current_user",
    "format_time",
]

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------- store
class StatusStore(LeaseMixin):
    """SQLite status database of one dataset.

    Parameters
    ----------
    path : path-like
        The database file (created with its folder if missing).
    user : str, optional
        Name recorded in history and locks (default :func:`current_user`).
    lease_s : float
        Seconds a lock stays valid after its last heartbeat.
    heartbeat_s : float, optional
        Heartbeat period (default ``lease_s / 4``).
    busy_timeout_s : float
        How long a write waits for another writer before failing.
    clock : callable, optional
        Wall-clock seconds (default :func:`time.time`) for leases, heartbeats and the
        history's timestamps; tests pass a manual clock (two stores of one database
        share it), so lease expiry is tested without sleeping.

    Notes
    -----
    One connection per store, guarded by a re-entrant lock, so a store may be shared by
    the GUI thread, the autosave writer and the heartbeat thread. Use one store per
    viewer; two stores (even in one process) are two independent lock owners.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        user: str | None = None,
        lease_s: float = 60.0,
        heartbeat_s: float | None = None,
        busy_timeout_s: float = 15.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._clock = clock
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.user = user or current_user()
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.owner = f"{self.user}@{self.host}:{self.pid}:{uuid.uuid4().hex[:12]}"
        if lease_s <= 0:
            raise ValueError(f"lease_s must be > 0 seconds; got {lease_s}")
        self.lease_s = float(lease_s)
        self.heartbeat_s = float(heartbeat_s) if heartbeat_s else self.lease_s / 4.0
        self._mutex = threading.RLock()
        self._held: set[str] = set()
        self._closed = False
        check_database_files(self.path)
        self._con, self.wal = open_database(self.path, busy_timeout_s)
        self._hb_stop = threading.Event()
        self._hb_thread: threading.Thread | None = None
        self._finalizer = weakref.finalize(self, _close_connection, self._con)

    # ------------------------------------------------------------------ plumbing
    def _retry(self, fn: Any, attempts: int = 5) -> Any:
        return retry_busy(fn, attempts)

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction (takes the write lock up front: no upgrade deadlocks)."""
        self._check_open()
        with self._mutex:
            self._retry(lambda: self._con.execute("BEGIN IMMEDIATE"))
            try:
                yield self._con
            except BaseException:
                self._con.execute("ROLLBACK")
                raise
            else:
                self._con.execute("COMMIT")

    def _read(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        self._check_open()
        with self._mutex:
            return self._retry(lambda: self._con.execute(sql, args).fetchall())

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"status store {self.path} is closed")

    def close(self) -> None:
        """Release every lock this store holds, stop the heartbeat and close the database."""
        if self._closed:
            return
        for cid in list(self._held):
            try:
                self.release(cid)
            except sqlite3.Error as exc:
                logger.warning("could not release lock on %s: %s", cid, exc)
        self._hb_stop.set()
        if self._hb_thread is not None:
            self._hb_thread.join(timeout=5)
        with self._mutex:
            self._closed = True
            self._finalizer()

    def __enter__(self) -> StatusStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def integrity_check(self) -> str:
        """``'ok'`` when SQLite finds the file consistent."""
        return str(self._read("PRAGMA integrity_check")[0][0])

    def meta_value(self, key: str) -> str | None:
        """A value of the ``meta`` table (``schema_version``, ``id_scheme``, ...).

        Parameters
        ----------
        key : str
            The key.

        Returns
        -------
        str or None
            ``None`` when not set.
        """
        rows = self._read("SELECT value FROM meta WHERE key=?", (key,))
        return str(rows[0][0]) if rows else None

    def set_meta(self, key: str, value: str) -> None:
        """Set (or replace) a value of the ``meta`` table.

        Parameters
        ----------
        key : str
            The key.
        value : str
            The value.
        """
        with self._write() as con:
            con.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, str(value)))

    def known_case_ids(self) -> set[str]:
        """Every case id the database mentions (cases, history, metrics, locks)."""
        out: set[str] = set()
        for table in ("cases", "history", "metrics", "locks"):
            out.update(r[0] for r in self._read(f"SELECT DISTINCT case_id FROM {table}"))
        return out

    def rename_case(self, old: str, new: str, *, why: str = "") -> bool:
        """Move everything stored under case id ``old`` to ``new`` in one transaction.

        Parameters
        ----------
        old, new : str
            Case ids.
        why : str
            Recorded in the history.

        Returns
        -------
        bool
            False (nothing changed) when ``new`` already has a status other than a fresh
            ``todo``, history, metrics or a lock of its own; True otherwise.
        """
        with self._write() as con:
            row = con.execute("SELECT status, comment, status_at, edited_at FROM cases WHERE case_id=?", (new,)).fetchone()
            busy = row is not None and (row[0] != TODO or row[1] or row[2] is not None or row[3] is not None)
            for table in ("history", "metrics", "locks"):
                busy = busy or con.execute(f"SELECT 1 FROM {table} WHERE case_id=? LIMIT 1", (new,)).fetchone()
            if busy:
                return False
            con.execute("DELETE FROM cases WHERE case_id=?", (new,))
            for table in ("cases", "history", "metrics", "locks"):
                con.execute(f"UPDATE {table} SET case_id=? WHERE case_id=?", (new, old))
            self._add_history(con, new, "migrate", f"case id {old!r} -> {new!r}" + (f" ({why})" if why else ""),
                              self.user, self._clock())
        return True

    # ------------------------------------------------------------------ cases
    def ensure_cases(self, case_ids: Iterable[str]) -> None:
        """Insert a ``todo`` row for every id not yet known (existing rows untouched).

        Parameters
        ----------
        case_ids : iterable of str
            Case ids (the catalog's).
        """
        ids = [(str(c),) for c in case_ids]
        if not ids:
            return
        with self._write() as con:
            con.executemany("INSERT OR IGNORE INTO cases (case_id) VALUES (?)", ids)

    @staticmethod
    def _record(row: tuple[Any, ...]) -> CaseRecord:
        try:
            info = json.loads(row[7] or "{}")
        except json.JSONDecodeError:
            info = {}
        return CaseRecord(row[0], row[1], row[2], row[3], row[4], row[5], row[6], info)

    _COLS = "case_id, status, comment, status_at, status_by, edited_at, edited_by, info"

    def get(self, case_id: str) -> CaseRecord:
        """The case's record (a fresh ``todo`` record if it was never stored).

        Parameters
        ----------
        case_id : str
            Case id.

        Returns
        -------
        CaseRecord
        """
        rows = self._read(f"SELECT {self._COLS} FROM cases WHERE case_id = ?", (str(case_id),))
        return self._record(rows[0]) if rows else CaseRecord(str(case_id))

    def records(self) -> dict[str, CaseRecord]:
        """All stored records by case id."""
        return {r[0]: self._record(r) for r in self._read(f"SELECT {self._COLS} FROM cases")}

    def set_status(self, case_id: str, status: str, comment: str | None = None, *, who: str | None = None) -> CaseRecord:
        """Set a case's status and optionally its comment (recorded in the history).

        Parameters
        ----------
        case_id : str
            Case id.
        status : str
            One of :data:`STATUSES` (case, ``_`` and ``inprogress`` spellings accepted).
        comment : str, optional
            Replaces the comment when given.
        who : str, optional
            Default this store's user.

        Returns
        -------
        CaseRecord
            The record after the change.

        Raises
        ------
        ValueError
            An unknown status.
        """
        status = str(status).strip().lower().replace("_", " ")
        if status == "inprogress":
            status = IN_PROGRESS
        if status not in STATUSES:
            raise ValueError(f"status {status!r} is not one of {', '.join(STATUSES)}")
        who = who or self.user
        now = self._clock()
        with self._write() as con:
            con.execute("INSERT OR IGNORE INTO cases (case_id) VALUES (?)", (case_id,))
            old = con.execute("SELECT status, comment FROM cases WHERE case_id=?", (case_id,)).fetchone()
            con.execute("UPDATE cases SET status=?, status_at=?, status_by=? WHERE case_id=?", (status, now, who, case_id))
            if old[0] != status:
                self._add_history(con, case_id, "status", f"{old[0]} -> {status}", who, now)
            if comment is not None and comment != old[1]:
                con.execute("UPDATE cases SET comment=? WHERE case_id=?", (comment, case_id))
                self._add_history(con, case_id, "comment", comment, who, now)
        return self.get(case_id)

    def set_comment(self, case_id: str, comment: str, *, who: str | None = None) -> CaseRecord:
        """Set the free-text comment of a case (recorded in the history).

        Parameters
        ----------
        case_id : str
            Case id.
        comment : str
            The comment (replaces the old one).
        who : str, optional
            Default this store's user.

        Returns
        -------
        CaseRecord
            The record after the change.
        """
        who = who or self.user
        now = self._clock()
        with self._write() as con:
            con.execute("INSERT OR IGNORE INTO cases (case_id) VALUES (?)", (case_id,))
            old = con.execute("SELECT comment FROM cases WHERE case_id=?", (case_id,)).fetchone()[0]
            if old != comment:
                con.execute("UPDATE cases SET comment=?, status_at=?, status_by=? WHERE case_id=?", (comment, now, who, case_id))
                self._add_history(con, case_id, "comment", comment, who, now)
        return self.get(case_id)

    def record_edit(self, case_id: str, detail: str = "", *, action: str = "autosave", who: str | None = None,
                    coalesce_s: float = 300.0) -> None:
        """Note that the case's labels were edited/saved now (sets *last edited*, adds history).

        Repeated events of the same ``action`` by this store within ``coalesce_s`` seconds
        update one history row (its time, detail and count) instead of adding rows.
        A ``todo`` case becomes ``in progress``.

        Parameters
        ----------
        case_id : str
            Case id.
        detail : str
            History detail (e.g. the correction file).
        action : str
            History action.
        who : str, optional
            Default this store's user.
        coalesce_s : float
            Seconds within which repeated events share one history row.
        """
        who = who or self.user
        now = self._clock()
        with self._write() as con:
            con.execute("INSERT OR IGNORE INTO cases (case_id) VALUES (?)", (case_id,))
            con.execute("UPDATE cases SET edited_at=?, edited_by=? WHERE case_id=?", (now, who, case_id))
            st = con.execute("SELECT status FROM cases WHERE case_id=?", (case_id,)).fetchone()[0]
            if st == TODO and action in ("autosave", "edit", "save"):
                con.execute("UPDATE cases SET status=?, status_at=?, status_by=? WHERE case_id=?",
                            (IN_PROGRESS, now, who, case_id))
                self._add_history(con, case_id, "status", f"{TODO} -> {IN_PROGRESS}", who, now)
            last = con.execute(
                "SELECT id, action, owner, at FROM history WHERE case_id=? ORDER BY id DESC LIMIT 1", (case_id,)
            ).fetchone()
            if last is not None and last[1] == action and last[2] == self.owner and now - last[3] <= coalesce_s:
                con.execute("UPDATE history SET at=?, detail=?, count=count+1 WHERE id=?", (now, detail, last[0]))
            else:
                self._add_history(con, case_id, action, detail, who, now)

    def add_history(self, case_id: str, action: str, detail: str = "", *, who: str | None = None) -> None:
        """Append one history event (open, restore, export, batch, ...).

        Parameters
        ----------
        case_id : str
            Case id.
        action : str
            What happened.
        detail : str
            Free text.
        who : str, optional
            Default this store's user.
        """
        with self._write() as con:
            self._add_history(con, case_id, action, detail, who or self.user, self._clock())

    def _add_history(self, con: sqlite3.Connection, case_id: str, action: str, detail: str, who: str, at: float) -> None:
        con.execute(
            "INSERT INTO history (case_id, at, who, action, detail, owner) VALUES (?, ?, ?, ?, ?, ?)",
            (case_id, at, who, action, detail, self.owner),
        )

    def history(self, case_id: str | None = None, limit: int = 1000) -> list[HistoryEvent]:
        """History events, newest first (of one case, or of the whole dataset).

        Parameters
        ----------
        case_id : str, optional
            One case; ``None``: all.
        limit : int
            At most this many events.

        Returns
        -------
        list of HistoryEvent
        """
        if case_id is None:
            rows = self._read("SELECT id, case_id, at, who, action, detail, count FROM history ORDER BY id DESC LIMIT ?",
                              (int(limit),))
        else:
            rows = self._read(
                "SELECT id, case_id, at, who, action, detail, count FROM history WHERE case_id=? ORDER BY id DESC LIMIT ?",
                (case_id, int(limit)),
            )
        return [HistoryEvent(*r) for r in rows]

    def update_info(self, case_id: str, **info: Any) -> None:
        """Merge JSON-able values (cached modality, shape, number of labels, ...) into the case's info.

        Parameters
        ----------
        case_id : str
            Case id (a row is created if missing).
        **info
            Keys and values to set.
        """
        with self._write() as con:
            con.execute("INSERT OR IGNORE INTO cases (case_id) VALUES (?)", (case_id,))
            old = con.execute("SELECT info FROM cases WHERE case_id=?", (case_id,)).fetchone()[0]
            try:
                d = json.loads(old or "{}")
            except json.JSONDecodeError:
                d = {}
            d.update(info)
            con.execute("UPDATE cases SET info=? WHERE case_id=?", (json.dumps(d, default=json_default), case_id))

    # ------------------------------------------------------------------ metrics
    def set_metric(self, case_id: str, name: str, value: float | None, *, source: str = "",
                   detail: dict[str, Any] | None = None) -> None:
        """Store a per-case number (e.g. ``dice_pred``), replacing the previous one.

        Parameters
        ----------
        case_id : str
            Case id.
        name : str
            Metric name.
        value : float or None
            The value (``None``: known to be undefined).
        source : str
            What produced it (a backend name, ``batch``, ...).
        detail : dict, optional
            JSON-able extra fields, returned by :meth:`metric_details`.
        """
        with self._write() as con:
            con.execute(
                "INSERT OR REPLACE INTO metrics (case_id, name, value, source, at, detail) VALUES (?, ?, ?, ?, ?, ?)",
                (case_id, name, None if value is None else float(value), source, self._clock(),
                 json.dumps(detail or {}, default=json_default)),
            )

    def metric(self, case_id: str, name: str) -> float | None:
        """One case's value of a metric.

        Parameters
        ----------
        case_id : str
            Case id.
        name : str
            Metric name.

        Returns
        -------
        float or None
            ``None`` when not stored (or stored as undefined).
        """
        rows = self._read("SELECT value FROM metrics WHERE case_id=? AND name=?", (case_id, name))
        return None if not rows or rows[0][0] is None else float(rows[0][0])

    def metrics(self, name: str) -> dict[str, float | None]:
        """``{case_id: value}`` of one metric over the dataset.

        Parameters
        ----------
        name : str
            Metric name.

        Returns
        -------
        dict of str to float or None
        """
        return {r[0]: r[1] for r in self._read("SELECT case_id, value FROM metrics WHERE name=?", (name,))}

    def metric_details(self, name: str) -> dict[str, dict[str, Any]]:
        """``{case_id: {"value", "source", "at", **detail}}`` of one metric.

        Parameters
        ----------
        name : str
            Metric name.

        Returns
        -------
        dict of str to dict
            ``at`` in epoch seconds.
        """
        out = {}
        for cid, val, src, at, det in self._read("SELECT case_id, value, source, at, detail FROM metrics WHERE name=?", (name,)):
            try:
                d = json.loads(det or "{}")
            except json.JSONDecodeError:
                d = {}
            d.update(value=val, source=src, at=at)
            out[cid] = d
        return out
