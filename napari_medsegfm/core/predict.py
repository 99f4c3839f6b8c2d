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

Objects are predicted independently and merged with
:func:`~napari_medsegfm.core.postprocess.merge_object_mask`: larger objects are
written first and smaller ones may overwrite them (a small organ inside a big box
keeps its voxels; nested classes keep their core); objects of ``prev_pred`` that got
no click this step (the protocol clicks every class with an error) keep all their
voxels; every foreground click keeps its voxel for its own object.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..backends.base import UnsupportedPromptError, capability_names, check_capabilities
from ..types import (
    Box2D,
    Box3D,
    CancelToken,
    Capability,
    Point,
    Prompt,
    TextPrompt,
    Volume,
    validate_prompt,
)
from .postprocess import bbox_of, label_dtype_for, merge_object_mask

__all__ = [
    "volume_from_inputs",
    "parse_boxes",
    "parse_clicks",
    "parse_text_prompts",
    "object_prompts",
    "predict_case",
    "PredictInfo",
]

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------ parsing
def _unwrap(value: Any) -> Any:
    """0-d object arrays (pickled dicts) -> the object; other arrays stay arrays."""
    if isinstance(value, np.ndarray) and value.dtype == object and value.ndim == 0:
        return value.item()
    return value


def volume_from_inputs(inputs: Mapping[str, Any]) -> Volume:
    """The image of an npz as a :class:`Volume` (spacing converted to array order).

    ``imgs`` of shape ``(H, W, 3)`` with no 3-value spacing is a 2D RGB image;
    ``(D, H, W)`` is a volume whose npz spacing ``(x, y, z)`` becomes ``(z, y, x)``.
    """
    if "imgs" not in inputs:
        raise ValueError(f"input has no 'imgs' member (members: {', '.join(sorted(inputs))})")
    img = np.asarray(inputs["imgs"])
    sp = inputs.get("spacing")
    sp_arr = None if sp is None else np.asarray(sp, dtype=float).ravel()
    if img.ndim == 3 and img.shape[-1] in (3, 4) and (sp_arr is None or sp_arr.size != 3):
        spacing = (1.0, 1.0) if sp_arr is None or sp_arr.size < 2 else (float(sp_arr[1]), float(sp_arr[0]))
        return Volume.rgb(img[..., :3], spacing=spacing)
    if img.ndim == 3:
        if sp_arr is None or sp_arr.size != 3:
            log.warning("3D input without a 3-value spacing (%s); assuming 1 mm voxels", sp)
            spacing3 = (1.0, 1.0, 1.0)
        else:
            spacing3 = (float(sp_arr[2]), float(sp_arr[1]), float(sp_arr[0]))
        return Volume(img, spacing=spacing3)
    if img.ndim == 2:
        spacing = (1.0, 1.0) if sp_arr is None or sp_arr.size < 2 else (float(sp_arr[1]), float(sp_arr[0]))
        return Volume(img, spacing=spacing)
    raise ValueError(f"'imgs' has shape {img.shape}; expected (D, H, W), (H, W, 3) or (H, W)")


def _clip(v: int, hi: int) -> int:
    return int(min(max(int(v), 0), hi - 1))


def parse_boxes(boxes: Any, shape: tuple[int, ...]) -> list[Box3D | Box2D]:
    """Boxes of an npz as prompts, ``boxes[i]`` for label ``i + 1``, clipped to ``shape``.

    Parameters
    ----------
    boxes : sequence of dict, or array (N, 6) / (N, 4)
        See the module docstring.
    shape : tuple of int
        Spatial shape ``(D, H, W)`` or ``(H, W)``.
    """
    boxes = _unwrap(boxes)
    if boxes is None:
        return []
    if isinstance(boxes, np.ndarray) and boxes.dtype != object:
        arr = np.asarray(boxes)
        if arr.size == 0:
            return []
        if arr.ndim == 1:
            arr = arr[None, :]
        out: list[Box3D | Box2D] = []
        for i, row in enumerate(arr.astype(np.int64)):
            if row.size == 6 and len(shape) == 3:
                x0, y0, z0, x1, y1, z1 = (int(v) for v in row)
                d, h, w = shape
                out.append(Box3D(_clip(min(z0, z1), d), _clip(max(z0, z1), d), _clip(min(y0, y1), h),
                                 _clip(min(x0, x1), w), _clip(max(y0, y1), h), _clip(max(x0, x1), w),
                                 object_id=i + 1))
            elif row.size == 4 and len(shape) == 2:
                x0, y0, x1, y1 = (int(v) for v in row)
                h, w = shape
                out.append(Box2D(_clip(min(y0, y1), h), _clip(min(x0, x1), w), _clip(max(y0, y1), h),
                                 _clip(max(x0, x1), w), object_id=i + 1))
            else:
                raise ValueError(
                    f"boxes row {i} has {row.size} values for an image of spatial shape {shape}; "
                    "expected 6 [x_min, y_min, z_min, x_max, y_max, z_max] for 3D or "
                    "4 [x_min, y_min, x_max, y_max] for 2D"
                )
        return out
    seq = list(boxes)
    out = []
    for i, b in enumerate(seq):
        if not isinstance(b, Mapping):
            raise ValueError(f"boxes[{i}] is {type(b).__name__}; expected a dict with z_min, z_max, z_mid_x_min, ...")
        need = ("z_min", "z_max", "z_mid_x_min", "z_mid_y_min", "z_mid_x_max", "z_mid_y_max")
        missing = [k for k in need if k not in b]
        if missing:
            raise ValueError(f"boxes[{i}] lacks {', '.join(missing)}")
        if len(shape) != 3:
            raise ValueError(f"boxes[{i}] is a 3D box dict but the image has spatial shape {shape}")
        d, h, w = shape
        z0, z1 = sorted((_clip(b["z_min"], d), _clip(b["z_max"], d)))
        zm = b.get("z_mid")
        zm = None if zm is None else min(max(_clip(zm, d), z0), z1)
        y0, y1 = sorted((_clip(b["z_mid_y_min"], h), _clip(b["z_mid_y_max"], h)))
        x0, x1 = sorted((_clip(b["z_mid_x_min"], w), _clip(b["z_mid_x_max"], w)))
        out.append(Box3D(z0, z1, y0, x0, y1, x1, object_id=i + 1, z_mid=zm))
    return out


def _order_list(clicks_order: Any, i: int) -> list[str] | None:
    if clicks_order is None:
        return None
    co = _unwrap(clicks_order)
    try:
        entry = co[i]
    except (IndexError, KeyError, TypeError):
        return None
    if entry is None:
        return []
    if isinstance(entry, str):
        return [entry]
    return [str(v) for v in np.asarray(entry, dtype=object).ravel().tolist() if v is not None and str(v)]


def parse_clicks(clicks: Any, clicks_order: Any, ndim: int) -> dict[int, list[Point]]:
    """Clicks of an npz as points per label (``clicks[i]`` -> label ``i + 1``), oldest first.

    ``clicks_order[i]`` gives the chronology (``'fg'``/``'bg'``); without it the
    foreground clicks are taken to come first.
    """
    clicks = _unwrap(clicks)
    if clicks is None:
        return {}
    out: dict[int, list[Point]] = {}
    for i, c in enumerate(list(clicks)):
        c = _unwrap(c)
        if c is None:
            continue
        if not isinstance(c, Mapping):
            raise ValueError(f"clicks[{i}] is {type(c).__name__}; expected a dict with 'fg' and 'bg' lists")
        lists = {}
        for kind in ("fg", "bg"):
            pts = c.get(kind, [])
            arr = np.asarray(pts if pts is not None else [], dtype=np.int64)
            if arr.size == 0:
                arr = arr.reshape(0, ndim)
            if arr.ndim == 1:
                arr = arr[None, :]
            if arr.shape[1] != ndim:
                raise ValueError(f"clicks[{i}]['{kind}'] has coordinates of length {arr.shape[1]}; expected {ndim}")
            lists[kind] = [tuple(int(v) for v in row) for row in arr]
        order = _order_list(clicks_order, i)
        n_fg, n_bg = len(lists["fg"]), len(lists["bg"])
        if not order or sorted(order) != sorted(["fg"] * n_fg + ["bg"] * n_bg):
            if order:
                log.warning("clicks_order[%d] %s does not match %d fg / %d bg clicks; using fg first",
                            i, order, n_fg, n_bg)
            order = ["fg"] * n_fg + ["bg"] * n_bg
        it = {"fg": iter(lists["fg"]), "bg": iter(lists["bg"])}
        pts_out = [Point(next(it[k]), positive=(k == "fg"), object_id=i + 1) for k in order]
        if pts_out:
            out[i + 1] = pts_out
    return out


def parse_text_prompts(text_prompts: Any) -> list[TextPrompt]:
    """``{"1": text, ..., "instance_label": 0|1}`` -> one :class:`TextPrompt` per label."""
    tp = _unwrap(text_prompts)
    if tp is None:
        return []
    if not isinstance(tp, Mapping):
        raise ValueError(f"text_prompts is {type(tp).__name__}; expected a dict {{'1': text, ...}}")
    inst = bool(int(tp.get("instance_label", 0) or 0))
    out = []
    for k, v in tp.items():
        if k == "instance_label":
            continue
        try:
            lab = int(k)
        except (TypeError, ValueError):
            raise ValueError(f"text_prompts key {k!r} is not a label number") from None
        out.append(TextPrompt(str(v), instance=inst, object_id=lab))
    return sorted(out, key=lambda p: p.object_id)


# ---------------------------------------------------------------------- prediction
@dataclass
class PredictInfo:
    """What :func:`predict_case` did (for logs and the evaluator)."""

    mode: str = ""  # "boxes" | "clicks" | "text"
    predicted: list[int] = field(default_factory=list)  # labels re-predicted this step
    kept: list[int] = field(default_factory=list)  # labels copied from prev_pred
    seconds: dict[int, float] = field(default_factory=dict)


def object_prompts(inputs: Mapping[str, Any], volume: Volume, backend: Any = None
                   ) -> tuple[str, dict[int, list[Prompt]]]:
    """Which objects to predict this step and with what prompts.

    Returns
    -------
    mode, prompts
        ``mode`` is ``"clicks"`` (objects with clicks, each with its box if any,
        then its points oldest first), ``"boxes"`` (one box per object) or
        ``"text"``; ``prompts`` maps label -> prompts.
    """
    shape = volume.spatial_shape
    boxes = parse_boxes(inputs.get("boxes"), shape) if "boxes" in inputs else []
    clicks = parse_clicks(inputs.get("clicks"), inputs.get("clicks_order"), len(shape)) if "clicks" in inputs else {}
    box_of = {b.object_id: b for b in boxes}
    if clicks:
        return "clicks", {lab: ([box_of[lab]] if lab in box_of else []) + pts for lab, pts in sorted(clicks.items())}
    if boxes:
        return "boxes", {b.object_id: [b] for b in boxes}
    texts = parse_text_prompts(inputs.get("text_prompts")) if "text_prompts" in inputs else []
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


def predict_case(
    inputs: Mapping[str, Any],
    backend: Any,
    *,
    cancel: CancelToken | None = None,
    progress: Callable[[int, int], None] | None = None,
    info: PredictInfo | None = None,
) -> np.ndarray:
    """Run one challenge step: predict every prompted object and merge them.

    Parameters
    ----------
    inputs : mapping
        npz members (see the module docstring); pickled members may be 0-d object
        arrays or plain Python objects.
    backend : SegmentationBackend
        Receives ``set_image`` once, then one ``predict`` per object.
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
        Malformed inputs, or nothing to prompt with.
    UnsupportedPromptError
        A prompt kind the backend cannot serve (checked before any work).
    """
    cancel = cancel or CancelToken()
    volume = volume_from_inputs(inputs)
    shape = volume.spatial_shape
    mode, prompts = object_prompts(inputs, volume, backend)
    if mode == "text":  # [text helper] free text -> the backend's label ids (backends may not import core)
        from .vocab import attach_vocabulary

        attach_vocabulary(backend)
    for ps in prompts.values():
        for p in ps:
            validate_prompt(p, shape)
        check_capabilities(backend, ps)

    prev = inputs.get("prev_pred")
    prev = None if prev is None else np.asarray(prev)
    if prev is not None and prev.shape != shape:
        raise ValueError(f"prev_pred has shape {prev.shape}; expected the image's spatial shape {shape}")

    max_label = max([int(prev.max()) if prev is not None and prev.size else 0] + list(prompts))
    dtype = label_dtype_for(max_label)
    if dtype != np.uint8:
        log.warning("%d labels do not fit uint8; writing %s", max_label, dtype)

    backend.set_image(volume)
    masks: dict[int, np.ndarray] = {}
    inf = info if info is not None else PredictInfo()
    inf.mode = mode
    # [joint hook] a backend with `predict_labels` predicts every object of the step at once
    # and merges them itself (backends.joint); the per-object loop below is skipped
    joint = getattr(backend, "predict_labels", None)
    if callable(joint) and mode != "text":
        segs = np.asarray(joint(prompts, prev, cancel))
        if segs.shape != shape:
            raise ValueError(f"backend {getattr(backend, 'name', backend)!r} returned labels of shape {segs.shape}; "
                             f"expected {shape}")
        inf.predicted = list(prompts)
        return segs.astype(dtype, copy=False)
    n = len(prompts)
    for k, (lab, ps) in enumerate(prompts.items()):
        cancel.check()
        prev_mask = None
        if mode == "clicks" and prev is not None:
            prev_mask = prev == lab
        t0 = time.perf_counter()
        m = np.asarray(backend.predict(ps, prev_mask, cancel), dtype=bool)
        inf.seconds[lab] = time.perf_counter() - t0
        if m.shape != shape:
            raise ValueError(f"backend {getattr(backend, 'name', backend)!r} returned a mask of shape {m.shape}; expected {shape}")
        masks[lab] = m
        inf.predicted.append(lab)
        if progress is not None:
            progress(k + 1, n)

    # [text helper] text task, instance classes (instance_label=1): one label per connected component
    inst_labels = [lab for lab, ps in prompts.items() if any(isinstance(p, TextPrompt) and p.instance for p in ps)]
    if mode == "text" and inst_labels:
        from .text_eval import text_masks_to_segs

        return text_masks_to_segs(masks, inst_labels, shape)

    # objects of prev_pred that were not re-predicted keep their region
    if prev is not None:
        for lab in np.unique(prev):
            lab = int(lab)
            if lab != 0 and lab not in masks:
                masks[lab] = prev == lab
                inf.kept.append(lab)

    segs = np.zeros(shape, dtype=dtype)
    # re-predicted objects: larger first, smaller on top (ties: lower label first, so
    # deterministic); then the objects kept from prev_pred, which got no click because
    # they needed none, on top of everything so a neighbour's refinement cannot eat them
    kept = set(inf.kept)
    order = sorted((lab for lab in masks if lab not in kept), key=lambda lab: (-int(np.count_nonzero(masks[lab])), lab))
    order += sorted(kept)
    for lab in order:
        roi = bbox_of(masks[lab])
        if roi is not None:  # segs holds no `lab` yet: the mask's box bounds every change
            merge_object_mask(segs, masks[lab], lab, overwrite=True, roi=roi)
    # a foreground click keeps its voxel for its own object
    if mode == "clicks":
        for lab in order:
            for p in prompts.get(lab, []):
                if isinstance(p, Point) and p.positive and masks[lab][p.zyx]:
                    segs[p.zyx] = lab
    return segs
