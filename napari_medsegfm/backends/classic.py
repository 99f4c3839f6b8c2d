"""The weight-free backend (registered as ``classic``): seeded graph cuts in a region of interest.

No download, CPU only, deterministic. Every prediction works in a region of interest
(ROI) around the prompts, never on the whole volume, and solves a binary
s-t min-cut (PyMaxflow, Boykov-Kolmogorov) on a 6-connected (3D) / 4-connected (2D)
grid:

* data term: intensity likelihoods from smoothed histograms of a foreground and a
  background sample, plus a spatial prior (log-odds);
* smoothness term: contrast-sensitive, ``lam * exp(-dI^2 / 2 sigma^2) * (s_min / s_axis)``
  (GrabCut style, sigma from the ROI's mean squared neighbour difference);
* hard constraints: clicks and scribbles, the outside of a box on its own slice,
  slices outside a 3D box's z range, and the ROI border where it must stay put.

Prompts:

``Box3D``
    The xy rectangle is segmented on its slice (``z_mid``, the CVPR 2025 convention;
    the middle slice otherwise) with GrabCut-like iterations: foreground intensities
    from the box weighted towards its centre, background from a ring around it and the
    box corners, a shape prior from the ellipse inscribed in the box (shrunk by the
    expected slack of a simulated box), the outside of the box forced to background.
    Two intensity models are tried, the plain one and one focused on the box's main
    intensity mode (a tight box is mostly filled by its object); the result whose
    bounding box best spans the box wins. That slice is then propagated slice by slice
    to ``z_min`` and ``z_max``, each slice using its neighbour's mask as a soft shape
    prior (so tubes that drift and organs that shrink are followed), and a 3D cut over
    the ROI with that prior joins the slices.
``Box2D``
    The same 2D step on one slice (or a 2D image).
``Point`` / ``Scribble``
    Refine the current mask (``prev_mask``) locally around the newest click. The
    distance from the click to the nearest voxel of the other label (measured in plane
    and through slices separately: thick slices make errors thin in z) sizes the error
    the click marks; a cut in a window of a few such radii re-decides the voxels within
    two radii, with the click's own neighbourhood as the intensity model of its class,
    the current mask as the prior elsewhere, every click and scribble as a hard seed
    and the window border fixed. A negative click also drops the part of the mask it
    cut off. With no current mask, a lone positive click grows a blob in the
    intensity-homogeneous region around it.

Nested objects (option ``nested``, on by default): on a box step of several objects
(``medsegfm predict``, the joint backend), an object whose box holds other objects' boxes
gets their masks through :meth:`ClassicBackend.predict_nested`: they count as its region
(hard foreground) but not as its intensity model, so myocardium around the blood pool or
oedema around a tumour core is modelled by its own intensities. Measured on the development
set (``benchmarks/results/accuracy_dev.md``, ``accuracy_nested.md``): alone it raised DSC_AUC
(2.519 -> 2.545) but not the final DSC, because a nested object's click could leak into its
container and be written on top of it (the spinal grey matter into the white matter);
together with the click step's rule that an object takes voxels from another only where its
own click points (:func:`napari_medsegfm.tasks.predict.merge_masks`) it raises both (final
0.663 -> 0.666, DSC_AUC 2.519 -> 2.553), and a choice on either half of the cases holds on
the other. ``nested=False`` gives the plain box step.

Large ROIs are processed at a reduced in-plane resolution (block means) so a cut
stays under ``max_roi_voxels`` nodes; the result is resampled back.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from ..types import (
    Box2D,
    Box3D,
    CancelToken,
    Capability,
    Point,
    Prompt,
    Scribble,
    Volume,
    validate_prompt,
)
from .base import BackendStatus, check_capabilities
from .classic_ops import (
    box_fit,
    dist_mm,
    down,
    fill_holes_2d,
    graph_cut,
    hist_costs,
    keep_touching,
    largest_cc,
    load_maxflow,
    mix_costs,
    mode_focus,
    prior_costs,
    signed_distance,
    smooth_up,
)

__all__ = ["ClassicBackend", "graph_cut"]

log = logging.getLogger(__name__)

# ------------------------------------------------------------------------- backend
class ClassicBackend:
    """Weight-free interactive segmentation by seeded graph cuts (see module docstring)."""

    name = "classic"
    capabilities = Capability.BOX3D | Capability.BOX2D | Capability.POINTS | Capability.SCRIBBLE

    def __init__(
        self,
        device: str | None = None,
        *,
        lam: float = 2.0,
        lam_click: float = 2.0,
        prior_strength: float = 0.3,
        margin: float = 0.25,
        max_roi_voxels: int = 400_000,
        iterations: int = 2,
        join_3d: bool = True,
        click_radius_min_mm: float = 4.0,
        click_radius_max_mm: float = 40.0,
        click_roi_factor: float = 2.5,
        core_fraction: float = 0.5,
        click_mix: float = 0.5,
        click_influence: float = 1.0,
        click_lean: float = 0.3,
        homog_tol: float = 30.0,
        box_prior: float = 0.4,
        box_prior_k: float = 2.0,
        box_slack: float = 2.5,
        change_limit: float = 2.0,
        first_click_min_mm: float = 6.0,
        mode_width: float = 1.5,
        fit_fill: float = 1.0,
        nested: bool = True,
        **_unused: float,
    ) -> None:
        self.device = "cpu"
        self.lam = float(lam)
        self.lam_click = float(lam_click)
        self.prior_strength = float(prior_strength)
        self.margin = float(margin)
        self.max_roi_voxels = int(max_roi_voxels)
        self.iterations = int(iterations)
        self.join_3d = bool(join_3d)
        self.click_radius_min_mm = float(click_radius_min_mm)
        self.click_radius_max_mm = float(click_radius_max_mm)
        self.click_roi_factor = float(click_roi_factor)
        self.core_fraction = float(core_fraction)
        self.click_mix = float(click_mix)
        self.click_influence = float(click_influence)
        self.click_lean = float(click_lean)
        self.homog_tol = float(homog_tol)
        self.box_prior = float(box_prior)
        self.box_prior_k = float(box_prior_k)
        self.box_slack = float(box_slack)
        self.change_limit = float(change_limit)
        self.first_click_min_mm = float(first_click_min_mm)
        self.mode_width = float(mode_width)
        self.fit_fill = float(fit_fill)
        self.nested = bool(nested)
        if _unused:
            log.debug("classic: ignoring unknown options %s", sorted(_unused))
        self._vol: Volume | None = None
        self._grey: np.ndarray | None = None

    @classmethod
    def status(cls) -> BackendStatus:
        try:
            load_maxflow()
        except ImportError as exc:
            return BackendStatus(name=cls.name, capabilities=cls.capabilities, state="package missing",
                                 message=f"needs PyMaxflow: pip install PyMaxflow ({exc})")
        return BackendStatus(name=cls.name, capabilities=cls.capabilities, state="ready", device="cpu",
                             weights="none needed", message="seeded graph cuts in a region of interest")

    # -- protocol ---------------------------------------------------------------
    def set_image(self, volume: Volume) -> None:
        if self._vol is volume:
            return
        self._vol = volume
        arr = volume.array
        if volume.is_rgb:
            rgb = arr[..., :3].astype(np.float32)
            grey = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        else:
            grey = arr
            if grey.dtype != np.uint8:
                lo, hi = np.percentile(grey, [0.5, 99.5])
                grey = (np.clip((grey - lo) / max(hi - lo, 1e-6), 0, 1) * 255).astype(np.uint8)
        self._grey = np.asarray(grey)

    def reset(self) -> None:
        self._vol = None
        self._grey = None

    def predict(self, prompts: Sequence[Prompt], prev_mask: np.ndarray | None,
                cancel: CancelToken | None = None) -> np.ndarray:
        """Bool mask in the volume's spatial shape (see the module docstring)."""
        shape = self._check_inputs(prompts, "predict")
        cancel = cancel or CancelToken()
        if prev_mask is not None and prev_mask.shape != shape:
            raise ValueError(f"prev_mask has shape {prev_mask.shape}; expected {shape}")
        boxes = [p for p in prompts if isinstance(p, (Box3D, Box2D))]
        edits = [p for p in prompts if isinstance(p, (Point, Scribble))]
        newest = prompts[-1] if prompts else None
        have_prev = prev_mask is not None and bool(prev_mask.any())
        if isinstance(newest, (Box3D, Box2D)) or (boxes and not have_prev):
            return self._box_step(boxes, edits, cancel)
        if not edits:
            return np.zeros(shape, dtype=bool) if prev_mask is None else np.asarray(prev_mask, dtype=bool).copy()
        base = np.asarray(prev_mask, dtype=bool).copy() if have_prev else np.zeros(shape, dtype=bool)
        return self._refine(base, edits, boxes, cancel, all_edits=not have_prev)

    def _check_inputs(self, prompts: Sequence[Prompt], method: str) -> tuple[int, ...]:
        """The image's spatial shape, after checking the image is set and every prompt fits it."""
        if self._vol is None or self._grey is None:
            raise RuntimeError(f"classic: call set_image(volume) before {method}()")
        check_capabilities(self, prompts)
        shape = self._vol.spatial_shape
        for p in prompts:
            validate_prompt(p, shape)
        return shape

    def predict_nested(self, prompts: Sequence[Prompt], inner: np.ndarray,
                       cancel: CancelToken | None = None) -> np.ndarray:
        """A box step for an object that surrounds other objects.

        Parameters
        ----------
        prompts : sequence of Prompt
            The object's box(es), optionally with clicks (as for :meth:`predict` on a box step).
        inner : np.ndarray of bool
            The spatial shape ``(Z, Y, X)`` / ``(Y, X)``: the masks of the objects whose boxes
            lie inside this object's box (a tumour core in its oedema, the blood pool in the
            myocardium). They count as part of this object's region, not of its intensity
            model; the caller writes them on top afterwards.

        Returns
        -------
        np.ndarray of bool
            The object's mask, ``inner`` included.
        """
        shape = self._check_inputs(prompts, "predict_nested")
        cancel = cancel or CancelToken()
        inner = np.asarray(inner, dtype=bool)
        if inner.shape != shape:
            raise ValueError(f"inner has shape {inner.shape}; expected {shape}")
        boxes = [p for p in prompts if isinstance(p, (Box3D, Box2D))]
        edits = [p for p in prompts if isinstance(p, (Point, Scribble))]
        if not boxes or not self.nested or not inner.any():
            return self.predict(prompts, None, cancel)
        return self._box_step(boxes, edits, cancel, inner)

    def _box_step(self, boxes: Sequence[Box3D | Box2D], edits: Sequence[Point | Scribble], cancel: CancelToken,
                  inner: np.ndarray | None = None) -> np.ndarray:
        """The mask of an object's boxes (then the clicks given with them, a replayed prompt list).

        ``inner``: voxels of other objects nested in this one (used by the joint step, see
        ``_segment_2d``).
        """
        assert self._vol is not None
        mask = np.zeros(self._vol.spatial_shape, dtype=bool)
        for b in boxes:
            cancel.check()
            mask |= self._segment_box(b, cancel, inner)
        if edits:
            mask = self._refine(mask, edits, boxes, cancel, all_edits=True)
        return mask

    # -- box ---------------------------------------------------------------------
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

    # -- clicks ------------------------------------------------------------------
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
        r_p = float(np.clip(r_p, self.click_radius_min_mm / s_in, self.click_radius_max_mm / s_in))
        if nd == 3:
            r_z = float(np.clip(r_z, min(self.click_radius_min_mm / sp[0], 1.0), self.click_radius_max_mm / sp[0]))
        half = np.empty(nd, dtype=int)
        hp = np.clip(self.click_roi_factor * r_p, 2 * self.click_radius_min_mm / s_in,
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
        if not pos:
            out = self._drop_cut_off(out, mask, edits)
        return out

    def _first_click(self, c: tuple[int, ...]) -> np.ndarray:
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
        lut_f, lut_b = hist_costs(img[ball], img[shell] if shell.any() else img.ravel())
        p = 0.5 + 0.4 * np.tanh(2.0 * (1.0 - d / rho))
        pf, pb = prior_costs(p)
        iv = np.clip(img, 0, 255).astype(np.int64)
        hard_fg = np.zeros(img.shape, dtype=bool)
        hard_fg[tuple(loc)] = True
        hard_bg = d > 2.0 * rho
        m = graph_cut(img, lut_f[iv] + pf, lut_b[iv] + pb, sp, self.lam_click, hard_fg=hard_fg, hard_bg=hard_bg)
        m = keep_touching(m, hard_fg)
        if m.any():
            m = fill_holes_2d(m)
        out = np.zeros(shape, dtype=bool)
        out[roi] = m
        return out

    def _window(self, c: tuple[int, ...], shape: tuple[int, ...]) -> tuple[tuple[slice, ...], tuple[int, ...]]:
        assert self._vol is not None
        sp = np.asarray(self._vol.spacing, dtype=float)
        half = np.ceil(self.click_radius_max_mm / sp).astype(int) + 1
        if len(shape) == 3:
            half[0] = min(half[0], 12)
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
            r_z = float(ndimage.distance_transform_edt(~other)[loc])
            if plane.any():
                r_p = float(ndimage.distance_transform_edt(~plane)[loc[1:]])
            else:  # the other label is only on other slices: use the 3D distance, in pixels
                sp = self._vol.spacing
                r_p = float(ndimage.distance_transform_edt(~other, sampling=sp)[loc]) / min(sp[1:])
        else:
            r_p = float(ndimage.distance_transform_edt(~other)[loc])
            r_z = 1.0
        return max(r_p, 1.0), max(r_z, 0.5)

    def _homogeneous_radius(self, c: tuple[int, ...]) -> tuple[float, float]:
        """Radius (in-plane pixels, z voxels) of the intensity-homogeneous region around ``c``."""
        assert self._grey is not None
        roi, loc = self._window(c, self._grey.shape)
        sub = ndimage.uniform_filter(self._grey[roi].astype(np.float32), 3)
        nb = tuple(slice(max(v - 1, 0), v + 2) for v in loc)
        mu = float(sub[nb].mean())
        sd = float(sub[nb].std())
        tol = max(2.5 * sd, self.homog_tol)
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
