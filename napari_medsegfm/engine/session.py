"""The annotation session: objects, prompts, labels, undo/redo, prompt log, one worker.

:class:`AnnotationSession` is the Qt-free heart of the plugin. A script, the CLI and
the napari widget all drive it the same way::

    s = AnnotationSession(volume, backend="classic")
    liver = s.add_object("liver")
    s.add_prompt(Box3D(10, 40, 100, 120, 200, 220, object_id=liver.label_id))  # sync
    s.undo(); s.redo()

Labels
------
``session.labels`` is the current label image in the volume's spatial shape
(``(Z, Y, X)`` or ``(Y, X)``), ``uint8``, promoted to ``uint16`` (then ``uint32``)
when an object id beyond 255 (65535) is added; a promotion replaces the array
(``Change.labels_replaced``). Label value ``k`` belongs to object ``k``; every
non-zero value in the image is an object of :attr:`AnnotationSession.objects`.

A result is applied only to its object's voxels through
:func:`~napari_medsegfm.engine.postprocess.merge_object_mask`: it never takes voxels of
another object unless the *prompted* object has ``overwrite=True``.

Sharing ``labels`` with a napari Labels layer (brush edits)
-----------------------------------------------------------
The widget may hand ``session.labels`` itself to a Labels layer, so napari's brush
and eraser paint **in place** into it. The session keeps a private *shadow copy* of
the last committed labels, so an in-place stroke can still be diffed for undo:

* after each stroke call ``session.apply_edit(bbox=stroke_bbox)`` (no array): the
  session compares ``labels[bbox]`` with the shadow, records the compressed diff as
  one undo step and logs it. ``apply_edit()`` without ``bbox`` scans the whole image.
* or pass the new content: ``apply_edit(region, bbox=bbox)`` with ``region`` of the
  box's shape, or ``apply_edit(full_labels)`` with a full label image (a copy or
  the shared array itself).
* never replace the layer's array by another one; after a ``Change`` with
  ``labels_replaced=True`` set ``layer.data = session.labels``.
* in-place edits not yet committed are committed automatically (as an undo step
  named "uncommitted edit") before an operation touches the same region, so no
  stroke is lost or corrupted; the widget should still commit every stroke.
* napari's own Labels undo must not be used; bind Ctrl+Z to :meth:`undo`.

Listeners (:meth:`add_listener`) get a :class:`Change` after every modification, on
the thread that made it; ``Change.bbox`` is the region to refresh (``None``: all).

Prompts and generations
-----------------------
Each prompt belongs to one object (``prompt.object_id``). It is validated
(``ValueError`` naming the bad value: unknown object, outside the volume) and checked
against the backend's capabilities
(:class:`~napari_medsegfm.backends.base.UnsupportedPromptError`). A request sends the
backend *all* prompts of the object: the applied ones (:meth:`prompts_of`) plus the
pending ones (submitted, no result applied yet), and the object's current mask.

Every request gets a generation; the newest one of an object is current. A result
applies only when it is current (:meth:`apply_result` returns False and sets
``result.stale`` otherwise). Applying generation *g* makes every pending prompt up
to *g* applied. A failed inference (backend exception) removes the pending prompts
it carried; the labels, objects and undo history stay untouched. :meth:`cancel`
drops the pending prompts of the object.

Worker
------
:meth:`submit` runs inference on the session's one persistent
:class:`~napari_medsegfm.engine.worker.InferenceWorker` thread (started on first use)
and calls ``callback(InferenceResult)`` **on that thread**, exactly once per submit
(also for superseded/cancelled requests, with ``cancelled=True``). The GUI marshals
the result to its thread and calls :meth:`apply_result` there, for every result
including errors (that is where a failed prompt is removed). The heavy parts run on
the worker: reading the object's current mask (the backend's ``prev_mask``), the
backend call, the mask's bounding box, the box where the mask differs from the
object's mask, and the merge itself (into a snapshot of that box of the labels) with
its undo diff and voxel-count changes. :meth:`apply_result` on the GUI thread then
only checks that no change touched that box since the snapshot and copies the changed
voxels in (a liver-sized result: a few milliseconds). If something did touch it (an
edit, another object's result in the same region) or the object itself changed, it
merges itself, over the changed box or the union of the object's old and new bounding
boxes. :meth:`add_prompt` is the synchronous path for scripts and the CLI (runs the
backend in the calling thread).

``submit(prompt, replace=True)`` re-segments an object from new prompts (an edited or
moved box): the backend gets only the new prompts and no previous mask, and the
applied result replaces the object's mask and prompt list in one undo step.

Undo
----
Prompts' results, edits, and object add/delete/rename/colour/overwrite/reset/accept
are undoable, ``undo_levels`` steps (default 200), each a zlib-compressed XOR diff of
the tight box of changed voxels (:mod:`~napari_medsegfm.engine.undo`). The compression
runs on the worker thread when it has nothing else to do (without a worker: at once);
until then the diff keeps its raw XOR block, so undo/redo right after a step are exact
and do not wait (:meth:`flush_undo_compression` waits for it). Undo/redo cancel
in-flight inference of the objects they touch.

Voxel counts
------------
:meth:`object_voxels` (and :meth:`object_volume_ml`) count an object once, in its
bounding box, and then follow every change from what the change already computed
(merge, edit, undo diff): no rescan per result.

Prompt log and replay
---------------------
Every submit, result (with timing), edit (with its content), object operation and
undo/redo is a JSON record (:mod:`~napari_medsegfm.engine.promptlog`), kept in
:attr:`AnnotationSession.log` and appended to ``log_path`` when given.
:meth:`replay` re-runs a log on a fresh session (same volume, same initial labels)
and reproduces the labels exactly with a deterministic backend. Exactness assumes no
object was edited by hand while its own inference was in flight (such results are
logged with ``prev_changed: true`` and replay warns).

Additions beyond the team contract (all additive): ``label_names=``, ``debounce_s=`` keywords;
:meth:`prepare`, :meth:`pending_prompts`, :meth:`prompts_in_effect`, :meth:`object_voxels`,
:meth:`object_volume_ml`, :meth:`flush_undo_compression`, :meth:`remove_listener`, :attr:`busy`,
:attr:`undo_description`, :attr:`redo_description`, :attr:`generation`;
``add_prompt(..., raise_errors=False, replace=False)``, ``submit(..., replace=False)``;
``InferenceResult.prompts/bbox/queued_s/backend/applied/mode/replace``; ``Change.description/labels_changed/objects_changed/
labels_replaced``. ``backend=None`` means *no backend* (editing only, prompts raise
``ValueError``); pass ``"default"`` for the registry's default backend.
"""

from __future__ import annotations

import colorsys
import dataclasses
import hashlib
import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
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
    prompt_from_dict,
    prompt_kind,
    prompt_to_dict,
    validate_prompt,
)
from .maskcheck import binary_mask
from .postprocess import BBox, bbox_of, label_dtype_for, merge_object_mask, union_bbox
from .promptlog import LOG_VERSION, PromptLog, decode_array, encode_array, read_log
from .undo import LabelDiff, ObjectState, UndoEntry, UndoStack, bbox_from_list, bbox_to_list
from .vocab import attach_vocabulary
from .worker import InferenceWorker, JobOutcome

__all__ = ["AnnotationSession", "InferenceResult", "Change", "default_color", "replay_log"]

log = logging.getLogger(__name__)

_IMAGE_KEY = "__set_image__"
_WARM_KEY = "__warm__"
_MAX_LABEL = int(np.iinfo(np.uint32).max)

# backend -> owner token of the session whose image it holds (backends may be shared)
_IMAGE_OWNER: weakref.WeakKeyDictionary[Any, object] = weakref.WeakKeyDictionary()
_IMAGE_OWNER_BY_ID: dict[int, object] = {}  # fallback for backends that cannot be weak-referenced


def _finalize_session(worker: InferenceWorker | None, plog: PromptLog) -> None:
    if worker is not None:
        worker.close(timeout=0)
    plog.close()


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


def _present_ids(values: np.ndarray) -> set[int]:
    """Non-zero label values present in ``values``.

    Fast path for the usual case of one label (plus background): two reductions, no
    sort; otherwise bincount (8/16-bit) or unique.
    """
    if values.size == 0:
        return set()
    v = values.ravel()
    mx = int(v.max())
    if mx == 0:
        return set()
    if not np.any((v != 0) & (v != mx)):
        return {mx}
    if v.dtype.itemsize <= 2 and np.issubdtype(v.dtype, np.unsignedinteger):
        ids = np.flatnonzero(np.bincount(v))
    else:
        ids = np.unique(v)
    return {int(i) for i in ids if i != 0}


def _value_counts(values: np.ndarray) -> dict[int, int]:
    """``label -> count`` of the non-zero values in ``values`` (bincount for 8/16-bit, else unique)."""
    v = values.ravel()
    if v.size == 0:
        return {}
    if v.dtype.itemsize <= 2 and np.issubdtype(v.dtype, np.unsignedinteger):
        c = np.bincount(v)
        return {int(i): int(c[i]) for i in np.flatnonzero(c) if i != 0}
    u, c = np.unique(v, return_counts=True)
    return {int(i): int(n) for i, n in zip(u, c) if i != 0}


def _changes(old: np.ndarray, new: np.ndarray) -> tuple[set[int], dict[int, int]]:
    """Labels involved and per-label voxel-count changes, from the values before/after at changed voxels."""
    co, cn = _value_counts(old), _value_counts(new)
    ids = set(co) | set(cn)
    return ids, {i: cn.get(i, 0) - co.get(i, 0) for i in ids if cn.get(i, 0) != co.get(i, 0)}


def _sha256(arr: np.ndarray) -> str:
    """SHA-256 of an array's bytes (C order) without copying a contiguous array."""
    a = np.ascontiguousarray(arr)
    return hashlib.sha256(memoryview(a).cast("B") if a.size else b"").hexdigest()


def _intersects(a: BBox, b: BBox) -> bool:
    return all(x.start < y.stop and y.start < x.stop for x, y in zip(a, b))


def _offset(outer: BBox, inner: BBox) -> BBox:
    return tuple(slice(o.start + i.start, o.start + i.stop) for o, i in zip(outer, inner))


def _nonzero_bbox(arr: np.ndarray, chunk_bytes: int = 1 << 22) -> BBox | None:
    """Bounding box of the non-zero values, by slabs along the first axis (no full-size temporary)."""
    if arr.ndim < 2 or arr.size == 0:
        return bbox_of(arr != 0)
    step = max(1, chunk_bytes // max(1, arr[0].size))
    rows = np.zeros(arr.shape[0], bool)
    rest = [np.zeros(n, bool) for n in arr.shape[1:]]
    for z in range(0, arr.shape[0], step):
        nz = arr[z:z + step] != 0
        rows[z:z + step] = nz.reshape(nz.shape[0], -1).any(axis=1)
        if rows[z:z + step].any():
            for ax in range(1, arr.ndim):
                rest[ax - 1] |= nz.any(axis=tuple(a for a in range(arr.ndim) if a != ax))
    idx = np.flatnonzero(rows)
    if idx.size == 0:
        return None
    out = [slice(int(idx[0]), int(idx[-1]) + 1)]
    for r in rest:
        i = np.flatnonzero(r)
        out.append(slice(int(i[0]), int(i[-1]) + 1))
    return tuple(out)


def _fast_bbox(mask: np.ndarray) -> BBox | None:
    """:func:`bbox_of` of a bool mask in about one pass (first axis first, then only its range)."""
    if mask.ndim < 2 or mask.size == 0:
        return bbox_of(mask)
    flat = mask.reshape(mask.shape[0], -1)
    if flat.flags.c_contiguous and flat.shape[1] % 8 == 0:
        first = flat.view(np.uint64).any(axis=1)
    else:
        first = flat.any(axis=1)
    idx = np.flatnonzero(first)
    if idx.size == 0:
        return None
    lo, hi = int(idx[0]), int(idx[-1]) + 1
    rest = bbox_of(mask[lo:hi].any(axis=0))
    assert rest is not None
    return (slice(lo, hi),) + rest


# ------------------------------------------------------------------------ values
@dataclass
class InferenceResult:
    """Outcome of one inference request.

    Attributes
    ----------
    generation : int
        The request's generation (increasing within the session).
    label_id : int
        The object it is for.
    prompt : Prompt
        The newest prompt of the request (the one submitted).
    mask : np.ndarray of bool or None
        The object's new mask in the volume's spatial shape ``(Z, Y, X)``/``(Y, X)``;
        ``None`` for errors and cancelled requests.
    error : BaseException or None
        The backend's exception.
    error_message : str
        ``"TypeName: message"`` of ``error`` ("" when none).
    elapsed_s : float
        Seconds in the backend (``set_image`` included when it ran for this request).
    cancelled : bool
        Superseded before running, or cancelled while running.
    stale : bool
        Not (or no longer) the object's current generation; never applied.
    prompts : tuple of Prompt
        Everything sent to the backend (applied + pending prompts), oldest first.
    bbox : tuple of slice or None
        Bounding box of ``mask`` (computed on the worker thread).
    queued_s : float
        Seconds between submit and start.
    backend : str
        Backend name.
    applied : bool
        Set by :meth:`AnnotationSession.apply_result` once applied.
    mode : str
        ``"async"`` (submit), ``"sync"`` (add_prompt) or ``"replay"``.
    replace : bool
        The request replaced the object's prompts (``submit(..., replace=True)``): the
        backend got only the new prompts and no previous mask.
    """

    generation: int
    label_id: int
    prompt: Prompt | None
    mask: np.ndarray | None = None
    error: BaseException | None = None
    error_message: str = ""
    elapsed_s: float = 0.0
    cancelled: bool = False
    stale: bool = False
    prompts: tuple[Prompt, ...] = ()
    bbox: BBox | None = None
    queued_s: float = 0.0
    backend: str = ""
    applied: bool = False
    mode: str = "async"
    replace: bool = False
    _version: int = field(default=0, repr=False)
    _logged: bool = field(default=False, repr=False)
    _bbox_done: bool = field(default=False, repr=False)
    _changed: BBox | None = field(default=None, repr=False)  # bbox of mask XOR prev mask
    _changed_done: bool = field(default=False, repr=False)
    _mask_voxels: int = field(default=-1, repr=False)
    _pre: _Premerge | None = field(default=None, repr=False)  # merge + undo diff computed on the worker

    @property
    def ok(self) -> bool:
        """True when a mask is available (no error, not cancelled)."""
        return self.mask is not None and self.error is None and not self.cancelled


@dataclass(frozen=True)
class Change:
    """What listeners receive after each modification.

    Attributes
    ----------
    kind : str
        ``result``, ``edit``, ``undo``, ``redo``, ``object_add``, ``object_delete``,
        ``object_rename``, ``object_color``, ``object_overwrite``, ``object_reset``,
        ``object_accept``, ``backend``, ``error``.
    bbox : tuple of slice or None
        Region of ``labels`` that changed, array axis order; ``None`` means "the
        whole image" when ``labels_changed`` is True (and nothing otherwise).
    label_ids : tuple of int
        Objects affected.
    description : str
        Human text (Undo tooltip, status bar).
    labels_changed : bool
        Voxels changed (refresh ``bbox``).
    objects_changed : bool
        The object table changed (names, colours, statuses, prompts, membership).
    labels_replaced : bool
        ``session.labels`` is a new array (dtype promotion): hand it to the layer again.
    """

    kind: str
    bbox: BBox | None = None
    label_ids: tuple[int, ...] = ()
    description: str = ""
    labels_changed: bool = False
    objects_changed: bool = False
    labels_replaced: bool = False


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
class _Premerge:
    """A result merged into a snapshot of the labels, off the GUI thread (see ``_premerge``).

    Valid at apply time when no change since ``epoch`` touched ``roi``, the object's
    version is the one the mask was compared with, and ``overwrite``/dtype are unchanged.
    """

    epoch: int
    roi: BBox
    overwrite: bool
    dtype: np.dtype
    diff: LabelDiff | None  # pending compression
    new: np.ndarray | None  # content of diff.bbox after the merge
    ids: frozenset[int]
    deltas: dict[int, int]


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
        self._counts: dict[int, int] = {}  # label_id -> voxels in the committed labels (lazily filled)
        # every write to the committed labels: epoch += 1 and (epoch, bbox or None = all) is logged,
        # so a merge prepared on the worker knows whether its region changed meanwhile
        self._epoch = 0
        self._mods: deque[tuple[int, BBox | None]] = deque(maxlen=512)
        self._gen = 0
        self._closed = False
        self._use_worker = bool(use_worker)
        self._worker: InferenceWorker | None = (
            InferenceWorker("medsegfm-session-worker", debounce_s=debounce_s) if use_worker else None
        )

        if labels is None:
            lab = np.zeros(self._shape, dtype=np.uint8)
        else:
            lab = self._check_label_array(np.asarray(labels), self._shape, "labels")
            mx = int(lab.max()) if lab.size else 0
            lab = lab.astype(label_dtype_for(max(mx, 1)), copy=True)
        self._shadow = lab
        self._labels = lab.copy()
        self._init_objects_from_labels(label_names or {})

        self._backend: Any = None
        self._backend = self._resolve_backend(backend)
        attach_vocabulary(self._backend)  # [text helper] free text -> label ids for backends with a label space
        self.log = PromptLog(log_path)
        # a session dropped without close() must not leave its thread or log file behind
        self._finalizer = weakref.finalize(self, _finalize_session, self._worker, self.log)
        self.log.write(
            "session",
            version=LOG_VERSION,
            shape=list(self._shape),
            dtype=self._shadow.dtype.str,
            labels_sha256=_sha256(self._shadow),
            backend=self.backend_name,
            backend_params=self._backend_params(self._backend),
            objects=[self._object_record(o) for o in self._objects.values()],
            source=str(volume.meta.get("source", "")),
        )

    # ------------------------------------------------------------ properties
    @property
    def labels(self) -> np.ndarray:
        """The current label image (shared with the GUI; see the module docstring)."""
        return self._labels

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
            if lid < 1 or lid > _MAX_LABEL:
                raise ValueError(f"label_id must be in 1..{_MAX_LABEL}; got {label_id!r}")
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
            self._counts[lid] = 0  # every labelled voxel belongs to an object: a new id has none
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
            n = self._counts.get(lid)
            if n is None:
                bb = self._obj_bbox.get(lid)
                n = 0 if bb is None else int(np.count_nonzero(self._shadow[bb] == lid))
                self._counts[lid] = n
            return n

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
        req = self._make_request(prompt, [prompt], mode="sync", replace=replace)
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
                region = self._labels[box]
            else:
                arr = np.asarray(new_labels)
                if arr.shape == self._shape and region_shape != self._shape:
                    arr = arr[box]
                if arr.shape != region_shape:
                    raise ValueError(
                        f"new_labels has shape {np.asarray(new_labels).shape}; expected the labels shape "
                        f"{self._shape} or the bbox shape {region_shape}"
                    )
                region = self._check_label_array(arr, region_shape, "new_labels")
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
        backend the labels end up identical.
        """
        records = read_log(source)
        starts = [i for i, r in enumerate(records) if r.get("type") == "session"]
        if starts:
            header = records[starts[-1]]
            records = records[starts[-1] + 1:]
            if strict:
                if list(header.get("shape", [])) != list(self._shape):
                    raise ValueError(f"log was recorded on shape {header.get('shape')}; this session has {list(self._shape)}")
                sha = _sha256(self._shadow)
                if header.get("labels_sha256") not in (None, sha):
                    raise ValueError("log was recorded on different initial labels (labels_sha256 differs); "
                                     "replay on a session built with the same initial labels")
        n = 0
        for rec in records:
            n += self._replay_one(rec)
        return n

    # ------------------------------------------------------------------ close
    def close(self) -> None:
        """Cancel inference, stop the worker thread, close the log file."""
        if self._closed:
            return
        self._closed = True
        self._finalizer.detach()
        if self._worker is not None:
            self._worker.close()
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
            try:
                owner = _IMAGE_OWNER.get(backend)
            except TypeError:
                owner = _IMAGE_OWNER_BY_ID.get(id(backend))
            if owner is self._owner_token:
                return False
            backend.set_image(self.volume)
            try:
                _IMAGE_OWNER[backend] = self._owner_token
            except TypeError:
                _IMAGE_OWNER_BY_ID[id(backend)] = self._owner_token
            return True

    @staticmethod
    def _check_label_array(arr: np.ndarray, shape: tuple[int, ...], what: str) -> np.ndarray:
        if arr.shape != tuple(shape):
            raise ValueError(f"{what} has shape {arr.shape}; expected {tuple(shape)}")
        if arr.dtype == bool:
            return arr.astype(np.uint8)
        if not np.issubdtype(arr.dtype, np.integer):
            if arr.size and not np.all(np.mod(arr, 1) == 0):
                raise ValueError(f"{what} must hold integer label values; got dtype {arr.dtype}")
            arr = arr.astype(np.int64)
        if arr.size and np.issubdtype(arr.dtype, np.signedinteger) and int(arr.min()) < 0:
            raise ValueError(f"{what} has negative label {int(arr.min())}; labels must be >= 0")
        if arr.size and int(arr.max()) > _MAX_LABEL:
            raise ValueError(f"{what} has label {int(arr.max())} > {_MAX_LABEL}")
        return arr

    def _init_objects_from_labels(self, names: dict[int, str]) -> None:
        """Objects (and their bounding boxes) from the initial labels: one ``find_objects`` pass.

        Voxel counts are not computed here (:meth:`object_voxels` counts an object's box
        on first use and then keeps the count up to date).
        """
        lab = self._shadow
        bboxes: dict[int, BBox | None] = {}
        mx = int(lab.max()) if lab.size else 0
        if mx == 0:
            ids: list[int] = []
        elif mx <= 65535:
            from scipy import ndimage

            # find_objects is a slow per-voxel loop: run it on the box holding all labels only
            fg = _nonzero_bbox(lab)
            assert fg is not None
            sub = lab[fg]
            found = ndimage.find_objects(sub if sub.dtype.itemsize <= 2 else sub.astype(np.int32))
            ids = [i + 1 for i, sl in enumerate(found) if sl is not None]
            bboxes = {i: _offset(fg, found[i - 1]) for i in ids}
        else:
            ids = [int(i) for i in np.unique(lab) if i != 0]
            bboxes = {i: bbox_of(lab == i) for i in ids}
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
        need = label_dtype_for(int(max_label))
        if need.itemsize <= self._shadow.dtype.itemsize:
            return False
        log.info("promoting labels from %s to %s for label %d", self._shadow.dtype, need, max_label)
        self._shadow = self._shadow.astype(need)
        self._labels = self._labels.astype(need)
        self._touch_locked(None)
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
                              mode=req.mode, replace=req.replace, _version=req.version)
        t0 = time.perf_counter()
        token.check()
        # the object's mask now (not at submit: this thread, not the GUI thread, pays for it)
        lid = req.label_id
        prev_roi = None
        with self._lock:
            res._version = self._version.get(lid, 0)
            bb = self._obj_bbox.get(lid) if lid in self._objects else None
            if bb is not None:
                roi_mask = self._shadow[bb] == lid
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
        res.bbox = _fast_bbox(mask)
        res._bbox_done = True
        # where the object changes (vs its mask at submit): lets apply_result touch only that box
        if prev_roi is None:
            res._changed = res.bbox
        else:
            region = union_bbox(res.bbox, prev_roi[0])
            assert region is not None and prev is not None
            inner = _fast_bbox(mask[region] != prev[region])
            res._changed = None if inner is None else _offset(region, inner)
        res._changed_done = True
        res._mask_voxels = int(np.count_nonzero(mask[res.bbox])) if res.bbox is not None else 0
        token.check()
        if res._changed is not None:
            res._pre = self._premerge(lid, mask, res._changed, res._version)
        res.elapsed_s = time.perf_counter() - t0
        return res

    def _premerge(self, lid: int, mask: np.ndarray, roi: BBox, version: int) -> _Premerge | None:
        """Merge ``mask`` into a snapshot of ``labels[roi]`` and build the undo diff (off the GUI thread).

        :meth:`_apply_mask_locked` then only copies the changed box in, when nothing
        touched ``roi`` meanwhile (else it merges itself).
        """
        with self._lock:
            info = self._objects.get(lid)
            if info is None or self._version.get(lid, 0) != version:
                return None
            epoch, overwrite = self._epoch, info.overwrite
            old = self._shadow[roi].copy()
        new = old.copy()
        merge_object_mask(new, mask[roi], lid, overwrite=overwrite, roi=tuple(slice(0, n) for n in new.shape))
        changed = old != new
        inner = _fast_bbox(changed)
        if inner is None:
            return _Premerge(epoch, roi, overwrite, old.dtype, None, None, frozenset({lid}), {})
        ch = changed[inner]
        o, n = old[inner], np.ascontiguousarray(new[inner])
        ids, deltas = _changes(o[ch], n[ch])
        diff = LabelDiff.from_xor(_offset(roi, inner), np.bitwise_xor(o, n), ids | {lid}, defer=True)
        return _Premerge(epoch, roi, overwrite, old.dtype, diff, n, frozenset(ids | {lid}), deltas)

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
            cancelled=cancelled, prompts=req.prompts, mode=req.mode, _version=req.version,
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
        if res._logged:
            return
        res._logged = True
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
        if not result._bbox_done:
            result.bbox = _fast_bbox(result.mask)  # result built outside _infer: one full scan
            result._bbox_done = True
        diff: LabelDiff | None = None
        ids: set[int] = {lid}
        deltas: dict[int, int] = {}
        pre = result._pre if self._premerge_valid_locked(result) else None
        if pre is not None and pre.diff is not None:
            self._absorb_locked(pre.diff.bbox)  # an uncommitted stroke there is committed first...
            if not self._premerge_valid_locked(result):
                pre = None  # ...and then the region changed: merge here instead
        result._pre = None
        if pre is not None:
            # merged on the worker against these very labels: copy the changed box in
            diff, ids, deltas = pre.diff, set(pre.ids), pre.deltas
            if diff is not None:
                self._shadow[diff.bbox] = pre.new
                self._labels[diff.bbox] = pre.new
        else:
            if result._changed_done and self._version.get(lid, 0) == result._version:
                # the object is as it was when its mask was compared (see _infer): outside the
                # box where mask and old mask differ, merging changes nothing
                roi = result._changed
            else:
                roi = union_bbox(result.bbox, self._obj_bbox.get(lid))
            if roi is not None:
                self._absorb_locked(roi)
                old = self._shadow[roi].copy()
                merge_object_mask(self._shadow, result.mask, lid, overwrite=info.overwrite, roi=roi)
                new = self._shadow[roi]
                changed = old != new
                inner = _fast_bbox(changed)
                if inner is not None:
                    ch = changed[inner]
                    o, n = old[inner], new[inner]
                    ids, deltas = _changes(o[ch], n[ch])
                    ids.add(lid)
                    # the raw XOR is kept; zlib runs on a background thread
                    diff = LabelDiff.from_xor(_offset(roi, inner), np.bitwise_xor(o, n), ids, defer=True)
                    self._labels[diff.bbox] = n
        if diff is not None:
            self._touch_locked(diff.bbox)
            self._compress_later(diff)
            self._add_counts_locked(deltas)
            for i in ids - {lid}:  # objects it took voxels from (overwrite)
                self._version[i] = self._version.get(i, 0) + 1
        before = self._state(lid)
        prev_changed = self._version.get(lid, 0) != result._version
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
            mask_voxels=result._mask_voxels if result._mask_voxels >= 0 else None,
            prev_changed=prev_changed, **({"replace": True} if result.replace else {}),
        )
        # label_ids: the object, plus the objects it took voxels from (overwrite)
        return Change("result", bbox=None if diff is None else diff.bbox, label_ids=tuple(sorted(ids)),
                      description=desc,
                      labels_changed=diff is not None, objects_changed=True)

    def _premerge_valid_locked(self, result: InferenceResult) -> bool:
        """The worker's merge of ``result`` still holds: no change touched its region since."""
        pre = result._pre
        if pre is None:
            return False
        lid = result.label_id
        if (self._version.get(lid, 0) != result._version or self._objects[lid].overwrite != pre.overwrite
                or self._shadow.dtype != pre.dtype):
            return False
        if pre.epoch == self._epoch:
            return True
        mods = self._mods
        if not mods or mods[0][0] > pre.epoch + 1:
            return False  # the change history since then was trimmed
        for ep, bb in reversed(mods):
            if ep <= pre.epoch:
                break
            if bb is None or _intersects(bb, pre.roi):
                return False
        return True

    def _touch_locked(self, bbox: BBox | None) -> None:
        """Record a write to the committed labels (``None``: everywhere)."""
        self._epoch += 1
        self._mods.append((self._epoch, bbox))

    def _add_counts_locked(self, deltas: dict[int, int]) -> None:
        for i, d in deltas.items():
            if i in self._counts:
                self._counts[i] += d

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

    def _ids_in_diff(self, diff: LabelDiff) -> set[int]:
        """Label ids present before or after at the changed voxels of ``diff`` (current state + XOR)."""
        if diff.label_ids is not None:
            return set(diff.label_ids)
        x = diff.xor()
        cur = self._shadow[diff.bbox]
        ch = x != 0
        vals = cur[ch]
        other = vals ^ x[ch].astype(cur.dtype, copy=False)
        return _present_ids(vals) | _present_ids(other)

    # ---------------------------------------------------------- edits (internal)
    def _absorb_locked(self, roi: BBox) -> None:
        """Commit in-place edits of ``labels`` inside ``roi`` that were never committed."""
        if not np.array_equal(self._labels[roi], self._shadow[roi]):
            log.warning("committing an uncommitted in-place edit of the labels inside %s", bbox_to_list(roi))
            change = self._commit_edit_locked(roi, self._labels[roi], "uncommitted edit")
            if change is not None:
                self._emit(change)

    def _commit_edit_locked(self, box: BBox, region: np.ndarray, description: str) -> Change | None:
        mx = int(region.max()) if region.size else 0
        replaced = self._ensure_dtype(mx) if mx > np.iinfo(self._shadow.dtype).max else False
        old = self._shadow[box]
        diff = LabelDiff.between(old, region, offset=box, defer=True)
        if diff is None:
            return None
        # (label_ids are filled in below, once known)
        inner = tuple(slice(d.start - b.start, d.stop - b.start) for d, b in zip(diff.bbox, box))
        new_content = np.array(region[inner], dtype=self._shadow.dtype)
        old_content = self._shadow[diff.bbox]
        changed = old_content != new_content
        count_old = _value_counts(old_content[changed])
        count_new = _value_counts(new_content[changed])
        ids_old, ids_new = set(count_old), set(count_new)
        ids = ids_old | ids_new
        before: dict[int, ObjectState | None] = {}
        after: dict[int, ObjectState | None] = {}
        for i in sorted(ids):
            before[i] = self._state(i) if i in self._objects else None
        self._shadow[diff.bbox] = new_content
        self._labels[diff.bbox] = new_content
        self._touch_locked(diff.bbox)
        self._add_counts_locked({i: count_new.get(i, 0) - count_old.get(i, 0) for i in ids})
        for i in sorted(ids):
            if i not in self._objects:
                self._objects[i] = ObjectInfo(label_id=i, name=f"object {i}", color=default_color(i),
                                              status=ObjectStatus.EDITED)
                self._prompts[i] = []
                self._pending[i] = []
                self._obj_bbox[i] = None
            else:
                self._objects[i].status = ObjectStatus.EDITED
            self._version[i] = self._version.get(i, 0) + 1
            if int(i) in ids_new:
                self._obj_bbox[i] = union_bbox(self._obj_bbox.get(i), diff.bbox)
            after[i] = self._state(i)
        diff = diff.with_label_ids(ids)
        self._compress_later(diff)
        self._undo.push(UndoEntry("edit", description, diff=diff, before=before, after=after))
        self.log.write("edit", bbox=bbox_to_list(diff.bbox), description=description,
                       region=encode_array(new_content), label_ids=sorted(ids))
        return Change("edit", bbox=diff.bbox, label_ids=tuple(sorted(ids)), description=description,
                      labels_changed=True, objects_changed=True, labels_replaced=replaced)

    def _erase_object_locked(self, lid: int) -> LabelDiff | None:
        bb = self._obj_bbox.get(lid)
        if bb is None:
            return None
        self._absorb_locked(bb)
        old = self._shadow[bb].copy()
        reg = self._shadow[bb]
        reg[reg == lid] = 0
        diff = LabelDiff.between(old, reg, offset=bb, label_ids={lid}, defer=True)
        if diff is not None:
            self._labels[diff.bbox] = self._shadow[diff.bbox]
            self._version[lid] = self._version.get(lid, 0) + 1
            self._touch_locked(diff.bbox)
            self._compress_later(diff)
        self._obj_bbox[lid] = None
        self._counts[lid] = 0  # the box held every voxel of the object
        return diff

    def _drop_object_locked(self, lid: int) -> None:
        for d in (self._objects, self._prompts, self._pending, self._obj_bbox, self._counts):
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
                touched |= self._ids_in_diff(entry.diff)
        for lid in touched:
            self.cancel(lid)
        with self._lock:
            if entry.diff is not None:
                d = entry.diff
                x = d.xor()  # the raw block while its compression is pending: no wait
                cur = self._shadow[d.bbox]
                ch = x != 0
                before_vals = cur[ch]
                _, deltas = _changes(before_vals, before_vals ^ x[ch].astype(cur.dtype, copy=False))
                d.apply(self._shadow)
                self._labels[d.bbox] = self._shadow[d.bbox]
                self._touch_locked(d.bbox)
                self._add_counts_locked(deltas)
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
                for lid in self._ids_in_diff(entry.diff):
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

    # ---------------------------------------------------------- replay (int)
    def _replay_one(self, rec: dict[str, Any]) -> int:
        t = rec.get("type")
        seq = rec.get("seq")
        if t == "result":
            if rec.get("status") != "applied":
                return 0
            prompts = [prompt_from_dict(d) for d in rec.get("prompts") or []]
            if not prompts:
                raise ValueError(f"log record seq {seq}: applied result without prompts")
            if rec.get("prev_changed"):
                log.warning("log record seq %s: the object was edited while its inference ran; "
                            "replay may differ for backends that use prev_mask", seq)
            req = self._make_request(prompts[-1], prompts, mode="replay", replace=bool(rec.get("replace")))
            res = self._run_sync(req)
            if res.error is not None or res.cancelled:
                raise ValueError(f"log record seq {seq}: replaying the prompt failed: "
                                 f"{res.error_message or 'cancelled'}")
            self.apply_result(res)
            return 1
        if t == "edit":
            box = bbox_from_list(rec["bbox"])
            self.apply_edit(decode_array(rec["region"]), bbox=box, description=rec.get("description", "edit"))
            return 1
        if t == "object_add":
            self.add_object(rec.get("name", ""), color=rec.get("color") or None, label_id=rec["label_id"],
                            overwrite=bool(rec.get("overwrite", False)), instance=bool(rec.get("instance", False)))
            return 1
        if t == "object_delete":
            self.delete_object(rec["label_id"])
            return 1
        if t == "object_rename":
            self.rename_object(rec["label_id"], rec["name"])
            return 1
        if t == "object_color":
            self.set_object_color(rec["label_id"], rec["color"])
            return 1
        if t == "object_overwrite":
            self.set_overwrite(rec["label_id"], rec["overwrite"])
            return 1
        if t == "object_reset":
            self.reset_object(rec["label_id"])
            return 1
        if t == "object_accept":
            self.accept_object(rec["label_id"])
            return 1
        if t == "undo":
            self.undo()
            return 1
        if t == "redo":
            self.redo()
            return 1
        return 0


def replay_log(volume: Volume, backend: Any, source: Any, *, labels: np.ndarray | None = None) -> AnnotationSession:
    """Build a worker-less session on ``volume``/``labels`` and replay ``source`` into it."""
    s = AnnotationSession(volume, backend, labels=labels, use_worker=False)
    s.replay(source)
    return s
