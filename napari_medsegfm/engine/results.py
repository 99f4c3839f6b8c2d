"""What the session hands out: :class:`InferenceResult` (one request's outcome) and :class:`Change`.

Both are plain values. The worker-side facts the session keeps about a result it computed
(the object's version at inference, the box where the mask changed, the merge prepared
off the GUI thread) live in the session's own :class:`Prepared` records, not here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..types import Prompt
from .postprocess import BBox

__all__ = ["InferenceResult", "Change"]


@dataclass(eq=False)
class InferenceResult:
    """Outcome of one inference request.

    Compared by identity (two results are never "equal": each is one request).

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
        Bounding box of ``mask`` in array axis order (computed on the worker thread).
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
