"""Plain data shared by every layer: volumes, prompts, capabilities, objects, cases.

Axis conventions (the classic bug of this field, fixed here once):

* A 3D array is ``(Z, Y, X) = (D, H, W)``; a 2D grey image is ``(Y, X)``; a 2D RGB
  image is ``(Y, X, 3)``.
* ``Volume.spacing`` is in millimetres **in array axis order** (``(dz, dy, dx)`` for 3D,
  ``(dy, dx)`` for 2D). File formats that store spacing in another order (CVPR npz
  stores ``(x, y, z)``) are converted at the io boundary, never later.
* Prompt coordinates are integer voxel indices in array axis order, inclusive.

Nothing here imports Qt, napari or torch. Prompt constructors validate what they can
know alone (ordering, non-negativity, kinds); :func:`validate_prompt` checks a prompt
against a volume shape.

A package: the prompts, capabilities and box geometry are
:mod:`napari_medsegfm.types.prompts`; every name of :data:`__all__` is importable from
``napari_medsegfm.types``.
"""

from __future__ import annotations

import enum
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .prompts import (
    Box2D,
    Box3D,
    Capability,
    Point,
    Prompt,
    Scribble,
    TextPrompt,
    box_volume,
    boxes_extent,
    extent_nested,
    nested_inner,
    prompt_from_dict,
    prompt_kind,
    prompt_to_dict,
    required_capability,
    validate_prompt,
)

__all__ = [
    "Volume",
    "box_volume",
    "boxes_extent",
    "extent_nested",
    "nested_inner",
    "Box3D",
    "Box2D",
    "Point",
    "Scribble",
    "TextPrompt",
    "Prompt",
    "Capability",
    "ObjectInfo",
    "ObjectStatus",
    "Case",
    "CancelToken",
    "Cancelled",
    "validate_prompt",
    "prompt_kind",
    "prompt_to_dict",
    "prompt_from_dict",
    "required_capability",
]


# --------------------------------------------------------------------------- volume
@dataclass
class Volume:
    """An image with its geometry.

    Parameters
    ----------
    array : np.ndarray
        ``(Z, Y, X)`` for 3D, ``(Y, X)`` for 2D grey, ``(Y, X, 3)`` for 2D RGB.
    spacing : tuple of float
        Voxel size in mm, one value per *spatial* axis, in array axis order.
    affine : np.ndarray or None
        4x4 matrix mapping homogeneous voxel indices **in array axis order** to world
        coordinates (mm, RAS+), where the source has one.
    meta : dict
        Anything needed to write results back exactly: ``source`` (path), ``modality``,
        ``format``, original orientation/affine/header, ...
    """

    array: np.ndarray
    spacing: tuple[float, ...] = ()
    affine: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        arr = np.asarray(self.array)
        if arr.ndim not in (2, 3):
            raise ValueError(
                f"Volume.array must be 2D (Y, X), 2D RGB (Y, X, 3) or 3D (Z, Y, X); got shape {arr.shape}"
            )
        self.array = arr
        nsp = len(self.spatial_shape)
        if not self.spacing:
            self.spacing = (1.0,) * nsp
        sp = tuple(float(s) for s in self.spacing)
        if len(sp) != nsp:
            raise ValueError(
                f"Volume.spacing {sp} has {len(sp)} values; expected {nsp} for spatial shape {self.spatial_shape}"
            )
        if not all(np.isfinite(s) and s > 0 for s in sp):
            raise ValueError(f"Volume.spacing {sp} must be finite and positive (mm)")
        self.spacing = sp
        if self.affine is not None:
            aff = np.asarray(self.affine, dtype=float)
            if aff.shape != (4, 4):
                raise ValueError(f"Volume.affine must be 4x4; got shape {aff.shape}")
            self.affine = aff

    @property
    def is_rgb(self) -> bool:
        """True for a 2D colour image ``(Y, X, 3|4)``."""
        return self.array.ndim == 3 and self.array.shape[-1] in (3, 4) and bool(self.meta.get("rgb", False))

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """Shape without a trailing RGB channel: ``(Z, Y, X)`` or ``(Y, X)``."""
        if self.is_rgb:
            return tuple(self.array.shape[:2])
        return tuple(self.array.shape)

    @property
    def ndim(self) -> int:
        """Number of spatial dimensions (2 or 3)."""
        return len(self.spatial_shape)

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in millilitres (area in cm^2 x 1 for 2D images)."""
        return float(np.prod(self.spacing)) / 1000.0

    @classmethod
    def rgb(cls, array: np.ndarray, spacing: tuple[float, float] = (1.0, 1.0), **kw: Any) -> Volume:
        """Build a 2D RGB volume ``(Y, X, 3)`` (``meta["rgb"]`` set, so the last axis is a channel).

        Parameters
        ----------
        array : np.ndarray
            ``(Y, X, 3)`` (or ``(Y, X, 4)``) colour image, usually ``uint8``.
        spacing : tuple of float
            Pixel size in mm, ``(dy, dx)``.
        **kw
            Other :class:`Volume` fields (``affine``, ``meta``; ``meta`` is copied).

        Returns
        -------
        Volume
            ``is_rgb`` is True and ``spatial_shape`` is ``(Y, X)``.

        Raises
        ------
        ValueError
            ``spacing`` does not have two finite positive values.
        """
        meta = dict(kw.pop("meta", {}) or {})
        meta["rgb"] = True
        return cls(array=array, spacing=spacing, meta=meta, **kw)


# -------------------------------------------------------------------------- objects
class ObjectStatus(str, enum.Enum):
    """Where an object of a session stands: ``empty``, ``prompted``, ``edited`` or ``accepted``.

    The values are strings, so a status compares equal to (and serialises as) its value.
    """
    EMPTY = "empty"
    PROMPTED = "prompted"
    EDITED = "edited"
    ACCEPTED = "accepted"


@dataclass
class ObjectInfo:
    """One object of a session: one label id, a name, an RGBA colour.

    Parameters
    ----------
    label_id : int
        The label value its voxels hold in the label image.
    name : str
        Display name (a class name such as ``"liver"``, or empty).
    color : tuple of 4 float, optional
        RGBA in 0..1; ``None`` lets the session pick one.
    status : ObjectStatus
        Empty, prompted, edited or accepted.
    overwrite : bool
        True: a prediction for this object may replace voxels of other objects; False: it
        only fills background.
    instance : bool
        True for an instance class (one label per connected component).
    meta : dict
        Free-form extra data (kept, never interpreted by the engine).
    """

    label_id: int
    name: str = ""
    color: tuple[float, float, float, float] | None = None
    status: ObjectStatus = ObjectStatus.EMPTY
    overwrite: bool = False
    instance: bool = False
    meta: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------- cases
@dataclass
class Case:
    """Everything a reader found in one case (one file or one case folder).

    Parameters
    ----------
    image : Volume
        The primary image, ``(Z, Y, X)``, ``(Y, X)`` or ``(Y, X, 3)``.
    source : Path, optional
        The file or folder it was read from.
    format : str
        Reader name (``"cvpr_npz"``, ``"nifti"``, ``"dicom"``, ...).
    name : str
        Case name for display and file names.
    labels : dict of str to np.ndarray
        Label images in the image's spatial shape, by role: ``"gts"`` (ground truth),
        ``"segs"`` (a saved prediction/correction), ``"prev_pred"``.
    images : dict of str to Volume
        Extra co-registered images (e.g. the four Dixon sequences of an IVDM3Seg case,
        keyed by sequence name).
    label_names : dict of int to str
        Label id to class name (from ``text_prompts``, metadata, mask file names).
    boxes : list of Box3D or Box2D
        Box prompts in array coordinates; ``boxes[i]`` is for label ``boxes[i].object_id``.
    text_prompts : dict of int to str
        Label id to the text prompt of that class (CVPR text task).
    instance_label : int, optional
        The label id of the instance class of a text case, if any.
    clicks : list of dict, optional
        Per object, the CVPR file's clicks: ``{"fg": [[z, y, x], ...], "bg": [...]}``.
    clicks_order : list, optional
        The CVPR file's order of those clicks.
    meta : dict
        Reader-specific data needed to write results back (``format``, ``source``,
        ``grid``, header fields, ...).
    """

    image: Volume
    source: Path | None = None
    format: str = ""
    name: str = ""
    labels: dict[str, np.ndarray] = field(default_factory=dict)
    images: dict[str, Volume] = field(default_factory=dict)
    label_names: dict[int, str] = field(default_factory=dict)
    boxes: list[Box3D | Box2D] = field(default_factory=list)
    text_prompts: dict[int, str] = field(default_factory=dict)
    instance_label: int | None = None
    clicks: list[dict[str, list[list[int]]]] | None = None
    clicks_order: list[Any] | None = None
    meta: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------- cancellation
class Cancelled(Exception):
    """Raised inside a backend when its :class:`CancelToken` was set."""


class CancelToken:
    """A thread-safe cancellation flag; backends call :meth:`check` between slices/iterations."""

    __slots__ = ("_event", "reason")

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = ""

    def cancel(self, reason: str = "cancelled") -> None:
        """Request cancellation; the backend raises :class:`Cancelled` at its next :meth:`check`.

        Parameters
        ----------
        reason : str
            Why (the :class:`Cancelled` exception's message).
        """
        self.reason = reason
        self._event.set()

    @property
    def cancelled(self) -> bool:
        """True once :meth:`cancel` was called."""
        return self._event.is_set()

    def check(self) -> None:
        """Raise :class:`Cancelled` if cancellation was requested."""
        if self._event.is_set():
            raise Cancelled(self.reason or "cancelled")

    def wait(self, timeout: float) -> bool:
        """Sleep up to ``timeout`` seconds, waking early on cancel.

        Parameters
        ----------
        timeout : float
            Seconds to wait at most.

        Returns
        -------
        bool
            True when cancelled (now or while waiting), False after a full ``timeout``.
        """
        return self._event.wait(timeout)
