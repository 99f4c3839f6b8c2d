"""Click refinement of a LiteMedSAM mask: where a click falls, the slice is re-segmented and
the change is carried to the neighbouring slices while they keep changing.

Masks are ``(Z, Y, X)`` bool arrays, clicks are :class:`~.propagate.SlicePoint` values
(slice ``z``, pixel ``(y, x)``); the 2D work goes through a
:class:`~.propagate.SliceSegmenter`, as in :mod:`~.propagate`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from ...types import CancelToken
from .propagate import (
    Box2,
    PropagationParams,
    SlicePoint,
    SliceSegmenter,
    _local_change,
    _margin_px,
    _plausible,
    _points_on,
    _segment,
    bbox2d,
    dice,
    grow_box,
    propagate,
    segment_slice_from_point,
    union_box,
)

__all__ = ["refine_with_click"]

log = logging.getLogger("napari_medsegfm.backends.litemedsam.propagate")


def _nearest_nonempty(mask: np.ndarray, z: int) -> int | None:
    zs = np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1))
    if zs.size == 0:
        return None
    return int(zs[np.argmin(np.abs(zs - z))])


def _shrink_away(box: Box2, p: SlicePoint, keep_frac: float = 0.5) -> Box2 | None:
    """Move the box side nearest to ``p`` just past it, if the box keeps ``keep_frac`` of its extent."""
    y0, x0, y1, x1 = box
    cands = [
        (p.y - y0, (p.y + 1, x0, y1, x1)),
        (y1 - p.y, (y0, x0, p.y - 1, x1)),
        (p.x - x0, (y0, p.x + 1, y1, x1)),
        (x1 - p.x, (y0, x0, y1, p.x - 1)),
    ]
    cands.sort(key=lambda c: c[0])
    h, w = y1 - y0 + 1, x1 - x0 + 1
    for _, b in cands:
        if b[2] < b[0] or b[3] < b[1]:
            continue
        nh, nw = b[2] - b[0] + 1, b[3] - b[1] + 1
        if nh >= keep_frac * h and nw >= keep_frac * w:
            return b
    return None


def _disc(shape: tuple[int, int], p: SlicePoint, r: float) -> np.ndarray:
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    return (yy - p.y) ** 2 + (xx - p.x) ** 2 <= r * r


def _satisfies(m: np.ndarray, pts: Sequence[SlicePoint]) -> bool:
    return all(bool(m[q.y, q.x]) == q.positive for q in pts)


def _enforce(m: np.ndarray, pts: Sequence[SlicePoint], r: float) -> np.ndarray:
    """Make ``m`` agree with every click of the slice (small discs added/cut as needed)."""
    m = m.copy()
    for q in pts:
        if bool(m[q.y, q.x]) != q.positive:
            disc = _disc(m.shape, q, r)
            if q.positive:
                m |= disc
            else:
                m &= ~disc
    return m


def _clicked_slice(
    seg: SliceSegmenter,
    prev: np.ndarray,
    z: int,
    p: SlicePoint,
    pts: Sequence[SlicePoint],
    params: PropagationParams,
) -> np.ndarray:
    """New mask of the clicked slice: the model candidate closest to a locally edited target.

    The *target* is the previous slice mask with the click's neighbourhood flipped: a
    disc around the click whose radius is the click's distance to the mask border (a
    simulated click sits at the centre of its error region, so this estimates the
    error's half-width). Model candidates (re-segmentations with boxes corrected by the
    click, with and without the points; for clicks far from the mask also boxes of
    several sizes around the click) that satisfy all clicks of the slice compete on
    Dice with the target; the target itself wins when no candidate is close enough.
    """
    Z, H, W = seg.shape
    margin = _margin_px(params, (H, W))
    cur = prev[z]
    cands: list[np.ndarray] = []
    if p.positive and cur.any():
        d0 = float(ndimage.distance_transform_edt(~cur)[p.y, p.x])
        if d0 > params.local_depth * margin:
            # far from the mask: a missed part; segment it from the click and add it
            part = segment_slice_from_point(seg, z, p, pts, params, max_area=_max_part(prev))
            if part.any() and _satisfies(cur | part, pts):
                return cur | part
            return _enforce(cur, pts, max(2.0, margin))
    if p.positive:
        if cur.any():
            d = float(ndimage.distance_transform_edt(~cur)[p.y, p.x])
            target = cur | _disc((H, W), p, d + 1.0)
            ref_box = bbox2d(cur)
        else:
            d = np.inf
            target = None
            near = _nearest_nonempty(prev, z)
            ref_box = bbox2d(prev[near]) if near is not None else None
        pos_box = None
        for q in pts:
            if q.positive:
                pos_box = union_box(pos_box, (q.y, q.x, q.y, q.x))
        box = grow_box(union_box(ref_box, pos_box), margin, (H, W))  # type: ignore[arg-type]
        for q in pts:  # keep negative clicks out of the box when that is cheap
            if not q.positive and box[0] <= q.y <= box[2] and box[1] <= q.x <= box[3]:
                b2 = _shrink_away(box, q, keep_frac=0.7)
                if b2 is not None and all(b2[0] <= r.y <= b2[2] and b2[1] <= r.x <= b2[3] for r in pts if r.positive):
                    box = b2
        cands.append(_segment(seg, z, box, [], params)[0])
        cands.append(_segment(seg, z, box, pts, params)[0])
    else:
        d = float(ndimage.distance_transform_edt(cur)[p.y, p.x])
        target = cur & ~_disc((H, W), p, d + 1.0)
        tight = bbox2d(cur)
        assert tight is not None
        b = _shrink_away(tight, p)
        if b is not None:
            cands.append(_segment(seg, z, b, [], params)[0])
            cands.append(_segment(seg, z, b, pts, params)[0])
        cands.append(_segment(seg, z, grow_box(tight, margin, (H, W)), pts, params)[0])
    ok = [c for c in cands if c.any() and _satisfies(c, pts)]
    if target is not None and not p.positive:
        budget = float(np.count_nonzero(target ^ cur))
        ok = [c for c in ok if _plausible(c, cur, p.positive, budget)]
    if target is not None and params.local and d <= params.local_depth * margin:
        ok = [c for c in ok if _local_change(c, cur, (p.y, p.x), p.positive)]
    if target is None:  # empty slice: the candidate continuing the nearest segmented slice
        near = _nearest_nonempty(prev, z)
        if not ok:
            return _enforce(np.zeros((H, W), bool), pts, max(2.0, margin))
        if near is None:
            return ok[-1]
        return max(ok, key=lambda c: dice(c, prev[near]))
    best, best_d = None, -1.0
    for c in ok:
        dc = dice(c, target)
        if dc > best_d:
            best, best_d = c, dc
    if best is None or best_d < params.accept:
        return _enforce(target, pts, max(2.0, margin))
    return best


def _split_off(mask: np.ndarray, p: SlicePoint, max_frac: float = 0.6) -> np.ndarray | None:
    """The part of a 2D ``mask`` around a wrongly included click, cut at the narrowest neck.

    Watershed of the mask's distance map from two seeds: the click, and the thickest
    point of the mask away from it. Returns the click's region, or ``None`` when no
    such split exists or it would take more than ``max_frac`` of the mask.
    """
    from skimage.segmentation import watershed

    if not mask[p.y, p.x]:
        return None
    edt = ndimage.distance_transform_edt(mask)
    depth = max(float(edt[p.y, p.x]), 2.0)
    yy, xx = np.ogrid[: mask.shape[0], : mask.shape[1]]
    far = mask & ((yy - p.y) ** 2 + (xx - p.x) ** 2 > (2.5 * depth) ** 2)
    if not far.any():
        return None
    k = int(np.argmax(np.where(far, edt, -1.0)))
    markers = np.zeros(mask.shape, np.int32)
    markers[p.y, p.x] = 1
    markers.flat[k] = 2
    lab = watershed(-edt, markers, mask=mask)
    region = lab == 1
    if np.count_nonzero(region) > max_frac * np.count_nonzero(mask):
        return None
    return region


def _max_part(prev: np.ndarray) -> float:
    """Largest plausible missed part of an object: 1.5 x its largest slice area so far."""
    return 1.5 * float(prev.reshape(prev.shape[0], -1).sum(axis=1).max()) + 64


def _propagate_part(seg: SliceSegmenter, out: np.ndarray, prev: np.ndarray, part: np.ndarray, z: int, step: int,
                    limit: int, yx: tuple[int, int], points_by_z: dict[int, list[SlicePoint]], cancel: CancelToken,
                    params: PropagationParams, anchors: frozenset[int]) -> None:
    """Walk a newly added part (a far positive click) to the neighbours, adding it to ``out``.

    Each slice is prompted by the previous part's box; the walk stops where the part
    vanishes, no longer covers the click's ``(y, x)``, or lies mostly inside the old mask.
    """
    Z, H, W = out.shape
    margin = _margin_px(params, (H, W))
    zz = z + step
    while 0 <= zz < Z and (zz <= limit if step > 0 else zz >= limit) and zz not in anchors:
        cancel.check()
        tight = bbox2d(part)
        if tight is None:
            break
        seg.prefetch([zz], cancel)
        m, _ = _segment(seg, zz, grow_box(tight, margin, (H, W)), _points_on(points_by_z, zz), params)
        if not m.any() or not m[yx] or np.count_nonzero(m & prev[zz]) >= 0.5 * np.count_nonzero(m):
            break
        if np.count_nonzero(m) > min(_max_part(prev), 1.5 * np.count_nonzero(part) + 64):
            break
        out[zz] |= m
        part = m
        zz += step


def refine_with_click(
    seg: SliceSegmenter,
    prev: np.ndarray,
    click: tuple[int, int, int, bool],
    points_by_z: dict[int, list[SlicePoint]],
    cancel: CancelToken,
    params: PropagationParams,
    *,
    z_limits: tuple[int, int] | None = None,
    box_hint: Box2 | None = None,
) -> np.ndarray:
    """Apply one click ``(z, y, x, positive)`` to the previous mask ``prev`` ``(Z, Y, X)``.

    * A click the mask already satisfies (positive inside, negative outside) changes nothing.
    * Positive click on an empty mask (box-less object): segment the slice from the
      point (:func:`segment_slice_from_point`), then propagate both ways to ``z_limits``.
    * Negative click on a 3D component that is not the largest: that component is removed.
    * Negative click on a 2D component of the slice that is not its largest: removed there.
    * Otherwise the clicked slice gets the mask of :func:`_clicked_slice` (a corrected-box
      re-segmentation close to a locally edited target), and the change propagates to
      the neighbours: each is re-segmented from the corrected neighbour's box, and the
      new mask replaces the old one only while it continues the corrected slice better
      than the old one does (Dice with the neighbour); the first slice where the old
      mask wins ends the walk, leaving the rest as it was. Beyond the old mask's extent
      the walk extends the object (up to ``z_limits``, or further when the click lies
      outside them) until it vanishes.

    Parameters
    ----------
    seg : SliceSegmenter
        The model on the current image.
    prev : np.ndarray
        The object's mask ``(Z, Y, X)`` bool (not modified).
    click : (z, y, x, positive)
        The new click, voxel indices.
    points_by_z : dict of int to list of SlicePoint
        Every click so far (including this one), per slice. Slices that hold other clicks
        are anchors: re-propagation does not overwrite them.
    cancel : CancelToken
        Checked between slices.
    params : PropagationParams
        Tuning.
    z_limits : (z_lo, z_hi), optional
        Inclusive slice range the object may extend to (its box's, say); default all slices.
    box_hint : (y0, x0, y1, x1), optional
        A box to segment from when a positive click on an empty mask finds nothing by itself.

    Returns
    -------
    np.ndarray
        The new ``(Z, Y, X)`` bool mask.
    """
    Z, H, W = prev.shape
    z, y, x, positive = click
    p = SlicePoint(y, x, positive)
    out = prev.copy()
    if bool(prev[z, y, x]) == positive:
        return out
    pts = _points_on(points_by_z, z)
    if not any(q.y == y and q.x == x and q.positive == positive for q in pts):
        pts = list(pts) + [p]
    anchors = frozenset(k for k, v in points_by_z.items() if v and k != z)
    lo, hi = (0, Z - 1) if z_limits is None else z_limits
    lo, hi = min(lo, z), max(hi, z)
    seg.prefetch([z], cancel)
    if positive and not prev.any():
        m = segment_slice_from_point(seg, z, p, pts, params)
        if box_hint is not None and not m.any():
            m, _ = _segment(seg, z, box_hint, pts, params)
        out[z] = _enforce(m, pts, max(2.0, _margin_px(params, (H, W))))
        propagate(seg, out, z, +1, hi, points_by_z, cancel, params)
        propagate(seg, out, z, -1, lo, points_by_z, cancel, params)
        return out
    if not positive:
        lab3, n3 = ndimage.label(prev, structure=np.ones((3, 3, 3), bool))
        if n3 > 1:
            sizes = np.bincount(lab3.ravel())[1:]
            c = lab3[z, y, x]
            if sizes[c - 1] < sizes.max():
                out[lab3 == c] = False
                return out
        lab2, n2 = ndimage.label(prev[z])
        if n2 > 1:
            sizes2 = np.bincount(lab2.ravel())[1:]
            c2 = lab2[y, x]
            if sizes2[c2 - 1] < sizes2.max():
                out[z] = prev[z] & (lab2 != c2)
                return out
    cur = prev[z]
    margin = _margin_px(params, (H, W))
    if not positive and params.split_deep:
        depth0 = float(ndimage.distance_transform_edt(cur)[y, x])
        if depth0 > params.local_depth * margin / 2:
            region = _split_off(cur, p)
            if region is not None and _satisfies(cur & ~region, pts):
                out[z] = cur & ~region
                for step, lim in ((1, hi), (-1, lo)):
                    zz = z + step
                    while 0 <= zz < Z and (zz <= lim if step > 0 else zz >= lim) and zz not in anchors:
                        cancel.check()
                        if not out[zz, y, x]:
                            break
                        r2 = _split_off(out[zz], p)
                        if r2 is None:
                            break
                        out[zz] &= ~r2
                        zz += step
                return out
    if positive and cur.any():
        far = float(ndimage.distance_transform_edt(~cur)[y, x]) > params.local_depth * margin
    else:
        far = False
    out[z] = _clicked_slice(seg, prev, z, p, pts, params)
    if far:
        part = out[z] & ~cur
        lab, _ = ndimage.label(part)
        if lab[y, x]:
            part = lab == lab[y, x]
            for step, lim in ((1, hi), (-1, lo)):
                _propagate_part(seg, out, prev, part, z, step, lim, (y, x), points_by_z, cancel, params, anchors)
        return out
    budget = float(np.count_nonzero(out[z] ^ prev[z]))
    cur = prev[z]
    if cur.any():
        depth = float(ndimage.distance_transform_edt(~cur if positive else cur)[y, x])
    else:
        depth = np.inf
    local = params.local and depth <= params.local_depth * _margin_px(params, (H, W))
    kw = dict(ref=prev, anchors=anchors, grow=positive, click_yx=(y, x), budget=budget, local=local)
    propagate(seg, out, z, +1, hi, points_by_z, cancel, params, **kw)  # type: ignore[arg-type]
    propagate(seg, out, z, -1, lo, points_by_z, cancel, params, **kw)  # type: ignore[arg-type]
    return out
