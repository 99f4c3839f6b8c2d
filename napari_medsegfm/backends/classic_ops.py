"""Image operations of the classic backend: the graph cut and the small mask/cost helpers.

Arrays are in array axis order, ``(Z, Y, X)`` or ``(Y, X)``; spacings in mm in that order.
Nothing here knows about prompts or sessions (:mod:`~napari_medsegfm.backends.classic` does).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

__all__ = ["graph_cut", "hist_costs", "mix_costs", "mode_focus", "box_fit", "prior_costs", "largest_cc",
           "keep_touching", "fill_holes_2d", "down", "smooth_up", "dist_mm", "signed_distance", "load_maxflow"]

log = logging.getLogger("napari_medsegfm.backends.classic")

_EPS = 1e-4
_HARD = 1e6


# ------------------------------------------------------------------------ graph cut
def load_maxflow():
    """Import PyMaxflow on first use.

    Returns
    -------
    module
        The ``maxflow`` module (PyMaxflow).

    Raises
    ------
    ImportError
        When PyMaxflow is not installed.
    """
    import maxflow  # PyMaxflow; light, imported on first use

    return maxflow


def graph_cut(
    img: np.ndarray,
    cost_fg: np.ndarray,
    cost_bg: np.ndarray,
    spacing: Sequence[float],
    lam: float,
    hard_fg: np.ndarray | None = None,
    hard_bg: np.ndarray | None = None,
    sigma2: float | None = None,
) -> np.ndarray:
    """Binary min-cut segmentation of a 2D/3D ROI.

    Parameters
    ----------
    img : np.ndarray of float
        The ROI's intensities, shape ``(Z, Y, X)`` or ``(Y, X)``.
    cost_fg, cost_bg : np.ndarray of float
        Per-voxel cost of labelling it foreground / background (same shape).
    spacing : sequence of float
        Voxel size in array axis order (weights neighbour links by ``s_min / s``).
    lam : float
        Weight of the smoothness term.
    hard_fg, hard_bg : np.ndarray of bool, optional
        Voxels forced to foreground / background.
    sigma2 : float, optional
        Contrast scale; default the mean squared neighbour difference.

    Returns
    -------
    np.ndarray of bool
        Foreground mask of the ROI.
    """
    mf = load_maxflow()
    nd = img.ndim
    img = img.astype(np.float32, copy=False)
    if sigma2 is None:
        acc, cnt = 0.0, 0
        for ax in range(nd):
            if img.shape[ax] > 1:
                d = np.diff(img, axis=ax)
                acc += float(np.square(d).sum())
                cnt += d.size
        sigma2 = max(acc / max(cnt, 1), 1.0)
    g = mf.Graph[float]()
    ids = g.add_grid_nodes(img.shape)
    smin = float(min(spacing))
    for ax in range(nd):
        if img.shape[ax] < 2:
            continue
        d = np.diff(img, axis=ax)
        w = np.zeros(img.shape, dtype=np.float64)
        sl = [slice(None)] * nd
        sl[ax] = slice(0, img.shape[ax] - 1)
        w[tuple(sl)] = lam * (smin / float(spacing[ax])) * np.exp(-np.square(d) / (2.0 * sigma2))
        st = np.zeros((3,) * nd)
        c = [1] * nd
        c[ax] = 2
        st[tuple(c)] = 1
        g.add_grid_edges(ids, weights=w, structure=st, symmetric=True)
    cs = np.asarray(cost_bg, dtype=np.float64).copy()  # source = fg: cut when labelled bg
    ct = np.asarray(cost_fg, dtype=np.float64).copy()
    if hard_fg is not None:
        cs[hard_fg] = _HARD
        ct[hard_fg] = 0.0
    if hard_bg is not None:
        ct[hard_bg] = _HARD
        cs[hard_bg] = 0.0
    m = np.minimum(cs, ct)
    g.add_grid_tedges(ids, cs - m, ct - m)
    g.maxflow()
    return ~g.get_grid_segments(ids)


# ----------------------------------------------------------------------- utilities
def hist_costs(fg_vals: np.ndarray, bg_vals: np.ndarray, fg_w: np.ndarray | None = None,
                bins: int = 64, smooth: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Per-intensity costs ``-log p(I | fg)`` and ``-log p(I | bg)`` from intensity samples.

    Parameters
    ----------
    fg_vals, bg_vals : np.ndarray
        Foreground / background intensity samples on the 0..255 scale, any shape (flattened);
        values outside are clipped.
    fg_w : np.ndarray of float, optional
        Per-sample weights of ``fg_vals`` (same shape); default equal weights.
    bins : int
        Histogram bins over 0..255 (each ``256 // bins`` grey levels wide).
    smooth : float
        Standard deviation, in bins, of the Gaussian smoothing of each histogram (0: none).

    Returns
    -------
    lut_f, lut_b : np.ndarray of float32
        Shape ``(256,)``: the cost (-log probability) of grey level ``i`` under the foreground /
        background histogram. An empty sample gives a uniform histogram.
    """
    scale = 256 // bins

    def hist(v: np.ndarray, w: np.ndarray | None) -> np.ndarray:
        h = np.bincount((np.clip(v, 0, 255).astype(np.int64) // scale).ravel(),
                        weights=None if w is None else w.ravel(), minlength=bins).astype(np.float64)
        if h.sum() <= 0:
            h = np.ones(bins)
        h = ndimage.gaussian_filter1d(h, smooth, mode="nearest") if smooth > 0 else h
        h = h / h.sum() + 1.0 / (bins * 200)
        return h / h.sum()

    hf = hist(fg_vals, fg_w)
    hb = hist(bg_vals, None)
    lut_f = -np.log(np.repeat(hf, scale))
    lut_b = -np.log(np.repeat(hb, scale))
    return lut_f.astype(np.float32), lut_b.astype(np.float32)


def mix_costs(a: np.ndarray, b: np.ndarray, w: float, bins: int = 64) -> np.ndarray:
    """Costs (-log probability) of the histogram mixture ``w * hist(a) + (1 - w) * hist(b)``.

    Parameters
    ----------
    a, b : np.ndarray
        Intensity samples on the 0..255 scale, any shape; an empty one is replaced by the other.
    w : float
        Weight of ``a``'s histogram, in [0, 1].
    bins : int
        Histogram bins over 0..255 (see :func:`hist_costs`).

    Returns
    -------
    np.ndarray of float32
        Shape ``(256,)``: the mixture's cost per grey level.
    """
    la, _ = hist_costs(a if a.size else b, b if b.size else a, bins=bins)
    lb, _ = hist_costs(b if b.size else a, a if a.size else b, bins=bins)
    p = w * np.exp(-la) + (1 - w) * np.exp(-lb)
    return (-np.log(p)).astype(np.float32)


def histogram_modes(lut: np.ndarray, n: int, min_share: float = 0.15) -> list[int]:
    """Grey levels of up to ``n`` separate modes of a cost LUT's distribution, the highest first.

    The distribution ``exp(-lut)`` is smoothed as in :func:`mode_focus`; its highest peak is
    the first mode (always returned). Each further peak is searched outside the runs (above a
    quarter of their height, widened by 6 grey levels) of the modes already found, and kept
    when its own run holds at least ``min_share`` of the distribution.

    Parameters
    ----------
    lut : np.ndarray of float
        Shape ``(256,)``: costs (-log probabilities) per grey level.
    n : int
        Most modes to return.
    min_share : float
        Smallest probability mass (0..1) of a further mode's run.

    Returns
    -------
    list of int
        Grey levels of the modes; the first is the one :func:`mode_focus` centres on by default.
    """
    p = np.exp(-lut.astype(np.float64))
    p = p / p.sum()
    ps = ndimage.gaussian_filter1d(p, 4.0)
    free = np.ones(p.size, dtype=bool)
    out: list[int] = []
    while len(out) < n and free.any():
        mode = int(np.argmax(np.where(free, ps, -1.0)))
        left = right = mode
        while left - 1 >= 0 and free[left - 1] and ps[left - 1] >= 0.25 * ps[mode]:
            left -= 1
        while right + 1 < p.size and free[right + 1] and ps[right + 1] >= 0.25 * ps[mode]:
            right += 1
        free[max(left - 6, 0): right + 7] = False
        if ps[left: right + 1].sum() / max(ps.sum(), 1e-12) >= min_share:
            out.append(mode)
        elif not out:
            out.append(mode)
    return out


def mode_focus(lut: np.ndarray, width: float, mode: int | None = None) -> np.ndarray:
    """Re-weight a cost LUT towards one mode of its distribution (by default the main one).

    The distribution ``exp(-lut)`` is multiplied by ``0.05 + 0.95 * window``, a Gaussian window
    centred on its (smoothed) mode with standard deviation ``width`` times the mode's spread
    (half the width of the contiguous run above a quarter of the mode's height, at least 6
    grey levels), and renormalised.

    Parameters
    ----------
    lut : np.ndarray of float
        Shape ``(256,)``: costs (-log probabilities) per grey level.
    width : float
        Window width in units of the mode's spread.
    mode : int, optional
        Grey level to centre the window on instead of the highest mode (e.g. another mode from
        :func:`histogram_modes`).

    Returns
    -------
    np.ndarray of float32
        Shape ``(256,)``: the re-weighted costs (-log probabilities).
    """
    p = np.exp(-lut.astype(np.float64))
    p = p / p.sum()
    ps = ndimage.gaussian_filter1d(p, 4.0)
    if mode is None:
        mode = int(np.argmax(ps))
    levels = np.arange(p.size)
    # spread: half width at a quarter of the mode's height
    above = np.flatnonzero(ps >= 0.25 * ps[mode])
    lo = above[above <= mode]
    hi = above[above >= mode]
    # contiguous run around the mode
    left = mode
    while left - 1 >= 0 and ps[left - 1] >= 0.25 * ps[mode]:
        left -= 1
    right = mode
    while right + 1 < p.size and ps[right + 1] >= 0.25 * ps[mode]:
        right += 1
    del lo, hi
    spread = max((right - left) / 2.0, 6.0)
    win = np.exp(-0.5 * ((levels - mode) / (width * spread)) ** 2)
    q = p * (0.05 + 0.95 * win)
    q = q / q.sum()
    return (-np.log(q + 1e-6)).astype(np.float32)


def box_fit(mask: np.ndarray, target: tuple[float, float, float, float], inside: np.ndarray,
             fill_weight: float = 0.1) -> float:
    """Score how well a 2D mask spans a tight box.

    Parameters
    ----------
    mask : np.ndarray of bool
        Shape ``(Y, X)``: the candidate mask.
    target : tuple of float
        ``(y0, x0, y1, x1)``, inclusive, in voxels: the box the object is expected to span.
    inside : np.ndarray of bool
        Shape ``(Y, X)``: the drawn box's voxels (normalises the fill term).
    fill_weight : float
        Weight of the fill term (the mask's share of ``inside``).

    Returns
    -------
    float
        IoU of the mask's bounding box with ``target`` minus ``fill_weight`` times the fill
        fraction; -1.0 for an empty mask. Higher is better.
    """
    if not mask.any():
        return -1.0
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    by0, by1, bx0, bx1 = ys[0], ys[-1], xs[0], xs[-1]
    ty0, tx0, ty1, tx1 = target
    iy = max(0.0, min(by1, ty1) - max(by0, ty0) + 1)
    ix = max(0.0, min(bx1, tx1) - max(bx0, tx0) + 1)
    inter = iy * ix
    a = (by1 - by0 + 1) * (bx1 - bx0 + 1)
    b = max(ty1 - ty0 + 1, 1) * max(tx1 - tx0 + 1, 1)
    iou = inter / max(a + b - inter, 1.0)
    fill = float(mask.sum()) / max(float(inside.sum()), 1.0)
    return float(iou - fill_weight * fill)


def prior_costs(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Costs of a foreground probability map, clipped to [0.02, 0.98].

    Parameters
    ----------
    p : np.ndarray of float
        Foreground probability per voxel, any shape (``(Z, Y, X)`` or ``(Y, X)``).

    Returns
    -------
    cost_fg, cost_bg : np.ndarray of float32
        Same shape: ``-log p`` and ``-log (1 - p)``.
    """
    p = np.clip(p, 0.02, 0.98)
    return (-np.log(p)).astype(np.float32), (-np.log1p(-p)).astype(np.float32)


def largest_cc(mask: np.ndarray) -> np.ndarray:
    """The largest connected component of a mask (face connectivity).

    Parameters
    ----------
    mask : np.ndarray of bool
        Shape ``(Z, Y, X)`` or ``(Y, X)``.

    Returns
    -------
    np.ndarray of bool
        Same shape; ``mask`` itself when it has at most one component.
    """
    lab, n = ndimage.label(mask)
    if n <= 1:
        return mask
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return lab == int(np.argmax(sizes))


def keep_touching(mask: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """The connected components of ``mask`` that intersect ``keep``.

    Parameters
    ----------
    mask : np.ndarray of bool
        Shape ``(Z, Y, X)`` or ``(Y, X)``.
    keep : np.ndarray of bool
        Same shape: the voxels a kept component must touch.

    Returns
    -------
    np.ndarray of bool
        Same shape; ``mask`` itself when it is empty.
    """
    lab, n = ndimage.label(mask)
    if n == 0:
        return mask
    ids = np.unique(lab[keep & mask])
    ids = ids[ids != 0]
    return np.isin(lab, ids)


def fill_holes_2d(mask: np.ndarray) -> np.ndarray:
    """Fill holes slice by slice.

    Parameters
    ----------
    mask : np.ndarray of bool
        Shape ``(Y, X)``, or ``(Z, Y, X)`` (each Z slice filled in 2D).

    Returns
    -------
    np.ndarray of bool
        Same shape, a new array.
    """
    if mask.ndim == 2:
        return ndimage.binary_fill_holes(mask)
    out = mask.copy()
    for z in range(mask.shape[0]):
        if out[z].any():
            out[z] = ndimage.binary_fill_holes(out[z])
    return out


def down(img: np.ndarray, f: int) -> np.ndarray:
    """Downsample in-plane by block means.

    Parameters
    ----------
    img : np.ndarray
        Shape ``(..., Y, X)``, e.g. ``(Z, Y, X)`` or ``(Y, X)``.
    f : int
        Block size in voxels along Y and X (1: no downsampling).

    Returns
    -------
    np.ndarray of float32
        Shape ``(..., Y // f, X // f)``: the mean of each ``f x f`` block; the remainder
        rows/columns are cropped.
    """
    if f == 1:
        return img.astype(np.float32)
    *lead, h, w = img.shape
    h2, w2 = h // f, w // f
    v = img[..., : h2 * f, : w2 * f].astype(np.float32)
    return v.reshape(*lead, h2, f, w2, f).mean(axis=(-3, -1))


def smooth_up(mask_small: np.ndarray, f: int, shape: tuple[int, ...]) -> np.ndarray:
    """Upsample a mask made by :func:`down`'s resolution, with a smooth boundary.

    Parameters
    ----------
    mask_small : np.ndarray of bool
        Shape ``(..., Y', X')``: the low-resolution mask.
    f : int
        In-plane factor of the downsampling (1: returned unchanged).
    shape : tuple of int
        Full-resolution shape ``(..., Y, X)`` of the result.

    Returns
    -------
    np.ndarray of bool
        Shape ``shape``: linear interpolation of the 0/1 mask thresholded at 0.5; voxels beyond
        the upsampled extent (the cropped remainder) are False.
    """
    if f == 1:
        return mask_small
    zoom = [1.0] * (mask_small.ndim - 2) + [f, f]
    up = ndimage.zoom(mask_small.astype(np.float32), zoom, order=1, mode="nearest", grid_mode=True)
    out = np.zeros(shape, dtype=bool)
    sl = tuple(slice(0, min(a, b)) for a, b in zip(shape, up.shape))
    out[sl] = up[sl] >= 0.5
    return out


def dist_mm(shape: tuple[int, ...], center: Sequence[float], spacing: Sequence[float]) -> np.ndarray:
    """Euclidean distance in mm of every voxel to a point.

    Parameters
    ----------
    shape : tuple of int
        Array shape, ``(Z, Y, X)`` or ``(Y, X)``.
    center : sequence of float
        The point, in voxel coordinates in the same axis order.
    spacing : sequence of float
        Voxel size in mm in the same axis order.

    Returns
    -------
    np.ndarray of float32
        Shape ``shape``: distances in mm.
    """
    grids = np.ogrid[tuple(slice(0, s) for s in shape)]
    d2 = sum(((g - c) * sp) ** 2 for g, c, sp in zip(grids, center, spacing))
    return np.sqrt(d2).astype(np.float32)


def signed_distance(mask: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Signed Euclidean distance map of a mask in mm, positive inside.

    Parameters
    ----------
    mask : np.ndarray of bool
        Shape ``(Z, Y, X)`` or ``(Y, X)``.
    spacing : sequence of float
        Voxel size in mm in the same axis order.

    Returns
    -------
    np.ndarray of float32
        Same shape: inside, the distance to the nearest background voxel; outside, minus the
        distance to the nearest mask voxel. An empty mask gives -1000 everywhere.
    """
    if not mask.any():
        return np.full(mask.shape, -1e3, dtype=np.float32)
    din = ndimage.distance_transform_edt(mask, sampling=spacing)
    dout = ndimage.distance_transform_edt(~mask, sampling=spacing)
    return np.where(mask, din, -dout).astype(np.float32)
