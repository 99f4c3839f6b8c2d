"""The annotation session: the orchestrator of objects, prompts, labels, undo, log and worker.

:class:`AnnotationSession` is the Qt-free heart of the plugin. A script, the CLI and
the napari widget all drive it the same way::

    s = AnnotationSession(volume, backend="classic")
    liver = s.add_object("liver")
    s.add_prompt(Box3D(10, 40, 100, 120, 200, 220, object_id=liver.label_id))  # sync
    s.undo(); s.redo()

``session.labels`` is the label image in the volume's spatial shape (``(Z, Y, X)`` or
``(Y, X)``, array axis order); label value ``k`` belongs to object ``k``. The session
holds the object table, the prompts of each object and their generations (the newest
request of an object is current; only a current result applies), and delegates:

* the label arrays, the one merge and the voxel counts to
  :class:`~napari_medsegfm.engine.labels.LabelStore`;
* inference to one persistent :class:`~napari_medsegfm.engine.worker.InferenceWorker`
  thread (:meth:`AnnotationSession.submit`; callbacks run on that thread, the GUI then
  calls :meth:`AnnotationSession.apply_result` on its own thread);
* undo/redo to :mod:`~napari_medsegfm.engine.undo`, the JSON-lines record of every step
  to :mod:`~napari_medsegfm.engine.promptlog`, and replay to
  :mod:`~napari_medsegfm.engine.replay`.

The class is written in three modules: this one (state, the object table, the public
surface), :mod:`~napari_medsegfm.engine.inference` (prompts to results: requests,
generations, worker jobs, backend calls) and :mod:`~napari_medsegfm.engine.commit`
(results, edits and undo steps into the labels).

``docs/session.md`` describes the contract in full: sharing ``labels`` with a napari
Labels layer (in-place brush edits and :meth:`AnnotationSession.apply_edit`),
generations and pending prompts, what runs on the worker, undo and its deferred
compression, voxel counts, and the prompt log.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..types import (
    CancelToken,
    ObjectInfo,
    ObjectStatus,
    Prompt,
    Volume,
)
from . import replay as _replay
from .commit import _CommitMixin
from .image_owner import IMAGE_OWNERS
from .inference import _InferenceMixin, _Prepared
from .labels import MAX_LABEL, LabelStore, check_label_array
from .objects import check_color, copy_info, default_color
from .postprocess import BBox
from .promptlog import LOG_VERSION, PromptLog
from .replay import replay_log
from .results import Change, InferenceResult
from .undo import ObjectState, UndoEntry, UndoStack
from .vocab import attach_vocabulary
from .worker import InferenceWorker

__all__ = ["AnnotationSession", "InferenceResult", "Change", "default_color", "replay_log"]

log = logging.getLogger(__name__)


def _finalize_session(worker: InferenceWorker | None, plog: PromptLog, token: object) -> None:
    if worker is not None:
        worker.close(timeout=0)
    plog.close()
    IMAGE_OWNERS.release(token)


# ----------------------------------------------------------------------- session
class AnnotationSession(_InferenceMixin, _CommitMixin):
    """Objects, prompts, labels, undo/redo, log and worker of one image (see module doc).

    Parameters
    ----------
    volume : Volume or np.ndarray
        The image (an array is wrapped in a :class:`~napari_medsegfm.types.Volume`).
    backend : None, str or backend instance
        ``None``: no backend (editing only, set one later with :meth:`set_backend`);
        a registry name (``"default"`` for the registry's default); or an object
        following :class:`~napari_medsegfm.backends.base.SegmentationBackend`.
    labels : np.ndarray, optional
        Initial label image in the volume's spatial shape (copied). Each non-zero
        value becomes an object.
    log_path : str or Path, optional
        JSON-lines prompt log to append to.
    undo_levels : int
        Undo steps kept (>= 1; at least 100 recommended).
    use_worker : bool
        False: :meth:`submit` runs synchronously in the calling thread (no thread).
    label_names : dict of int to str, optional
        Names of the objects found in ``labels``.
    debounce_s : float
        A prompt that supersedes a queued/running one of the same object waits this
        long before starting (bursts start only their last prompt); an isolated
        prompt starts at once.
    """

    def __init__(
        self,
        volume: Volume | np.ndarray,
        backend: Any = None,
        *,
        labels: np.ndarray | None = None,
        log_path: str | Path | None = None,
        undo_levels: int = 200,
        use_worker: bool = True,
        label_names: dict[int, str] | None = None,
        debounce_s: float = 0.03,
    ) -> None:
        if not isinstance(volume, Volume):
            volume = Volume(np.asarray(volume))
        self.volume = volume
        self._shape = tuple(int(s) for s in volume.spatial_shape)
        self._lock = threading.RLock()
        self._backend_lock = threading.RLock()
        self._warm_wanted: list[int] = []  # slices to precompute while idle (see warm())
        self._warm_active = False
        self._owner_token = object()
        self._listeners: list[Callable[[Change], None]] = []
        self._undo = UndoStack(undo_levels)
        self._objects: dict[int, ObjectInfo] = {}
        self._prompts: dict[int, list[Prompt]] = {}
        self._pending: dict[int, list[tuple[int, Prompt]]] = {}
        self._obj_bbox: dict[int, BBox | None] = {}
        self._version: dict[int, int] = {}
        self._current: dict[int, int] = {}
        self._applied_gen: dict[int, int] = {}
        self._sync_tokens: dict[int, CancelToken] = {}
        self._replacing: dict[int, int] = {}  # label_id -> generation of a pending replace
        # what the worker computed beside each result (weak: the entry goes with the result)
        self._prepared: weakref.WeakKeyDictionary[InferenceResult, _Prepared] = weakref.WeakKeyDictionary()
        self._logged: weakref.WeakSet[InferenceResult] = weakref.WeakSet()  # results with a log record
        self._gen = 0
        self._closed = False
        self._use_worker = bool(use_worker)
        self._worker: InferenceWorker | None = (
            InferenceWorker("medsegfm-session-worker", debounce_s=debounce_s) if use_worker else None
        )

        self._store = LabelStore(self._shape, labels)
        self._init_objects_from_labels(label_names or {})

        self._backend: Any = None
        self._backend = self._resolve_backend(backend)
        attach_vocabulary(self._backend)  # [text helper] free text -> label ids for backends with a label space
        self.log = PromptLog(log_path)
        # a session dropped without close() must not leave its thread or log file behind
        self._finalizer = weakref.finalize(self, _finalize_session, self._worker, self.log, self._owner_token)
        self.log.write(
            "session",
            version=LOG_VERSION,
            shape=list(self._shape),
            dtype=self._store.dtype.str,
            labels_sha256=self._store.sha256(),
            backend=self.backend_name,
            backend_params=self._backend_params(self._backend),
            objects=[self._object_record(o) for o in self._objects.values()],
            source=str(volume.meta.get("source", "")),
        )

    # ------------------------------------------------------------ properties
    @property
    def labels(self) -> np.ndarray:
        """The current label image (shared with the GUI; see ``docs/session.md``)."""
        return self._store.shared

    def labels_sha256(self) -> str:
        """SHA-256 of the committed labels (C-order bytes; in-place edits not yet committed excluded)."""
        with self._lock:
            return self._store.sha256()

    @property
    def objects(self) -> dict[int, ObjectInfo]:
        """``label_id -> ObjectInfo`` (a new dict; change objects through the methods)."""
        with self._lock:
            return dict(self._objects)

    @property
    def backend(self) -> Any:
        """The backend instance (``None``: editing only)."""
        return self._backend

    @property
    def backend_name(self) -> str:
        """The backend's ``name`` (``""`` without a backend)."""
        b = self._backend
        return "" if b is None else str(getattr(b, "name", type(b).__name__))

    @property
    def can_undo(self) -> bool:
        """There is a step to undo."""
        return self._undo.can_undo

    @property
    def can_redo(self) -> bool:
        """There is an undone step to redo."""
        return self._undo.can_redo

    @property
    def undo_description(self) -> str:
        """Text of the step :meth:`undo` would revert (``""``: none)."""
        e = self._undo.undo_entries
        return e[-1].description if e else ""

    @property
    def redo_description(self) -> str:
        """Text of the step :meth:`redo` would re-apply (``""``: none)."""
        e = self._undo.redo_entries
        return e[-1].description if e else ""

    @property
    def undo_stack(self) -> UndoStack:
        """The undo history (read-only use: inspection, tests, memory figures)."""
        return self._undo

    @property
    def busy(self) -> bool:
        """True while the worker runs or holds a request."""
        return self._worker is not None and self._worker.busy

    @property
    def worker(self) -> InferenceWorker | None:
        """The session's worker thread wrapper (``None`` with ``use_worker=False``)."""
        return self._worker

    def generation(self, label_id: int) -> int:
        """Current generation of an object (0 before its first prompt)."""
        with self._lock:
            return self._current.get(int(label_id), 0)

    def undo_memory_bytes(self) -> int:
        """Bytes held by the undo/redo history (compressed diffs + object states)."""
        return self._undo.memory_bytes()

    # ---------------------------------------------------------------- objects
    def add_object(
        self,
        name: str = "",
        color: Any = None,
        label_id: int | None = None,
        overwrite: bool = False,
        instance: bool = False,
    ) -> ObjectInfo:
        """Create an object (undoable); returns its :class:`ObjectInfo`.

        ``label_id`` defaults to one more than the largest id in use. Ids above 255
        (65535) promote ``labels`` to uint16 (uint32): ``Change.labels_replaced``.
        """
        with self._lock:
            if label_id is None:
                lid = max(self._objects, default=0) + 1
            else:
                try:
                    lid = int(label_id)
                except (TypeError, ValueError):
                    raise ValueError(f"label_id must be an integer >= 1; got {label_id!r}") from None
                if lid != label_id:
                    raise ValueError(f"label_id must be an integer >= 1; got {label_id!r}")
            if lid < 1 or lid > MAX_LABEL:
                raise ValueError(f"label_id must be in 1..{MAX_LABEL}; got {label_id!r}")
            if lid in self._objects:
                raise ValueError(f"label_id {lid} is already used by object {self._objects[lid].name!r}")
            rgba = default_color(lid) if color is None else check_color(color)
            info = ObjectInfo(label_id=lid, name=str(name) or f"object {lid}", color=rgba,
                              overwrite=bool(overwrite), instance=bool(instance))
            replaced = self._ensure_dtype(lid)
            self._objects[lid] = info
            self._prompts[lid] = []
            self._pending[lid] = []
            self._obj_bbox[lid] = None
            self._store.counts[lid] = 0  # every labelled voxel belongs to an object: a new id has none
            self._version.setdefault(lid, 0)
            self._undo.push(UndoEntry("object_add", f"add object {info.name!r}",
                                      before={lid: None}, after={lid: self._state(lid)}))
            self.log.write("object_add", **self._object_record(info))
            out = copy_info(info)
        self._emit(Change("object_add", label_ids=(lid,), description=f"add object {info.name!r}",
                          objects_changed=True, labels_replaced=replaced, labels_changed=replaced))
        return out

    def delete_object(self, label_id: int) -> None:
        """Remove an object and erase its voxels (undoable)."""
        lid = self._check_object(label_id)
        self.cancel(lid)
        with self._lock:
            before = self._state(lid)
            diff = self._erase_object_locked(lid)
            self._drop_object_locked(lid)
            desc = f"delete object {before.info.name!r}"
            self._undo.push(UndoEntry("object_delete", desc, diff=diff, before={lid: before}, after={lid: None}))
            self.log.write("object_delete", label_id=lid)
        self._emit(Change("object_delete", bbox=None if diff is None else diff.bbox, label_ids=(lid,),
                          description=desc, labels_changed=diff is not None, objects_changed=True))

    def rename_object(self, label_id: int, name: str) -> None:
        """Rename an object (undoable)."""
        name = str(name)
        if not name.strip():
            raise ValueError(f"object name must be a non-empty string; got {name!r}")
        self._update_object(label_id, "object_rename", f"rename to {name!r}", name=name)

    def set_object_color(self, label_id: int, rgba: Any) -> None:
        """Set an object's RGBA colour, 3 or 4 floats in 0..1 (undoable)."""
        c = check_color(rgba)
        self._update_object(label_id, "object_color", "change colour", color=c)

    def set_overwrite(self, label_id: int, overwrite: bool) -> None:
        """Let the object's results take voxels of other objects (undoable)."""
        self._update_object(label_id, "object_overwrite", f"overwrite {'on' if overwrite else 'off'}",
                            overwrite=bool(overwrite))

    def reset_object(self, label_id: int) -> None:
        """Erase an object's voxels and forget its prompts; keeps the object (undoable)."""
        lid = self._check_object(label_id)
        self.cancel(lid)
        with self._lock:
            before = self._state(lid)
            diff = self._erase_object_locked(lid)
            self._prompts[lid] = []
            self._pending[lid] = []
            self._objects[lid].status = ObjectStatus.EMPTY
            desc = f"reset object {before.info.name!r}"
            self._undo.push(UndoEntry("object_reset", desc, diff=diff, before={lid: before},
                                      after={lid: self._state(lid)}))
            self.log.write("object_reset", label_id=lid)
        self._emit(Change("object_reset", bbox=None if diff is None else diff.bbox, label_ids=(lid,),
                          description=desc, labels_changed=diff is not None, objects_changed=True))

    def accept_object(self, label_id: int) -> None:
        """Mark an object accepted (undoable).

        Cancels its in-flight inference and clears its prompt list, so a later prompt
        refines the accepted mask from scratch (the mask is kept, as ``prev_mask``).
        """
        lid = self._check_object(label_id)
        self.cancel(lid)
        with self._lock:
            before = self._state(lid)
            self._prompts[lid] = []
            self._pending[lid] = []
            self._objects[lid].status = ObjectStatus.ACCEPTED
            desc = f"accept object {before.info.name!r}"
            self._undo.push(UndoEntry("object_accept", desc, before={lid: before}, after={lid: self._state(lid)}))
            self.log.write("object_accept", label_id=lid)
        self._emit(Change("object_accept", label_ids=(lid,), description=desc, objects_changed=True))

    def prompts_of(self, label_id: int) -> list[Prompt]:
        """Applied prompts of an object, oldest first (those the current labels reflect)."""
        lid = self._check_object(label_id)
        with self._lock:
            return list(self._prompts[lid])

    def pending_prompts(self, label_id: int) -> list[Prompt]:
        """Prompts submitted for an object whose result is not applied yet."""
        lid = self._check_object(label_id)
        with self._lock:
            return [p for _, p in self._pending[lid]]

    def prompts_in_effect(self, label_id: int) -> list[Prompt]:
        """The prompts the object's next result will reflect, oldest first.

        :meth:`prompts_of` plus :meth:`pending_prompts`; while a replacing request
        (``submit(..., replace=True)``) is pending, only the pending prompts.
        """
        lid = self._check_object(label_id)
        with self._lock:
            base = [] if self._replace_active_locked(lid) else list(self._prompts[lid])
            return base + [p for _, p in self._pending[lid]]

    def object_voxels(self, label_id: int) -> int:
        """Number of voxels of an object in the committed labels.

        Counted once (in the object's bounding box) on first use, then kept up to date
        from what each change already knows (the merge, the edit, the undo diff): no
        rescan per result. In-place brush strokes count once committed (:meth:`apply_edit`).
        """
        lid = self._check_object(label_id)
        with self._lock:
            return self._store.count(lid, self._obj_bbox.get(lid))

    def object_volume_ml(self, label_id: int) -> float:
        """Object volume in mL (voxel count x voxel volume from the spacing)."""
        return self.object_voxels(label_id) * self.volume.voxel_volume_ml

    # ------------------------------------------------------------------ edits
    def apply_edit(
        self,
        new_labels: np.ndarray | None = None,
        *,
        bbox: BBox | Sequence[slice] | None = None,
        description: str = "edit",
    ) -> Change | None:
        """Commit a manual edit as one undo step; returns the :class:`Change` (``None``: no-op).

        Parameters
        ----------
        new_labels : np.ndarray, optional
            ``None``: the edit was made in place in :attr:`labels` (napari brush).
            A full label image (spatial shape), or the new content of ``bbox``
            (shape of the box). Integer, non-negative.
        bbox : tuple of slice, optional
            Region (array axis order) the edit is confined to; ``None``: everywhere.
        description : str
            Undo text.

        Label values without an object become new objects; objects whose voxels
        changed get status ``EDITED``.
        """
        with self._lock:
            box = self._normalize_bbox(bbox)
            region_shape = tuple(s.stop - s.start for s in box)
            if new_labels is None:
                region = self._store.shared[box]
            else:
                arr = np.asarray(new_labels)
                if arr.shape == self._shape and region_shape != self._shape:
                    arr = arr[box]
                if arr.shape != region_shape:
                    raise ValueError(
                        f"new_labels has shape {np.asarray(new_labels).shape}; expected the labels shape "
                        f"{self._shape} or the bbox shape {region_shape}"
                    )
                region = check_label_array(arr, region_shape, "new_labels")
            change = self._commit_edit_locked(box, region, description)
        if change is not None:
            self._emit(change)
        return change

    # ------------------------------------------------------------- undo/redo
    def undo(self) -> Change | None:
        """Revert the newest step; returns its :class:`Change` (``None``: nothing to undo)."""
        return self._step(redo=False)

    def redo(self) -> Change | None:
        """Re-apply the newest undone step; returns its :class:`Change` (``None``: nothing)."""
        return self._step(redo=True)

    # -------------------------------------------------------------- listeners
    def add_listener(self, fn: Callable[[Change], None]) -> None:
        """Call ``fn(Change)`` after every modification (on the modifying thread)."""
        with self._lock:
            self._listeners.append(fn)

    def remove_listener(self, fn: Callable[[Change], None]) -> None:
        """Stop calling ``fn`` (no-op when it is not registered)."""
        with self._lock:
            if fn in self._listeners:
                self._listeners.remove(fn)

    # ----------------------------------------------------------------- replay
    def replay(self, source: Any, *, strict: bool = True) -> int:
        """Re-run a prompt log on this session; returns the number of records applied.

        Parameters
        ----------
        source : path, PromptLog or iterable of dict
            The log. With several ``session`` headers (a file appended to by several
            sessions), the last session's records are used.
        strict : bool
            Raise ``ValueError`` when the header's shape or initial-labels checksum
            differ from this session's current labels.

        Prompts re-run through the backend synchronously; with a deterministic
        backend the labels end up identical (:func:`~napari_medsegfm.engine.replay.replay`).
        """
        return _replay.replay(self, source, strict=strict)

    # ------------------------------------------------------------------ close
    def close(self) -> None:
        """Cancel inference, stop the worker thread, close the log file."""
        if self._closed:
            return
        self._closed = True
        self._finalizer.detach()
        if self._worker is not None:
            self._worker.close()
        IMAGE_OWNERS.release(self._owner_token)
        self.log.write("close")
        self.log.close()

    def __enter__(self) -> AnnotationSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # =============================================================== internals
    def _init_objects_from_labels(self, names: dict[int, str]) -> None:
        """Objects (and their bounding boxes) from the initial labels: one ``find_objects`` pass.

        Voxel counts are not computed here (:meth:`object_voxels` counts an object's box
        on first use and then keeps the count up to date).
        """
        bboxes = self._store.initial_objects()
        ids = sorted(bboxes)
        for i in ids:
            self._objects[i] = ObjectInfo(label_id=i, name=str(names.get(i, "")) or f"object {i}",
                                          color=default_color(i), status=ObjectStatus.EDITED)
            self._prompts[i] = []
            self._pending[i] = []
            self._obj_bbox[i] = bboxes.get(i)
            self._version[i] = 0

    @staticmethod
    def _object_record(info: ObjectInfo) -> dict[str, Any]:
        return {"label_id": info.label_id, "name": info.name, "color": list(info.color or ()),
                "overwrite": info.overwrite, "instance": info.instance}

    def _check_object(self, label_id: Any) -> int:
        try:
            lid = int(label_id)
        except (TypeError, ValueError):
            raise ValueError(f"object id must be an integer; got {label_id!r}") from None
        with self._lock:
            if lid not in self._objects:
                known = ", ".join(str(k) for k in sorted(self._objects)) or "none"
                raise ValueError(f"unknown object id {label_id!r}; known objects: {known}")
        return lid

    def _state(self, lid: int) -> ObjectState:
        return ObjectState(copy_info(self._objects[lid]), tuple(self._prompts[lid]))

    def _ensure_dtype(self, max_label: int) -> bool:
        """Widen labels for ``max_label``; True when the arrays were replaced."""
        was = self._store.dtype
        if not self._store.ensure_dtype(max_label):
            return False
        log.info("promoting labels from %s to %s for label %d", was, self._store.dtype, max_label)
        return True

    def _normalize_bbox(self, bbox: Any) -> BBox:
        if bbox is None:
            return tuple(slice(0, n) for n in self._shape)
        if len(bbox) != len(self._shape):
            raise ValueError(f"bbox {bbox!r} has {len(bbox)} axes; labels have {len(self._shape)} {self._shape}")
        out = []
        for ax, (s, n) in enumerate(zip(bbox, self._shape)):
            if not isinstance(s, slice):
                try:
                    a, b = (int(v) for v in s)
                except (TypeError, ValueError):
                    raise ValueError(f"bbox axis {ax} must be a slice or (start, stop); got {s!r}") from None
                s = slice(a, b)
            if s.step not in (None, 1):
                raise ValueError(f"bbox axis {ax} has step {s.step}; only contiguous boxes are supported")
            start, stop, _ = s.indices(n)
            if stop <= start:
                raise ValueError(f"bbox axis {ax} is empty: {s!r} on size {n}")
            out.append(slice(start, stop))
        return tuple(out)

    def _update_object(self, label_id: int, kind: str, desc: str, **changes: Any) -> None:
        lid = self._check_object(label_id)
        with self._lock:
            before = self._state(lid)
            info = self._objects[lid]
            for k, v in changes.items():
                setattr(info, k, v)
            self._undo.push(UndoEntry(kind, f"{desc} ({before.info.name!r})", before={lid: before},
                                      after={lid: self._state(lid)}))
            self.log.write(kind, label_id=lid, **changes)
        self._emit(Change(kind, label_ids=(lid,), description=desc, objects_changed=True))

    # -------------------------------------------------------------- listeners
    def _emit(self, change: Change) -> None:
        for fn in list(self._listeners):
            try:
                fn(change)
            except Exception:
                log.exception("session listener %r failed on %s", fn, change.kind)
