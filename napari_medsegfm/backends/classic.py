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
    Several intensity models are tried: the plain one, one focused on the box's main
    intensity mode (a tight box is mostly filled by its object) and, with ``box_modes=2``
    (the default), one focused on the box's next big mode (a right ventricle's box is
    centred on the darker septum; its object is the bright crescent beside it); the result
    whose bounding box best spans the box wins. That slice is then propagated slice by slice
    to ``z_min`` and ``z_max``, each slice using its neighbour's mask as a soft shape
    prior (so tubes that drift and organs that shrink are followed), and a 3D cut over
    the ROI with that prior joins the slices.
``Box2D``
    The same 2D step on one slice (or a 2D image).
``Point`` / ``Scribble``
    Refine the current mask (``prev_mask``) locally around the newest click. The
    distance from the click to the nearest voxel of the other label (measured in plane
    and through slices separately: thick slices make errors thin in z) sizes the error
    the click marks (at least 4 mm, or 12 pixels where 4 mm is more: microscopy and
    ultrasound voxels are a fraction of a millimetre); a cut in a window of a few such radii re-decides the voxels within
    two radii, with the click's own neighbourhood as the intensity model of its class,
    the current mask as the prior elsewhere, every click and scribble as a hard seed
    and the window border fixed. A positive click beside the mask also takes the missed band
    along the mask's surface that it points at (the enhancing rim of a tumour, the edge of a
    blood pool: voxels near the surface, of the click's intensity, connected to it within its
    reach), only where that band has an edge (its mean stands out from the ring around it).
    A negative click only removes, and also drops the part of the mask it cut off. With no current mask (no box: the challenge's box-less brain-tumour
    cases, a click on an empty layer), a lone positive click takes the intensity-homogeneous
    region connected to it, opened so thin bridges into neighbours break (less where that
    would erase a thin object), as the sample and prior of one cut within 40 mm. On such an
    object a negative click also removes the leak branch it points at (the mask's part that
    a tightening tolerance and opening separate from the positive clicks, nearer the
    negative click than any positive one; only where the click sits deep in the wrong
    region) and never what lies nearer a positive click than itself.

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
the other. ``nested=False`` gives the plain box step. The second box mode and the pixel cap
on the click radius then took it to final 0.678, DSC_AUC 2.602 (``accuracy_boxmodes.md``,
``accuracy_pxfloor.md``: chosen on either half and in every leave-one-out fold). Objects
grown from clicks alone (the region first click, the leak cut, keeping what is near a
positive click) took the three box-less brain-tumour runs from final 0.456 / DSC_AUC 1.52 to
0.546 / 2.04 and the development set to final 0.691, DSC_AUC 2.678 (box runs unchanged);
every file run box-less: ``accuracy_boxless.md``.
The contrast-gated band of a positive click took it to final 0.695, DSC_AUC 2.692
(``accuracy_band.md``, ``accuracy_band_width.md``, ``accuracy_band_boxless.md``: chosen on
either half, and on all box-less folds).

Large ROIs are processed at a reduced in-plane resolution (block means) so a cut
stays under ``max_roi_voxels`` nodes; the result is resampled back.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

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
from .classic_box import BoxStepMixin
from .classic_clicks import ClickEditMixin
from .classic_ops import (
    graph_cut,
    load_maxflow,
)

__all__ = ["ClassicBackend", "graph_cut"]

log = logging.getLogger(__name__)

# ------------------------------------------------------------------------- backend
class ClassicBackend(BoxStepMixin, ClickEditMixin):
    """Weight-free interactive segmentation by seeded graph cuts (see the module docstring).

    Every option has a measured default (benchmarks/results/accuracy_sweeps.md,
    accuracy_nested.md); unknown keyword options are ignored (logged at debug level), so a
    command line may pass options meant for another backend.

    Parameters
    ----------
    device : str, optional
        Ignored: the cut runs on the CPU (``device`` is always ``"cpu"``).
    lam : float
        Weight of the contrast-sensitive smoothness term of the box step's cuts.
    lam_click : float
        The same weight for the cuts of a click or scribble edit.
    prior_strength : float
        How far (0..0.5) the spatial prior leans from 0.5 towards the neighbouring slice's mask
        (propagation) or the current mask (clicks).
    margin : float
        The box's ROI margin per side, as a fraction of the box's size (at least 4 pixels).
    max_roi_voxels : int
        Largest cut in nodes; larger ROIs are cut at a reduced in-plane resolution (block means).
    iterations : int
        GrabCut iterations of the box's slice (intensity models re-estimated from the mask).
    join_3d : bool
        After propagation, one 3D cut over the ROI with the stacked slices as prior.
    click_radius_min_mm, click_radius_max_mm : float
        Bounds (mm) of the error radius a click marks (the distance from the click to the
        nearest voxel of the other label).
    click_radius_min_px : float
        Cap (in-plane pixels) on that lower bound, so that images with fine voxels (microscopy,
        ultrasound: 4 mm is 26 pixels at 0.15 mm) get click edits sized by their pixels, not by
        millimetres meant for CT and MR (0: no cap).
    click_roi_factor : float
        The edit window's half-size in error radii.
    core_fraction : float
        Radius (in error radii) of the click's core: hard to its class, its intensity model.
    click_mix : float
        Weight (0..1) of the click's core against the whole mask/background in the edit's
        intensity models.
    click_influence : float
        Width (in error radii) of the Gaussian over which the prior leans to the click's class.
    click_lean : float
        How far (0..0.5) the prior leans to the click's class at the click.
    homog_tol : float
        Intensity tolerance (0..255 grey levels) of the homogeneous region that sizes a first
        click on an empty mask.
    box_prior, box_prior_k : float
        Height (0..0.5) and steepness of the ellipse prior inscribed in a box.
    box_slack : float
        Expected slack of a drawn/simulated box per side, in pixels of a 256-pixel image
        (scaled with the image size).
    change_limit : float
        Only voxels within this many error radii of the click may change.
    first_click_min_mm : float
        Smallest radius (mm) of the ball a lone positive click grows when no homogeneous region
        forms around it (or ``first_click_region`` is off).
    first_click_region : bool
        A lone positive click (no mask, no box: a box-less brain-tumour case, a click on an empty
        layer) takes the intensity-homogeneous region connected to it as its object's first
        estimate, cut once; off: a ball sized by that region's inscribed radius (too small for
        most objects: mean DSC of a first click over the development set's 60 objects 0.27 -> 0.43).
    first_click_tol : float
        Smallest intensity tolerance (0..255 grey levels) of that region.
    first_click_open : int
        Iterations of the binary opening that cuts that region's thin bridges into neighbouring
        tissue of similar intensity (0: none); fewer where the opening would leave less than a
        ball of ``first_click_min_mm`` (a thin structure such as the myocardium).
    leak_cut : bool
        A negative click on an object without a box also removes the wrong branch it points at:
        the part of the mask cut off from the positive clicks by a tightening intensity
        tolerance and opening, nearer the negative click than any positive one (a region grown
        from a click leaks; a local edit only nibbles at the leak). Only where the click sits at
        least half ``first_click_min_mm`` deep in the wrong region (not on a thin shell).
    neg_keep_near : float
        On an object without a box, a negative click keeps what lies nearer a positive click
        than ``neg_keep_near`` times its distance to the negative click (0: off).
    mode_width : float
        Width (in units of the mode's spread) of the window around the box's main intensity
        mode, tried as a second foreground model (0: off).
    fit_fill : float
        Weight of the fill term (the mask's share of the box) subtracted from the bounding-box
        IoU when choosing between the box step's models.
    nested : bool
        Use :meth:`predict_nested` on box steps of objects whose boxes hold other boxes (on by
        default: measured on the development set).
    box_modes : int
        The box step's candidate intensity models: the whole box, its main intensity mode and
        its next ``box_modes - 1`` big modes (a bright right ventricle beside the darker septum
        that fills the box's centre); the candidate whose mask best spans the box wins.
    box_mode_share : float
        Smallest share (0..1) of the box's intensity distribution a further mode must hold.
    band_contrast : float
        A positive click outside the mask also takes the missed band along the mask's surface
        it points at (voxels within ``band_width`` times the click's distance of the mask,
        within its intensity tolerance and reach, connected to it) where the band's mean
        differs from the ring around it by at least ``band_contrast`` tolerances (0: off).
    band_max_ratio : float
        Largest such band, as a multiple of the mask's size.
    band_width : float
        The band's depth, in multiples of the click's distance to the mask.
    offplane_z_mm : bool
        A click on a slice where the mask has no voxel: its error radius through the slices is
        its distance to the mask in mm over the slice thickness (on by default); off, the 3D
        distance in unit voxels, where an in-plane offset counts as slices (the old rule).
    """

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
        click_radius_min_px: float = 12.0,
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
        first_click_region: bool = True,
        first_click_tol: float = 20.0,
        first_click_open: int = 2,
        leak_cut: bool = True,
        neg_keep_near: float = 1.0,
        mode_width: float = 1.5,
        fit_fill: float = 1.0,
        nested: bool = True,
        box_modes: int = 2,
        box_mode_share: float = 0.15,
        band_contrast: float = 1.0,
        band_max_ratio: float = 1.5,
        band_width: float = 2.0,
        offplane_z_mm: bool = True,
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
        self.click_radius_min_px = float(click_radius_min_px)
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
        self.first_click_region = bool(first_click_region)
        self.first_click_tol = float(first_click_tol)
        self.first_click_open = int(first_click_open)
        self.leak_cut = bool(leak_cut)
        self.neg_keep_near = float(neg_keep_near)
        self.band_contrast = float(band_contrast)
        self.band_max_ratio = float(band_max_ratio)
        self.band_width = float(band_width)
        self.offplane_z_mm = bool(offplane_z_mm)
        self.mode_width = float(mode_width)
        self.fit_fill = float(fit_fill)
        self.nested = bool(nested)
        self.box_modes = int(box_modes)
        self.box_mode_share = float(box_mode_share)
        if _unused:
            log.debug("classic: ignoring unknown options %s", sorted(_unused))
        self._vol: Volume | None = None
        self._grey: np.ndarray | None = None

    @classmethod
    def status(cls) -> BackendStatus:
        """Whether the backend can run here.

        Returns
        -------
        BackendStatus
            ``ready`` on the CPU (no weights needed), or ``package missing`` naming PyMaxflow.
        """
        try:
            load_maxflow()
        except ImportError as exc:
            return BackendStatus(name=cls.name, capabilities=cls.capabilities, state="package missing",
                                 message=f"needs PyMaxflow: pip install PyMaxflow ({exc})")
        return BackendStatus(name=cls.name, capabilities=cls.capabilities, state="ready", device="cpu",
                             weights="none needed", message="seeded graph cuts in a region of interest")

    # -- protocol ---------------------------------------------------------------
    def set_image(self, volume: Volume) -> None:
        """Take the image the next predictions segment.

        The cuts work on an 8-bit grey copy: RGB is converted to luminance, non-uint8 images
        are windowed to their 0.5-99.5 percentiles. Setting the same ``Volume`` object again
        is free.

        Parameters
        ----------
        volume : Volume
            ``(Z, Y, X)`` or ``(Y, X)`` grey, or ``(Y, X, 3)`` RGB, with spacing in mm in array
            axis order.
        """
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
        """Forget the image (the next prediction needs :meth:`set_image`)."""
        self._vol = None
        self._grey = None

    def predict(self, prompts: Sequence[Prompt], prev_mask: np.ndarray | None,
                cancel: CancelToken | None = None) -> np.ndarray:
        """One object's mask from its prompts (see the module docstring for the method).

        A box as the newest prompt (or boxes without a current mask) runs the box step, then
        the clicks given with it; otherwise the newest click or scribble edits ``prev_mask``
        locally (all of them, in order, when there is no current mask).

        Parameters
        ----------
        prompts : sequence of Prompt
            The object's prompts in the order given: :class:`Box3D`, :class:`Box2D`,
            :class:`Point`, :class:`Scribble` (voxel indices of the spatial shape).
        prev_mask : np.ndarray of bool, optional
            The object's current mask, the spatial shape ``(Z, Y, X)`` / ``(Y, X)``.
        cancel : CancelToken, optional
            Checked between the steps of the work.

        Returns
        -------
        np.ndarray of bool
            The spatial shape ``(Z, Y, X)`` / ``(Y, X)``.

        Raises
        ------
        RuntimeError
            :meth:`set_image` was not called.
        UnsupportedPromptError
            A prompt kind this backend does not take (text).
        ValueError
            A prompt outside the image, or ``prev_mask`` of another shape.
        Cancelled
            ``cancel`` was set.
        """
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
