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
    """What ``medsegfm backends`` and the widget's picker show about one backend.

    Parameters
    ----------
    name : str
        Registry name (``"litemedsam"``, ``"classic"``, ...).
    capabilities : Capability
        The prompt kinds it serves.
    state : str
        ``"ready"``, ``"weights missing"``, ``"package missing"`` or ``"error"``.
    device : str
        Where it runs (``"cpu"``, ``"cuda"``, ``"mps"``).
    weights : str
        Path or description of the weights in use.
    message : str
        What to do when it is not ready (or a one-line description when it is).
    extra : dict
        Backend-specific details (versions, checksums).
    """

    name: str
    capabilities: Capability
    state: str  # "ready" | "weights missing" | "package missing" | "error"
    device: str = "cpu"
    weights: str = ""  # path or description of the weights in use
    message: str = ""  # what to do when not ready
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        """True when ``state == "ready"``."""
        return self.state == "ready"


@runtime_checkable
class SegmentationBackend(Protocol):
    """Protocol of a segmentation backend (see module docstring)."""

    name: str
    capabilities: Capability

    def set_image(self, volume: Volume) -> None:
        """Take a new image; may precompute (embeddings) and cache.

        Parameters
        ----------
        volume : Volume
            ``(Z, Y, X)``, ``(Y, X)`` or ``(Y, X, 3)`` with ``spacing`` in mm.
        """

    def predict(
        self, prompts: Sequence[Prompt], prev_mask: np.ndarray | None, cancel: CancelToken
    ) -> np.ndarray:
        """Bool mask of one object in the volume's spatial shape.

        Parameters
        ----------
        prompts : sequence of Prompt
            Every prompt given so far to this object, oldest first, all with its ``object_id``.
        prev_mask : np.ndarray or None
            The object's current bool mask, ``(Z, Y, X)`` / ``(Y, X)``; ``None`` for a fresh object.
        cancel : CancelToken
            Checked between slices/iterations; :class:`~napari_medsegfm.types.Cancelled` is raised
            when it is set.

        Returns
        -------
        np.ndarray
            ``bool``, the volume's spatial shape ``(Z, Y, X)`` or ``(Y, X)``.
        """

    def reset(self) -> None:
        """Drop per-image state and caches."""


def capability_names(caps: Capability) -> list[str]:
    """Human names of the set flags.

    Parameters
    ----------
    caps : Capability
        Combined flags.

    Returns
    -------
    list of str
        E.g. ``['BOX3D', 'POINTS']``, in declaration order (``NONE`` left out).
    """
    return [c.name for c in Capability if c.name not in (None, "NONE") and c in caps and c.value]


def check_capabilities(backend: Any, prompts: Sequence[Prompt]) -> None:
    """Refuse prompts a backend cannot serve, before anything runs.

    Parameters
    ----------
    backend : object
        A backend with a ``capabilities`` attribute (missing: ``Capability.NONE``).
    prompts : sequence of Prompt
        The prompts to serve.

    Raises
    ------
    UnsupportedPromptError
        Naming the backend, the first prompt kind it lacks and what it supports.
    """
    caps = getattr(backend, "capabilities", Capability.NONE)
    for p in prompts:
        need = required_capability(p)
        if not (need & caps):
            raise UnsupportedPromptError(
                f"backend {getattr(backend, 'name', type(backend).__name__)!r} cannot serve a "
                f"{prompt_kind(p)} prompt (it supports: {', '.join(capability_names(caps)) or 'nothing'})"
            )
