"""Rebuilding a damaged status database from the corrections folder.

The corrections (``<sidecar>/corrections/*.npz``) are the record of the work; the status
database (:class:`~napari_medsegfm.dataset.status.StatusStore`) can be rebuilt from them
and from whatever rows the damaged database still yields.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from typing import Any

from .autosave import CorrectionStore, sidecar_dir
from .status import IN_PROGRESS, STATUSES, TODO, StatusStore

__all__ = ["recover_status"]

logger = logging.getLogger(__name__)


def recover_status(root: str | os.PathLike[str], *, sidecar: str | os.PathLike[str] | None = None,
                   user: str | None = None) -> dict[str, Any]:
    """Rebuild a damaged status database from the corrections folder (the record of the work).

    The damaged ``status.sqlite`` (and its ``-wal``/``-shm``) are *moved* to
    ``<sidecar>/damaged-<UTC time>/`` (never deleted); what they still yield (case statuses,
    comments, history, metrics) is copied into a new database; every case with a correction
    becomes at least ``in progress`` with its last edit time and author.

    Parameters
    ----------
    root : path-like
        The dataset folder.
    sidecar : path-like, optional
        Its sidecar folder (default ``<root>/.medsegfm``).
    user : str, optional
        Recorded in the history (default the current user).

    Returns
    -------
    dict
        ``moved_to``, ``moved``, ``salvaged_cases``, ``salvaged_history``,
        ``salvaged_metrics``, ``corrections``.
    """
    side = sidecar_dir(root, sidecar)
    db = side / "status.sqlite"
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    dest = side / f"damaged-{stamp}"
    moved = []
    for suffix in ("", "-wal", "-shm", "-journal"):
        f = db.with_name(db.name + suffix)
        if f.exists():
            dest.mkdir(exist_ok=True)
            os.replace(f, dest / f.name)
            moved.append(dest / f.name)
    cases, history, metrics = _salvage(dest / db.name) if moved else ([], [], [])
    corrections = CorrectionStore(side)
    store = StatusStore(db, user=user)
    try:
        with store._write() as con:
            con.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('id_scheme', ?)", ("1",))
            for row in cases:
                con.execute(f"INSERT OR REPLACE INTO cases ({StatusStore._COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", row)
            for row in history:
                con.execute("INSERT INTO history (case_id, at, who, action, detail, count, owner) "
                            "VALUES (?, ?, ?, ?, ?, ?, ?)", row)
            for row in metrics:
                con.execute("INSERT OR REPLACE INTO metrics (case_id, name, value, source, at, detail) "
                            "VALUES (?, ?, ?, ?, ?, ?)", row)
        files = corrections.files()
        for cid, path in files.items():
            meta = corrections.read_file(path, labels=False).meta
            rec = store.get(cid)
            with store._write() as con:
                con.execute("INSERT OR IGNORE INTO cases (case_id) VALUES (?)", (cid,))
                if rec.status == TODO:
                    con.execute("UPDATE cases SET status=?, status_at=?, status_by=? WHERE case_id=?",
                                (IN_PROGRESS, time.time(), store.user, cid))
                if rec.edited_at is None or (meta.get("saved_at") or 0) > rec.edited_at:
                    con.execute("UPDATE cases SET edited_at=?, edited_by=? WHERE case_id=?",
                                (meta.get("saved_at"), meta.get("saved_by"), cid))
                store._add_history(con, cid, "recover", f"status database rebuilt from {path.name}", store.user,
                                   time.time())
    finally:
        store.close()
    logger.warning("status database of %s rebuilt: %d case rows and %d history events salvaged, %d corrections; "
                   "the damaged files are in %s", root, len(cases), len(history), len(files), dest if moved else "-")
    return {"moved_to": str(dest) if moved else None, "moved": [str(m) for m in moved],
            "salvaged_cases": len(cases), "salvaged_history": len(history), "salvaged_metrics": len(metrics),
            "corrections": len(files)}


def _salvage(db: Any) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Rows of ``cases``, ``history`` and ``metrics`` a damaged database still yields (read-only,
    best effort: a table that cannot be read yields nothing)."""
    queries = (f"SELECT {StatusStore._COLS} FROM cases",
               "SELECT case_id, at, who, action, detail, count, owner FROM history ORDER BY id",
               "SELECT case_id, name, value, source, at, detail FROM metrics")
    out: list[list[tuple[Any, ...]]] = [[], [], []]
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    except sqlite3.Error:
        return out[0], out[1], out[2]
    try:
        for i, q in enumerate(queries):
            try:
                out[i] = [tuple(r) for r in con.execute(q)]
            except sqlite3.Error:
                out[i] = []
    finally:
        con.close()
    cases = [r for r in out[0] if len(r) == 8 and isinstance(r[0], str) and r[1] in STATUSES]
    history = [r for r in out[1] if len(r) == 7 and isinstance(r[0], str)]
    metrics = [r for r in out[2] if len(r) == 6 and isinstance(r[0], str)]
    return cases, history, metrics
