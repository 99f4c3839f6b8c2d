"""The backend protocol every segmentation model implements.

A backend is a *predictor*: ``set_image`` once per volume (may precompute and cache),
then many cheap ``predict`` calls, one per interaction, each for **one object**.

``predict(prompts, prev_mask, cancel)``

* ``prompts``: every prompt given so far to this object, oldest first (boxes, points,
  scribbles, text), all with the same ``object_id``. Backends that refine
  incrementally may look only at the newest ones plus ``prev_mask``.
* ``prev_mask``: the object's current bool mask in the volume's spatial shape
  ``(Z, Y, X)`` / ``(Y, X)``, or ``None`` for a fresh object.
* ``cancel``: check it (``cancel.check()``) between slices/iterations; raise
  :class:`~napari_medsegfm.types.Cancelled` promptly when set.
* returns a bool array in the volume's spatial shape.

Optional: ``warm(zs, cancel) -> int`` precomputes per-slice work (e.g. image
embeddings) for slices ``zs`` of the current image without predicting anything; the
session calls it on its worker while the user is still placing a prompt
(:meth:`~napari_medsegfm.engine.session.AnnotationSession.warm`).

A backend that cannot serve a prompt kind must not silently ignore it: the engine
checks ``capabilities`` first and raises :class:`UnsupportedPromptError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..types import CancelToken, Capability, Prompt, Volume, prompt_kind, required_capability

__all__ = [
    "SegmentationBackend",
    "BackendStatus",
    "UnsupportedPromptError",
    "BackendUnavailableError",
    "check_capabilities",
    "capability_names",
]


class UnsupportedPromptError(ValueError):
    """A prompt kind the chosen backend cannot serve."""


class BackendUnavailableError(RuntimeError):
    """The backend cannot run here (package or weights missing); the message says what to do."""


@dataclass
class BackendStatus:
    """What ``medsegfm backends`` and the widget's picker show."""

    name: str
    capabilities: Capability
    state: str  # "ready" | "weights missing" | "package missing" | "error"
    device: str = "cpu"
    weights: str = ""  # path or description of the weights in use
    message: str = ""  # what to do when not ready
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return self.state == "ready"


@runtime_checkable
class SegmentationBackend(Protocol):
    """Protocol of a segmentation backend (see module docstring)."""

    name: str
    capabilities: Capability

    def set_image(self, volume: Volume) -> None:
        """Take a new image; may precompute (embeddings) and cache."""

    def predict(
        self, prompts: Sequence[Prompt], prev_mask: np.ndarray | None, cancel: CancelToken
    ) -> np.ndarray:
        """Bool mask of one object in the volume's spatial shape."""

    def reset(self) -> None:
        """Drop per-image state and caches."""


def capability_names(caps: Capability) -> list[str]:
    """Human names of the set flags, e.g. ``['BOX3D', 'POINTS']``."""
    return [c.name for c in Capability if c.name not in (None, "NONE") and c in caps and c.value]


def check_capabilities(backend: Any, prompts: Sequence[Prompt]) -> None:
    """Raise :class:`UnsupportedPromptError` naming the prompt kind a backend cannot serve."""
    caps = getattr(backend, "capabilities", Capability.NONE)
    for p in prompts:
        need = required_capability(p)
        if not (need & caps):
            raise UnsupportedPromptError(
                f"backend {getattr(backend, 'name', type(backend).__name__)!r} cannot serve a "
                f"{prompt_kind(p)} prompt (it supports: {', '.join(capability_names(caps)) or 'nothing'})"
            )
