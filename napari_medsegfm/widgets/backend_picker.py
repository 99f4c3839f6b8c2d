"""Backend picking of the annotation controller: list the backends, load one off the GUI thread.

Qt-free. Loading a backend may read weights, so it runs on a helper thread; prompts
given meanwhile wait (``_deferred``) and run once the backend is installed. A token
makes a late load of a backend the user already switched away from a no-op.
:class:`BackendPicker` is a mixin of
:class:`~napari_medsegfm.widgets.controller.AnnotationController`.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from ..backends.base import BackendStatus, capability_names
from ..engine.session import InferenceResult
from ..types import Capability

__all__ = ["BackendPicker"]

log = logging.getLogger(__name__.rsplit(".", 1)[0] + ".controller")

class BackendPicker:
    """The controller's backend (mixin; see module docstring)."""

    def refresh_backends(self, *, wait: bool = False) -> None:
        """List the backends (off the GUI thread); ``events.backends`` gets the statuses."""
        def work() -> None:
            from ..backends.registry import list_backends

            try:
                st = list_backends()
            except Exception as exc:  # the picker must open even if a plugin is broken
                log.exception("listing backends failed")
                st = {}
                msg = f"listing backends failed: {exc}"
                self._post(lambda: self._message(msg, "warning"))
            self._post(lambda: self._set_statuses(st))

        if wait:
            work()
        else:
            threading.Thread(target=work, name="medsegfm-backends", daemon=True).start()

    def _set_statuses(self, statuses: dict[str, BackendStatus]) -> None:
        self._statuses = dict(statuses)
        self.events.backends.emit(dict(statuses))

    @property
    def backend_statuses(self) -> dict[str, BackendStatus]:
        return dict(self._statuses)

    @property
    def backend_name(self) -> str:
        return self._backend_name

    @property
    def backend_status(self) -> BackendStatus | None:
        return self._backend_status

    def set_backend(self, backend: Any) -> None:
        """Switch backend: a registry name (``"default"``), an instance, or ``None``.

        Names load on a helper thread (weights may take a while); prompts given
        meanwhile wait and run once it is ready.
        """
        if self.session is None:
            self._backend_request = backend
            return
        self._backend_token += 1
        token = self._backend_token
        if backend is None or not isinstance(backend, str):
            self._install_backend(token, backend, None, getattr(backend, "name", "") if backend else "")
            return
        name = backend
        self._backend_loading = name
        self.events.tools.emit()
        self.events.busy.emit(True)
        self._message(f"loading backend {name}…")

        def work() -> None:
            from ..backends.registry import default_backend_name, get_backend

            real = default_backend_name() if name == "default" else name
            try:
                inst, err = get_backend(real), None
            except Exception as exc:  # reported to the user, nothing else changes
                inst, err = None, exc
            self._post(lambda: self._install_backend(token, inst, err, real))

        threading.Thread(target=work, name="medsegfm-backend-loader", daemon=True).start()

    def _install_backend(self, token: int, inst: Any, err: BaseException | None, name: str) -> None:
        if token != self._backend_token or self.session is None:
            return
        self._backend_loading = None
        if err is not None:
            self._message(f"backend {name!r} could not be loaded: {err}", "error")
            self._flush_deferred(drop=True)
            self.events.tools.emit()
            self.events.busy.emit(self.busy)
            self.events.backend.emit(self._backend_name, self._backend_status)
            return
        self.session.set_backend(inst)
        self._backend_inst = inst
        self._backend_name = str(getattr(inst, "name", name)) if inst is not None else ""
        st = self._statuses.get(self._backend_name)
        if st is None and inst is not None:
            status_fn = getattr(type(inst), "status", None)
            try:
                st = status_fn() if callable(status_fn) else None
            except Exception:  # status is informative only
                st = None
        if st is None and inst is not None:
            st = BackendStatus(self._backend_name, getattr(inst, "capabilities", Capability.NONE), "ready",
                               device=str(getattr(inst, "device", "cpu")))
        self._backend_status = st
        self.events.backend.emit(self._backend_name, st)
        self.events.tools.emit()
        if inst is not None:
            n_boxes = len(self.box_layer.data) if self.box_layer is not None else 0
            unrun = n_boxes and not any(self.session.prompts_of(i) for i in self.session.objects)
            self._message(f"backend {self._backend_name} ready "
                          f"({', '.join(capability_names(self.capabilities)) or 'no prompt kinds'})"
                          + (f"; {n_boxes} box(es) from the file: Run all boxes (Ctrl+Shift+Enter)" if unrun else ""))
            # encode/prepare the image on the worker right away (the model's warm-up: prompts
            # given meanwhile wait for it, and the latency line says so)
            self._warmup_span = [time.perf_counter(), None]
            self.session.prepare(lambda res: self._post(lambda: self._on_prepared(res)))
        self._flush_deferred()
        self.events.busy.emit(self.busy)

    @property
    def warming_up(self) -> bool:
        """True while the backend prepares (encodes) the image, before the first prompt can run."""
        span = self._warmup_span
        return self.session is not None and span is not None and span[1] is None

    def warmup_overlap(self, t0: float, t1: float) -> float:
        """Seconds of ``[t0, t1]`` (perf_counter) during which the image was being prepared."""
        span = self._warmup_span
        if span is None:
            return 0.0
        end = span[1] if span[1] is not None else time.perf_counter()
        return max(0.0, min(t1, end) - max(t0, span[0]))

    def _on_prepared(self, res: InferenceResult) -> None:
        if self._warmup_span is not None and self._warmup_span[1] is None:
            self._warmup_span[1] = time.perf_counter()
            self.last_warmup_s = float(res.elapsed_s)
        if res.error is not None:
            self._message(f"backend {self._backend_name!r} could not take this image: {res.error_message}", "error")

    def _flush_deferred(self, drop: bool = False) -> None:
        pending, self._deferred = self._deferred, []
        if drop:
            if pending:
                self._message(f"{len(pending)} prompt(s) dropped: no backend", "warning")
            return
        for p, replace in pending:
            self.submit(p, replace=replace)
