"""AnnotationSession.warm: per-slice precomputation on the worker that never delays a prompt."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from _engine_fakes import FillBox, wait_until

from napari_medsegfm.engine.session import AnnotationSession
from napari_medsegfm.types import Box3D, Volume

SHAPE = (60, 32, 32)


class WarmFillBox(FillBox):
    """FillBox with a ``warm`` that takes ``warm_s`` per slice and records the slices and any overlap."""

    def __init__(self, warm_s: float = 0.02, **kw) -> None:
        super().__init__(**kw)
        self.warm_s = warm_s
        self.warmed: list[int] = []
        self.busy = threading.Lock()
        self.overlaps = 0

    def _enter(self) -> None:
        if not self.busy.acquire(blocking=False):
            self.overlaps += 1
            self.busy.acquire()

    def warm(self, zs, cancel=None) -> int:
        self._enter()
        try:
            for z in zs:
                time.sleep(self.warm_s)
                self.warmed.append(int(z))
            return len(zs)
        finally:
            self.busy.release()

    def predict(self, prompts, prev_mask, cancel):
        self._enter()
        try:
            return super().predict(prompts, prev_mask, cancel)
        finally:
            self.busy.release()


def _vol() -> Volume:
    return Volume(np.zeros(SHAPE, np.uint8))


def test_warm_runs_the_wanted_slices_in_order_without_touching_labels():
    be = WarmFillBox()
    with AnnotationSession(_vol(), be) as s:
        assert s.warm([5, 4, 4, 99, -1, 6])  # duplicates and slices outside the volume dropped
        assert wait_until(lambda: be.warmed == [5, 4, 6], timeout=5)
        assert s.worker.wait_idle(5)
        assert s.labels.max() == 0 and s.log.records[-1]["type"] != "result"
        # a new call replaces what is still wanted
        be.warm_s = 0.05
        s.warm(list(range(10, 40)))
        time.sleep(0.12)
        s.warm([50, 51])
        assert s.worker.wait_idle(5)
        assert be.warmed[-2:] == [50, 51] and len(be.warmed) < 3 + 30 + 2


@pytest.mark.timing
def test_a_prompt_waits_at_most_one_slice_of_warm_up():
    be = WarmFillBox(warm_s=0.1)
    with AnnotationSession(_vol(), be) as s:
        lid = s.add_object().label_id
        assert s.warm(list(range(60)))
        assert wait_until(lambda: len(be.warmed) >= 1, timeout=5)
        got = []
        t0 = time.perf_counter()
        s.submit(Box3D(2, 4, 0, 0, 9, 9, object_id=lid), lambda r: got.append((time.perf_counter(), r)))
        assert wait_until(lambda: got, timeout=5)
        t_done, res = got[0]
        assert res.error is None and res.mask is not None
        assert t_done - t0 < 0.25, f"the prompt waited {(t_done - t0) * 1000:.0f} ms behind the warm-up"
        assert s.worker.wait_idle(5)
        assert len(be.warmed) < 10  # the warm-up stopped instead of running its 60 slices
        assert be.overlaps == 0


def test_sync_prompt_stops_warm_up_and_never_runs_beside_it():
    be = WarmFillBox(warm_s=0.05)
    with AnnotationSession(_vol(), be) as s:
        lid = s.add_object().label_id
        s.warm(list(range(60)))
        assert wait_until(lambda: len(be.warmed) >= 1, timeout=5)
        res = s.add_prompt(Box3D(2, 4, 0, 0, 9, 9, object_id=lid))
        assert res.error is None and s.labels.max() == lid
        assert s.worker.wait_idle(5)
        assert len(be.warmed) < 10 and be.overlaps == 0


def test_warm_is_a_no_op_without_a_warm_capable_backend_or_worker():
    with AnnotationSession(_vol(), FillBox()) as s:
        assert not s.warm([1, 2])
    be = WarmFillBox()
    with AnnotationSession(_vol(), be, use_worker=False) as s:
        assert not s.warm([1, 2])
    assert be.warmed == []
