"""One challenge-compatible prediction step: an npz's members in, ``segs`` out.

:func:`predict_case` is what ``medsegfm predict`` runs on each file and what
``medsegfm evaluate`` runs at each step of the interactive protocol, so both share
one code path. Inputs (the members of a CVPR 2024/2025 npz, see FORMATS.md):

``imgs``
    ``(D, H, W)`` uint8 volume, or ``(H, W, 3)`` RGB / ``(H, W)`` grey 2D image.
``spacing``
    ``(x, y, z)`` mm (reversed relative to the array axes), optional for 2D.
``boxes``
    CVPR 2025: a sequence of dicts ``z_min, z_max, z_mid, z_mid_x_min, z_mid_y_min,
    z_mid_x_max, z_mid_y_max``; CVPR 2024: an ``(N, 6)`` array ``[x_min, y_min, z_min,
    x_max, y_max, z_max]`` (3D) or ``(N, 4)`` ``[x_min, y_min, x_max, y_max]`` (2D).
    ``boxes[i]`` prompts label ``i + 1``.
``clicks``, ``clicks_order``
    per class ``i`` (label ``i + 1``): ``{'fg': [[z, y, x], ...], 'bg': [...]}`` and the
    chronological list of ``'fg'``/``'bg'``.
``prev_pred``
    the previous step's labels; objects without clicks keep their region from it.
``text_prompts``
    ``{"1": text, ..., "instance_label": 0|1}``, used only when there is nothing else
    to prompt with and the backend can serve text.

The members are parsed by :func:`napari_medsegfm.io.cvpr.read_cvpr_members`, the one
parser of the CVPR npz meaning (2D RGB or 3D, spacing order, box out-of-bounds policy,
clicks and their order), so a file means the same here as in the napari reader and in
``medsegfm batch``.

Objects are predicted independently (:func:`predict_masks`) and merged
(:func:`merge_masks`) with
:func:`~napari_medsegfm.engine.postprocess.merge_object_mask`: larger objects are
written first and smaller ones may overwrite them (a small organ inside a big box
keeps its voxels; nested classes keep their core); objects of ``prev_pred`` that got
no click this step (the protocol clicks every class with an error) keep all their
voxels; every foreground click keeps its voxel for its own object. On a click step a
re-predicted object takes voxels from another object of ``prev_pred`` only where one of its
own positive clicks points (the connected part of its reach into that object holding the
click; :func:`merge_masks`): a correction of one object does not eat its neighbour
elsewhere. Measured with the nested box step (benchmarks/results/accuracy_dev.md).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from ..backends.base import UnsupportedPromptError, capability_names, check_capabilities
from ..engine.maskcheck import binary_mask
from ..engine.postprocess import bbox_of, merge_object_mask
from ..io.cvpr import click_prompts, read_cvpr_members, text_prompt_list
from ..types import (
    CancelToken,
    Capability,
    Case,
    Point,
    Prompt,
    TextPrompt,
    Volume,
    box_volume,
    nested_inner,
    validate_prompt,
)
from ..utils import label_dtype_for

__all__ = [
    "object_prompts",
    "predict_masks",
    "merge_masks",
    "predict_case",
    "PredictInfo",
]

log = logging.getLogger(__name__)


@dataclass
class PredictInfo:
    """What :func:`predict_case` did (for logs and the evaluator).

    Parameters
    ----------
    mode : str
        ``"boxes"``, ``"clicks"`` or ``"text"``.
    predicted : list of int
        Labels re-predicted this step.
    kept : list of int
        Labels copied from ``prev_pred``.
    seconds : dict of int to float
        Label -> seconds its prediction took.
    """

    mode: str = ""  # "boxes" | "clicks" | "text"
    predicted: list[int] = field(default_factory=list)  # labels re-predicted this step
    kept: list[int] = field(default_factory=list)  # labels copied from prev_pred
    seconds: dict[int, float] = field(default_factory=dict)


def object_prompts(case: Case, backend: Any = None) -> tuple[str, dict[int, list[Prompt]]]:
    """Which objects to predict this step and with what prompts (the challenge's rule).

    Clicks win over boxes, boxes over text.

    Parameters
    ----------
    case : Case
        With ``boxes``, ``clicks`` or ``text_prompts``.
    backend : object, optional
        Checked for the TEXT capability when only text prompts are present.

    Returns
    -------
    mode : str
        ``"clicks"`` (objects with clicks, each with its box if any, then its points oldest
        first), ``"boxes"`` (one box per object) or ``"text"``.
    prompts : dict of int to list of Prompt
        Label -> prompts.

    Raises
    ------
    UnsupportedPromptError
        Only text prompts and a backend without TEXT capability.
    ValueError
        The case has no prompts.
    """
    clicks = click_prompts(case)
    box_of = {b.object_id: b for b in case.boxes}
    if clicks:
        return "clicks", {lab: ([box_of[lab]] if lab in box_of else []) + pts for lab, pts in sorted(clicks.items())}
    if case.boxes:
        return "boxes", {b.object_id: [b] for b in case.boxes}
    texts = text_prompt_list(case)
    if texts:
        caps = getattr(backend, "capabilities", Capability.NONE)
        if not (Capability.TEXT & caps):
            raise UnsupportedPromptError(
                f"this input has no boxes or clicks, only text_prompts, and backend "
                f"{getattr(backend, 'name', type(backend).__name__)!r} cannot serve text prompts "
                f"(it supports: {', '.join(capability_names(caps)) or 'nothing'}); "
                "use a backend with TEXT capability (see `medsegfm backends`)"
            )
        return "text", {t.object_id: [t] for t in texts}
    raise ValueError("input has no prompts: expected 'boxes', 'clicks' or 'text_prompts'")


def predict_masks(
    volume: Volume,
    prompts: Mapping[int, list[Prompt]],
    backend: Any,
    *,
    prev: np.ndarray | None = None,
    cancel: CancelToken | None = None,
    progress: Callable[[int, int], None] | None = None,
    info: PredictInfo | None = None,
) -> dict[int, np.ndarray]:
    """One bool mask per object: ``backend.set_image(volume)`` once, then one ``predict`` each.

    Every prompt is validated against the volume and the backend's capabilities before
    any work. In a box step of a backend with ``nested`` and ``predict_nested``, objects
    go smallest box first and an object whose box holds others' boxes gets their masks.

    Parameters
    ----------
    volume : Volume
        ``(Z, Y, X)``, ``(Y, X)`` or ``(Y, X, 3)``.
    prompts : mapping of int to list of Prompt
        Label -> that object's prompts.
    backend : SegmentationBackend
        The model.
    prev : np.ndarray, optional
        Previous labels in the volume's spatial shape; each object gets ``prev == label``
        as its ``prev_mask``.
    cancel : CancelToken, optional
        Checked between objects (and by the backend inside).
    progress : callable, optional
        ``progress(done, total)`` after each object.
    info : PredictInfo, optional
        Filled with the predicted labels and per-object seconds.

    Returns
    -------
    dict of int to np.ndarray
        Label -> bool mask of the volume's spatial shape ``(Z, Y, X)`` / ``(Y, X)``.

    Raises
    ------
    ValueError, UnsupportedPromptError
        A prompt outside the volume or of a kind the backend cannot serve (before any work).
    Cancelled
        ``cancel`` was set.
    """
    cancel = cancel or CancelToken()
    shape = volume.spatial_shape
    for ps in prompts.values():
        for p in ps:
            validate_prompt(p, shape)
        check_capabilities(backend, ps)
    backend.set_image(volume)
    masks: dict[int, np.ndarray] = {}
    n = len(prompts)
    items = list(prompts.items())
    # a box step of a backend that can use them: objects with the smallest boxes first, and an
    # object whose box holds other objects' boxes gets their masks (`predict_nested`), so
    # oedema around a tumour core or myocardium around the blood pool is cut as what surrounds them
    nested = callable(getattr(backend, "predict_nested", None)) and prev is None and bool(getattr(backend, "nested", False))
    if nested:
        items.sort(key=lambda kv: box_volume(kv[1]) or 1 << 62)  # box-less objects last
    for k, (lab, ps) in enumerate(items):
        cancel.check()
        t0 = time.perf_counter()
        inner = nested_inner(lab, prompts, masks) if nested else None
        if inner is not None:
            raw = backend.predict_nested(ps, inner, cancel)
        else:
            raw = backend.predict(ps, None if prev is None else prev == lab, cancel)
        if info is not None:
            info.seconds[lab] = time.perf_counter() - t0
            info.predicted.append(lab)
        # bool or 0/1 masks only: NaN, probabilities or another shape are an error naming the backend
        masks[lab] = binary_mask(raw, shape, str(getattr(backend, "name", backend)))
        if progress is not None:
            progress(k + 1, n)
    return {lab: masks[lab] for lab in prompts}


def _pointed_components(moved: np.ndarray, points: list[Prompt], roi: tuple[slice, ...]) -> np.ndarray:
    """The connected parts of ``moved`` (an ROI crop) that hold one of the positive ``points``."""
    comp, _ = ndimage.label(moved)
    keep: set[int] = set()
    for p in points:
        if isinstance(p, Point) and p.positive:
            loc = tuple(int(v) - s.start for v, s in zip(p.zyx, roi))
            if all(0 <= a < b for a, b in zip(loc, moved.shape)) and comp[loc]:
                keep.add(int(comp[loc]))
    return np.isin(comp, sorted(keep)) if keep else np.zeros(moved.shape, dtype=bool)


def _pointed_reach(mask: np.ndarray, prev: np.ndarray, lab: int, points: list[Prompt]) -> np.ndarray:
    """``mask`` without its reach into other objects of ``prev`` that none of its positive clicks points at."""
    roi = bbox_of(mask)
    if roi is None:
        return mask
    pv = prev[roi]
    reach = mask[roi] & (pv != 0) & (pv != lab)
    if not reach.any():
        return mask
    stray = reach & ~_pointed_components(reach, points, roi)
    if not stray.any():
        return mask
    out = mask.copy()
    out[roi] &= ~stray
    return out


def merge_masks(
    masks: Mapping[int, np.ndarray],
    shape: tuple[int, ...],
    *,
    prev: np.ndarray | None = None,
    prompts: Mapping[int, list[Prompt]] | None = None,
    info: PredictInfo | None = None,
) -> np.ndarray:
    """One label image from per-object masks (see the module docstring for the order).

    Re-predicted objects are written larger first, so smaller ones lie on top; objects of
    ``prev`` without a mask keep their region and are written last. With ``prev`` and
    ``prompts`` (a click step), a mask's voxels that belong to another object of ``prev`` are
    dropped from it unless they are connected to one of its positive clicks
    (:func:`_pointed_reach`).

    Parameters
    ----------
    masks : mapping of int to np.ndarray
        Label -> bool mask of ``shape``.
    shape : tuple of int
        Spatial shape ``(Z, Y, X)`` or ``(Y, X)``.
    prev : np.ndarray, optional
        Previous labels of ``shape``; its objects without a mask are kept (listed in ``info.kept``).
    prompts : mapping of int to list of Prompt, optional
        A positive :class:`Point` keeps its voxel for its own object when that object's mask
        holds it, and marks where the object may take voxels from another object of ``prev``.
    info : PredictInfo, optional
        ``kept`` is extended.

    Returns
    -------
    np.ndarray
        Labels of ``shape``, ``uint8`` (``uint16``/``uint32`` beyond 255/65535 labels).
    """
    masks = dict(masks)
    if prev is not None and prompts:
        masks = {lab: _pointed_reach(m, prev, lab, prompts.get(lab, [])) for lab, m in masks.items()}
    kept: list[int] = []
    if prev is not None:
        for lab in np.unique(prev):
            lab = int(lab)
            if lab != 0 and lab not in masks:
                masks[lab] = prev == lab
                kept.append(lab)
    if info is not None:
        info.kept.extend(kept)
    max_label = max(list(masks) + [0])
    dtype = label_dtype_for(max_label)
    if dtype != np.uint8:
        log.warning("%d labels do not fit uint8; writing %s", max_label, dtype)
    segs = np.zeros(shape, dtype=dtype)
    # re-predicted objects: larger first, smaller on top (ties: lower label first, so
    # deterministic); then the objects kept from prev_pred, which got no click because
    # they needed none, on top of everything so a neighbour's refinement cannot eat them
    kept_set = set(kept)
    order = sorted((lab for lab in masks if lab not in kept_set),
                   key=lambda lab: (-int(np.count_nonzero(masks[lab])), lab))
    order += sorted(kept)
    for lab in order:
        roi = bbox_of(masks[lab])
        if roi is not None:  # segs holds no `lab` yet: the mask's box bounds every change
            merge_object_mask(segs, masks[lab], lab, overwrite=True, roi=roi)
    for lab in order:
        for p in (prompts or {}).get(lab, []):
            if isinstance(p, Point) and p.positive and masks[lab][p.zyx]:
                segs[p.zyx] = lab
    return segs


def predict_case(
    inputs: Mapping[str, Any] | Case,
    backend: Any,
    *,
    source: str | os.PathLike[str] | None = None,
    cancel: CancelToken | None = None,
    progress: Callable[[int, int], None] | None = None,
    info: PredictInfo | None = None,
) -> np.ndarray:
    """Run one challenge step: predict every prompted object and merge them.

    Parameters
    ----------
    inputs : mapping or Case
        npz members (see the module docstring; pickled members may be 0-d object arrays
        or plain Python objects), or a :class:`Case` already read with
        :func:`napari_medsegfm.io.load_case`.
    backend : SegmentationBackend
        Receives ``set_image`` once, then one ``predict`` per object.
    source : path-like, optional
        The file the members came from (named in error messages).
    cancel : CancelToken, optional
        Checked between objects and handed to the backend.
    progress : callable(done, total), optional
        Called after each object.
    info : PredictInfo, optional
        Filled with what was done.

    Returns
    -------
    np.ndarray
        ``segs``: uint8 labels of the image's spatial shape ``(D, H, W)`` / ``(H, W)``
        (uint16 only beyond 255 objects).

    Raises
    ------
    ValueError
        Malformed inputs (naming the file and member), or nothing to prompt with.
    UnsupportedPromptError
        A prompt kind the backend cannot serve (checked before any work).
    """
    case = inputs if isinstance(inputs, Case) else read_cvpr_members(inputs, source if source is not None
                                                                     else "<input>")
    shape = case.image.spatial_shape
    mode, prompts = object_prompts(case, backend)
    if mode == "text":  # [text helper] free text -> the backend's label ids (backends may not import the engine)
        from ..engine.vocab import attach_vocabulary

        attach_vocabulary(backend)
    prev = case.labels.get("prev_pred")
    inf = info if info is not None else PredictInfo()
    inf.mode = mode
    # [joint hook] a backend with `predict_labels` predicts every object of the step at once
    # and merges them itself (backends.joint); the per-object path is skipped
    joint = getattr(backend, "predict_labels", None)
    if callable(joint) and mode != "text":
        for ps in prompts.values():
            for p in ps:
                validate_prompt(p, shape)
            check_capabilities(backend, ps)
        backend.set_image(case.image)
        segs = np.asarray(joint(prompts, prev if mode == "clicks" else None, cancel or CancelToken()))
        if segs.shape != shape:
            raise ValueError(f"backend {getattr(backend, 'name', backend)!r} returned labels of shape {segs.shape}; "
                             f"expected {shape}")
        inf.predicted = list(prompts)
        max_label = max([int(prev.max()) if prev is not None and prev.size else 0] + list(prompts))
        return segs.astype(label_dtype_for(max_label), copy=False)
    masks = predict_masks(case.image, prompts, backend, prev=prev if mode == "clicks" else None, cancel=cancel,
                          progress=progress, info=inf)

    # [text helper] text task, instance classes (instance_label=1): one label per connected component
    inst_labels = [lab for lab, ps in prompts.items() if any(isinstance(p, TextPrompt) and p.instance for p in ps)]
    if mode == "text" and inst_labels:
        from .text_eval import text_masks_to_segs

        return text_masks_to_segs(masks, inst_labels, shape)
    return merge_masks(masks, shape, prev=prev, prompts=prompts if mode == "clicks" else None, info=inf)
