"""The edit leases of :class:`~napari_medsegfm.dataset.status.StatusStore`: take, renew, release, check.

A lease is a row of the ``locks`` table naming its holder (user, host, pid, a per-store
token) that expires ``lease_s`` seconds after its last heartbeat; a background thread
renews the leases a store holds. A lease whose holder is a dead process on this host,
or whose heartbeat stopped longer than ``lease_s`` ago, is stale and taken over.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import weakref

from .status_records import CaseLockedError, LockInfo, LockLostError, _pid_alive

__all__ = ["LeaseMixin"]

logger = logging.getLogger("napari_medsegfm.dataset.status")


class LeaseMixin:
    """The lease methods of :class:`~napari_medsegfm.dataset.status.StatusStore`.

    They use the store's connection helpers (``_write``, ``_read``, ``_mutex``,
    ``_add_history``), its identity (``owner``, ``user``, ``host``, ``pid``), ``lease_s``,
    ``heartbeat_s``, its clock and the set of held case ids; only ``StatusStore`` mixes it in.
    """

    _held: set[str]
    _closed: bool
    _hb_stop: threading.Event
    _hb_thread: threading.Thread | None
    owner: str
    user: str
    host: str
    pid: int
    lease_s: float
    heartbeat_s: float

    def _lock_row(self, con: sqlite3.Connection, case_id: str) -> LockInfo | None:
        row = con.execute(
            "SELECT case_id, owner, user, host, pid, acquired_at, heartbeat_at, expires_at FROM locks WHERE case_id=?",
            (case_id,),
        ).fetchone()
        return LockInfo(*row) if row else None

    def _is_stale(self, info: LockInfo, now: float) -> bool:
        if info.expires_at < now:
            return True
        if info.host == self.host and info.pid != self.pid and not _pid_alive(info.pid):
            return True
        return False

    def lock_holder(self, case_id: str) -> LockInfo | None:
        """The live lease on ``case_id`` (``None`` if free or stale).

        Parameters
        ----------
        case_id : str
            Case id.

        Returns
        -------
        LockInfo or None
        """
        with self._mutex:
            info = self._lock_row(self._con, case_id)
        if info is None or self._is_stale(info, self._clock()):
            return None
        return info

    def locks(self) -> dict[str, LockInfo]:
        """Every live lease in the dataset."""
        now = self._clock()
        rows = self._read("SELECT case_id, owner, user, host, pid, acquired_at, heartbeat_at, expires_at FROM locks")
        return {r[0]: LockInfo(*r) for r in rows if not self._is_stale(LockInfo(*r), now)}

    def holds(self, case_id: str) -> bool:
        """True while this store holds a live lease on ``case_id``.

        Parameters
        ----------
        case_id : str
            Case id.
        """
        with self._mutex:
            info = self._lock_row(self._con, case_id)
        return info is not None and info.owner == self.owner and info.expires_at >= self._clock()

    def acquire(self, case_id: str, *, steal: bool = False) -> LockInfo:
        """Take (or renew) the edit lease of ``case_id``; a stale lease is taken over (logged in the history).

        Parameters
        ----------
        case_id : str
            Case id.
        steal : bool
            Take the lease even from a live holder (recorded as stolen).

        Returns
        -------
        LockInfo
            This store's lease, expiring ``lease_s`` seconds from now; the heartbeat thread renews it.

        Raises
        ------
        CaseLockedError
            Another live viewer holds it (unless ``steal``).
        """
        now = self._clock()
        with self._write() as con:
            info = self._lock_row(con, case_id)
            if info is not None and info.owner != self.owner and not steal and not self._is_stale(info, now):
                raise CaseLockedError(case_id, info)
            if info is not None and info.owner != self.owner:
                why = "stolen" if not self._is_stale(info, now) else "stale"
                logger.info("taking over %s lock on %s held by %s", why, case_id, info.owner)
                self._add_history(con, case_id, "lock", f"took over {why} lock of {info.user}@{info.host} pid {info.pid}",
                                  self.user, now)
            acquired = info.acquired_at if info is not None and info.owner == self.owner else now
            con.execute(
                "INSERT OR REPLACE INTO locks (case_id, owner, user, host, pid, acquired_at, heartbeat_at, expires_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (case_id, self.owner, self.user, self.host, self.pid, acquired, now, now + self.lease_s),
            )
        self._held.add(case_id)
        self._start_heartbeat()
        return LockInfo(case_id, self.owner, self.user, self.host, self.pid, acquired, now, now + self.lease_s)

    def release(self, case_id: str) -> None:
        """Give up this store's lease on ``case_id`` (no-op if not held).

        Parameters
        ----------
        case_id : str
            Case id.
        """
        self._held.discard(case_id)
        with self._write() as con:
            con.execute("DELETE FROM locks WHERE case_id=? AND owner=?", (case_id, self.owner))

    def force_unlock(self, case_id: str) -> LockInfo | None:
        """Remove whatever lease is on ``case_id`` (admin action, recorded in the history).

        Parameters
        ----------
        case_id : str
            Case id.

        Returns
        -------
        LockInfo or None
            What was removed.
        """
        with self._write() as con:
            info = self._lock_row(con, case_id)
            con.execute("DELETE FROM locks WHERE case_id=?", (case_id,))
            if info is not None:
                self._add_history(con, case_id, "unlock", f"removed lock of {info.user}@{info.host} pid {info.pid}",
                                  self.user, self._clock())
        return info

    def heartbeat(self) -> list[str]:
        """Renew every lease this store holds; returns the case ids whose lease was lost."""
        if not self._held or self._closed:
            return []
        now = self._clock()
        lost = []
        with self._write() as con:
            for cid in list(self._held):
                cur = con.execute(
                    "UPDATE locks SET heartbeat_at=?, expires_at=? WHERE case_id=? AND owner=?",
                    (now, now + self.lease_s, cid, self.owner),
                )
                if cur.rowcount == 0:
                    lost.append(cid)
        for cid in lost:
            self._held.discard(cid)
            logger.warning("lost the edit lock on case %s (another viewer took it over)", cid)
        return lost

    def check_lock(self, case_id: str) -> None:
        """Check that this store still holds ``case_id``, renewing the lease.

        Parameters
        ----------
        case_id : str
            Case id.

        Raises
        ------
        LockLostError
            The lease expired and may have been taken over.
        """
        now = self._clock()
        with self._write() as con:
            cur = con.execute(
                "UPDATE locks SET heartbeat_at=?, expires_at=? WHERE case_id=? AND owner=?",
                (now, now + self.lease_s, case_id, self.owner),
            )
            ok = cur.rowcount > 0
        if not ok:
            self._held.discard(case_id)
            raise LockLostError(
                f"this viewer no longer holds the edit lock on case {case_id!r}: it expired and another viewer "
                "may have taken it over; reopen the case to continue"
            )

    def _start_heartbeat(self) -> None:
        if self._hb_thread is not None and self._hb_thread.is_alive():
            return
        self._hb_stop.clear()
        ref = weakref.ref(self)
        stop = self._hb_stop
        period = self.heartbeat_s

        def run() -> None:
            while not stop.wait(period):
                store = ref()
                if store is None or store._closed:
                    return
                try:
                    store.heartbeat()
                except (sqlite3.Error, ValueError) as exc:
                    logger.warning("lock heartbeat failed: %s", exc)
                del store

        self._hb_thread = threading.Thread(target=run, name="medsegfm-lock-heartbeat", daemon=True)
        self._hb_thread.start()
