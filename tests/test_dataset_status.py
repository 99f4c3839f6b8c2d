"""Status database: statuses, comments, history, metrics, and locks between viewers/processes."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap

import pytest
from _engine_fakes import ManualClock

from napari_medsegfm.dataset.status import (
    DONE,
    FLAGGED,
    IN_PROGRESS,
    TODO,
    CaseLockedError,
    LockLostError,
    StatusStore,
)


@pytest.fixture
def db(tmp_path):
    return tmp_path / "side" / "status.sqlite"


def test_status_comment_history_and_wal(db):
    with StatusStore(db, user="alice") as st:
        assert st.wal, "the database must run in WAL mode"
        st.ensure_cases(["a", "b", "c"])
        assert {r.status for r in st.records().values()} == {TODO}
        st.set_status("a", "done", comment="looks fine")
        st.set_status("b", "Flagged")
        st.set_status("b", "in_progress")
        with pytest.raises(ValueError, match="not one of"):
            st.set_status("c", "finished")
        recs = st.records()
        assert recs["a"].status == DONE and recs["a"].comment == "looks fine" and recs["a"].status_by == "alice"
        assert recs["b"].status == IN_PROGRESS
        actions = [(e.action, e.detail) for e in st.history("b")]
        assert actions == [("status", f"{FLAGGED} -> {IN_PROGRESS}"), ("status", f"{TODO} -> {FLAGGED}")]
        # edits: todo -> in progress, repeated autosaves coalesce into one history row
        st.record_edit("c", "interval")
        st.record_edit("c", "accepted prompt")
        hc = st.history("c")
        assert st.get("c").status == IN_PROGRESS and st.get("c").edited_by == "alice"
        assert hc[0].action == "autosave" and hc[0].count == 2 and hc[0].detail == "accepted prompt"
        st.update_info("a", shape=[3, 4, 5], modality="CT")
        st.update_info("a", n_labels=2)
        assert st.get("a").info == {"shape": [3, 4, 5], "modality": "CT", "n_labels": 2}
        st.set_metric("a", "dice", 0.75, source="boxfill", detail={"per_label": {"1": 0.75}})
        assert st.metric("a", "dice") == pytest.approx(0.75)
        assert st.metric_details("dice")["a"]["per_label"] == {"1": 0.75}
        assert st.integrity_check() == "ok"
    # reopen: everything persisted
    with StatusStore(db) as st2:
        assert st2.get("a").comment == "looks fine"
        assert st2.get("zzz").status == TODO  # unknown case: a fresh record


def test_lock_between_two_viewers(db):
    a = StatusStore(db, user="alice", lease_s=30)
    b = StatusStore(db, user="bob", lease_s=30)
    try:
        a.acquire("case1")
        assert a.holds("case1")
        with pytest.raises(CaseLockedError) as ei:
            b.acquire("case1")
        msg = str(ei.value)
        assert "being edited elsewhere" in msg and "alice" in msg and f"pid {os.getpid()}" in msg
        assert b.lock_holder("case1").user == "alice"
        b.acquire("case2")  # other cases are free
        a.release("case1")
        b.acquire("case1")
        # a's write path notices it no longer holds the lock
        with pytest.raises(LockLostError):
            a.check_lock("case1")
        # stealing is explicit and leaves a history line
        a.acquire("case1", steal=True)
        assert not b.holds("case1") and a.holds("case1")
        assert "took over" in a.history("case1")[0].detail
        assert b.heartbeat() == ["case1"]
    finally:
        a.close()
        b.close()


def test_lease_expires_and_heartbeat_renews(db):
    clock = ManualClock(1.7e9)
    a = StatusStore(db, user="alice", lease_s=60, clock=clock)
    b = StatusStore(db, user="bob", lease_s=60, clock=clock)
    try:
        a.acquire("x")
        clock.advance(50)
        assert a.heartbeat() == []  # renewed (nothing lost)
        clock.advance(50)  # past the first expiry: the heartbeat keeps a's lease alive
        assert b.lock_holder("x").user == "alice"
        with pytest.raises(CaseLockedError):
            b.acquire("x")
        a._hb_stop.set()  # a hangs (no more heartbeats): its lease lapses
        a._hb_thread.join()
        clock.advance(61)
        assert b.lock_holder("x") is None
        b.acquire("x")
        assert b.holds("x")
    finally:
        a.close()
        b.close()


def test_lock_of_killed_process_is_stale_at_once(db):
    code = textwrap.dedent(f"""
        import sys, time
        from napari_medsegfm.dataset.status import StatusStore
        st = StatusStore({str(db)!r}, user="crashy", lease_s=600)
        st.acquire("c")
        print("locked", flush=True)
        time.sleep(600)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with StatusStore(db, user="me") as st:
            with pytest.raises(CaseLockedError, match="crashy"):
                st.acquire("c")
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
            st.acquire("c")  # dead holder on this host: no need to wait 600 s
            assert st.holds("c")
            assert st.integrity_check() == "ok"
    finally:
        if proc.poll() is None:
            proc.kill()


def test_concurrent_writers_in_processes_do_not_corrupt(db):
    StatusStore(db).close()
    code = textwrap.dedent("""
        import sys
        from napari_medsegfm.dataset.status import StatusStore
        st = StatusStore(sys.argv[1], user=sys.argv[2])
        for i in range(150):
            st.set_status(f"case{i % 10}", ("todo", "done", "flagged")[i % 3], comment=f"{sys.argv[2]} {i}")
            st.record_edit(f"case{i % 10}", f"edit {i}", action="edit", coalesce_s=0)
        st.close()
        print("ok")
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code, str(db), f"w{k}"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for k in range(3)]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0 and out.strip() == "ok", err
    with StatusStore(db) as st:
        assert st.integrity_check() == "ok"
        assert len(st.records()) == 10
        n_edit = sum(1 for e in st.history(limit=100000) if e.action == "edit")
        assert n_edit == 3 * 150
    con = sqlite3.connect(str(db))
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con.close()
