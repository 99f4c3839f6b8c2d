"""Label-image primitives shared by the session, the CLI and the dataset tools.

All functions work on a region of interest: they touch only the bounding box of
what changes, never the whole volume more than once.
"""

from __future__ import annotations

import numpy as np

__all__ = ["bbox_of", "union_bbox", "merge_object_mask"]

BBox = tuple[slice, ...]


def bbox_of(mask: np.ndarray, pad: int = 0) -> BBox | None:
    """Tight bounding box of the True voxels of ``mask`` as slices (``None`` if empty).

    ``pad`` grows the box on every side (clipped to the array).
    """
    if mask.size == 0:
        return None
    out = []
    for ax in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != ax)
        proj = np.any(mask, axis=other) if other else mask
        idx = np.flatnonzero(proj)
        if idx.size == 0:
            return None
        lo = max(int(idx[0]) - pad, 0)
        hi = min(int(idx[-1]) + 1 + pad, mask.shape[ax])
        out.append(slice(lo, hi))
    return tuple(out)


def union_bbox(a: BBox | None, b: BBox | None) -> BBox | None:
    """Smallest box containing both (either may be ``None``)."""
    if a is None:
        return b
    if b is None:
        return a
    return tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b))


def merge_object_mask(
    labels: np.ndarray,
    mask: np.ndarray,
    label_id: int,
    overwrite: bool = False,
    roi: BBox | None = None,
) -> BBox | None:
    """Write one object's new ``mask`` into ``labels`` in place.

    Voxels of ``label_id`` outside ``mask`` become background; voxels inside ``mask``
    become ``label_id`` where they are background or already ``label_id`` — or
    everywhere when ``overwrite`` is True. Other objects are never erased otherwise.

    Parameters
    ----------
    labels : np.ndarray
        Label image, spatial shape ``(Z, Y, X)`` or ``(Y, X)``; modified in place.
    mask : np.ndarray of bool
        Same shape as ``labels``.
    label_id : int
        The object's label (>= 1, must fit ``labels.dtype``).
    overwrite : bool
        Let the object take voxels of other objects.
    roi : tuple of slice, optional
        A box known to contain every voxel of the old and new object (saves a full
        scan when the caller knows it).

    Returns
    -------
    tuple of slice or None
        Bounding box of the voxels that changed, ``None`` if nothing changed.
    """
    if labels.shape != mask.shape:
        raise ValueError(f"mask shape {mask.shape} differs from labels shape {labels.shape}")
    if label_id < 1 or label_id > np.iinfo(labels.dtype).max:
        raise ValueError(f"label_id {label_id} does not fit labels of dtype {labels.dtype}")
    if roi is None:
        roi = union_bbox(bbox_of(mask), bbox_of(labels == label_id))
        if roi is None:
            return None
    lab = labels[roi]
    m = np.asarray(mask[roi], dtype=bool)
    old = lab == label_id
    if overwrite:
        new = m
    else:
        new = m & ((lab == 0) | old)
    changed = old != new
    if not changed.any():
        return None
    lab[old & ~new] = 0
    lab[new & ~old] = label_id
    inner = bbox_of(changed)
    assert inner is not None
    return tuple(slice(r.start + i.start, r.start + i.stop) for r, i in zip(roi, inner))
