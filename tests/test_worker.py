"""InferenceWorker: one persistent thread, latest wins per key, cancel, exactly-once callbacks."""

from __future__ import annotations

import os
import sys
import threading
import time

import pytest
from _engine_fakes import ManualClock, wait_until

from napari_medsegfm.engine.worker import InferenceWorker, JobOutcome
from napari_medsegfm.types import Cancelled


@pytest.fixture
def worker():
    w = InferenceWorker("test-worker")
    yield w
    w.close()


def test_one_persistent_thread_serves_every_job(worker):
    before = threading.active_count()
    idents, outs = [], []
    for i in range(20):
        worker.submit(i, lambda tok, i=i: (idents.append(threading.get_ident()), i)[1], outs.append)
        worker.wait_idle(5)
    assert len(set(idents)) == 1
    assert idents[0] != threading.get_ident()
    assert threading.active_count() == before + 1
    assert [o.value for o in outs] == list(range(20))
    assert worker.thread is not None and worker.thread.is_alive()


def test_latest_wins_per_key_and_exactly_one_callback_each(worker):
    gate = threading.Event()
    ran, outs = [], []
    lock = threading.Lock()

    def cb(o: JobOutcome):
        with lock:
            outs.append(o)

    # occupy the thread so the next submits queue up
    worker.submit("block", lambda tok: gate.wait(5), cb)
    assert wait_until(lambda: worker.running_key() == "block")
    gens = [worker.submit("a", lambda tok, i=i: ran.append(("a", i)) or i, cb) for i in range(10)]
    gb = worker.submit("b", lambda tok: ran.append(("b", 0)) or "b", cb)
    gate.set()
    assert worker.wait_idle(5)
    assert ran == [("a", 9), ("b", 0)]  # only the latest "a" ran, then "b" (FIFO across keys)
    assert len(outs) == 12  # block + 10 a + 1 b, each exactly once
    by_gen = {o.generation: o for o in outs}
    assert set(by_gen) >= set(gens) | {gb}
    for g in gens[:-1]:
        assert by_gen[g].cancelled and by_gen[g].stale and by_gen[g].elapsed_s == 0
    assert by_gen[gens[-1]].value == 9 and not by_gen[gens[-1]].stale
    assert gens == sorted(gens) and len(set(gens)) == len(gens)


def test_new_job_cancels_the_running_one_of_same_key(worker):
    outs = []

    def slow(tok):
        for _ in range(500):
            tok.check()
            tok.wait(0.01)
        return "slow"

    g1 = worker.submit("k", slow, outs.append)
    assert wait_until(lambda: worker.running_key() == "k")
    g2 = worker.submit("k", lambda tok: "fast", outs.append)
    assert worker.wait_idle(2)
    assert [o.generation for o in outs] == [g1, g2]
    assert outs[0].cancelled and outs[0].stale and outs[0].value is None
    assert outs[1].value == "fast" and not outs[1].cancelled


@pytest.mark.timing
def test_cancel_returns_within_200ms(worker):
    done = threading.Event()
    t_cb = []

    def slow(tok):
        for _ in range(1000):  # 10 s unless cancelled
            if tok.wait(0.02):
                raise Cancelled(tok.reason)
        return 1

    def cb(o):
        t_cb.append((time.perf_counter(), o))
        done.set()

    worker.submit(7, slow, cb)
    assert wait_until(lambda: worker.running_key() == 7)
    time.sleep(0.1)
    t0 = time.perf_counter()
    worker.cancel(7)
    assert done.wait(2)
    latency = t_cb[0][0] - t0
    assert t_cb[0][1].cancelled and t_cb[0][1].stale
    assert latency < 0.2, f"cancel took {latency * 1000:.0f} ms"


def test_exception_becomes_error_outcome_and_worker_keeps_serving(worker):
    outs = []

    def boom(tok):
        raise RuntimeError("kaputt")

    worker.submit(1, boom, outs.append)
    worker.submit(2, lambda tok: 42, outs.append)
    assert worker.wait_idle(5)
    assert isinstance(outs[0].error, RuntimeError) and "kaputt" in str(outs[0].error)
    assert not outs[0].cancelled
    assert outs[1].value == 42 and outs[1].error is None
    assert worker.jobs_finished == 2


def test_raising_callback_is_logged_not_fatal(worker, caplog):
    outs = []

    def bad_cb(o):
        raise ValueError("callback bug")

    worker.submit(1, lambda tok: 1, bad_cb)
    worker.submit(2, lambda tok: 2, outs.append)
    assert worker.wait_idle(5)
    assert outs and outs[0].value == 2
    assert "callback bug" in caplog.text


def test_generations_and_invalidate(worker):
    g = worker.next_generation()
    g2 = worker.submit("x", lambda tok: 1, None, generation=g + 5)
    assert g2 == g + 5 and worker.current_generation("x") == g + 5
    with pytest.raises(ValueError, match="not newer"):
        worker.submit("x", lambda tok: 1, None, generation=g + 5)
    assert worker.next_generation() > g + 5
    new = worker.invalidate("x")
    assert not worker.is_current("x", g + 5) and worker.is_current("x", new)
    assert worker.wait_idle(5)


def test_close_cancels_and_joins_and_refuses_new_jobs():
    w = InferenceWorker()
    outs = []

    def slow(tok):
        while not tok.wait(0.01):
            pass
        raise Cancelled(tok.reason)

    w.submit("a", slow, outs.append)
    w.submit("b", lambda tok: 1, outs.append)
    assert wait_until(lambda: w.running_key() == "a")
    w.close(timeout=2)
    assert not w.thread.is_alive()
    assert len(outs) == 2 and all(o.cancelled for o in outs)
    with pytest.raises(RuntimeError, match="closed"):
        w.submit("c", lambda tok: 1)


def test_debounce_holds_only_superseding_jobs():
    clock = ManualClock()
    with InferenceWorker(debounce_s=0.05, clock=clock) as w:
        starts = []
        w.submit("k", lambda tok: starts.append("first"))
        assert w.wait_idle(10)
        assert starts == ["first"]  # isolated job: no hold-off (ran with the clock standing still)
        # a burst: each job supersedes the previous one; only the last starts, after the hold-off
        gate = threading.Event()
        w.submit("k", lambda tok: gate.wait(10) and not tok.cancelled and starts.append("gate"))
        assert wait_until(lambda: w.running_key() == "k")
        for i in range(20):
            w.submit("k", lambda tok, i=i: starts.append(i))
        gate.set()
        assert wait_until(lambda: w.running_key() is None and w.pending_keys() == ["k"])
        assert w.jobs_started == 2  # the last job waits for its hold-off: the clock has not moved
        clock.advance(0.049)
        assert w.jobs_started == 2 and w.pending_keys() == ["k"]
        clock.advance(0.002)
        assert w.wait_idle(10)
        assert starts[1:] == [19]  # the gate job was cancelled (its token set) before appending
        assert w.jobs_started == 3


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are Linux-only")
@pytest.mark.parametrize("setting, expected_delta", [(None, 5), ("0", 0), ("3", 3)])
def test_worker_thread_runs_at_lower_priority(monkeypatch, setting, expected_delta):
    # inference must not compete with the GUI thread on equal terms (MEDSEGFM_WORKER_NICE)
    if setting is None:
        monkeypatch.delenv("MEDSEGFM_WORKER_NICE", raising=False)
    else:
        monkeypatch.setenv("MEDSEGFM_WORKER_NICE", setting)
    here = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    seen = []
    with InferenceWorker() as w:
        w.submit("k", lambda tok: seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id())))
        assert w.wait_idle(5)
    assert seen == [min(19, here + expected_delta)]
