"""Slice-by-slice 3D logic on top of a 2D box segmenter (model-agnostic).

Everything here works through a small :class:`SliceSegmenter` protocol, so it is tested
with an oracle segmenter (no weights) and used with LiteMedSAM by the backend.

Conventions: a 2D box is ``(y_min, x_min, y_max, x_max)``, inclusive pixel indices;
masks are bool ``(Z, Y, X)`` volumes, slices ``(Y, X)``.

Box step (:func:`segment_box3d`): segment the box's mid slice from its box, then walk
towards ``z_max`` and ``z_min``. Each slice is prompted by the bounding box of the
neighbour's mask grown by a margin; a second candidate uses a box that remembers the
neighbour's own box (``box_memory``), and the one the model rates higher wins - this
keeps the box from collapsing when the model under-segments a few slices in a row.
The walk stops at the box limits or when the object vanishes (an empty result is
retried once with the neighbour's tight box); a sudden area jump is treated as a leak.

Clicks (:func:`.clicks.refine_with_click`). LiteMedSAM was trained with boxes only: point
prompts barely move its masks and often hurt, so the model is only ever prompted with
boxes and the clicks act as constraints and as evidence of where the error is:

* boundary clicks (near the mask edge): the slice is re-segmented with boxes corrected
  by the click; the candidate closest to the locally edited mask wins, and only if the
  change is the click's own (one connected region through the click);
* a positive click far from the mask marks a missed part: it is segmented from boxes of
  several sizes around the click, added, and followed to the neighbouring slices;
* a deep negative click cuts the wrong part off at the mask's narrowest neck
  (watershed of the distance map) on its slice and the neighbours that share it;
* a negative click on a separate wrong component removes that component;
* after a slice changed, neighbours are re-segmented while they share the clicked
  error at the click's (y, x), the new mask fixes it there and continues the corrected
  slice at least as well as the old one; the first slice that fails ends the walk, so
  slices the click does not concern stay as they were.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from scipy import ndimage

from ...types import CancelToken

__all__ = [
    "Box2",
    "SlicePoint",
    "SliceSegmenter",
    "PropagationParams",
    "bbox2d",
    "grow_box",
    "dice",
    "segment_slice_from_point",
    "propagate",
    "segment_box3d",
]

log = logging.getLogger(__name__)

Box2 = tuple[int, int, int, int]


@dataclass(frozen=True)
class SlicePoint:
    """A click on one slice.

    Parameters
    ----------
    y, x : int
        Row and column (pixels).
    positive : bool
        Foreground (True) or background click.
    """

    y: int
    x: int
    positive: bool = True


class SliceSegmenter(Protocol):
    """What the 3D logic needs from a 2D model."""

    shape: tuple[int, int, int]  # (Z, Y, X)

    def segment(self, z: int, box: Box2 | None, points: Sequence[SlicePoint]) -> tuple[np.ndarray, float]:
        """Bool mask ``(Y, X)`` of slice ``z`` and the model's quality estimate in ``[0, 1]``.

        Parameters
        ----------
        z : int
            Slice index (axis 0 of ``(Z, Y, X)``).
        box : (y0, x0, y1, x1) or None
            Inclusive box in pixels; ``None``: points only.
        points : sequence of SlicePoint
            Clicks on this slice.
        """

    def prefetch(self, zs: Sequence[int], cancel: CancelToken) -> None:
        """Prepare slices ``zs`` (e.g. encode them in one batch).

        Parameters
        ----------
        zs : sequence of int
            Slice indices.
        cancel : CancelToken
            Checked between batches.
        """

    # optional: ``segment_many(z, boxes, points) -> [(mask, quality), ...]``, several boxes
    # in one model call (used for the two candidate boxes of a propagation step)


@dataclass
class PropagationParams:
    """Tuning of the slice-by-slice logic.

    Parameters
    ----------
    margin : float
        Growth of a box derived from a neighbour's mask, in model-input pixels (256 frame);
        the released LiteMedSAM pipeline uses 3.
    agree : float
        During re-propagation after a click, a slice whose new mask has at least this Dice
        with the previous mask ends the walk (the rest is left alone).
    prefetch : int
        Slices prepared ahead in the walking direction (encoder batch).
    keep_largest : bool
        Keep only the 2D components that overlap the prompt box's core (drops far fragments).
    max_growth : float
        A slice whose mask area exceeds ``max_growth`` times its neighbour's (plus a small
        allowance) is treated as a leak: re-segmented with the neighbour's tight box, and
        the walk stops there if the leak persists.
    box_memory : float
        Weight of the box used on the neighbour slice in the next slice's box (the rest
        comes from the neighbour's mask box grown by ``margin``): keeps the box from
        collapsing when the model under-segments a few slices in a row.
    accept : float
        A re-segmentation of a clicked slice is used when its Dice with the locally edited
        previous mask reaches this value; otherwise the local edit itself is used.
    consistency : bool
        During re-propagation, stop where the old mask continues the corrected neighbour
        slice better (Dice) than the new one.
    local : bool
        A click close to the mask border (within ``local_depth`` x margin) may only change
        the mask near the click.
    local_depth : float
        In margins: how far from the mask a positive click counts as a missed part (segmented
        from the click and added) rather than a border correction.
    model_points : bool
        Pass clicks to the model together with a box (LiteMedSAM's point prompts tend to hurt,
        so by default only boxes are decoded).
    dual_box : bool
        Decode both the neighbour-derived box and the remembered box and keep the better one.
    dual_margin : float
        The remembered box wins only when its quality estimate is higher by this much.
    split_deep : bool
        A negative click deep inside a slice's mask cuts the click's part off at the narrowest
        neck (watershed) instead of re-segmenting.
    """

    margin: float = 3.0
    agree: float = 0.95
    prefetch: int = 1
    keep_largest: bool = True
    max_growth: float = 2.5
    box_memory: float = 0.85
    accept: float = 0.6
    consistency: bool = True
    local: bool = True
    local_depth: float = 2.0
    model_points: bool = False
    dual_box: bool = True
    dual_margin: float = 0.02
    split_deep: bool = True


# ----------------------------------------------------------------------------- helpers
def bbox2d(mask: np.ndarray) -> Box2 | None:
    """Tight inclusive box of a 2D bool mask.

    Parameters
    ----------
    mask : np.ndarray
        ``(Y, X)`` bool.

    Returns
    -------
    (y0, x0, y1, x1) or None
        Inclusive pixel indices; ``None`` when the mask is empty.
    """
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(cols[0]), int(rows[-1]), int(cols[-1])


def grow_box(box: Box2, margin: float, shape: tuple[int, int]) -> Box2:
    """Grow ``box`` by ``margin`` pixels on every side, clipped to ``shape``.

    Parameters
    ----------
    box : (y0, x0, y1, x1)
        Inclusive pixel indices.
    margin : float
        Pixels (rounded).
    shape : (Y, X)
        The slice's shape.

    Returns
    -------
    (y0, x0, y1, x1)
    """
    m = int(round(margin))
    y0, x0, y1, x1 = box
    return max(y0 - m, 0), max(x0 - m, 0), min(y1 + m, shape[0] - 1), min(x1 + m, shape[1] - 1)


def union_box(a: Box2 | None, b: Box2 | None) -> Box2 | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two bool arrays (1.0 when both are empty).

    Parameters
    ----------
    a, b : np.ndarray
        Bool arrays of one shape.

    Returns
    -------
    float
        In ``[0, 1]``.
    """
    sa, sb = int(np.count_nonzero(a)), int(np.count_nonzero(b))
    if sa + sb == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(a & b)) / (sa + sb)


def _margin_px(params: PropagationParams, shape2: tuple[int, int]) -> float:
    return params.margin * max(shape2) / 256.0


def _plausible(new: np.ndarray, old: np.ndarray, grow: bool, budget: float) -> bool:
    """Whether ``new`` is a bounded correction of ``old`` in the click's direction.

    A positive correction keeps at least 85 % of ``old`` and adds at most
    ``2 * budget + old / 4`` pixels; a negative one stays (85 %) inside ``old`` and
    removes at most ``2 * budget + old / 10`` pixels. ``budget`` is the size of the
    change the click itself justified (pixels).
    """
    a_new, a_old = int(np.count_nonzero(new)), int(np.count_nonzero(old))
    inter = int(np.count_nonzero(new & old))
    if grow:
        return inter >= 0.85 * a_old and a_new - inter <= 2 * budget + 0.25 * a_old + 16
    return inter >= 0.85 * a_new and a_old - inter <= 2 * budget + 0.1 * a_old + 16


def _local_change(new: np.ndarray, old: np.ndarray, yx: tuple[int, int], grow: bool, frac: float = 0.7) -> bool:
    """Whether the change from ``old`` to ``new`` is the click's own correction.

    Most (``frac``) of the added (``grow``) or removed pixels must form one connected
    region through the click's ``(y, x)``, and the other direction may change at most
    10 % of the mask: a click justifies fixing its error region, not edits elsewhere.
    """
    diff = (new & ~old) if grow else (old & ~new)
    back = (old & ~new) if grow else (new & ~old)
    n_diff = int(np.count_nonzero(diff))
    if n_diff == 0 or not diff[yx]:
        return False
    lab, _ = ndimage.label(diff, structure=np.ones((3, 3), bool))
    own = int(np.count_nonzero(lab == lab[yx]))
    ref = old if grow else new
    return own >= frac * n_diff and np.count_nonzero(back) <= 0.1 * np.count_nonzero(ref) + 16


def _keep_near_box(mask: np.ndarray, box: Box2 | None, points: Sequence[SlicePoint]) -> np.ndarray:
    """Keep the components of ``mask`` that hold the largest part or a positive point.

    Components smaller than 20 % of the largest one that touch no positive click are dropped.
    """
    lab, n = ndimage.label(mask)
    if n <= 1:
        return mask
    sizes = np.bincount(lab.ravel())[1:]
    keep = sizes >= 0.2 * sizes.max()
    for p in points:
        if p.positive and lab[p.y, p.x] > 0:
            keep[lab[p.y, p.x] - 1] = True
    return keep[lab - 1] & (lab > 0)


def _points_on(points_by_z: dict[int, list[SlicePoint]], z: int) -> list[SlicePoint]:
    return points_by_z.get(z, [])


# ------------------------------------------------------------------------ 2D primitives
def _segment(seg: SliceSegmenter, z: int, box: Box2 | None, points: Sequence[SlicePoint],
             params: PropagationParams) -> tuple[np.ndarray, float]:
    if not params.model_points and box is not None:
        points = ()
    m, q = seg.segment(z, box, points)
    m = np.asarray(m, dtype=bool)
    if params.keep_largest and m.any():
        m = _keep_near_box(m, box, points)
    return m, q


def _segment_pair(seg: SliceSegmenter, z: int, box: Box2, box2: Box2, points: Sequence[SlicePoint],
                  params: PropagationParams) -> tuple[tuple[np.ndarray, float], tuple[np.ndarray, float]]:
    """:func:`_segment` for two boxes; one batched model call when the segmenter offers ``segment_many``."""
    many = getattr(seg, "segment_many", None)
    if many is None:
        return _segment(seg, z, box, points, params), _segment(seg, z, box2, points, params)
    if not params.model_points:
        points = ()
    out = []
    for m, q in many(z, [box, box2], points):
        m = np.asarray(m, dtype=bool)
        if params.keep_largest and m.any():
            m = _keep_near_box(m, None, points)
        out.append((m, q))
    return out[0], out[1]


def segment_slice_from_point(seg: SliceSegmenter, z: int, point: SlicePoint, points: Sequence[SlicePoint],
                             params: PropagationParams, sizes256: Iterable[float] = (5, 10, 20, 32, 48, 72, 100),
                             max_area: float | None = None) -> np.ndarray:
    """Segment an object known only by a positive click: try boxes of several sizes around it.

    Each candidate box (half-size ``s`` in the 256 frame, centred on the click) is
    decoded (boxes only: LiteMedSAM's point prompts tend to hurt); a candidate must
    contain the click and stay under ``max_area`` pixels. The score is the model's
    quality estimate, lowered when the mask touches three or four sides of its box (box
    too small) or is tiny against the box (box too large).

    Parameters
    ----------
    seg : SliceSegmenter
        The model on the current image (``shape`` ``(Z, Y, X)``).
    z : int
        The slice.
    point : SlicePoint
        The positive click.
    points : sequence of SlicePoint
        Every click on the slice.
    params : PropagationParams
        Tuning.
    sizes256 : iterable of float
        Candidate half-sizes in pixels of the 256 frame.
    max_area : float, optional
        Largest acceptable mask, in pixels.

    Returns
    -------
    np.ndarray
        ``(Y, X)`` bool, the best candidate (possibly empty).
    """
    _, H, W = seg.shape
    f = max(H, W) / 256.0
    best, best_score = np.zeros((H, W), dtype=bool), -np.inf
    for s in sizes256:
        r = s * f
        box = grow_box((point.y, point.x, point.y, point.x), r, (H, W))
        m, q = _segment(seg, z, box, points, params)
        if not m[point.y, point.x]:
            continue
        bb = bbox2d(m)
        assert bb is not None
        by, bx = box[2] - box[0] + 1, box[3] - box[1] + 1
        my, mx = bb[2] - bb[0] + 1, bb[3] - bb[1] + 1
        touch = sum((bb[0] <= box[0] + 1 and box[0] > 0, bb[1] <= box[1] + 1 and box[1] > 0,
                     bb[2] >= box[2] - 1 and box[2] < H - 1, bb[3] >= box[3] - 1 and box[3] < W - 1))
        fill = (my * mx) / float(by * bx)
        if max_area is not None and np.count_nonzero(m) > max_area:
            continue
        score = q - (0.3 if touch >= 3 else 0.02 * touch) - (0.3 if fill < 0.15 else 0.0)
        log.debug("point init z=%d s=%s q=%.3f touch=%d fill=%.2f score=%.3f", z, s, q, touch, fill, score)
        if score > best_score:
            best, best_score = m, score
    return best


# ----------------------------------------------------------------------------- 3D walk
def propagate(
    seg: SliceSegmenter,
    out: np.ndarray,
    start: int,
    step: int,
    limit: int,
    points_by_z: dict[int, list[SlicePoint]],
    cancel: CancelToken,
    params: PropagationParams,
    *,
    ref: np.ndarray | None = None,
    anchors: frozenset[int] = frozenset(),
    start_box: Box2 | None = None,
    grow: bool = True,
    click_yx: tuple[int, int] | None = None,
    budget: float = np.inf,
    local: bool = False,
) -> list[int]:
    """Walk from slice ``start`` (already segmented in ``out``) towards ``limit`` (inclusive).

    Parameters
    ----------
    out : (Z, Y, X) bool, modified in place
    step : +1 or -1
    ref : the previous mask during a re-propagation; the walk stops on the first slice
        whose new mask agrees with it (Dice >= ``params.agree``) and at slices in
        ``anchors`` (slices the user corrected with clicks), leaving them as in ``out``.

    Returns
    -------
    list of int
        Slices written.
    """
    Z, H, W = out.shape
    margin = _margin_px(params, (H, W))
    written: list[int] = []
    prev = out[start]
    last_box: Box2 | None = start_box
    z = start + step

    def inside(v: int) -> bool:
        return (v <= limit) if step > 0 else (v >= limit)

    while 0 <= z < Z and inside(z):
        cancel.check()
        if ref is not None and z in anchors:
            break
        tight = bbox2d(prev)
        if tight is None:
            break
        ahead = [v for v in range(z, z + step * params.prefetch, step) if 0 <= v < Z and inside(v)]
        seg.prefetch(ahead, cancel)
        pts = _points_on(points_by_z, z)
        box = grow_box(tight, margin, (H, W))
        if ref is not None and grow and ref[z].any():
            box = union_box(box, grow_box(bbox2d(ref[z]), margin, (H, W)))  # type: ignore[arg-type,assignment]
        mem_box = None
        if last_box is not None and params.box_memory > 0:
            lam = params.box_memory
            mem_box = tuple(int(round(lam * a + (1 - lam) * b)) for a, b in zip(last_box, box))
        if mem_box is not None and not params.dual_box:
            box = mem_box  # type: ignore[assignment]
        if mem_box is not None and params.dual_box and mem_box != box:
            (m, q), (m2, q2) = _segment_pair(seg, z, box, mem_box, pts, params)  # type: ignore[arg-type]
            if q2 > q + params.dual_margin:
                m, q, box = m2, q2, mem_box  # type: ignore[assignment]
        else:
            m, q = _segment(seg, z, box, pts, params)
        area_prev = int(np.count_nonzero(prev))
        grown = m.any() and np.count_nonzero(m) > params.max_growth * area_prev + 16 * (max(H, W) / 256.0) ** 2
        if not m.any() or grown:
            m2, _ = _segment(seg, z, tight, pts, params)
            if grown and (not m2.any() or np.count_nonzero(m2) > params.max_growth * area_prev + 16):
                m2 = m2 & ndimage.binary_dilation(prev, iterations=max(1, int(round(margin))))
            m = m2
        if not m.any():
            if ref is not None and ref[z].any():
                break  # the old mask continues the corrected neighbour better than nothing
            # the object ended: clear what a previous mask had beyond this slice
            v = z
            while 0 <= v < Z and inside(v):
                if ref is not None and v in anchors:
                    break
                if out[v].any():
                    out[v] = False
                    written.append(v)
                v += step
            break
        if ref is not None and click_yx is not None:
            # re-propagation: a neighbour takes the new mask only while it shares the
            # clicked error at the click's (y, x), the new mask fixes it there, and the new
            # mask continues the corrected slice at least as well as the old one; the
            # first slice that fails ends the walk, leaving the rest as it was
            cy, cx = click_yx
            if bool(ref[z, cy, cx]) == grow or bool(m[cy, cx]) != grow:
                break
            if local and ref[z].any() and not _local_change(m, ref[z], (cy, cx), grow):
                break
            if dice(m, ref[z]) >= params.agree:
                break
            if params.consistency and ref[z].any() and dice(ref[z], prev) > dice(m, prev):
                break
            if not grow and ref[z].any() and not _plausible(m, ref[z], grow, budget):
                break
        out[z] = m
        written.append(z)
        prev = m
        last_box = box
        z += step
    return written


def segment_box3d(
    seg: SliceSegmenter,
    box: tuple[int, int, int, int, int, int],
    z_mid: int,
    points_by_z: dict[int, list[SlicePoint]],
    cancel: CancelToken,
    params: PropagationParams,
) -> np.ndarray:
    """Box step: segment the box's mid slice, then propagate up and down to its z range.

    Parameters
    ----------
    seg : SliceSegmenter
        The model on the current image (``shape`` ``(Z, Y, X)``).
    box : (z_min, z_max, y_min, x_min, y_max, x_max)
        Inclusive voxel indices.
    z_mid : int
        The slice the rectangle was drawn on.
    points_by_z : dict of int to list of SlicePoint
        Clicks per slice.
    cancel : CancelToken
        Checked between slices.
    params : PropagationParams
        Tuning.

    Returns
    -------
    np.ndarray
        ``(Z, Y, X)`` bool, empty outside ``z_min..z_max``.
    """
    Z, H, W = seg.shape
    z0, z1, y0, x0, y1, x1 = box
    out = np.zeros((Z, H, W), dtype=bool)
    ahead = list(range(z_mid, min(z1, z_mid + params.prefetch - 1) + 1))
    seg.prefetch(ahead, cancel)
    m, _ = _segment(seg, z_mid, (y0, x0, y1, x1), _points_on(points_by_z, z_mid), params)
    out[z_mid] = m
    propagate(seg, out, z_mid, +1, z1, points_by_z, cancel, params, start_box=(y0, x0, y1, x1))
    propagate(seg, out, z_mid, -1, z0, points_by_z, cancel, params, start_box=(y0, x0, y1, x1))
    return out
