"""Box step of :class:`~napari_medsegfm.backends.classic.ClassicBackend` (a mixin).

A box becomes a GrabCut-like graph cut on its mid slice, propagated slice by slice
and optionally joined by one 3D cut; see the module docstring of
:mod:`napari_medsegfm.backends.classic` for the method.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from ..types import Box2D, Box3D, CancelToken
from .classic_ops import (
    box_fit,
    down,
    fill_holes_2d,
    graph_cut,
    hist_costs,
    histogram_modes,
    keep_touching,
    largest_cc,
    mode_focus,
    prior_costs,
    signed_distance,
    smooth_up,
)

__all__ = ["BoxStepMixin"]


class BoxStepMixin:
    """The box step of ``ClassicBackend``: one box's mask from the loaded image.

    Uses the backend's ``_vol``, ``_grey`` and its tuning attributes (``margin``,
    ``max_roi_voxels``, ``lam``, ...); not usable on its own.
    """
    def _roi_factor(self, n_vox: int, ny: int, nx: int) -> int:
        f = 1
        while n_vox / (f * f) > self.max_roi_voxels and min(ny, nx) // (f + 1) >= 8:
            f += 1
        return f

    def _segment_2d(self, img: np.ndarray, rect: tuple[int, int, int, int], spacing: Sequence[float],
                    fg_model: tuple[np.ndarray, np.ndarray] | None = None,
                    shrink: tuple[float, float] = (0.0, 0.0),
                    inner: np.ndarray | None = None) -> tuple[np.ndarray, tuple]:
        """GrabCut-like 2D segmentation of ``rect = (y0, x0, y1, x1)`` (inclusive, ROI coords).

        ``inner`` (bool, ``img``'s shape): voxels of objects nested in this one (their boxes lie
        inside its box). They belong to this object's region (hard foreground: the object
        surrounds them) but not to its intensity model, so a ring (myocardium around the blood
        pool, oedema around a tumour core) is modelled by its own intensities.
        """
        y0, x0, y1, x1 = rect
        h, w = img.shape
        yy, xx = np.mgrid[0:h, 0:w]
        cy, cx = (y0 + y1) / 2.0, (x0 + x1) / 2.0
        # the shape prior is the ellipse inscribed in the box shrunk by the expected
        # slack of a drawn/simulated box (``shrink`` pixels per side)
        ry = max((y1 - y0 + 1) / 2.0 - shrink[0], 1.0, 0.3 * (y1 - y0 + 1))
        rx = max((x1 - x0 + 1) / 2.0 - shrink[1], 1.0, 0.3 * (x1 - x0 + 1))
        r2 = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2
        inside = (yy >= y0) & (yy <= y1) & (xx >= x0) & (xx <= x1)
        vals = img
        iv = np.clip(vals, 0, 255).astype(np.int64)
        p = np.where(inside, 0.5 + self.box_prior * np.tanh(self.box_prior_k * (1.0 - np.sqrt(r2))), 0.05)
        pf, pb = prior_costs(p)
        hard_bg = ~inside
        inner = None if inner is None or not (inner & inside).any() else (inner & inside)
        own = inside if inner is None else inside & ~inner
        if not own.any():
            inner, own = None, inside
        if fg_model is not None:
            models = [fg_model]
        else:
            wc = np.clip(1.0 - r2, 0.0, 1.0)[own] + 1e-3
            bg_sample = (~inside) | (own & (r2 > 1.6))
            lut_f, lut_b = hist_costs(vals[own], vals[bg_sample] if bg_sample.any() else vals[own],
                                       fg_w=wc)
            models = [(lut_f, lut_b)]
            if self.mode_width > 0:
                # the object fills most of a tight box: also try favouring the main intensity mode
                models.insert(0, (mode_focus(lut_f, self.mode_width), lut_b))
                if self.box_modes > 1:  # and the box's other big modes (a bright crescent beside a dark wall)
                    for m in histogram_modes(lut_f, self.box_modes, self.box_mode_share)[1:]:
                        models.append((mode_focus(lut_f, self.mode_width, m), lut_b))
        # the box is tight: its object spans it up to the expected slack
        target = (y0 + shrink[0], x0 + shrink[1], y1 - shrink[0], x1 - shrink[1])
        best = None
        for lut_f, lut_b in models:
            mask = inside
            for it in range(max(self.iterations, 1)):
                mask = graph_cut(vals, lut_f[iv] + pf, lut_b[iv] + pb, spacing, self.lam, hard_bg=hard_bg,
                                 hard_fg=inner)
                mask = fill_holes_2d(largest_cc(mask)) if mask.any() else mask
                if it + 1 < self.iterations and mask.any() and fg_model is None:
                    bgm = inside & ~ndimage.binary_dilation(mask, iterations=2) | ~inside
                    fgm = mask if inner is None else mask & ~inner
                    if bgm.any() and fgm.any():
                        lut_f, lut_b = hist_costs(vals[fgm], vals[bgm])
            score = box_fit(mask, target, inside, self.fit_fill)
            if best is None or score > best[0] + 1e-9:
                best = (score, mask, (lut_f, lut_b))
        assert best is not None
        _, mask, model = best
        if not mask.any():  # nothing distinguishable: fall back to an ellipse in the box
            mask = inside & (r2 <= 1.0)
        return mask, model

    def _segment_box(self, box: Box3D | Box2D, cancel: CancelToken, inner: np.ndarray | None = None) -> np.ndarray:
        """One box's mask; ``inner``: voxels of the objects nested in it (see ``_segment_2d``)."""
        assert self._vol is not None and self._grey is not None
        shape = self._vol.spatial_shape
        sp = self._vol.spacing
        out = np.zeros(shape, dtype=bool)
        if isinstance(box, Box2D) or len(shape) == 2:
            z = None if len(shape) == 2 else box.z  # type: ignore[union-attr]
            plane = self._grey if z is None else self._grey[z]
            sp2 = sp if z is None else sp[1:]
            y0, x0, y1, x1 = box.y_min, box.x_min, box.y_max, box.x_max
            my = max(int(math.ceil(self.margin * (y1 - y0 + 1))), 4)
            mx = max(int(math.ceil(self.margin * (x1 - x0 + 1))), 4)
            Y0, X0 = max(y0 - my, 0), max(x0 - mx, 0)
            Y1, X1 = min(y1 + my, plane.shape[0] - 1), min(x1 + mx, plane.shape[1] - 1)
            sub = plane[Y0:Y1 + 1, X0:X1 + 1]
            f = self._roi_factor(sub.size, *sub.shape)
            small = down(sub, f)
            rect = (y0 - Y0) // f, (x0 - X0) // f, min((y1 - Y0) // f, small.shape[0] - 1), min((x1 - X0) // f, small.shape[1] - 1)
            shrink = (self.box_slack * plane.shape[0] / 256 / f, self.box_slack * plane.shape[1] / 256 / f)
            inn = None
            if inner is not None:
                ip = inner if z is None else inner[z]
                inn = ip[Y0:Y1 + 1, X0:X1 + 1]
                inn = (down(inn.astype(np.float32), f) >= 0.5) if f > 1 else inn
            m, _ = self._segment_2d(small, rect, (sp2[0] * f, sp2[1] * f), shrink=shrink, inner=inn)
            m = smooth_up(m, f, sub.shape)
            if z is None:
                out[Y0:Y1 + 1, X0:X1 + 1] = m
            else:
                out[z, Y0:Y1 + 1, X0:X1 + 1] = m
            return out
        return self._segment_box3d(box, cancel, inner)

    def _segment_box3d(self, box: Box3D, cancel: CancelToken, inner: np.ndarray | None = None) -> np.ndarray:
        assert self._vol is not None and self._grey is not None
        shape = self._vol.spatial_shape
        sz, sy, sx = self._vol.spacing
        y0, x0, y1, x1 = box.y_min, box.x_min, box.y_max, box.x_max
        z0, z1, zm = box.z_min, box.z_max, box.mid_slice
        # ROI: the rectangle grown by a margin that increases away from the mid slice
        nz = z1 - z0 + 1
        my = max(int(math.ceil(self.margin * (y1 - y0 + 1))), 4)
        mx = max(int(math.ceil(self.margin * (x1 - x0 + 1))), 4)
        Y0, X0 = max(y0 - my, 0), max(x0 - mx, 0)
        Y1, X1 = min(y1 + my, shape[1] - 1), min(x1 + mx, shape[2] - 1)
        sub = self._grey[z0:z1 + 1, Y0:Y1 + 1, X0:X1 + 1]
        f = self._roi_factor(sub.size, *sub.shape[1:])
        img = down(sub, f)
        sp = (sz, sy * f, sx * f)
        _, h, w = img.shape
        rect = ((y0 - Y0) // f, (x0 - X0) // f, min((y1 - Y0) // f, h - 1), min((x1 - X0) // f, w - 1))
        k = zm - z0
        shrink = (self.box_slack * shape[1] / 256 / f, self.box_slack * shape[2] / 256 / f)
        inn = np.zeros(img.shape, dtype=bool)
        if inner is not None:
            isub = inner[z0:z1 + 1, Y0:Y1 + 1, X0:X1 + 1]
            inn = (down(isub.astype(np.float32), f) >= 0.5) if f > 1 else isub.copy()
        mid, model = self._segment_2d(img[k], rect, sp[1:], shrink=shrink, inner=inn[k] if inn[k].any() else None)
        lut_f, lut_b = model
        masks = np.zeros(img.shape, dtype=bool)
        masks[k] = mid
        # slice-by-slice propagation with the neighbour's mask as a soft prior
        grow_px = max(int(round(max(4.0, 0.5 * sz) / min(sp[1:]))), 2)
        for direction in (1, -1):
            prev = mid
            z = k + direction
            while 0 <= z < nz:
                cancel.check()
                if not prev.any():
                    break
                allowed = ndimage.binary_dilation(prev, iterations=grow_px)
                dist_in = ndimage.distance_transform_edt(prev, sampling=sp[1:])
                dist_out = ndimage.distance_transform_edt(~prev, sampling=sp[1:])
                sd = np.where(prev, dist_in, -dist_out)  # signed distance, + inside
                scale = max(0.5 * sz, 2.0)
                p = 0.5 + (self.prior_strength + 0.1) * np.tanh(sd / scale)
                pf, pb = prior_costs(p)
                plane = img[z]
                iv = np.clip(plane, 0, 255).astype(np.int64)
                m = graph_cut(plane, lut_f[iv] + pf, lut_b[iv] + pb, sp[1:], self.lam, hard_bg=~allowed & ~inn[z],
                              hard_fg=inn[z] if inn[z].any() else None)
                m = keep_touching(m, prev) if m.any() else m
                if not m.any():  # keep the object alive to its tight z end: shrink the prior
                    m = ndimage.binary_erosion(prev, iterations=1)
                    if not m.any():
                        m = prev
                m = fill_holes_2d(m)
                masks[z] = m
                prev = m
                z += direction
        if self.join_3d and nz > 1:
            cancel.check()
            sd = signed_distance(masks, sp)
            scale = max(sp[1:]) * 2.0
            p = 0.5 + (self.prior_strength + 0.1) * np.tanh(sd / scale)
            pf, pb = prior_costs(p)
            iv = np.clip(img, 0, 255).astype(np.int64)
            band = ndimage.binary_dilation(masks, iterations=grow_px) if masks.any() else masks
            band |= inn
            m3 = graph_cut(img, lut_f[iv] + pf, lut_b[iv] + pb, sp, self.lam, hard_bg=~band,
                           hard_fg=inn if inn.any() else None)
            if m3.any():
                masks = keep_touching(m3, masks)
                masks = fill_holes_2d(masks)
        out = np.zeros(shape, dtype=bool)
        out[z0:z1 + 1, Y0:Y1 + 1, X0:X1 + 1] = smooth_up(masks, f, sub.shape)
        return out
