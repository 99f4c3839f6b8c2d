"""Click and scribble editing of :class:`~napari_medsegfm.backends.classic.ClassicBackend` (a mixin).

Each click or scribble edits the current mask locally with a seeded graph cut; see
the module docstring of :mod:`napari_medsegfm.backends.classic` for the method.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from ..types import Box2D, Box3D, CancelToken, Point, Scribble
from .classic_ops import (
    dist_mm,
    down,
    fill_holes_2d,
    graph_cut,
    hist_costs,
    keep_touching,
    mix_costs,
    prior_costs,
    signed_distance,
    smooth_up,
)

__all__ = ["ClickEditMixin"]


def _click_stats(smooth: np.ndarray, loc: tuple[int, ...], floor: float) -> tuple[float, float]:
    """Mean of the click's 3x3x3 neighbourhood in a smoothed window, and the intensity
    tolerance around it: ``max(2.5 sd, floor)``."""
    nb = tuple(slice(max(v - 1, 0), v + 2) for v in loc)
    mu, sd = float(smooth[nb].mean()), float(smooth[nb].std())
    return mu, max(2.5 * sd, floor)


def _ball_voxels(radius_mm: float, spacing: np.ndarray) -> float:
    """Volume in voxels of a ball of ``radius_mm``."""
    return 4.0 / 3.0 * np.pi * radius_mm**3 / float(np.prod(spacing))


class ClickEditMixin:
    """Click and scribble editing of ``ClassicBackend``: local graph-cut edits of a mask.

    Uses the backend's ``_vol``, ``_grey`` and its tuning attributes; not usable on its own.
    """
    def _refine(self, mask: np.ndarray, edits: Sequence[Point | Scribble], boxes: Sequence[Box3D | Box2D],
                cancel: CancelToken, all_edits: bool) -> np.ndarray:
        """Apply clicks/scribbles to ``mask``: the newest one (or all, in order)."""
        todo = list(edits) if all_edits else [edits[-1]]
        for e in todo:
            cancel.check()
            mask = self._apply_edit(mask, e, edits, boxes)
        return mask

    def _seed_sets(self, edits: Sequence[Point | Scribble], shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        fg = np.zeros(shape, dtype=bool)
        bg = np.zeros(shape, dtype=bool)
        for e in edits:
            tgt = fg if e.positive else bg
            if isinstance(e, Point):
                tgt[e.zyx] = True
            else:
                tgt[tuple(e.voxels.T)] = True
        return fg, bg

    def _apply_edit(self, mask: np.ndarray, edit: Point | Scribble, edits: Sequence[Point | Scribble],
                    boxes: Sequence[Box3D | Box2D]) -> np.ndarray:
        assert self._vol is not None and self._grey is not None
        shape = mask.shape
        sp = np.asarray(self._vol.spacing, dtype=float)
        nd = len(shape)
        pts = np.array([edit.zyx]) if isinstance(edit, Point) else edit.voxels
        center = pts.mean(axis=0)
        c_int = tuple(int(round(v)) for v in center)
        pos = edit.positive
        # How big is the error this click marks? The distance from the click to the
        # nearest voxel of the other label bounds the error region around it. It is
        # measured in plane (pixels) and through the slices (voxels) separately, as
        # thick slices make error regions thin in z.
        radii = self._error_radius(mask, c_int, pos)
        if radii is None:  # nothing to measure against (first click on an empty mask)
            if isinstance(edit, Point):
                return mask | self._first_click(c_int)
            radii = self._homogeneous_radius(c_int)
        r_p, r_z = radii
        s_in = float(min(sp[-2:]))
        depth_mm = r_p * s_in  # how deep inside the wrong region the click sits (in plane)
        lo_p = self.click_radius_min_mm / s_in  # the floor in pixels: at most click_radius_min_px
        if self.click_radius_min_px > 0:
            lo_p = min(lo_p, self.click_radius_min_px)
        r_p = float(np.clip(r_p, lo_p, max(self.click_radius_max_mm / s_in, lo_p)))
        if nd == 3:
            r_z = float(np.clip(r_z, min(self.click_radius_min_mm / sp[0], 1.0), self.click_radius_max_mm / sp[0]))
        half = np.empty(nd, dtype=int)
        hp = np.clip(self.click_roi_factor * r_p, 2 * lo_p,
                     2.5 * self.click_radius_max_mm / s_in)
        half[-2:] = int(math.ceil(hp))
        if nd == 3:
            half[0] = int(math.ceil(max(self.click_roi_factor * r_z, 2.0)))
        lo = np.maximum(pts.min(axis=0) - half, 0)
        hi = np.minimum(pts.max(axis=0) + half + 1, np.asarray(shape))
        for b in boxes:  # a 3D box's z range bounds the object
            if isinstance(b, Box3D) and nd == 3:
                lo[0] = max(lo[0], b.z_min)
                hi[0] = min(hi[0], b.z_max + 1)
                if lo[0] >= hi[0]:
                    lo[0], hi[0] = b.z_min, b.z_max + 1
        roi = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
        sub_img = self._grey[roi]
        sub_mask = mask[roi]
        f = 1
        if nd == 3:
            f = self._roi_factor(sub_img.size, *sub_img.shape[1:])
        elif sub_img.size > self.max_roi_voxels:
            f = self._roi_factor(sub_img.size, *sub_img.shape)
        img = down(sub_img, f)
        scale = np.r_[np.ones(nd - 2), f, f]
        spf = sp * scale
        small_mask = (down(sub_mask.astype(np.float32), f) >= 0.5) if f > 1 else sub_mask
        fg_all, bg_all = self._seed_sets(edits, shape)
        sfg, sbg = fg_all[roi], bg_all[roi]
        if f > 1:
            sfg = down(sfg.astype(np.float32), f) > 0
            sbg = down(sbg.astype(np.float32), f) > 0
        c_loc = (center - lo) / scale
        # anisotropic normalized distance: 1 at the error radius (in plane / in z)
        unit = np.ones(nd)
        unit[-2:] = max(r_p, 1.0) / f
        if nd == 3:
            unit[0] = max(r_z, 0.5)
        dn = dist_mm(img.shape, c_loc, 1.0 / unit)
        iv = np.clip(img, 0, 255).astype(np.int64)
        core = dn <= self.core_fraction
        if not core.any():
            core = np.zeros(img.shape, dtype=bool)
            core[tuple(np.clip(np.round(c_loc).astype(int), 0, np.asarray(img.shape) - 1))] = True
        ring = dn <= 1.5
        if pos:
            fg_a, fg_b = img[core], img[small_mask]
            bg_s = (~small_mask & ~ring) | sbg
            bg_a = bg_b = img[bg_s]
        else:
            bg_a = img[core]
            bg_b = img[~small_mask] if (~small_mask).any() else img[core]
            fg_s = (small_mask & ~ring) | sfg
            fg_a = fg_b = img[fg_s]
        if fg_a.size == 0 and fg_b.size == 0:
            fg_a = img[core]
        if bg_a.size == 0 and bg_b.size == 0:
            bg_a = img[~ring] if (~ring).any() else img.ravel()
        lut_f = mix_costs(fg_a, fg_b, self.click_mix)
        lut_b = mix_costs(bg_a, bg_b, self.click_mix)
        # prior: keep the current mask away from the click; near it, lean to the click's class
        keep = self.prior_strength + 0.15
        base = np.where(small_mask, 0.5 + keep, 0.5 - keep)
        infl = np.exp(-0.5 * (dn / self.click_influence) ** 2)
        target = 0.5 + (self.click_lean if pos else -self.click_lean)
        p = base * (1 - infl) + target * infl
        p = np.where(core, 0.5 + (0.45 if pos else -0.45), p)
        pf, pb = prior_costs(p)
        hard_fg = sfg.copy()
        hard_bg = sbg.copy()
        border = np.zeros(img.shape, dtype=bool)
        for ax in range(nd):
            for side, at_edge in ((0, lo[ax] == 0), (-1, hi[ax] == shape[ax])):
                if at_edge:
                    continue
                sl = [slice(None)] * nd
                sl[ax] = slice(img.shape[ax] - 1, None) if side == -1 else slice(0, 1)
                border[tuple(sl)] = True
        # only the neighbourhood of the click may change
        border |= dn > self.change_limit
        hard_fg |= border & small_mask & ~sbg
        hard_bg |= border & ~small_mask & ~sfg
        new = graph_cut(img, lut_f[iv] + pf, lut_b[iv] + pb, spf, self.lam_click,
                        hard_fg=hard_fg, hard_bg=hard_bg)
        if pos:
            new = keep_touching(new, small_mask | sfg | core)
            if new.any():  # fill holes, except those a negative seed marks as wanted
                filled = fill_holes_2d(new)
                holes = filled & ~new
                if holes.any() and sbg.any():
                    filled &= ~keep_touching(holes, sbg)
                new = filled
        out = mask.copy()
        out[roi] = smooth_up(new, f, sub_img.shape) if f > 1 else new
        out[fg_all] = True
        out[bg_all] = False
        if pos and isinstance(edit, Point) and self.band_contrast > 0:
            band = self._band_region(mask, c_int)
            if band is not None:
                out |= band & ~bg_all
        if not pos:
            out &= mask  # a negative click only removes
            if not boxes:  # an object grown from clicks alone
                if self.neg_keep_near > 0:
                    out = self._keep_near_positives(out, mask, roi, center, edits, bg_all)
                # a leak is a region the click sits deep in, not a shell along the surface
                deep = depth_mm >= 0.5 * self.first_click_min_mm
                if self.leak_cut and isinstance(edit, Point) and deep:
                    out = self._cut_leak(out, mask, edit, edits)
            out = self._drop_cut_off(out, mask, edits)
        return out

    def _band_region(self, mask: np.ndarray, c: tuple[int, ...]) -> np.ndarray | None:
        """The missed band along the mask's surface that a positive click outside it points at.

        A positive click at distance ``d`` (mm) outside the mask often marks a band the mask
        falls short of all along one side (an enhancing rim, the edge of a blood pool). The
        voxels within ``2 d`` (plus one pixel) outside the mask, within the click's reach
        (``click_radius_max_mm``) and within the click's intensity tolerance
        (:func:`_click_stats`) form candidates; the connected part holding the click is the
        band. It is taken only where it stands out from its surroundings (its mean differs
        from the 2-voxel ring around it by at least ``band_contrast`` tolerances: a real edge,
        not a patch of the same tissue) and is at most ``band_max_ratio`` times the mask's
        size. ``None`` where nothing qualifies.
        """
        assert self._vol is not None and self._grey is not None
        sp = np.asarray(self._vol.spacing, dtype=float)
        reach = self.click_radius_max_mm
        roi, loc = self._window(c, mask.shape, z_cap=None, pad=0)
        sub = mask[roi]
        if not sub.any() or sub[loc]:
            return None
        dm = ndimage.distance_transform_edt(~sub, sampling=sp)
        band = ~sub & (dm <= self.band_width * dm[loc] + float(sp[-2:].min()))
        smooth = ndimage.uniform_filter(self._grey[roi].astype(np.float32), 3)
        mu, tol = _click_stats(smooth, loc, self.first_click_tol)
        band &= np.abs(smooth - mu) <= tol
        band &= dist_mm(sub.shape, loc, sp) <= reach
        lab, _ = ndimage.label(band)
        if lab[loc] == 0:
            return None
        reg = lab == lab[loc]
        if reg.sum() > self.band_max_ratio * np.count_nonzero(mask):
            return None
        ring = ndimage.binary_dilation(reg, iterations=2) & ~reg & ~sub
        if not ring.any():
            return None
        if abs(float(smooth[reg].mean()) - float(smooth[ring].mean())) < self.band_contrast * tol:
            return None
        full = np.zeros(mask.shape, dtype=bool)
        full[roi] = reg
        return full

    def _keep_near_positives(self, out: np.ndarray, mask: np.ndarray, roi: tuple[slice, ...],
                             center: np.ndarray, edits: Sequence[Point | Scribble],
                             bg_all: np.ndarray) -> np.ndarray:
        """Undo a negative edit's removals nearer a positive click than the negative one.

        Distances in mm; a positive click's distance is scaled by ``neg_keep_near``. Voxels a
        negative seed marks (``bg_all``, full size) stay removed.
        """
        assert self._vol is not None
        pos_pts = [np.asarray(e.zyx, dtype=float) for e in edits if isinstance(e, Point) and e.positive]
        if not pos_pts:
            return out
        removed = mask[roi] & ~out[roi]
        if not removed.any():
            return out
        sp = np.asarray(self._vol.spacing, dtype=float)
        lo = np.array([r.start for r in roi], dtype=float)
        d_neg = dist_mm(removed.shape, center - lo, sp)
        near_pos = np.zeros(removed.shape, dtype=bool)
        for q in pos_pts:
            near_pos |= self.neg_keep_near * dist_mm(removed.shape, q - lo, sp) < d_neg
        res = out.copy()
        res[roi] |= removed & near_pos & ~bg_all[roi]
        return res

    def _cut_leak(self, out: np.ndarray, mask: np.ndarray, edit: Point,
                  edits: Sequence[Point | Scribble]) -> np.ndarray:
        """Remove from ``out`` the wrong branch of ``mask`` that a negative click points at.

        ``mask`` is the object before the click, ``out`` after its local edit; the object has
        no box (it was grown from clicks alone). A region grown from a click leaks through a
        bridge of similar intensity into a neighbour, and a local edit at the click only nibbles
        at that neighbour. The mask's part that stays connected to the positive clicks is found with a
        tightening intensity tolerance (around each positive click's mean) and opening, until
        the negative click falls outside it; the part of the mask beyond that (more than the
        opening's reach from it), nearer the negative click than any positive one and holding
        the negative click, is removed. Unchanged when no step of the ladder separates the
        click from every positive click, or when the kept part would be less than a ball of
        half ``first_click_min_mm`` radius (the opening erased a thin object, not a leak).
        """
        assert self._vol is not None and self._grey is not None
        pos_pts = [e.zyx for e in edits if isinstance(e, Point) and e.positive and mask[e.zyx]]
        if not pos_pts or not mask[edit.zyx]:
            return out
        sp = np.asarray(self._vol.spacing, dtype=float)
        bb = ndimage.find_objects(mask.astype(np.uint8))[0]
        lo = np.array([max(b.start - 2, 0) for b in bb])
        hi = np.array([min(b.stop + 2, n) for b, n in zip(bb, mask.shape)])
        roi = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
        sub = mask[roi]
        smooth = ndimage.uniform_filter(self._grey[roi].astype(np.float32), 3)
        neg = tuple(int(v - a) for v, a in zip(edit.zyx, lo))
        seeds = []  # (position, mean, tolerance, distance in mm) of each positive click
        for pnt in pos_pts:
            loc = tuple(int(v - a) for v, a in zip(pnt, lo))
            mu, tol = _click_stats(smooth, loc, self.first_click_tol)
            seeds.append((loc, mu, tol, dist_mm(sub.shape, loc, sp)))
        k0 = max(self.first_click_open, 1)
        # the kept part must hold a ball of half first_click_min_mm radius
        v_keep = _ball_voxels(0.5 * self.first_click_min_mm, sp)
        for scale, k in ((1.0, k0), (1.0, k0 + 1), (0.7, k0 + 1), (0.5, k0 + 1), (0.5, k0 + 2)):
            near = np.zeros(sub.shape, dtype=bool)
            core = np.zeros(sub.shape, dtype=bool)
            for _loc, mu, tol, d_pos in seeds:
                nr = np.abs(smooth - mu) <= scale * tol
                near |= nr
                core |= nr & (d_pos <= 3.0)
            near &= sub
            region = ndimage.binary_opening(near, iterations=k) | (core & sub)
            lab, _ = ndimage.label(region)
            ids = {int(lab[loc]) for loc, *_ in seeds} - {0}
            if not ids:
                return out
            keep = np.isin(lab, list(ids))
            if keep.sum() < v_keep:  # the opening erased the object itself (a thin structure)
                return out
            if keep[neg]:
                continue
            rest = sub & ~ndimage.binary_dilation(keep, iterations=k + 1)
            if not rest[neg]:
                return out
            # only what lies nearer the negative click than any positive one
            d_neg = dist_mm(sub.shape, neg, sp)
            nearer = np.ones(sub.shape, dtype=bool)
            for *_, d_pos in seeds:
                nearer &= d_neg < d_pos
            rest &= nearer
            if not rest[neg]:
                return out
            rl, _ = ndimage.label(rest)
            branch = rl == rl[neg]
            res = out.copy()
            res[roi] &= ~branch
            return res
        return out

    def _first_click(self, c: tuple[int, ...]) -> np.ndarray:
        """The mask a lone positive click grows (no current mask, no box).

        With ``first_click_region`` (the default) the object is taken to be the
        intensity-homogeneous region connected to the click: voxels of the smoothed image within
        ``max(2.5 sd, first_click_tol)`` grey levels of the click's 3x3x3 mean, opened
        (``first_click_open`` iterations, fewer where that leaves less than a ball of
        ``first_click_min_mm``) so thin bridges into neighbours break, within
        ``click_radius_max_mm`` of the click. That region is the foreground sample and, as a signed distance, the prior of one cut in the
        window; the click is a hard seed. Otherwise (or when no region forms) a ball sized by
        the homogeneous region's inscribed radius is cut (:meth:`_first_click_ball`).
        """
        if not self.first_click_region:
            return self._first_click_ball(c)
        assert self._vol is not None and self._grey is not None
        shape = self._grey.shape
        sp = np.asarray(self._vol.spacing, dtype=float)
        reach = self.click_radius_max_mm
        roi, loc = self._window(c, shape, z_cap=None)
        img = self._grey[roi].astype(np.float32)
        smooth = ndimage.uniform_filter(img, 3)
        mu, tol = _click_stats(smooth, loc, self.first_click_tol)
        near = np.abs(smooth - mu) <= tol
        d = dist_mm(img.shape, loc, sp)
        inside = d <= reach
        # an opening breaks the thin bridges by which a region leaks into its neighbours; the
        # click's own surroundings (3 mm) stay whatever it does. Fewer iterations where the
        # opening would erase the object itself (a thin structure: myocardium, a small
        # lesion): the region must keep at least a ball of first_click_min_mm radius
        k_open = self.first_click_open
        v_min = _ball_voxels(self.first_click_min_mm, sp)
        comp = None
        for k in range(max(k_open, 0), -1, -1):
            region = near if k == 0 else ndimage.binary_opening(near, iterations=k) | (near & (d <= 3.0))
            lab, _ = ndimage.label(region)
            if lab[loc] == 0:
                continue
            comp = (lab == lab[loc]) & inside
            if k == 0 or comp.sum() >= v_min:
                break
        if comp is None:
            return self._first_click_ball(c)
        bg_sample = ~ndimage.binary_dilation(comp, iterations=2)
        p = 0.5 + 0.35 * np.tanh(signed_distance(comp, sp) / 2.0)
        return self._seeded_cut(img, comp, bg_sample, p, loc, ~inside, roi)

    def _first_click_ball(self, c: tuple[int, ...]) -> np.ndarray:
        """A blob around a lone positive click: a cut in a ball sized by the homogeneous region."""
        assert self._vol is not None and self._grey is not None
        shape = self._grey.shape
        sp = np.asarray(self._vol.spacing, dtype=float)
        r_p, r_z = self._homogeneous_radius(c)
        s_in = float(min(sp[-2:]))
        rho = float(np.clip(r_p * s_in, self.first_click_min_mm, self.click_radius_max_mm))
        half = np.ceil(3.0 * rho / sp).astype(int)
        lo = np.maximum(np.asarray(c) - half, 0)
        hi = np.minimum(np.asarray(c) + half + 1, np.asarray(shape))
        roi = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
        img = self._grey[roi].astype(np.float32)
        loc = np.asarray(c) - lo
        d = dist_mm(img.shape, loc, sp)
        ball = d <= rho
        shell = (d > 1.5 * rho) & (d <= 3.0 * rho)
        if not shell.any():
            shell = ~ball
        p = 0.5 + 0.4 * np.tanh(2.0 * (1.0 - d / rho))
        return self._seeded_cut(img, ball, shell, p, tuple(int(v) for v in loc), d > 2.0 * rho, roi)

    def _seeded_cut(self, img: np.ndarray, fg_sample: np.ndarray, bg_sample: np.ndarray, p: np.ndarray,
                    loc: tuple[int, ...], hard_bg: np.ndarray, roi: tuple[slice, ...]) -> np.ndarray:
        """One cut in ``img`` (the window ``roi`` of the image) seeded at the click ``loc``.

        Intensity models from the two samples (the whole window where the background sample
        is empty), the prior probability ``p``, ``hard_bg`` forced out; the part touching the
        click, holes filled per slice, placed in a full-size mask.
        """
        assert self._vol is not None and self._grey is not None
        sp = np.asarray(self._vol.spacing, dtype=float)
        lut_f, lut_b = hist_costs(img[fg_sample], img[bg_sample] if bg_sample.any() else img.ravel())
        pf, pb = prior_costs(p)
        iv = np.clip(img, 0, 255).astype(np.int64)
        hard_fg = np.zeros(img.shape, dtype=bool)
        hard_fg[loc] = True
        m = graph_cut(img, lut_f[iv] + pf, lut_b[iv] + pb, sp, self.lam_click, hard_fg=hard_fg, hard_bg=hard_bg)
        m = keep_touching(m, hard_fg)
        if m.any():
            m = fill_holes_2d(m)
        out = np.zeros(self._grey.shape, dtype=bool)
        out[roi] = m
        return out

    def _window(self, c: tuple[int, ...], shape: tuple[int, ...],
                z_cap: int | None = 12, pad: int = 1) -> tuple[tuple[slice, ...], tuple[int, ...]]:
        """The box of the click's reach (``click_radius_max_mm`` + ``pad`` voxels) around ``c``,
        at most ``z_cap`` slices either side (``None``: no cap), and ``c`` inside it."""
        assert self._vol is not None
        sp = np.asarray(self._vol.spacing, dtype=float)
        half = np.ceil(self.click_radius_max_mm / sp).astype(int) + pad
        if len(shape) == 3 and z_cap is not None:
            half[0] = min(half[0], z_cap)
        lo = np.maximum(np.asarray(c) - half, 0)
        hi = np.minimum(np.asarray(c) + half + 1, np.asarray(shape))
        roi = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
        return roi, tuple(int(v) for v in np.asarray(c) - lo)

    def _error_radius(self, mask: np.ndarray, c: tuple[int, ...], positive: bool) -> tuple[float, float] | None:
        """Distance from ``c`` to the nearest voxel of the other label: (in-plane pixels, z voxels).

        ``None`` when the window around ``c`` holds no such voxel and ``c`` is positive.
        """
        roi, loc = self._window(c, mask.shape)
        sub = mask[roi]
        other = sub if positive else ~sub
        if not other.any():
            if positive:
                return None
            return float(max(sub.shape[-2:])), float(sub.shape[0] if sub.ndim == 3 else 1)
        if sub.ndim == 3:
            assert self._vol is not None
            plane = other[loc[0]]
            if plane.any() or not self.offplane_z_mm:
                r_z = float(ndimage.distance_transform_edt(~other)[loc])
            if plane.any():
                r_p = float(ndimage.distance_transform_edt(~plane)[loc[1:]])
            else:  # the other label is only on other slices: use the 3D distance in mm,
                # as pixels in plane and as slices through them (in unit voxels an in-plane
                # offset would count as slices: 18 pixels = 18 slices of 6.5 mm)
                sp = self._vol.spacing
                d_mm = float(ndimage.distance_transform_edt(~other, sampling=sp)[loc])
                r_p = d_mm / min(sp[1:])
                if self.offplane_z_mm:
                    r_z = d_mm / sp[0]
        else:
            r_p = float(ndimage.distance_transform_edt(~other)[loc])
            r_z = 1.0
        return max(r_p, 1.0), max(r_z, 0.5)

    def _homogeneous_radius(self, c: tuple[int, ...]) -> tuple[float, float]:
        """Radius (in-plane pixels, z voxels) of the intensity-homogeneous region around ``c``."""
        assert self._grey is not None
        roi, loc = self._window(c, self._grey.shape)
        sub = ndimage.uniform_filter(self._grey[roi].astype(np.float32), 3)
        mu, tol = _click_stats(sub, loc, self.homog_tol)
        region = np.abs(sub - mu) <= tol
        lab, _ = ndimage.label(region)
        if lab[loc] == 0:
            return 2.0, 1.0
        comp = lab == lab[loc]
        if comp.ndim == 3:
            r_p = float(ndimage.distance_transform_edt(comp[loc[0]])[loc[1:]])
            r_z = float(ndimage.distance_transform_edt(comp)[loc])
        else:
            r_p = float(ndimage.distance_transform_edt(comp)[loc])
            r_z = 1.0
        return max(r_p, 1.0), max(r_z, 0.5)

    def _drop_cut_off(self, out: np.ndarray, before: np.ndarray, edits: Sequence[Point | Scribble]) -> np.ndarray:
        """After a negative click, keep only components anchored by positive evidence."""
        bb = ndimage.find_objects(out.astype(np.uint8))
        if not bb or bb[0] is None:
            return out
        roi = bb[0]
        sub = out[roi]
        lab, n = ndimage.label(sub)
        if n <= 1:
            return out
        sizes = np.bincount(lab.ravel())
        sizes[0] = 0
        keep = {int(np.argmax(sizes))}
        for e in edits:
            if e.positive:
                pts = np.array([e.zyx]) if isinstance(e, Point) else e.voxels
                for pnt in pts:
                    loc = tuple(int(v - s.start) for v, s in zip(pnt, roi))
                    if all(0 <= a < b for a, b in zip(loc, sub.shape)) and lab[loc]:
                        keep.add(int(lab[loc]))
        # components much smaller than the main one and without a positive seed go
        res = out.copy()
        res[roi] = np.isin(lab, list(keep)) | (sizes[lab] > 0.5 * sizes.max())
        return res
