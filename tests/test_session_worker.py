"""Session + worker: latest wins under a burst of prompts, cancel latency, crashing backends.

The "GUI thread" is the test's main thread: callbacks (worker thread) push results
into a queue, the main thread applies them, as the Qt widget does via a signal.
"""

from __future__ import annotations

import queue
import threading
import time

import numpy as np
import pytest
from _engine_fakes import Crash, FillBox, wait_until

from napari_medsegfm.engine.session import AnnotationSession, Change, InferenceResult
from napari_medsegfm.types import Box3D, Point, Volume

SHAPE = (10, 40, 40)


class Gui:
    """Collects callbacks on the worker thread; :meth:`pump` applies them on this thread."""

    def __init__(self, session: AnnotationSession) -> None:
        self.s = session
        self.q: queue.Queue[tuple[float, InferenceResult]] = queue.Queue()
        self.results: list[InferenceResult] = []
        self.applied: list[InferenceResult] = []
        self.callback_threads: set[int] = set()

    def callback(self, res: InferenceResult) -> None:
        self.callback_threads.add(threading.get_ident())
        self.q.put((time.perf_counter(), res))

    def pump(self) -> None:
        while True:
            try:
                _, res = self.q.get_nowait()
            except queue.Empty:
                return
            self.results.append(res)
            if self.s.apply_result(res):
                self.applied.append(res)

    def settle(self, timeout: float = 10.0) -> None:
        assert self.s.worker.wait_idle(timeout)
        self.pump()


@pytest.fixture
def vol():
    return Volume(np.zeros(SHAPE, np.uint8))


@pytest.mark.timing
def test_100_prompts_in_1s_end_with_last_prompt_and_few_inferences(vol):
    be = FillBox(delay_s=0.06, step_s=0.005, last_box_only=True)
    with AnnotationSession(vol, be) as s:
        gui = Gui(s)
        lid = s.add_object().label_id
        rng = np.random.default_rng(3)
        t0 = time.perf_counter()
        boxes = []
        for i in range(100):
            z, y, x = (int(v) for v in rng.integers(0, [8, 30, 30]))
            b = Box3D(z, z + 1, y, x, y + 5 + i % 4, x + 5, object_id=lid)
            boxes.append(b)
            s.submit(b, gui.callback)
            gui.pump()
            time.sleep(max(0.0, t0 + (i + 1) * 0.0095 - time.perf_counter()))
        fired_in = time.perf_counter() - t0
        gui.settle()
        assert fired_in < 1.0 + 0.1, f"took {fired_in:.2f} s to fire"
        last = boxes[-1]
        expected = np.zeros(SHAPE, bool)
        expected[last.z_min:last.z_max + 1, last.y_min:last.y_max + 1, last.x_min:last.x_max + 1] = True
        assert np.array_equal(s.labels == lid, expected)
        assert len(gui.results) == 100  # exactly one callback per submit
        assert gui.callback_threads == {s.worker.thread.ident}
        assert be.completed <= 5, f"{be.completed} inferences ran to completion"
        # superseding prompts are debounced: few inferences even start (not one per prompt)
        assert be.calls <= 8, f"{be.calls} inferences started"
        assert 1 <= len(gui.applied) <= be.completed
        assert gui.applied[-1].prompt == last
        # every prompt ended up in the object's prompt list, in order, none pending
        assert s.prompts_of(lid) == boxes and s.pending_prompts(lid) == []
        # undo removes the one applied step
        s.undo()
        if len(gui.applied) == 1:
            assert s.labels.max() == 0


def test_burst_without_pauses_runs_at_most_a_handful(vol):
    be = FillBox(delay_s=0.05, step_s=0.005, last_box_only=True)
    with AnnotationSession(vol, be) as s:
        gui = Gui(s)
        ids = [s.add_object().label_id for _ in range(3)]
        last = {}
        for i in range(100):
            lid = ids[i % 3]
            last[lid] = Box3D(i % 8, i % 8 + 1, i % 30, 1, i % 30 + 3, 4 + lid, object_id=lid)
            s.submit(last[lid], gui.callback)
        gui.settle()
        assert be.calls <= 3 + 3, be.calls  # at most ~one started per key, plus the one running at submit
        for lid, b in last.items():
            m = np.zeros(SHAPE, bool)
            m[b.z_min:b.z_max + 1, b.y_min:b.y_max + 1, b.x_min:b.x_max + 1] = True
            # objects never overwrite each other: each holds its box minus earlier-applied others
            got = s.labels == lid
            assert np.array_equal(got, m & ((s.labels == lid) | (s.labels == 0)))
            assert got.any()
        assert len(gui.results) == 100


@pytest.mark.timing
def test_cancel_long_prediction_returns_within_200ms(vol):
    be = FillBox(delay_s=30.0, step_s=0.02)
    with AnnotationSession(vol, be) as s:
        gui = Gui(s)
        lid = s.add_object().label_id
        s.submit(Box3D(0, 1, 0, 0, 5, 5, object_id=lid), gui.callback)
        assert wait_until(lambda: be.calls == 1)
        time.sleep(0.15)
        t_cancel = time.perf_counter()
        s.cancel(lid)
        t_cb, res = gui.q.get(timeout=2)
        assert t_cb - t_cancel < 0.2, f"cancel took {(t_cb - t_cancel) * 1000:.0f} ms"
        assert res.cancelled and res.stale and res.mask is None
        assert not s.apply_result(res)
        assert s.labels.max() == 0 and s.pending_prompts(lid) == [] and s.prompts_of(lid) == []
        # the session is still usable with the same worker thread
        be.delay_s = 0.0
        thread = s.worker.thread
        s.submit(Box3D(0, 1, 0, 0, 5, 5, object_id=lid), gui.callback)
        gui.settle()
        assert s.labels.max() == lid and s.worker.thread is thread
        assert any(r["type"] == "result" and r["status"] == "cancelled" for r in s.log.records)


@pytest.mark.timing
def test_new_prompt_on_same_object_cancels_running_one(vol):
    be = FillBox(delay_s=30.0, step_s=0.02)
    with AnnotationSession(vol, be) as s:
        gui = Gui(s)
        lid = s.add_object().label_id
        s.submit(Box3D(0, 1, 0, 0, 5, 5, object_id=lid), gui.callback)
        assert wait_until(lambda: be.calls == 1)
        be.delay_s = 0.0
        t0 = time.perf_counter()
        p2 = Point((1, 2, 2), object_id=lid)
        s.submit(p2, gui.callback)
        gui.settle(timeout=2)
        assert time.perf_counter() - t0 < 0.5
        assert [r.cancelled for r in gui.results] == [True, False]
        assert gui.applied[-1].prompts[-1] == p2 and len(gui.applied[-1].prompts) == 2


def test_crashing_backend_leaves_session_and_undo_history_intact(vol):
    errors: list[Change] = []
    with AnnotationSession(vol, FillBox()) as s:
        s.add_listener(lambda c: errors.append(c) if c.kind == "error" else None)
        gui = Gui(s)
        a, b = s.add_object("a").label_id, s.add_object("b").label_id
        s.submit(Box3D(0, 3, 0, 0, 9, 9, object_id=a), gui.callback)
        gui.settle()
        s.labels[5, 20:22, 20:22] = b
        s.apply_edit(bbox=(slice(5, 6), slice(20, 22), slice(20, 22)))
        labels_before = s.labels.copy()
        history_before = [e.description for e in s.undo_stack.undo_entries]
        prompts_b_before = s.prompts_of(b)
        s.set_backend(Crash(bad_ids=[b]))
        bad = Point((5, 30, 30), object_id=b)
        s.submit(bad, gui.callback)
        gui.settle()
        res = gui.results[-1]
        assert isinstance(res.error, RuntimeError) and "model exploded on object 2" in res.error_message
        assert res.prompt == bad and res.mask is None
        assert not res.applied and not gui.applied[1:]
        assert np.array_equal(s.labels, labels_before)
        assert [e.description for e in s.undo_stack.undo_entries] == history_before
        assert s.prompts_of(b) == prompts_b_before and s.pending_prompts(b) == []  # failed prompt removed
        assert errors and errors[-1].label_ids == (b,) and "exploded" in errors[-1].description
        err_recs = [r for r in s.log.records if r["type"] == "result" and r["status"] == "error"]
        assert err_recs and "exploded" in err_recs[-1]["error"]
        # still usable: the same backend serves object a, and undo walks the old history
        s.submit(Point((1, 1, 1), positive=False, object_id=a), gui.callback)
        gui.settle()
        assert s.labels[1, 1, 1] == 0 and s.labels[1, 8, 8] == a
        # sync path: error result, or raised on request
        r = s.add_prompt(Point((5, 30, 30), object_id=b))
        assert r.error is not None and not r.applied
        with pytest.raises(RuntimeError, match="exploded"):
            s.add_prompt(Point((5, 30, 30), object_id=b), raise_errors=True)
        while s.undo() is not None:
            pass
        assert s.labels.max() == 0 and not s.objects


def test_one_thread_per_session_and_prepare_on_worker(vol):
    be = FillBox()
    n_threads = threading.active_count()
    with AnnotationSession(vol, be) as s:
        assert s.worker.thread is None  # started lazily
        done = threading.Event()
        info = {}
        s.prepare(lambda r: (info.update(err=r.error, t=threading.get_ident()), done.set()))
        assert done.wait(5) and info["err"] is None
        assert be.set_image_calls == 1 and info["t"] == s.worker.thread.ident
        gui = Gui(s)
        ids = [s.add_object().label_id for _ in range(5)]
        for k in range(4):
            for lid in ids:
                s.submit(Box3D(k, k, lid, lid, lid + 2, lid + 2, object_id=lid), gui.callback)
            gui.settle()
        assert be.threads == {s.worker.thread.ident}
        assert threading.active_count() == n_threads + 1
        assert be.set_image_calls == 1  # image set once, reused by every prompt
        thread = s.worker.thread
    assert not thread.is_alive()


def test_undo_cancels_inflight_inference_of_touched_object(vol):
    be = FillBox()
    with AnnotationSession(vol, be) as s:
        gui = Gui(s)
        lid = s.add_object().label_id
        s.submit(Box3D(0, 1, 0, 0, 5, 5, object_id=lid), gui.callback)
        gui.settle()
        be.delay_s = 30.0
        s.submit(Point((3, 20, 20), object_id=lid), gui.callback)
        assert wait_until(lambda: be.calls == 2)
        s.undo()  # undoes the applied box; the running click is cancelled and goes stale
        gui.settle(timeout=2)
        assert gui.results[-1].cancelled and not gui.applied[1:]
        assert s.labels.max() == 0 and s.pending_prompts(lid) == []


def test_backend_swap_and_shared_backend_between_sessions(vol):
    be = FillBox()
    v2 = Volume(np.ones(SHAPE, np.uint8))
    with AnnotationSession(vol, be, use_worker=False) as s1, AnnotationSession(v2, be, use_worker=False) as s2:
        s1.add_object(), s2.add_object()
        s1.add_prompt(Box3D(0, 0, 0, 0, 1, 1))
        assert be.volume is vol
        s2.add_prompt(Box3D(0, 0, 0, 0, 1, 1))
        assert be.volume is v2
        s1.add_prompt(Point((0, 5, 5)))
        assert be.volume is vol and be.set_image_calls == 3


def test_object_edited_while_its_inference_runs_falls_back_to_full_merge(vol):
    be = FillBox()
    with AnnotationSession(vol, be) as s:
        gui = Gui(s)
        lid = s.add_object().label_id
        s.submit(Box3D(0, 3, 0, 0, 9, 9, object_id=lid), gui.callback)
        gui.settle()
        be.delay_s = 0.3
        s.submit(Point((8, 30, 30), object_id=lid), gui.callback)  # mask: the box + a cube at (8, 30, 30)
        assert wait_until(lambda: be.calls == 2)
        s.labels[6, 35:38, 35:38] = lid  # brush the same object while the click runs
        s.apply_edit(bbox=(slice(6, 7), slice(35, 38), slice(35, 38)))
        gui.settle()
        assert gui.applied[-1].prompt.zyx == (8, 30, 30)
        expected = np.zeros(SHAPE, bool)
        expected[0:4, 0:10, 0:10] = True
        expected[6:10, 28:33, 28:33] = True
        # the result replaces the object's mask everywhere: the brushed voxels are gone
        assert np.array_equal(s.labels == lid, expected)
        rec = [r for r in s.log.records if r["type"] == "result" and r["status"] == "applied"][-1]
        assert rec["prev_changed"] is True


def test_dropped_session_stops_its_thread(vol):
    import gc

    s = AnnotationSession(vol, FillBox())
    gui = Gui(s)
    s.add_object()
    s.submit(Box3D(0, 1, 0, 0, 3, 3), gui.callback)
    s.worker.wait_idle(5)
    thread = s.worker.thread
    del s, gui
    gc.collect()
    assert wait_until(lambda: not thread.is_alive(), timeout=3)
