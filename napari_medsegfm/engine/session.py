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

``docs/session.md`` describes the contract in full: sharing ``labels`` with a napari
Labels layer (in-place brush edits and :meth:`AnnotationSession.apply_edit`),
generations and pending prompts, what runs on the worker, undo and its deferred
compression, voxel counts, and the prompt log.
"""

from __future__ import annotations

import colorsys
import dataclasses
import logging
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..backends.base import check_capabilities
from ..types import (
    Cancelled,
    CancelToken,
    ObjectInfo,
    ObjectStatus,
    Prompt,
    Volume,
    prompt_kind,
    prompt_to_dict,
    validate_prompt,
)
from . import replay as _replay
from .image_owner import IMAGE_OWNERS
from .labels import MAX_LABEL, LabelStore, Merge, check_label_array, fast_bbox, merge_block, offset
from .maskcheck import binary_mask
from .postprocess import BBox, union_bbox
from .promptlog import LOG_VERSION, PromptLog, encode_array
from .replay import replay_log
from .results import Change, InferenceResult
from .undo import LabelDiff, ObjectState, UndoEntry, UndoStack, bbox_to_list
from .vocab import attach_vocabulary
from .worker import InferenceWorker, JobOutcome

__all__ = ["AnnotationSession", "InferenceResult", "Change", "default_color", "replay_log"]

log = logging.getLogger(__name__)

_IMAGE_KEY = "__set_image__"
_WARM_KEY = "__warm__"
def _finalize_session(worker: InferenceWorker | None, plog: PromptLog, token: object) -> None:
    if worker is not None:
        worker.close(timeout=0)
    plog.close()
    IMAGE_OWNERS.release(token)


def default_color(label_id: int) -> tuple[float, float, float, float]:
    """A distinct, deterministic RGBA colour (0..1) for a label id (golden-angle hues)."""
    h = (int(label_id) * 0.618033988749895) % 1.0
    s = 0.65 + 0.25 * ((int(label_id) * 7) % 3) / 2
    r, g, b = colorsys.hsv_to_rgb(h, s, 0.95)
    return (round(r, 4), round(g, 4), round(b, 4), 1.0)


def _check_color(color: Any) -> tuple[float, float, float, float]:
    try:
        c = tuple(float(v) for v in color)
    except (TypeError, ValueError):
        raise ValueError(f"color must be 3 or 4 numbers in 0..1 (RGB[A]); got {color!r}") from None
    if len(c) not in (3, 4) or not all(0.0 <= v <= 1.0 for v in c):
        raise ValueError(f"color must be 3 or 4 numbers in 0..1 (RGB[A]); got {color!r}")
    return c + (1.0,) if len(c) == 3 else c  # type: ignore[return-value]


def _copy_info(info: ObjectInfo) -> ObjectInfo:
    return dataclasses.replace(info, meta=dict(info.meta))


@dataclass
class _Request:
    label_id: int
    generation: int
    prompt: Prompt
    prompts: tuple[Prompt, ...]
    backend: Any
    version: int
    mode: str
    replace: bool = False


@dataclass
class _Prepared:
    """What the session computed on the worker beside an :class:`InferenceResult` (never public).

    ``version``: the object's version the mask was compared with; ``changed``: the box
    where the mask differs from the object's mask then (valid when ``changed_done``);
    ``merge``: the merge prepared off the GUI thread (see ``_premerge``).
    """

    version: int = 0
    bbox_done: bool = False
    changed: BBox | None = None
    changed_done: bool = False
    mask_voxels: int = -1
    merge: Merge | None = None


# ----------------------------------------------------------------------- session
class AnnotationSession:
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
        return self._backend

    @property
    def backend_name(self) -> str:
        b = self._backend
        return "" if b is None else str(getattr(b, "name", type(b).__name__))

    @property
    def can_undo(self) -> bool:
        return self._undo.can_undo

    @property
    def can_redo(self) -> bool:
        return self._undo.can_redo

    @property
    def undo_description(self) -> str:
        e = self._undo.undo_entries
        return e[-1].description if e else ""

    @property
    def redo_description(self) -> str:
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
        return self._worker

    def generation(self, label_id: int) -> int:
        """Current generation of an object (0 before its first prompt)."""
        with self._lock:
            return self._current.get(int(label_id), 0)

    def undo_memory_bytes(self) -> int:
        """Bytes held by the undo/redo history (compressed diffs + object states)."""
        return self._undo.memory_bytes()

    # --------------------------------------------------------------- backend
    def set_backend(self, backend: Any) -> None:
        """Switch backend (name, instance or ``None``); cancels in-flight inference."""
        resolved = self._resolve_backend(backend)
        attach_vocabulary(resolved)  # [text helper]
        self.cancel()
        with self._lock:
            self._backend = resolved
            self.log.write("backend", name=self.backend_name, params=self._backend_params(resolved))
        self._emit(Change("backend", description=f"backend {self.backend_name or 'none'}"))

    def prepare(self, callback: Callable[[InferenceResult], None] | None = None, *, wait: bool = False) -> None:
        """Run the backend's ``set_image`` ahead of the first prompt.

        On the worker when there is one (``callback`` gets an
        :class:`InferenceResult` with ``label_id=0``, ``mask=None`` and ``error`` set
        on failure); in the calling thread when ``wait`` is True or there is no worker.
        """
        backend = self._require_backend()
        if wait or self._worker is None:
            t0 = time.perf_counter()
            res = InferenceResult(0, 0, None, backend=self.backend_name, mode="sync")
            try:
                self._ensure_image(backend)
            except Exception as exc:
                res.error, res.error_message = exc, f"{type(exc).__name__}: {exc}"
                if wait:
                    raise
            res.elapsed_s = time.perf_counter() - t0
            if callback is not None:
                callback(res)
            return

        def job(token: CancelToken) -> None:
            self._ensure_image(backend)

        def done(out: JobOutcome) -> None:
            if callback is None:
                return
            res = InferenceResult(out.generation, 0, None, error=out.error,
                                  error_message="" if out.error is None else f"{type(out.error).__name__}: {out.error}",
                                  elapsed_s=out.elapsed_s, cancelled=out.cancelled, stale=out.stale,
                                  queued_s=out.queued_s, backend=self.backend_name)
            callback(res)

        self._worker.submit(_IMAGE_KEY, job, done, generation=self._new_generation())

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
            rgba = default_color(lid) if color is None else _check_color(color)
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
            out = _copy_info(info)
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
        c = _check_color(rgba)
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

    # ---------------------------------------------------------------- prompts
    def add_prompt(self, prompt: Prompt, *, raise_errors: bool = False, replace: bool = False) -> InferenceResult:
        """Run the backend on ``prompt`` in the calling thread and apply the result.

        Raises ``ValueError`` (unknown object, outside the volume, no backend) and
        ``UnsupportedPromptError`` before running. A backend exception gives a
        result with ``error`` set (labels untouched), or is re-raised when
        ``raise_errors`` is True. ``replace``: as in :meth:`submit`.
        """
        return self.add_prompts([prompt], raise_errors=raise_errors, replace=replace)

    def add_prompts(self, prompts: Sequence[Prompt], *, raise_errors: bool = False, replace: bool = False,
                    mode: str = "sync") -> InferenceResult:
        """:meth:`add_prompt` for several new prompts of one object in one request.

        Parameters
        ----------
        prompts : sequence of Prompt
            Non-empty, all of the same object; the last one is the result's ``prompt``.
        raise_errors, replace
            As in :meth:`add_prompt`.
        mode : str
            What the prompt log records as the request's mode (``"sync"``; replay uses
            ``"replay"``).
        """
        prompts = list(prompts)
        if not prompts:
            raise ValueError("add_prompts needs at least one prompt")
        lids = {getattr(p, "object_id", None) for p in prompts}
        if len(lids) != 1:
            raise ValueError(f"add_prompts takes prompts of one object; got object ids {sorted(map(str, lids))}")
        req = self._make_request(prompts[-1], prompts, mode=str(mode), replace=replace)
        res = self._run_sync(req)
        self.apply_result(res)
        if raise_errors and res.error is not None:
            raise res.error
        return res

    def submit(self, prompt: Prompt, callback: Callable[[InferenceResult], None] | None = None, *,
               replace: bool = False) -> int:
        """Queue ``prompt`` on the worker; returns its generation.

        ``callback(InferenceResult)`` is called once, **on the worker thread**; hand
        the result to :meth:`apply_result` on the GUI thread. Supersedes (and
        cancels) earlier requests of the same object. Validation errors raise here.
        Without a worker (``use_worker=False``) the request runs now and the callback
        is called in the calling thread.

        ``replace=True`` starts the object's prompts anew: the backend gets ``prompt``
        (plus prompts submitted for the object after it, until its result is applied)
        without the applied prompts and without the previous mask; the applied result
        then *replaces* the object's mask and prompt list in **one** undo step (an
        edited box: re-segment the object from its new prompts). Earlier pending
        prompts of the object are dropped. If the request fails, nothing changes.
        """
        req = self._make_request(prompt, [prompt], mode="async", replace=replace)
        if self._worker is None:
            res = self._run_sync(req)
            if callback is not None:
                callback(res)
            return req.generation

        def job(token: CancelToken) -> InferenceResult:
            return self._infer(req, token)

        def done(out: JobOutcome) -> None:
            res = self._result_from_outcome(req, out)
            if callback is not None:
                callback(res)

        try:
            self._worker.submit(req.label_id, job, done, generation=req.generation)
        except RuntimeError:
            with self._lock:
                self._pending[req.label_id] = [(g, p) for g, p in self._pending[req.label_id]
                                               if g != req.generation]
            raise
        return req.generation

    def warm(self, zs: Sequence[int]) -> bool:
        """Let the backend precompute per-slice work for slices ``zs`` (in this order) while idle.

        For backends with a ``warm(zs, cancel)`` method (LiteMedSAM: image embeddings).
        The GUI calls it while the user steps slices to set a box's z extent, so that most
        slices the box will span are encoded before the box runs. Runs on the worker, one
        slice at a time; each call replaces the slices still wanted; any queued prompt
        goes first (the warm job stops between slices as soon as another job waits), and
        a synchronous prompt stops it too. Nothing is applied to the labels. Returns
        False when there is nothing to do (no worker, or the backend has no ``warm``).
        """
        backend = self._backend
        if self._worker is None or self._closed or backend is None or not callable(getattr(backend, "warm", None)):
            return False
        depth = self._shape[0] if len(self._shape) == 3 else 1
        wanted = [int(z) for z in dict.fromkeys(int(z) for z in zs) if 0 <= int(z) < depth]
        with self._lock:
            self._warm_wanted = wanted
            if self._warm_active or not wanted:
                return bool(wanted)
            self._warm_active = True
        worker = self._worker

        def others_waiting() -> bool:
            return any(k != _WARM_KEY for k in worker.pending_keys())

        def job(token: CancelToken) -> int:
            done_n = 0
            while True:
                with self._lock:
                    if token.cancelled or not self._warm_wanted or others_waiting():
                        self._warm_active = False
                        self._warm_wanted = []
                        return done_n
                    z = self._warm_wanted.pop(0)
                with self._backend_lock:
                    self._ensure_image(backend)
                    done_n += int(backend.warm([z], token) or 0)

        def done(out: JobOutcome) -> None:
            if out.error is not None and not out.cancelled:
                log.debug("warm-up of slices failed: %s", out.error)
            with self._lock:
                self._warm_active = False

        try:
            worker.submit(_WARM_KEY, job, done, generation=self._new_generation())
        except RuntimeError:  # worker closed
            with self._lock:
                self._warm_active = False
            return False
        return True

    def _stop_warm(self, timeout: float = 5.0) -> None:
        """Make a running warm-up stop after its current slice, and wait for that (sync prompts)."""
        with self._lock:
            self._warm_wanted = []
        t_end = time.perf_counter() + timeout
        while self._warm_active and time.perf_counter() < t_end and self._worker is not None:
            if _WARM_KEY not in self._worker.pending_keys():
                break
            time.sleep(0.005)

    def cancel(self, label_id: int | None = None) -> None:
        """Cancel queued and running inference of an object (all objects when ``None``).

        Its pending prompts are dropped; results still arrive, with ``cancelled=True``.
        """
        with self._lock:
            ids = list(self._objects) if label_id is None else [int(label_id)]
            for lid in ids:
                if lid not in self._objects:
                    continue
                had = bool(self._pending.get(lid)) or lid in self._sync_tokens
                if had or (self._worker is not None and lid in self._worker.pending_keys()):
                    self._current[lid] = self._new_generation()
                    self._pending[lid] = []
                tok = self._sync_tokens.get(lid)
                if tok is not None:
                    tok.cancel("cancelled by user")
            if self._worker is not None:
                if label_id is None:
                    self._worker.cancel(None, "cancelled by user")
                else:
                    self._worker.cancel(int(label_id), "cancelled by user")

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
    def _new_generation(self) -> int:
        if self._worker is not None:
            return self._worker.next_generation()
        self._gen += 1
        return self._gen

    def _resolve_backend(self, backend: Any) -> Any:
        if backend is None:
            return None
        if isinstance(backend, str):
            from ..backends.registry import get_backend  # lazy: the registry imports entry points

            return get_backend(None if backend == "default" else backend)
        for attr in ("predict", "set_image"):
            if not callable(getattr(backend, attr, None)):
                raise ValueError(f"backend {backend!r} has no {attr}() method; expected a SegmentationBackend")
        return backend

    def _require_backend(self) -> Any:
        if self._backend is None:
            raise ValueError("this session has no backend; call set_backend(name_or_instance) first")
        return self._backend

    @staticmethod
    def _backend_params(backend: Any) -> dict[str, Any]:
        if backend is None:
            return {}
        params = getattr(backend, "params", None)
        if callable(params):
            params = params()
        out: dict[str, Any] = {"class": f"{type(backend).__module__}.{type(backend).__qualname__}"}
        if isinstance(params, dict):
            out.update(params)
        return out

    def _ensure_image(self, backend: Any) -> bool:
        """``set_image`` unless the backend already holds this session's image; True if it ran."""
        with self._backend_lock:
            if IMAGE_OWNERS.owner(backend) is self._owner_token:
                return False
            backend.set_image(self.volume)
            IMAGE_OWNERS.set(backend, self._owner_token)
            return True

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
        return ObjectState(_copy_info(self._objects[lid]), tuple(self._prompts[lid]))

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

    # ------------------------------------------------------------ prompts (int)
    def _replace_active_locked(self, lid: int) -> bool:
        """A replacing request of ``lid`` is pending (neither applied, failed nor cancelled)."""
        g = self._replacing.get(lid)
        if g is None:
            return False
        if any(pg >= g for pg, _ in self._pending.get(lid, ())):
            return True
        del self._replacing[lid]
        return False

    def _make_request(self, prompt: Prompt, new_prompts: Sequence[Prompt], mode: str,
                      replace: bool = False) -> _Request:
        if self._closed:
            raise ValueError("this session is closed")
        try:
            prompt_kind(prompt)
        except ValueError:
            raise ValueError(f"not a prompt: {prompt!r}") from None
        lid = prompt.object_id
        with self._lock:
            if lid not in self._objects:
                known = ", ".join(str(k) for k in sorted(self._objects)) or "none (add_object first)"
                raise ValueError(f"prompt for unknown object id {lid}; known objects: {known}")
            for p in new_prompts:
                validate_prompt(p, self._shape)
            backend = self._require_backend()
            check_capabilities(backend, list(new_prompts))
            gen = self._new_generation()
            self._current[lid] = gen
            if replace:
                self._pending[lid] = []  # superseded: the object starts anew from these prompts
                self._replacing[lid] = gen
            else:
                replace = self._replace_active_locked(lid)  # follows a pending replace: builds on it
            self._pending[lid].extend((gen, p) for p in new_prompts)
            base = () if replace else tuple(self._prompts[lid])
            prompts = base + tuple(p for _, p in self._pending[lid])
            extra = {"replace": True} if replace else {}
            for p in new_prompts:
                self.log.write("prompt", generation=gen, label_id=lid, prompt=prompt_to_dict(p), mode=mode, **extra)
            return _Request(lid, gen, prompt, prompts, backend, self._version.get(lid, 0), mode, replace)

    def _infer(self, req: _Request, token: CancelToken) -> InferenceResult:
        """Backend call, mask checks, bbox, and the merge prepared for apply (worker thread or caller's)."""
        res = InferenceResult(req.generation, req.label_id, req.prompt, prompts=req.prompts,
                              backend=str(getattr(req.backend, "name", type(req.backend).__name__)),
                              mode=req.mode, replace=req.replace)
        prep = _Prepared(version=req.version)
        t0 = time.perf_counter()
        token.check()
        # the object's mask now (not at submit: this thread, not the GUI thread, pays for it)
        lid = req.label_id
        prev_roi = None
        with self._lock:
            prep.version = self._version.get(lid, 0)
            bb = self._obj_bbox.get(lid) if lid in self._objects else None
            if bb is not None:
                roi_mask = self._store.committed[bb] == lid
                if roi_mask.any():
                    prev_roi = (bb, roi_mask)
        prev = None
        if prev_roi is not None:
            prev = np.zeros(self._shape, dtype=bool)
            prev[prev_roi[0]] = prev_roi[1]
        with self._backend_lock:
            token.check()
            self._ensure_image(req.backend)
            token.check()
            mask = req.backend.predict(req.prompts, None if req.replace else prev, token)
        token.check()
        mask = binary_mask(mask, self._shape, res.backend)  # floats/NaN/labels/wrong shape: an error, not applied
        res.mask = mask
        res.bbox = fast_bbox(mask)
        prep.bbox_done = True
        # where the object changes (vs its mask at submit): lets apply_result touch only that box
        if prev_roi is None:
            prep.changed = res.bbox
        else:
            region = union_bbox(res.bbox, prev_roi[0])
            assert region is not None and prev is not None
            inner = fast_bbox(mask[region] != prev[region])
            prep.changed = None if inner is None else offset(region, inner)
        prep.changed_done = True
        prep.mask_voxels = int(np.count_nonzero(mask[res.bbox])) if res.bbox is not None else 0
        token.check()
        if prep.changed is not None:
            prep.merge = self._premerge(lid, mask, prep.changed, prep.version)
        res.elapsed_s = time.perf_counter() - t0
        with self._lock:
            self._prepared[res] = prep
        return res

    def _premerge(self, lid: int, mask: np.ndarray, roi: BBox, version: int) -> Merge | None:
        """Merge ``mask`` into a snapshot of ``labels[roi]`` and build the undo diff (off the GUI thread).

        :meth:`_apply_mask_locked` then only copies the changed box in, when nothing
        touched ``roi`` meanwhile (else it merges itself).
        """
        with self._lock:
            info = self._objects.get(lid)
            if info is None or self._version.get(lid, 0) != version:
                return None
            overwrite = info.overwrite
            epoch, old = self._store.snapshot(roi)
        return merge_block(old, mask[roi], lid, overwrite, roi, epoch)

    def _run_sync(self, req: _Request) -> InferenceResult:
        token = CancelToken()
        with self._lock:
            self._sync_tokens[req.label_id] = token
        if self._worker is not None:
            # a sync prompt supersedes whatever the worker holds for this object
            self._worker.cancel(req.label_id, "superseded by a synchronous prompt")
            self._stop_warm()
        t0 = time.perf_counter()
        try:
            res = self._infer(req, token)
        except Cancelled:
            res = self._failed(req, None, cancelled=True)
        except (Exception, SystemExit) as exc:  # a backend calling sys.exit() must not end the program
            log.warning("backend %r failed on %s for object %d: %s", self.backend_name,
                        prompt_kind(req.prompt), req.label_id, exc)
            res = self._failed(req, exc)
        finally:
            with self._lock:
                if self._sync_tokens.get(req.label_id) is token:
                    del self._sync_tokens[req.label_id]
        if not res.elapsed_s:
            res.elapsed_s = time.perf_counter() - t0
        return res

    def _failed(self, req: _Request, exc: BaseException | None, cancelled: bool = False) -> InferenceResult:
        return InferenceResult(
            req.generation, req.label_id, req.prompt, error=exc,
            error_message="" if exc is None else f"{type(exc).__name__}: {exc}",
            cancelled=cancelled, prompts=req.prompts, mode=req.mode,
            backend=str(getattr(req.backend, "name", type(req.backend).__name__)),
        )

    def _result_from_outcome(self, req: _Request, out: JobOutcome) -> InferenceResult:
        if isinstance(out.value, InferenceResult) and not out.cancelled:
            res = out.value
        else:
            res = self._failed(req, out.error, cancelled=out.cancelled or out.error is None)
            if out.error is not None:
                log.warning("backend %r failed on %s for object %d: %s", res.backend,
                            prompt_kind(req.prompt), req.label_id, out.error)
        res.elapsed_s = out.elapsed_s
        res.queued_s = out.queued_s
        with self._lock:
            res.stale = out.stale or self._current.get(req.label_id) != req.generation
            if res.cancelled and res.stale:
                self._log_result(res, "cancelled")
        return res

    def _log_result(self, res: InferenceResult, status: str, **extra: Any) -> None:
        if res in self._logged:
            return
        self._logged.add(res)
        self.log.write(
            "result", generation=res.generation, label_id=res.label_id, status=status,
            backend=res.backend, elapsed_s=round(res.elapsed_s, 6), queued_s=round(res.queued_s, 6),
            error=res.error_message or None, mode=res.mode, **extra,
        )

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
                self._objects[lid] = _copy_info(st.info)
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

    # -------------------------------------------------------------- listeners
    def _emit(self, change: Change) -> None:
        for fn in list(self._listeners):
            try:
                fn(change)
            except Exception:
                log.exception("session listener %r failed on %s", fn, change.kind)
