"""Applying results cheaply on the GUI thread: merge prepared on the worker, undo diffs compressed
later, voxel counts kept up to date, and one-step re-segmentation (``replace=True``)."""

from __future__ import annotations

import queue
import threading

import numpy as np
import pytest
from _engine_fakes import Crash, FillBox, wait_until

import napari_medsegfm.engine.labels as labels_mod
from napari_medsegfm.engine.postprocess import merge_object_mask
from napari_medsegfm.engine.session import AnnotationSession, InferenceResult
from napari_medsegfm.types import Box3D, Point, Volume

SHAPE = (12, 48, 48)


@pytest.fixture
def vol():
    return Volume(np.zeros(SHAPE, np.uint8), spacing=(2.0, 1.0, 1.0))


class Held:
    """Worker callbacks land in a queue; the test thread (the "GUI") applies them when it wants."""

    def __init__(self) -> None:
        self.q: queue.Queue[InferenceResult] = queue.Queue()

    def __call__(self, res: InferenceResult) -> None:
        self.q.put(res)

    def next(self, timeout: float = 10.0) -> InferenceResult:
        return self.q.get(timeout=timeout)


@pytest.fixture
def merge_threads(monkeypatch):
    """Thread ids that ran ``merge_object_mask`` inside the label store (the one merge)."""
    seen: list[int] = []
    orig = labels_mod.merge_object_mask

    def spy(*a, **kw):
        seen.append(threading.get_ident())
        return orig(*a, **kw)

    monkeypatch.setattr(labels_mod, "merge_object_mask", spy)
    return seen


def counts_ok(s: AnnotationSession) -> bool:
    return all(s.object_voxels(i) == int((s.labels == i).sum()) for i in s.objects)


def test_result_is_merged_on_the_worker_and_undo_works_before_compression(vol, merge_threads):
    with AnnotationSession(vol, FillBox()) as s:
        held = Held()
        a = s.add_object("a").label_id
        s.submit(Box3D(2, 8, 5, 5, 30, 35, object_id=a), held)
        res = held.next()
        assert merge_threads and threading.get_ident() not in merge_threads  # merged on the worker
        before = s.labels.copy()
        # hold the worker's housekeeping so the undo diff stays uncompressed while we undo/redo
        gate = threading.Event()
        s.worker.run_when_idle(gate.wait)
        n_merges = len(merge_threads)
        assert s.apply_result(res)
        assert len(merge_threads) == n_merges  # the GUI thread only copied the changed box in
        after = s.labels.copy()
        assert (after == a).sum() == 7 * 26 * 31
        diff = s.undo_stack.undo_entries[-1].diff
        assert diff is not None and not diff.compressed
        assert s.object_voxels(a) == 7 * 26 * 31
        s.undo()
        assert np.array_equal(s.labels, before) and s.object_voxels(a) == 0
        s.redo()
        assert np.array_equal(s.labels, after) and not diff.compressed
        gate.set()
        assert s.flush_undo_compression(10)
        assert diff.compressed and isinstance(diff.payload, bytes) and len(diff.payload) < diff.xor().size
        s.undo()
        assert np.array_equal(s.labels, before)
        s.redo()
        assert np.array_equal(s.labels, after) and counts_ok(s)


def test_changes_in_the_region_meanwhile_fall_back_to_a_merge_on_the_gui_thread(vol, merge_threads):
    with AnnotationSession(vol, FillBox()) as s:
        held = Held()
        a, b = s.add_object("a").label_id, s.add_object("b").label_id
        s.submit(Box3D(2, 8, 5, 5, 30, 35, object_id=a), held)
        res = held.next()
        # object b is painted into a's box after a's mask was merged on the worker
        s.labels[4, 10:14, 10:14] = b
        s.apply_edit(bbox=(slice(4, 5), slice(10, 14), slice(10, 14)))
        ref = s.labels.copy()
        merge_object_mask(ref, res.mask, a)
        gate = threading.Event()
        s.worker.run_when_idle(gate.wait)
        assert s.apply_result(res)
        assert threading.get_ident() in merge_threads  # merged again, here
        assert np.array_equal(s.labels, ref) and (s.labels == b).sum() == 16
        diff = s.undo_stack.undo_entries[-1].diff
        assert not diff.compressed  # compression still deferred on this path
        s.undo()
        assert (s.labels == a).sum() == 0 and (s.labels == b).sum() == 16
        s.redo()
        assert np.array_equal(s.labels, ref)
        gate.set()
        assert s.flush_undo_compression(10) and diff.compressed
        assert counts_ok(s)
        # a change elsewhere (disjoint from the region) keeps the worker's merge valid
        merge_threads.clear()
        s.submit(Point((5, 40, 8), object_id=b), held)
        res = held.next()
        s.labels[0, 45:47, 45:47] = a
        s.apply_edit(bbox=(slice(0, 1), slice(45, 47), slice(45, 47)))
        assert s.apply_result(res)
        assert threading.get_ident() not in merge_threads
        assert counts_ok(s)


def test_uncommitted_stroke_in_the_changed_box_is_committed_not_lost(vol):
    with AnnotationSession(vol, FillBox()) as s:
        held = Held()
        a, b = s.add_object("a").label_id, s.add_object("b").label_id
        s.submit(Box3D(2, 8, 5, 5, 30, 35, object_id=a), held)
        res = held.next()
        s.labels[3, 6:9, 6:9] = b  # a brush stroke in progress (not committed yet)
        assert s.apply_result(res)
        assert (s.labels[3, 6:9, 6:9] == b).all()  # the stroke survives (a is not overwrite)
        assert [e.description for e in s.undo_stack.undo_entries][-2] == "uncommitted edit"
        assert counts_ok(s)


def test_worker_results_interleaved_with_edits_match_a_reference_merge(vol):
    """Random prompts applied late, with edits/results of other objects in between (some in the
    same region, some not): labels always equal merging each result at apply time; counts exact;
    the whole history undoes back to empty and redoes to the end."""
    rng = np.random.default_rng(3)
    with AnnotationSession(vol, FillBox(radius=3)) as s:
        held = Held()
        ids = [s.add_object().label_id for _ in range(3)]
        s.set_overwrite(ids[2], True)
        states = []
        for i in range(40):
            lid = ids[i % 3]
            if i % 2 == 0:
                z, y, x = (int(v) for v in rng.integers(0, [9, 36, 36]))
                p = Box3D(z, z + 2, y, x, y + 10, x + 10, object_id=lid)
            else:
                p = Point(tuple(int(v) for v in rng.integers(0, SHAPE)), bool(rng.random() < 0.7), lid)
            s.submit(p, held)
            res = held.next()
            if i % 3 == 1:  # something else happens before the result is applied
                other = ids[(i + 1) % 3]
                z, y, x = (int(v) for v in rng.integers(0, [12, 40, 40]))
                s.labels[z, y:y + 8, x:x + 8] = other
                s.apply_edit(bbox=(slice(z, z + 1), slice(y, y + 8), slice(x, x + 8)))
            ref = s.labels.copy()
            merge_object_mask(ref, res.mask, lid, overwrite=s.objects[lid].overwrite)
            s.apply_result(res)
            assert np.array_equal(s.labels, ref), f"step {i}"
            assert counts_ok(s), f"step {i}"
            states.append(s.labels.copy())
        n = 0
        while s.undo() is not None:
            n += 1
            assert counts_ok(s)
        assert s.labels.max() == 0
        for _ in range(n):
            s.redo()
        assert np.array_equal(s.labels, states[-1]) and counts_ok(s)


def test_object_voxels_follow_edits_delete_reset_and_initial_labels(vol):
    lab = np.zeros(SHAPE, np.uint8)
    lab[1:3, 2:6, 2:6] = 4
    lab[5, 10:20, 10:20] = 9
    with AnnotationSession(vol, FillBox(), labels=lab, use_worker=False) as s:
        assert sorted(s.objects) == [4, 9]
        assert s.object_voxels(4) == 32 and s.object_voxels(9) == 100
        s.labels[5, 10:12, 10:20] = 4  # brush 4 over 9
        s.apply_edit(bbox=(slice(5, 6), slice(10, 12), slice(10, 20)))
        assert s.object_voxels(4) == 52 and s.object_voxels(9) == 80
        s.reset_object(9)
        assert s.object_voxels(9) == 0
        s.undo()
        assert s.object_voxels(9) == 80
        s.delete_object(4)
        s.undo()
        assert s.object_voxels(4) == 52 and counts_ok(s)


def test_replace_re_segments_in_one_undo_step(vol):
    with AnnotationSession(vol, FillBox(), use_worker=False) as s:
        a = s.add_object("a").label_id
        s.add_prompt(Box3D(2, 6, 5, 5, 30, 30, object_id=a))
        s.add_prompt(Point((4, 40, 40), object_id=a))
        old_labels, old_prompts = s.labels.copy(), s.prompts_of(a)
        n = len(s.undo_stack)
        # the box was moved: new box + the click, in one request that replaces the prompts
        res = s.add_prompt(Box3D(6, 9, 10, 10, 20, 20, object_id=a), replace=True)
        assert res.applied and res.replace and s.prompts_of(a) == [res.prompt]
        assert len(s.undo_stack) == n + 1  # one step, not "reset" + "result"
        res = s.add_prompt(Point((4, 40, 40), object_id=a))  # the click again, on the new box
        assert res.applied
        expected = np.zeros(SHAPE, bool)
        expected[6:10, 10:21, 10:21] = True
        expected[2:7, 38:43, 38:43] = True
        assert np.array_equal(s.labels == a, expected)
        assert [type(p).__name__ for p in s.prompts_of(a)] == ["Box3D", "Point"]
        s.undo()
        s.undo()
        assert np.array_equal(s.labels, old_labels) and s.prompts_of(a) == old_prompts
        # replay reproduces it (the log says which results replaced the prompts)
        s.redo()
        s.redo()
        final = s.labels.copy()
        recs = [r for r in s.log.records if r["type"] == "result" and r.get("replace")]
        assert recs
        s2 = AnnotationSession(vol, FillBox(), use_worker=False)
        s2.replay(s.log.records)
        assert np.array_equal(s2.labels, final)
        s2.close()


def test_replace_through_the_worker_with_followers_and_failure(vol):
    be = FillBox(delay_s=0.2)
    with AnnotationSession(vol, be) as s:
        held = Held()
        a = s.add_object("a").label_id
        s.submit(Box3D(2, 6, 5, 5, 30, 30, object_id=a), held)
        assert s.apply_result(held.next())
        s.submit(Point((4, 40, 40), object_id=a), held)
        assert s.apply_result(held.next())
        n = len(s.undo_stack)
        before = s.labels.copy()
        s.submit(Box3D(6, 9, 10, 10, 20, 20, object_id=a), held, replace=True)
        s.submit(Point((4, 40, 40), object_id=a), held)  # superseded request carries both
        assert [type(p).__name__ for p in s.prompts_in_effect(a)] == ["Box3D", "Point"]
        results = [held.next(), held.next()]
        applied = [r for r in results if s.apply_result(r)]
        assert len(applied) == 1 and applied[0].replace
        assert be.last_prompts[0].z_min == 6 and len(be.last_prompts) == 2  # no old box, no prev mask
        assert len(s.undo_stack) == n + 1
        s.undo()
        assert np.array_equal(s.labels, before)
    # a replacing request that fails changes nothing (unlike reset + resubmit)
    with AnnotationSession(vol, Crash(bad_ids=[2])) as s:
        held = Held()
        a = s.add_object("a").label_id
        s.submit(Box3D(2, 6, 5, 5, 30, 30, object_id=a), held)
        assert s.apply_result(held.next())
        b = s.add_object("b").label_id
        s.submit(Box3D(2, 6, 5, 5, 30, 30, object_id=b), held, replace=True)
        before, n = s.labels.copy(), len(s.undo_stack)
        assert not s.apply_result(held.next())
        assert np.array_equal(s.labels, before) and len(s.undo_stack) == n
        assert wait_until(lambda: not s.busy)


def test_initial_objects_their_boxes_and_counts():
    from napari_medsegfm.engine.labels import nonzero_bbox as _nonzero_bbox
    from napari_medsegfm.engine.postprocess import bbox_of

    rng = np.random.default_rng(5)
    lab = np.zeros((30, 40, 50), np.uint16)
    for lid in (3, 7, 300):
        z, y, x = (int(v) for v in rng.integers(0, [25, 35, 45]))
        lab[z:z + 4, y:y + 3, x:x + 5] = lid
    for arr in (lab, lab[:1], np.zeros((3, 4), np.uint8), (lab > 0).astype(np.uint8)[..., 0]):
        assert _nonzero_bbox(arr, chunk_bytes=64) == bbox_of(arr != 0)
    with AnnotationSession(Volume(np.zeros(lab.shape, np.uint8)), labels=lab, use_worker=False) as s:
        assert sorted(s.objects) == [3, 7, 300]
        for lid in (3, 7, 300):
            assert s._obj_bbox[lid] == bbox_of(lab == lid)
            assert s.object_voxels(lid) == (lab == lid).sum()
