"""Committing side of :class:`~napari_medsegfm.engine.session.AnnotationSession` (a mixin of it).

Applying a result (the worker's prepared merge, or a merge here when its region changed),
manual edits and the absorption of uncommitted in-place strokes, erasing objects, and
undo/redo steps. Every write goes through the session's
:class:`~napari_medsegfm.engine.labels.LabelStore`; ``docs/session.md`` describes the contract.
"""

from __future__ import annotations

import logging
import threading
import time

import numpy as np

from ..types import (
    ObjectInfo,
    ObjectStatus,
    prompt_kind,
    prompt_to_dict,
)
from .inference import _Prepared
from .labels import fast_bbox, merge_block
from .objects import copy_info, default_color
from .postprocess import BBox, union_bbox
from .promptlog import encode_array
from .results import Change, InferenceResult
from .undo import LabelDiff, ObjectState, UndoEntry, bbox_to_list

log = logging.getLogger("napari_medsegfm.engine.session")


class _CommitMixin:
    """Results, edits and undo steps into the labels (see module doc)."""

    def apply_result(self, result: InferenceResult) -> bool:
        """Apply a current result to the labels (call on the GUI thread).

        Returns True when applied (one undo step, one log record, listeners
        notified with the changed ``bbox``). Returns False, and sets
        ``result.stale`` where relevant, for stale or cancelled results, results of
        deleted objects, and errors (whose pending prompts are then removed).
        Cost: the box where the object's mask changes (see the module docstring).
        """
        change: Change | None = None
        with self._lock:
            lid = result.label_id
            if result.applied:
                return False
            if lid not in self._objects or result.generation != self._current.get(lid):
                result.stale = True
                self._log_result(result, "stale")
                return False
            if self._applied_gen.get(lid) == result.generation:
                return False
            if result.error is not None or result.cancelled or result.mask is None:
                # the request is over: its prompts never became part of the object
                self._pending[lid] = [(g, p) for g, p in self._pending[lid] if g > result.generation]
                self._applied_gen[lid] = result.generation
                if result.error is not None:
                    self._log_result(result, "error")
                    change = Change("error", label_ids=(lid,), description=result.error_message)
                else:
                    self._log_result(result, "cancelled")
            else:
                change = self._apply_mask_locked(result)
        if change is not None:
            self._emit(change)
        return result.applied

    # ------------------------------------------------------------ merge, edits (internal)
    def _apply_mask_locked(self, result: InferenceResult) -> Change:
        t0 = time.perf_counter()
        lid = result.label_id
        info = self._objects[lid]
        assert result.mask is not None
        if result.mask.shape != self._shape:
            raise ValueError(f"result mask shape {result.mask.shape} differs from labels shape {self._shape}")
        prep = self._prepared.pop(result, None) or _Prepared()  # none: a result built outside _infer
        if not prep.bbox_done:
            result.bbox = fast_bbox(result.mask)  # one full scan
        merge = prep.merge if self._premerge_valid_locked(lid, prep) else None
        if merge is not None and merge.diff is not None:
            self._absorb_locked(merge.diff.bbox)  # an uncommitted stroke there is committed first...
            if not self._premerge_valid_locked(lid, prep):
                merge = None  # ...and then the region changed: merge here instead
        if merge is None:
            if prep.changed_done and self._version.get(lid, 0) == prep.version:
                # the object is as it was when its mask was compared (see _infer): outside the
                # box where mask and old mask differ, merging changes nothing
                roi = prep.changed
            else:
                roi = union_bbox(result.bbox, self._obj_bbox.get(lid))
            if roi is not None:
                self._absorb_locked(roi)
                epoch, old = self._store.snapshot(roi)
                merge = merge_block(old, result.mask[roi], lid, info.overwrite, roi, epoch)
        diff: LabelDiff | None = None
        ids: set[int] = {lid}
        if merge is not None:
            # merged (on the worker, or just now) against these very labels: copy the changed box in
            self._store.write(merge)
            diff, ids = merge.diff, set(merge.ids)
        if diff is not None:
            self._compress_later(diff)
            for i in ids - {lid}:  # objects it took voxels from (overwrite)
                self._version[i] = self._version.get(i, 0) + 1
        before = self._state(lid)
        prev_changed = self._version.get(lid, 0) != prep.version
        new_prompts = [p for g, p in self._pending[lid] if g <= result.generation]
        self._prompts[lid] = list(result.prompts)
        self._pending[lid] = [(g, p) for g, p in self._pending[lid] if g > result.generation]
        self._obj_bbox[lid] = result.bbox
        if diff is not None:
            self._version[lid] = self._version.get(lid, 0) + 1
        info.status = ObjectStatus.PROMPTED
        self._applied_gen[lid] = result.generation
        desc = f"{prompt_kind(result.prompt) if result.prompt is not None else 'prompt'} on {info.name!r}"
        if result.replace:
            desc = f"re-segment {info.name!r} from {len(result.prompts)} prompt(s)"
        self._undo.push(UndoEntry("result", desc, diff=diff, before={lid: before}, after={lid: self._state(lid)}))
        result.applied = True
        result.stale = False
        self._log_result(
            result, "applied", prompts=[prompt_to_dict(p) for p in new_prompts],
            apply_s=round(time.perf_counter() - t0, 6), bbox=bbox_to_list(result.bbox),
            mask_voxels=prep.mask_voxels if prep.mask_voxels >= 0 else None,
            prev_changed=prev_changed, **({"replace": True} if result.replace else {}),
        )
        # label_ids: the object, plus the objects it took voxels from (overwrite)
        return Change("result", bbox=None if diff is None else diff.bbox, label_ids=tuple(sorted(ids)),
                      description=desc,
                      labels_changed=diff is not None, objects_changed=True)

    def _premerge_valid_locked(self, lid: int, prep: _Prepared) -> bool:
        """The worker's merge still holds: same object version and flags, no change touched its region."""
        pre = prep.merge
        if pre is None:
            return False
        if (self._version.get(lid, 0) != prep.version or self._objects[lid].overwrite != pre.overwrite
                or self._store.dtype != pre.dtype):
            return False
        return self._store.unchanged_since(pre.epoch, pre.roi)

    def _compress_later(self, diff: LabelDiff) -> None:
        """Compress a pending undo diff on the worker thread when it is idle (now, without a worker)."""
        if diff.compressed:
            return
        if self._worker is None or self._closed:
            diff.compress()
            return
        try:
            self._worker.run_when_idle(diff.compress)  # a bound method of the diff: no session reference
        except RuntimeError:  # closed meanwhile
            diff.compress()

    def flush_undo_compression(self, timeout: float | None = 30.0) -> bool:
        """Wait until the undo diffs queued so far are compressed (tests, memory figures).

        Returns False on timeout. Never call it on the worker thread.
        """
        if self._worker is None or self._closed:
            return True
        done = threading.Event()
        try:
            self._worker.run_when_idle(done.set)
        except RuntimeError:
            return True
        return done.wait(timeout)

    # ---------------------------------------------------------- edits (internal)
    def _absorb_locked(self, roi: BBox) -> None:
        """Commit in-place edits of ``labels`` inside ``roi`` that were never committed."""
        if self._store.uncommitted(roi):
            log.warning("committing an uncommitted in-place edit of the labels inside %s", bbox_to_list(roi))
            change = self._commit_edit_locked(roi, self._store.shared[roi], "uncommitted edit")
            if change is not None:
                self._emit(change)

    def _commit_edit_locked(self, box: BBox, region: np.ndarray, description: str) -> Change | None:
        w = self._store.commit_region(box, region)
        if w is None:
            return None
        before: dict[int, ObjectState | None] = {
            i: self._state(i) if i in self._objects else None for i in sorted(w.ids)}
        after: dict[int, ObjectState | None] = {}
        for i in sorted(w.ids):
            if i not in self._objects:
                self._objects[i] = ObjectInfo(label_id=i, name=f"object {i}", color=default_color(i),
                                              status=ObjectStatus.EDITED)
                self._prompts[i] = []
                self._pending[i] = []
                self._obj_bbox[i] = None
            else:
                self._objects[i].status = ObjectStatus.EDITED
            self._version[i] = self._version.get(i, 0) + 1
            if int(i) in w.ids_new:
                self._obj_bbox[i] = union_bbox(self._obj_bbox.get(i), w.diff.bbox)
            after[i] = self._state(i)
        self._compress_later(w.diff)
        self._undo.push(UndoEntry("edit", description, diff=w.diff, before=before, after=after))
        self.log.write("edit", bbox=bbox_to_list(w.diff.bbox), description=description,
                       region=encode_array(w.content), label_ids=sorted(w.ids))
        return Change("edit", bbox=w.diff.bbox, label_ids=tuple(sorted(w.ids)), description=description,
                      labels_changed=True, objects_changed=True, labels_replaced=w.replaced)

    def _erase_object_locked(self, lid: int) -> LabelDiff | None:
        bb = self._obj_bbox.get(lid)
        if bb is None:
            return None
        self._absorb_locked(bb)
        diff = self._store.erase(lid, bb)
        if diff is not None:
            self._version[lid] = self._version.get(lid, 0) + 1
            self._compress_later(diff)
        self._obj_bbox[lid] = None
        return diff

    def _drop_object_locked(self, lid: int) -> None:
        for d in (self._objects, self._prompts, self._pending, self._obj_bbox, self._store.counts):
            d.pop(lid, None)  # type: ignore[attr-defined]

    # ----------------------------------------------------------- undo (internal)
    def _step(self, redo: bool) -> Change | None:
        with self._lock:
            peek = self._undo.redo_entries if redo else self._undo.undo_entries
            if not peek:
                return None
            top = peek[-1]
            if top.diff is not None:
                # an uncommitted in-place stroke in the region is committed first: undo then
                # reverts that stroke; redo finds its branch gone (a new step was made)
                self._absorb_locked(top.diff.bbox)
                if redo and not self._undo.can_redo:
                    return None
            entry = self._undo.pop_redo() if redo else self._undo.pop_undo()
            assert entry is not None
            touched = set(entry.label_ids)
            if entry.diff is not None:
                touched |= self._store.ids_in_diff(entry.diff)
        for lid in touched:
            self.cancel(lid)
        with self._lock:
            if entry.diff is not None:
                self._store.apply_diff(entry.diff)
            states = entry.after if redo else entry.before
            for lid, st in states.items():
                if st is None:
                    self._drop_object_locked(lid)
                    continue
                self._objects[lid] = copy_info(st.info)
                self._prompts[lid] = list(st.prompts)
                self._pending[lid] = []
                self._obj_bbox.setdefault(lid, None)
            if entry.diff is not None:
                for lid in self._store.ids_in_diff(entry.diff):
                    self._version[lid] = self._version.get(lid, 0) + 1
                    if lid in self._objects:
                        self._obj_bbox[lid] = union_bbox(self._obj_bbox.get(lid), entry.diff.bbox)
            kind = "redo" if redo else "undo"
            self.log.write(kind)
            change = Change(kind, bbox=None if entry.diff is None else entry.diff.bbox,
                            label_ids=tuple(sorted(touched)), description=f"{kind} {entry.description}",
                            labels_changed=entry.diff is not None, objects_changed=bool(states))
        self._emit(change)
        return change
