"""Inference of the annotation controller: prompts onto the session's worker, results back on the
GUI thread, cancelling.

Qt-free. The worker's callback only posts the result (see the controller's module
docstring); :meth:`Inference._on_result` applies it on the GUI thread, where stale
results are refused. :class:`Inference` is a mixin of
:class:`~napari_medsegfm.widgets.controller.AnnotationController`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ..backends.base import capability_names
from ..engine.session import AnnotationSession, InferenceResult
from ..types import Prompt, prompt_kind, required_capability, validate_prompt
from .objects import format_volume

__all__ = ["Inference"]

_KIND_NAMES = {"box3d": "3D box", "box2d": "2D box", "point": "click", "scribble": "scribble", "text": "text"}


@dataclass
class _Inflight:
    label_id: int
    t_submit: float
    kind: str


class Inference:
    """The controller's inference (mixin; see module docstring)."""

    # ================================================================ inference
    @property
    def busy(self) -> bool:
        return bool(self._inflight) or self._backend_loading is not None

    @property
    def busy_since(self) -> float | None:
        if not self._inflight:
            return None
        return min(f.t_submit for f in self._inflight.values())

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    def submit(self, prompt: Prompt, *, replace: bool = False) -> int | None:
        """Validate ``prompt`` and queue it on the session's worker; returns the generation.

        Problems (unsupported kind, outside the volume) become an error
        notification and return ``None``; nothing is lost. ``replace``: the prompt
        starts the object's prompts anew (see ``AnnotationSession.submit``).
        """
        self._require_session()
        s = self.session
        if s.backend is None:
            if self._backend_loading is not None:
                self._deferred.append((prompt, replace))
                self._message(f"{_KIND_NAMES.get(prompt_kind(prompt), 'prompt')} queued: "
                              f"backend {self._backend_loading} is loading")
                return None
            self._message("no backend selected: pick one in the Backend list", "error")
            return None
        need = required_capability(prompt)
        if not (need & self.capabilities):
            self._message(
                f"backend {self._backend_name!r} cannot use a {_KIND_NAMES.get(prompt_kind(prompt))} "
                f"(it supports {', '.join(capability_names(self.capabilities)) or 'nothing'})", "error")
            return None
        try:
            validate_prompt(prompt, self.volume.spatial_shape)
        except ValueError as exc:
            self._message(f"prompt outside the image: {exc}", "error")
            return None
        t0 = time.perf_counter()
        sess = s

        def done(res: InferenceResult) -> None:  # worker thread
            self._post(lambda: self._on_result(sess, res, t0))

        try:
            gen = s.submit(prompt, done, replace=replace)
        except ValueError as exc:
            self._message(str(exc), "error")
            return None
        self._inflight[gen] = _Inflight(prompt.object_id, t0, prompt_kind(prompt))
        self.events.busy.emit(True)
        self.events.objects.emit()
        return gen

    def _on_result(self, sess: AnnotationSession, res: InferenceResult, t0: float) -> None:
        self._inflight.pop(res.generation, None)
        if sess is not self.session:
            return
        applied = sess.apply_result(res)
        name = self.objects.get(res.label_id).name if res.label_id in self.objects else f"object {res.label_id}"
        if res.error is not None and not res.stale:
            self._message(f"segmenting {name!r} failed ({res.backend}): {res.error_message}. "
                          "The prompt was dropped; the labels are unchanged.", "error")
            self._shown_points = self._shown_scribbles = None
            self._sync_prompt_layers()
        elif applied:
            self.last_backend_s = res.elapsed_s
            self.last_roundtrip_s = time.perf_counter() - t0
            waited = self.warmup_overlap(t0, t0 + res.queued_s)
            self.last_warmup_wait_s = waited
            self.last_queued_s = max(0.0, res.queued_s - waited)
            vox = self._voxels.get(res.label_id, 0)
            size = f"{vox:,} {self.size_unit}" if self.size_unit else format_volume(vox * self.volume.voxel_volume_ml)
            self._message(f"{name}: {size}"
                          f" in {res.elapsed_s:.2f} s ({res.backend})")
        elif res.cancelled and not self._inflight:
            self._message("cancelled")
        self.events.busy.emit(self.busy)
        self.events.objects.emit()

    def cancel(self) -> None:
        """Cancel every queued and running request (results are discarded)."""
        if self.session is None:
            return
        self.session.cancel()
        self._deferred.clear()
        self._message("cancelling…")
