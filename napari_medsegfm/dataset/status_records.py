"""The status database's values and checks: statuses, schema, records, lock errors, file checks.

:class:`~napari_medsegfm.dataset.status.StatusStore` reads and writes these; the module
docstring of :mod:`~napari_medsegfm.dataset.status` describes the database.
"""

from __future__ import annotations

import getpass
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["STATUSES", "TODO", "IN_PROGRESS", "DONE", "FLAGGED", "CaseRecord", "HistoryEvent", "LockInfo",
           "CaseLockedError", "LockLostError", "StatusDatabaseError", "check_database_files", "current_user",
           "format_time", "SCHEMA_VERSION", "ID_SCHEME"]

TODO = "todo"
IN_PROGRESS = "in progress"
DONE = "done"
FLAGGED = "flagged"
STATUSES: tuple[str, ...] = (TODO, IN_PROGRESS, DONE, FLAGGED)

SCHEMA_VERSION = 1
#: case ids are paths relative to the dataset root (2); before, shared leading folders were stripped (1)
ID_SCHEME = "2"
_SQLITE_MAGIC = b"SQLite format 3\x00"
_WAL_MAGICS = (0x377F0682, 0x377F0683)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cases (
    case_id TEXT PRIMARY KEY,
    status TEXT NOT NULL DEFAULT 'todo',
    comment TEXT NOT NULL DEFAULT '',
    status_at REAL,
    status_by TEXT,
    edited_at REAL,
    edited_by TEXT,
    info TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    case_id TEXT NOT NULL,
    at REAL NOT NULL,
    who TEXT NOT NULL,
    action TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '',
    count INTEGER NOT NULL DEFAULT 1,
    owner TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS history_case ON history (case_id, id);
CREATE TABLE IF NOT EXISTS metrics (
    case_id TEXT NOT NULL,
    name TEXT NOT NULL,
    value REAL,
    source TEXT NOT NULL DEFAULT '',
    at REAL NOT NULL,
    detail TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (case_id, name)
);
CREATE TABLE IF NOT EXISTS locks (
    case_id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    user TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    acquired_at REAL NOT NULL,
    heartbeat_at REAL NOT NULL,
    expires_at REAL NOT NULL
);
"""


def current_user() -> str:
    """Who is editing: ``$MEDSEGFM_USER`` if set, else the login name."""
    env = os.environ.get("MEDSEGFM_USER", "").strip()
    if env:
        return env
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        return f"uid{os.getuid()}" if hasattr(os, "getuid") else "unknown"


def format_time(t: float | None) -> str:
    """Local ``YYYY-MM-DD HH:MM:SS`` of an epoch time.

    Parameters
    ----------
    t : float or None
        Epoch seconds.

    Returns
    -------
    str
        ``""`` for ``None``.
    """
    if t is None:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return True
    return True


# ----------------------------------------------------------------------------- records
@dataclass
class CaseRecord:
    """Status of one case as stored.

    Parameters
    ----------
    case_id : str
        Case id.
    status : str
        One of :data:`STATUSES`.
    comment : str
        Free text.
    status_at, status_by : float or None, str or None
        When (epoch seconds) and by whom the status last changed.
    edited_at, edited_by : float or None, str or None
        When and by whom the labels were last saved.
    info : dict
        Cached case facts (modality, shape, number of labels, ...).
    """

    case_id: str
    status: str = TODO
    comment: str = ""
    status_at: float | None = None
    status_by: str | None = None
    edited_at: float | None = None
    edited_by: str | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def last_edited(self) -> float | None:
        """Most recent of the label edit and the status change."""
        times = [t for t in (self.edited_at, self.status_at) if t is not None]
        return max(times) if times else None

    @property
    def last_by(self) -> str | None:
        """Who made the most recent of the label edit and the status change."""
        if self.edited_at is not None and (self.status_at is None or self.edited_at >= self.status_at):
            return self.edited_by
        return self.status_by


@dataclass
class HistoryEvent:
    """One row of the edit history.

    Parameters
    ----------
    id : int
        Row id (increasing).
    case_id : str
        Case id.
    at : float
        Epoch seconds (of the latest coalesced event).
    who : str
        User.
    action : str
        ``open``, ``autosave``, ``status``, ``comment``, ``lock``, ``recover``, ...
    detail : str
        Free text.
    count : int
        > 1 when repeated autosaves were coalesced into this row.
    """

    id: int
    case_id: str
    at: float
    who: str
    action: str
    detail: str = ""
    count: int = 1


@dataclass
class LockInfo:
    """Who holds a case's edit lease.

    Parameters
    ----------
    case_id : str
        Case id.
    owner : str
        ``user@host:pid:token`` of the holding store.
    user, host : str
        Holder's user and host name.
    pid : int
        Holder's process id.
    acquired_at, heartbeat_at, expires_at : float
        Epoch seconds: taken, last renewed, expiry.
    """

    case_id: str
    owner: str
    user: str
    host: str
    pid: int
    acquired_at: float
    heartbeat_at: float
    expires_at: float

    def describe(self, now: float | None = None) -> str:
        """``"USER on HOST (pid N) since TIME, last heartbeat S s ago"``, for messages.

        Parameters
        ----------
        now : float, optional
            Epoch seconds (default now).

        Returns
        -------
        str
        """
        now = time.time() if now is None else now
        return (
            f"{self.user} on {self.host} (pid {self.pid}) since {format_time(self.acquired_at)}, "
            f"last heartbeat {max(0.0, now - self.heartbeat_at):.0f} s ago"
        )


class CaseLockedError(RuntimeError):
    """The case is being edited elsewhere (another viewer holds a live lease).

    Parameters
    ----------
    case_id : str
        Case id.
    holder : LockInfo
        The live lease; the message says who, where and since when.
    """

    def __init__(self, case_id: str, holder: LockInfo) -> None:
        self.case_id = case_id
        self.holder = holder
        super().__init__(
            f"case {case_id!r} is being edited elsewhere by {holder.describe()}; "
            "open it read-only, or wait until that viewer moves on (its lock expires "
            f"{max(0.0, holder.expires_at - time.time()):.0f} s after its last heartbeat)"
        )


class LockLostError(RuntimeError):
    """This store no longer holds the lease it needs (it expired and another viewer took it)."""


class StatusDatabaseError(ValueError):
    """The status database (or its ``-wal``) is damaged or belongs to another program; untouched.

    The message points to ``medsegfm dataset recover``.

    Parameters
    ----------
    path : Path
        The database file.
    reason : str
        What is wrong (``"is damaged (...)"``, ``"belongs to another program ..."``).
    """

    def __init__(self, path: Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        side = self.path.parent
        dataset = side.parent if side.name == ".medsegfm" else "DATASET"
        super().__init__(
            f"status database {self.path} {reason}; it was left as it is. The autosaved corrections in "
            f"{side / 'corrections'} are the record of the work: 'medsegfm dataset recover {dataset}"
            f"{'' if side.name == '.medsegfm' else f' --sidecar {side}'}' moves the damaged file aside and rebuilds "
            "the status database from them (keeping the statuses and comments the old file still yields)"
        )


def check_database_files(path: str | os.PathLike[str]) -> None:
    """Check a status database and its ``-wal`` *before* SQLite opens them.

    SQLite would silently drop a write-ahead log it cannot read, and with it the changes it holds.

    Parameters
    ----------
    path : path-like
        The ``status.sqlite`` file (a missing file is fine).

    Raises
    ------
    StatusDatabaseError
        A file that cannot be read or is not SQLite, or a ``-wal`` whose header is not a valid
        write-ahead log.
    """
    p = Path(path)
    try:
        size = p.stat().st_size
    except FileNotFoundError:
        size = 0
    page_size = None
    if size:
        try:
            with open(p, "rb") as fh:
                head = fh.read(100)
        except OSError as exc:
            raise StatusDatabaseError(p, f"cannot be read ({exc.strerror})") from None
        if len(head) < 100 or head[:16] != _SQLITE_MAGIC:
            raise StatusDatabaseError(p, "is not an SQLite database (damaged, or another kind of file)")
        page_size = int.from_bytes(head[16:18], "big")
        page_size = 65536 if page_size == 1 else page_size
    wal = p.with_name(p.name + "-wal")
    try:
        wsize = wal.stat().st_size
    except FileNotFoundError:
        return
    if not wsize:
        return
    try:
        with open(wal, "rb") as fh:
            whead = fh.read(32)
    except OSError as exc:
        raise StatusDatabaseError(p, f"has a write-ahead log {wal.name} that cannot be read ({exc.strerror})") from None
    ok = (len(whead) == 32 and int.from_bytes(whead[:4], "big") in _WAL_MAGICS
          and int.from_bytes(whead[4:8], "big") == 3007000)
    wpage = int.from_bytes(whead[8:12], "big") if len(whead) >= 12 else 0
    if not ok or (page_size and wpage != page_size) or (not size and wsize):
        raise StatusDatabaseError(p, f"has a write-ahead log {wal.name} that is not a valid SQLite WAL (SQLite "
                                     "would discard it and the changes it holds)")
