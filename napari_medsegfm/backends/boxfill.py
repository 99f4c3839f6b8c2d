"""The "fill the box" baseline backend (registered as ``boxfill``).

A yardstick, not a tool: a box prompt becomes the filled box (a 3D box is its xy
rectangle over its whole z range); a positive click adds a ball of
:attr:`BoxFillBackend.click_radius_mm`, a negative click removes one; scribbles add
or remove their voxels. Deterministic, no dependencies, no weights.

Also holds small prompt helpers shared with the ``classic`` backend.
"""

from __future__ import annotations

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

__all__ = ["BoxFillBackend", "box_slices", "ball_offsets", "paint_ball"]


def box_slices(box: Box3D | Box2D, shape: tuple[int, ...]) -> tuple[slice, ...]:
    """Index of a box's filled region in an array of spatial ``shape``.

    A :class:`Box3D` covers its xy rectangle over ``z_min..z_max``; a :class:`Box2D`
    covers its rectangle on slice ``z`` of a 3D volume, or the rectangle of a 2D image.

    Parameters
    ----------
    box : Box3D or Box2D
        Inclusive voxel indices.
    shape : tuple of int
        Spatial shape ``(Z, Y, X)`` or ``(Y, X)``.

    Returns
    -------
    tuple of slice
        One slice per axis of ``shape`` (stop exclusive).
    """
    if isinstance(box, Box3D):
        return (slice(box.z_min, box.z_max + 1), slice(box.y_min, box.y_max + 1),
                slice(box.x_min, box.x_max + 1))
    yx = (slice(box.y_min, box.y_max + 1), slice(box.x_min, box.x_max + 1))
    if len(shape) == 3:
        return (slice(box.z, box.z + 1),) + yx  # type: ignore[operator]
    return yx


def ball_offsets(radius_mm: float, spacing: Sequence[float]) -> np.ndarray:
    """Integer offsets of the voxels within ``radius_mm`` of the origin.

    The origin itself is always included, so a radius below the voxel size gives one voxel.

    Parameters
    ----------
    radius_mm : float
        Ball radius in mm.
    spacing : sequence of float
        Voxel size in mm per axis, array order (``(dz, dy, dx)`` or ``(dy, dx)``).

    Returns
    -------
    np.ndarray
        ``(N, ndim)`` int offsets in voxels, array axis order.
    """
    sp = np.asarray(spacing, dtype=float)
    r = np.maximum(np.floor(radius_mm / sp), 0).astype(int)
    grids = np.meshgrid(*[np.arange(-k, k + 1) for k in r], indexing="ij")
    off = np.stack([g.ravel() for g in grids], axis=1)
    d2 = ((off * sp) ** 2).sum(axis=1)
    return off[d2 <= radius_mm**2 + 1e-9]


def paint_ball(mask: np.ndarray, center: Sequence[int], offsets: np.ndarray, value: bool) -> None:
    """Set ``mask`` to ``value`` on ``center + offsets`` (clipped to the array), in place.

    Parameters
    ----------
    mask : np.ndarray
        Bool mask ``(Z, Y, X)`` or ``(Y, X)``, modified in place.
    center : sequence of int
        Voxel index, array axis order.
    offsets : np.ndarray
        ``(N, ndim)`` int offsets from :func:`ball_offsets`.
    value : bool
        True paints, False erases.
    """
    pts = np.asarray(center, dtype=np.int64)[None, :] + offsets
    ok = np.all((pts >= 0) & (pts < np.asarray(mask.shape)), axis=1)
    pts = pts[ok]
    mask[tuple(pts.T)] = value


class BoxFillBackend:
    """Fill the box; clicks paint/erase small balls. See the module docstring.

    Parameters
    ----------
    device : str, optional
        Ignored (always ``"cpu"``); accepted like every backend's.
    click_radius_mm : float, optional
        Radius in mm of the ball a click adds or removes (default 5 mm).
    """

    name = "boxfill"
    capabilities = Capability.BOX3D | Capability.BOX2D | Capability.POINTS | Capability.SCRIBBLE
    #: radius of the ball a click adds or removes, in mm
    click_radius_mm = 5.0

    def __init__(self, device: str | None = None, click_radius_mm: float | None = None) -> None:
        self._volume: Volume | None = None
        if click_radius_mm is not None:
            self.click_radius_mm = float(click_radius_mm)
        self.device = "cpu"

    @classmethod
    def status(cls) -> BackendStatus:
        """Always ready (no weights, no extra package).

        Returns
        -------
        BackendStatus
            ``state="ready"``, ``device="cpu"``.
        """
        return BackendStatus(name=cls.name, capabilities=cls.capabilities, state="ready",
                             device="cpu", weights="none needed",
                             message="baseline: fills the box, clicks paint small balls")

    def set_image(self, volume: Volume) -> None:
        """Keep ``volume`` for its shape and spacing (nothing is precomputed).

        Parameters
        ----------
        volume : Volume
            ``(Z, Y, X)`` or ``(Y, X)`` (``(Y, X, 3)``) with ``spacing`` in mm.
        """
        self._volume = volume

    def reset(self) -> None:
        """Forget the image."""
        self._volume = None

    def predict(self, prompts: Sequence[Prompt], prev_mask: np.ndarray | None,
                cancel: CancelToken | None = None) -> np.ndarray:
        """Bool mask in the volume's spatial shape, computed from all ``prompts``.

        Starts from the union of the filled boxes; with no box, from ``prev_mask``
        (or empty). Points and scribbles are then applied in order.

        Parameters
        ----------
        prompts : sequence of Prompt
            The object's boxes, points and scribbles, oldest first.
        prev_mask : np.ndarray or None
            The object's current bool mask, used only when ``prompts`` hold no box.
        cancel : CancelToken, optional
            Checked before each prompt is applied.

        Returns
        -------
        np.ndarray
            ``bool``, spatial shape ``(Z, Y, X)`` or ``(Y, X)``.

        Raises
        ------
        RuntimeError
            :meth:`set_image` was not called.
        UnsupportedPromptError, ValueError
            A text prompt, or a prompt outside the volume.
        """
        if self._volume is None:
            raise RuntimeError("boxfill: call set_image(volume) before predict()")
        check_capabilities(self, prompts)
        shape = self._volume.spatial_shape
        for p in prompts:
            validate_prompt(p, shape)
        boxes = [p for p in prompts if isinstance(p, (Box3D, Box2D))]
        if boxes:
            mask = np.zeros(shape, dtype=bool)
            for b in boxes:
                mask[box_slices(b, shape)] = True
        elif prev_mask is not None:
            mask = np.array(prev_mask, dtype=bool, copy=True)
        else:
            mask = np.zeros(shape, dtype=bool)
        off = ball_offsets(self.click_radius_mm, self._volume.spacing)
        for p in prompts:
            if cancel is not None:
                cancel.check()
            if isinstance(p, Point):
                paint_ball(mask, p.zyx, off, p.positive)
            elif isinstance(p, Scribble):
                mask[tuple(p.voxels.T)] = p.positive
        return mask
