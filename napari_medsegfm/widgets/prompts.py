"""Turn what the user drew in napari prompt layers into :mod:`napari_medsegfm.types` prompts.

Pure numpy, no Qt and no napari import: the functions take layer *data* (vertex
arrays, point coordinates, paint-history atoms) in the layer's data coordinates,
which for every layer the widget creates are the image's voxel indices in array
axis order ``(Z, Y, X)`` (3D) or ``(Y, X)`` (2D, RGB included).

napari puts the centre of voxel ``i`` at coordinate ``i``; the voxel spans
``[i - 0.5, i + 0.5)``. A drawn rectangle therefore covers every voxel it touches:
``lo = floor(min + 0.5)``, ``hi = ceil(max - 0.5)``, clipped to the volume.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from ..types import Box2D, Box3D, Capability, Point, Prompt, Scribble

__all__ = [
    "PromptOutsideError",
    "rectangle_extent",
    "rectangle_to_prompt",
    "point_to_prompt",
    "paint_atoms_to_voxels",
    "scribbles_from_atoms",
    "box_rectangle_vertices",
    "points_of",
    "scribble_voxels_of",
]


class PromptOutsideError(ValueError):
    """A prompt that lies (entirely) outside the image."""


def _cover(lo: float, hi: float, size: int, axis_name: str, what: str) -> tuple[int, int]:
    """Inclusive voxel range touched by the interval ``[lo, hi]`` on an axis of ``size`` voxels."""
    if hi < -0.5 or lo >= size - 0.5:
        raise PromptOutsideError(
            f"{what} lies outside the image on axis {axis_name}: [{lo:.1f}, {hi:.1f}] "
            f"does not meet 0..{size - 1}"
        )
    a = math.floor(lo + 0.5)
    b = math.ceil(hi - 0.5)
    if b < a:
        b = a
    return max(a, 0), min(b, size - 1)


def rectangle_extent(vertices: np.ndarray, spatial_shape: Sequence[int]) -> dict[str, int]:
    """Voxel extent of a napari rectangle.

    Parameters
    ----------
    vertices : np.ndarray
        ``(4, D)`` corner coordinates in data space; ``D == len(spatial_shape)``.
        For a 3D volume the rectangle lies on one slice (same ``z`` for all
        corners, as napari draws it in 2D view).
    spatial_shape : sequence of int
        ``(Z, Y, X)`` or ``(Y, X)``.

    Returns
    -------
    dict
        ``y_min, y_max, x_min, x_max`` (inclusive) and, for 3D, ``z`` (the slice).

    Raises
    ------
    PromptOutsideError
        When the rectangle does not touch the image.
    """
    v = np.asarray(vertices, dtype=float)
    shape = tuple(int(s) for s in spatial_shape)
    nd = len(shape)
    if v.ndim != 2 or v.shape[1] != nd or len(v) < 2:
        raise ValueError(f"rectangle vertices must be (N>=2, {nd}) for an image of shape {shape}; got {v.shape}")
    out: dict[str, int] = {}
    off = 0
    if nd == 3:
        zs = v[:, 0]
        z = int(round(float(np.median(zs))))
        if not 0 <= z < shape[0]:
            raise PromptOutsideError(f"rectangle on slice z={z} is outside the volume (0..{shape[0] - 1})")
        out["z"] = z
        off = 1
    out["y_min"], out["y_max"] = _cover(v[:, off].min(), v[:, off].max(), shape[off], "y", "rectangle")
    out["x_min"], out["x_max"] = _cover(v[:, off + 1].min(), v[:, off + 1].max(), shape[off + 1], "x", "rectangle")
    return out


def rectangle_to_prompt(
    vertices: np.ndarray,
    spatial_shape: Sequence[int],
    object_id: int,
    *,
    z_min: int | None = None,
    z_max: int | None = None,
    capabilities: Capability = Capability.BOX3D | Capability.BOX2D,
) -> Box3D | Box2D:
    """Prompt for a rectangle drawn on one slice, with an optional z extent.

    On a 3D volume the result is a :class:`Box3D` spanning ``[z_min, z_max]`` (the
    drawn slice is ``z_mid``; default extent: the drawn slice alone, widened to
    contain it). A one-slice extent becomes a :class:`Box2D` when the backend serves
    ``BOX2D`` but not ``BOX3D``. On a 2D image it is always a :class:`Box2D`.

    Raises
    ------
    PromptOutsideError
        When the rectangle or its z extent lies outside the volume.
    """
    shape = tuple(int(s) for s in spatial_shape)
    ext = rectangle_extent(vertices, shape)
    if len(shape) == 2:
        return Box2D(ext["y_min"], ext["x_min"], ext["y_max"], ext["x_max"], z=None, object_id=object_id)
    z = ext["z"]
    lo = z if z_min is None else int(z_min)
    hi = z if z_max is None else int(z_max)
    if lo > hi:
        lo, hi = hi, lo
    if hi < 0 or lo >= shape[0]:
        raise PromptOutsideError(f"box z extent [{lo}, {hi}] is outside the volume (0..{shape[0] - 1})")
    lo, hi = max(lo, 0), min(hi, shape[0] - 1)
    lo, hi = min(lo, z), max(hi, z)
    if lo == hi and (Capability.BOX2D in capabilities) and Capability.BOX3D not in capabilities:
        return Box2D(ext["y_min"], ext["x_min"], ext["y_max"], ext["x_max"], z=z, object_id=object_id)
    return Box3D(lo, hi, ext["y_min"], ext["x_min"], ext["y_max"], ext["x_max"], object_id=object_id, z_mid=z)


def point_to_prompt(coord: Sequence[float], spatial_shape: Sequence[int], object_id: int,
                    positive: bool = True) -> Point:
    """A click at data coordinate ``coord`` (``(z, y, x)`` or ``(y, x)``) as a :class:`Point`.

    Raises
    ------
    PromptOutsideError
        When the click is outside the image.
    """
    shape = tuple(int(s) for s in spatial_shape)
    c = np.asarray(coord, dtype=float).ravel()
    if c.size != len(shape):
        raise ValueError(f"click has {c.size} coordinates; an image of shape {shape} needs {len(shape)}")
    idx = np.floor(c + 0.5).astype(int)
    if np.any(idx < 0) or np.any(idx >= np.asarray(shape)):
        raise PromptOutsideError(
            f"click at {tuple(round(float(x), 1) for x in c)} is outside the image of shape {shape}"
        )
    return Point(tuple(int(i) for i in idx), positive=positive, object_id=object_id)


def _atom_fields(atom: Any) -> tuple[str, Any, Any, Any]:
    """Normalise a napari Labels paint-history atom.

    napari 0.5+ records ``_MaskedPaintAtom(slice_key, mask, old_values, new_value)``
    for brush/fill/polygon and ``(indices, old_values, new_values)`` tuples for
    ``data_setitem``.
    """
    if hasattr(atom, "slice_key") and hasattr(atom, "new_value"):
        return "masked", atom.slice_key, atom.mask, atom.new_value
    indices, _old, new = atom
    return "indices", indices, None, new


def paint_atoms_to_voxels(atoms: Iterable[Any], ndim: int) -> dict[int, np.ndarray]:
    """Voxels written by one paint stroke, grouped by the value painted.

    Parameters
    ----------
    atoms : iterable
        The ``value`` of a napari ``Labels.events.paint`` event (one undo item).
    ndim : int
        Number of data dimensions of the painted layer.

    Returns
    -------
    dict
        ``{value: (N, ndim) int64 voxel indices}``; the last write wins where a
        voxel was painted more than once in the stroke.
    """
    chunks: list[tuple[np.ndarray, np.ndarray]] = []
    for atom in atoms:
        kind, key, mask, new = _atom_fields(atom)
        if kind == "masked":
            starts = np.array([s.start or 0 for s in key], dtype=np.int64)
            shape = tuple((s.stop - (s.start or 0)) for s in key)
            m = np.ones(shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
            if m.ndim < ndim:  # napari may keep only the painted dims
                m = m.reshape(shape)
            idx = np.argwhere(m) + starts
            vals = np.full(len(idx), int(new), dtype=np.int64)
        else:
            idx = np.stack([np.asarray(a, dtype=np.int64).ravel() for a in key], axis=1)
            nv = np.asarray(new)
            vals = np.broadcast_to(nv, (len(idx),)).astype(np.int64) if nv.ndim == 0 else nv.astype(np.int64).ravel()
        chunks.append((idx.reshape(-1, ndim), vals))
    if not chunks:
        return {}
    if len(chunks) == 1:
        idx, vals = chunks[0]
    else:
        # keep the last write of each voxel: reverse, unique on first occurrence
        idx = np.concatenate([c[0] for c in chunks][::-1])
        vals = np.concatenate([c[1] for c in chunks][::-1])
        _, first = np.unique(idx, axis=0, return_index=True)
        idx, vals = idx[first], vals[first]
    out: dict[int, np.ndarray] = {}
    for v in np.unique(vals):
        out[int(v)] = np.ascontiguousarray(idx[vals == v])
    return out


def scribbles_from_atoms(atoms: Iterable[Any], spatial_shape: Sequence[int], object_id: int,
                         positive_value: int = 1, negative_value: int = 2) -> list[Scribble]:
    """Scribble prompts from one paint stroke on the scribble layer (1 positive, 2 negative).

    Voxels outside ``spatial_shape`` are dropped; erasing (value 0) gives no prompt.
    """
    shape = np.asarray([int(s) for s in spatial_shape])
    out: list[Scribble] = []
    for value, vox in paint_atoms_to_voxels(atoms, len(shape)).items():
        if value not in (positive_value, negative_value) or len(vox) == 0:
            continue
        inside = np.all((vox >= 0) & (vox < shape), axis=1)
        vox = vox[inside]
        if len(vox):
            out.append(Scribble(vox, positive=(value == positive_value), object_id=object_id))
    return out


def box_rectangle_vertices(prompt: Box3D | Box2D, ndim: int) -> np.ndarray:
    """The ``(4, ndim)`` rectangle napari should show for a box prompt.

    A :class:`Box3D` is drawn on its mid slice; the half-voxel margin makes the
    rectangle cover exactly the boxed voxels (inverse of :func:`rectangle_extent`).
    """
    y0, y1 = prompt.y_min - 0.5, prompt.y_max + 0.5
    x0, x1 = prompt.x_min - 0.5, prompt.x_max + 0.5
    rect = np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]], dtype=float)
    if ndim == 2:
        return rect
    z = prompt.mid_slice if isinstance(prompt, Box3D) else (prompt.z or 0)
    return np.column_stack([np.full(4, float(z)), rect])


def points_of(prompts: Iterable[Prompt]) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates ``(N, ndim)`` and polarity ``(N,)`` of the :class:`Point` prompts in a list."""
    pts = [p for p in prompts if isinstance(p, Point)]
    if not pts:
        return np.zeros((0, 0)), np.zeros(0, dtype=bool)
    return (np.array([p.zyx for p in pts], dtype=float), np.array([p.positive for p in pts], dtype=bool))


def scribble_voxels_of(prompts: Iterable[Prompt]) -> list[tuple[np.ndarray, bool]]:
    """``(voxels, positive)`` of every :class:`Scribble` in a prompt list, oldest first."""
    return [(p.voxels, p.positive) for p in prompts if isinstance(p, Scribble)]
