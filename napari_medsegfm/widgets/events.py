"""The annotation controller's events: psygnal signals (napari's own event library), Qt-free.

``controller.events.<name>.connect(fn)`` / ``.disconnect(fn)`` / ``.emit(*args)``. A
listener that raises is logged and does not break the controller's flow (a dock widget
being deleted must not stop a result from being applied).
"""

from __future__ import annotations

import logging
from typing import Any

from psygnal import EmitLoopError, SignalInstance

__all__ = ["ControllerEvents", "ListenerSafeSignal"]

log = logging.getLogger(__name__.rsplit(".", 1)[0] + ".controller")


class ListenerSafeSignal(SignalInstance):
    """A psygnal ``SignalInstance`` whose ``emit`` logs a failing listener instead of raising."""

    def emit(self, *args: Any, check_nargs: bool = False, check_types: bool = False) -> None:
        try:
            super().emit(*args, check_nargs=check_nargs, check_types=check_types)
        except EmitLoopError as exc:
            log.error("listener of %r failed: %s", self.name, exc.__cause__ or exc,
                      exc_info=exc.__cause__ or exc)


#: event name -> argument types
SIGNATURES: dict[str, tuple[Any, ...]] = {
    "busy": (bool,),  # busy: bool
    "objects": (),  # the object list changed
    "current": (object,),  # label_id | None
    "status": (str,),  # message
    "tools": (),  # tool availability changed
    "backends": (dict,),  # name -> BackendStatus
    "backend": (str, object),  # name, BackendStatus | None
    "history": (),  # undo/redo (and save) availability changed
    "saved": (object,),  # path written
    "attached": (bool,),  # attached: bool
}


class ControllerEvents:
    """One :class:`ListenerSafeSignal` per entry of :data:`SIGNATURES`, as attributes."""

    busy: ListenerSafeSignal
    objects: ListenerSafeSignal
    current: ListenerSafeSignal
    status: ListenerSafeSignal
    tools: ListenerSafeSignal
    backends: ListenerSafeSignal
    backend: ListenerSafeSignal
    history: ListenerSafeSignal
    saved: ListenerSafeSignal
    attached: ListenerSafeSignal

    def __init__(self) -> None:
        for name, sig in SIGNATURES.items():
            setattr(self, name, ListenerSafeSignal(sig, name=name))

    def signals(self) -> list[ListenerSafeSignal]:
        return [getattr(self, n) for n in SIGNATURES]
