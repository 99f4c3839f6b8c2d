"""Opening the status database file: connect, check an existing file, journal mode, schema.

:class:`~napari_medsegfm.dataset.status.StatusStore` opens its SQLite file through
:func:`open_database`. An existing file must be a consistent napari-medsegfm status
database (SQLite's ``quick_check``, our tables only, a numeric schema version no newer
than :data:`~napari_medsegfm.dataset.status_records.SCHEMA_VERSION`); anything else
raises :class:`~napari_medsegfm.dataset.status_records.StatusDatabaseError` and the file
is left as it is.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .status_records import _SCHEMA, ID_SCHEME, SCHEMA_VERSION, StatusDatabaseError

__all__ = ["open_database", "retry_busy"]

logger = logging.getLogger("napari_medsegfm.dataset.status")


def retry_busy(fn: Callable[[], Any], attempts: int = 5) -> Any:
    """Call ``fn`` again (after 50, 100, ... ms) while SQLite says the database is locked or busy.

    Parameters
    ----------
    fn : callable
        A function of no arguments that runs one SQLite statement.
    attempts : int
        Calls in all; the last "locked"/"busy" error is raised.

    Returns
    -------
    object
        What ``fn`` returns.

    Raises
    ------
    sqlite3.OperationalError
        Any other operational error at once, or "locked"/"busy" on the last attempt.
    """
    for i in range(attempts):
        try:
            return fn()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc) or i == attempts - 1:
                raise
            time.sleep(0.05 * (i + 1))
    return None


def open_database(path: Path, busy_timeout_s: float) -> tuple[sqlite3.Connection, bool]:
    """Connect to the status database ``path``, check it if it exists, and set it up.

    Parameters
    ----------
    path : Path
        The ``status.sqlite`` file; created (empty) by SQLite when missing.
    busy_timeout_s : float
        Seconds a statement waits for another writer before failing (SQLite's busy timeout).

    Returns
    -------
    connection : sqlite3.Connection
        In autocommit mode (``isolation_level=None``), usable from any thread.
    wal : bool
        True when the write-ahead log journal is on; False when the file system refused it
        (a warning is logged and the rollback journal is used).

    Raises
    ------
    StatusDatabaseError
        The file cannot be opened, is damaged, belongs to another program, or has a
        schema version that is not a number (the connection is closed, the file untouched).
    ValueError
        Its schema version is newer than this version of napari-medsegfm understands.
    sqlite3.OperationalError
        The database stayed locked or busy.
    """
    existed = path.is_file() and path.stat().st_size > 0
    try:
        con = sqlite3.connect(str(path), timeout=busy_timeout_s, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise StatusDatabaseError(path, f"cannot be opened ({exc})") from None
    try:
        if existed:
            _check_existing(con, path)
        con.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
        mode = con.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        wal = str(mode).lower() == "wal"
        if not wal:
            logger.warning(
                "status database %s: WAL journal unavailable (journal_mode=%s); the file system may not "
                "support the shared memory SQLite needs. Falling back to the rollback journal.",
                path, mode,
            )
        con.execute("PRAGMA synchronous = NORMAL")
        con.execute("PRAGMA foreign_keys = ON")
        _init_schema(con, path)
    except StatusDatabaseError:
        con.close()
        raise
    except sqlite3.DatabaseError as exc:
        con.close()
        if isinstance(exc, sqlite3.OperationalError) and ("locked" in str(exc) or "busy" in str(exc)):
            raise
        raise StatusDatabaseError(path, f"cannot be used ({exc})") from None
    return con, wal


def _check_existing(con: sqlite3.Connection, path: Path) -> None:
    """An existing file must be a consistent napari-medsegfm status database (read-only checks)."""
    try:
        res = con.execute("PRAGMA quick_check").fetchall()
    except sqlite3.DatabaseError as exc:
        raise StatusDatabaseError(path, f"is damaged ({exc})") from None
    if [r[0] for r in res] != ["ok"]:
        raise StatusDatabaseError(path, f"is damaged (SQLite quick_check: {str(res[0][0])[:200]})")
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if not tables:
        return  # an empty database: set up as new
    ours = {"meta", "cases", "history", "metrics", "locks"}
    row = None
    if "meta" in tables:
        try:
            row = con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        except sqlite3.DatabaseError:
            row = None
    if row is None or not tables <= ours | {"sqlite_sequence"}:
        raise StatusDatabaseError(path, "belongs to another program (its tables are "
                                        f"{', '.join(sorted(tables))[:200]}, not a napari-medsegfm status "
                                        "database)")
    cols = {r[1] for r in con.execute("PRAGMA table_info(cases)")} if "cases" in tables else set()
    if "cases" in tables and not {"case_id", "status", "comment", "info"} <= cols:
        raise StatusDatabaseError(path, "has a 'cases' table of another layout")


def _init_schema(con: sqlite3.Connection, path: Path) -> None:
    """Create the tables if missing and record (or check) the schema version, in one write transaction."""
    for stmt in [s.strip() for s in _SCHEMA.split(";") if s.strip()]:
        retry_busy(lambda s=stmt: con.execute(s))
    retry_busy(lambda: con.execute("BEGIN IMMEDIATE"))
    try:
        row = con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if row is None:
            con.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            con.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('id_scheme', ?)", (ID_SCHEME,))
        elif not str(row[0]).isdigit():
            raise StatusDatabaseError(path, f"has schema version {str(row[0])[:40]!r}")
        elif int(row[0]) > SCHEMA_VERSION:
            raise ValueError(
                f"status database {path} has schema version {row[0]}; this version of "
                f"napari-medsegfm understands up to {SCHEMA_VERSION}"
            )
    except BaseException:
        con.execute("ROLLBACK")
        raise
    else:
        con.execute("COMMIT")


def _close_connection(con: sqlite3.Connection) -> None:
    with contextlib.suppress(sqlite3.Error):
        con.close()
