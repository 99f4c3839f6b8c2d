"""Inference side of :class:`~napari_medsegfm.engine.session.AnnotationSession` (a mixin of it).

Requests and generations, the synchronous path (:meth:`add_prompt`), the worker path
(:meth:`submit`, :meth:`prepare`, :meth:`warm`), cancellation, the backend call itself with
the mask checks, and the merge prepared on the worker thread. The session's state (its
lock, object table, label store, worker, log) is defined in ``AnnotationSession.__init__``;
``docs/session.md`` describes the contract.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..backends.base import check_capabilities
from ..types import (
    Cancelled,
    CancelToken,
    Prompt,
    prompt_kind,
    prompt_to_dict,
    validate_prompt,
)
from .image_owner import IMAGE_OWNERS
from .labels import Merge, fast_bbox, merge_block, offset
from .maskcheck import binary_mask
from .postprocess import BBox, union_bbox
from .results import Change, InferenceResult
from .vocab import attach_vocabulary
from .worker import JobOutcome

log = logging.getLogger("napari_medsegfm.engine.session")

_IMAGE_KEY = "__set_image__"
_WARM_KEY = "__warm__"


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




class _InferenceMixin:
    """Prompts to results: requests, generations, worker jobs, backend calls (see module doc)."""

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
