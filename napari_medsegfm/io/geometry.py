"""Voxel grids of the clinical formats (DICOM, NRRD, MetaImage, Slicer ``.seg.nrrd``).

Every reader of these formats hands its voxels to :func:`canonical_view` in *index
order* ``(i, j, k)`` — the order ITK, NRRD and NIfTI store them: ``i`` along a row
(DICOM column index), ``j`` down the rows, ``k`` across slices — together with the
4x4 affine that maps ``(i, j, k, 1)`` to **RAS** millimetres. The view is then brought
to the closest canonical (RAS+) orientation exactly as the NIfTI reader does it
(:func:`nibabel.as_closest_canonical`: :func:`nibabel.orientations.io_orientation`,
then :func:`~nibabel.orientations.apply_orientation`) and returned in array order
``(Z, Y, X)``. So the same image stored as NIfTI, DICOM, NRRD or MHA opens with the
same voxels, the same scale and the same orientation.

The source grid travels in ``meta["grid"]`` (:class:`dict` with ``shape`` = source
``(i, j, k)`` shape, ``affine_ras`` = source index → RAS, ``space`` = the file's own
patient space); :func:`to_source_order` undoes the canonical view for writing labels
back onto the source grid, voxel for voxel.

DICOM, NRRD and ITK use LPS patient coordinates; :data:`LPS_TO_RAS` converts.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "LPS_TO_RAS",
    "canonical_view",
    "to_source_order",
    "source_grid",
    "affine_lps",
]

#: diag(-1, -1, 1, 1): LPS millimetres <-> RAS millimetres (its own inverse)
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

_RAS = ("R", "A", "S")


def _orient() -> Any:
    from nibabel import orientations

    return orientations


def canonical_view(data_ijk: np.ndarray, affine_ras: np.ndarray) -> tuple[np.ndarray, tuple[float, ...],
                                                                          np.ndarray, dict[str, Any]]:
    """Closest-canonical ``(Z, Y, X)`` view of a 3D index-order array.

    Parameters
    ----------
    data_ijk : np.ndarray
        Voxels, shape ``(I, J, K)`` (index order).
    affine_ras : np.ndarray
        4x4, ``(i, j, k, 1)`` → RAS mm.

    Returns
    -------
    array : np.ndarray
        ``(Z, Y, X)`` = the canonical ``(X, Y, Z)`` transposed; a view of ``data_ijk``
        (flips and transposes only, no copy).
    spacing : tuple of float
        ``(dz, dy, dx)`` in mm: column norms of the canonical affine.
    affine_zyx : np.ndarray
        4x4, ``(z, y, x, 1)`` array index → RAS mm.
    grid : dict
        ``shape`` and ``affine_ras`` of the source grid (for :func:`to_source_order`).
    """
    o = _orient()
    aff = np.asarray(affine_ras, dtype=float)
    if data_ijk.ndim != 3:
        raise ValueError(f"canonical_view needs a 3D (I, J, K) array; got shape {data_ijk.shape}")
    ornt = o.io_orientation(aff)
    canon = o.apply_orientation(data_ijk, ornt)
    caff = aff @ o.inv_ornt_aff(ornt, data_ijk.shape)
    spacing_xyz = np.sqrt((caff[:3, :3] ** 2).sum(axis=0))
    arr = canon.transpose(2, 1, 0)
    grid = {"shape": tuple(int(s) for s in data_ijk.shape), "affine_ras": aff.copy()}
    return arr, tuple(float(s) for s in spacing_xyz[::-1]), caff[:, [2, 1, 0, 3]], grid


def to_source_order(labels_zyx: np.ndarray, grid: dict[str, Any]) -> np.ndarray:
    """Inverse of :func:`canonical_view`: ``(Z, Y, X)`` labels -> the source's ``(I, J, K)`` order.

    Parameters
    ----------
    labels_zyx : np.ndarray
        Labels as shown, ``(Z, Y, X)``.
    grid : dict
        ``meta["grid"]`` of the case: ``shape`` (I, J, K) and ``affine_ras``.

    Returns
    -------
    np.ndarray
        The labels in file order ``(I, J, K)``.

    Raises
    ------
    ValueError
        Not 3D, or the labels do not fit the grid.
    """
    o = _orient()
    shape = tuple(int(s) for s in grid["shape"])
    aff = np.asarray(grid["affine_ras"], dtype=float)
    if labels_zyx.ndim != 3:
        raise ValueError(f"labels of shape {labels_zyx.shape}; expected 3D (Z, Y, X) on the grid {shape}")
    xyz = labels_zyx.transpose(2, 1, 0)
    back = o.ornt_transform(o.axcodes2ornt(_RAS), o.io_orientation(aff))
    out = o.apply_orientation(xyz, back)
    if tuple(out.shape) != shape:
        raise ValueError(f"labels {labels_zyx.shape} (Z, Y, X) do not fit the source grid {shape} (I, J, K)")
    return out


def affine_lps(grid: dict[str, Any]) -> np.ndarray:
    """The grid's ``(i, j, k, 1)`` -> LPS mm affine.

    Parameters
    ----------
    grid : dict
        ``meta["grid"]``, with ``affine_ras`` (4 x 4, voxel index -> RAS mm).

    Returns
    -------
    np.ndarray
        4 x 4 float.
    """
    return LPS_TO_RAS @ np.asarray(grid["affine_ras"], dtype=float)


def source_grid(case: Any) -> dict[str, Any]:
    """The source grid of any 3D case (``shape``, ``affine_ras``), for writing labels back.

    ``meta["grid"]`` (clinical formats), else the NIfTI affine and shape, else the
    case's ``(Z, Y, X)`` affine or spacing with the array stored as is (file ``(X, Y, Z)``).

    Parameters
    ----------
    case : Case
        A 3D case.

    Returns
    -------
    dict
        ``shape`` (I, J, K) and ``affine_ras`` (4 x 4, voxel index -> RAS mm), plus what
        ``meta["grid"]`` holds.
    """
    meta = case.meta if isinstance(getattr(case, "meta", None), dict) else {}
    vmeta = case.image.meta
    for m in (meta, vmeta):
        if isinstance(m.get("grid"), dict):
            return m["grid"]
    for m in (meta, vmeta):
        if m.get("nifti_affine") is not None and m.get("nifti_shape") is not None:
            shape = tuple(int(s) for s in m["nifti_shape"])[:3]
            return {"shape": shape, "affine_ras": np.asarray(m["nifti_affine"], dtype=float)}
    vol = case.image
    if vol.ndim != 3:
        raise ValueError(f"case {getattr(case, 'name', '')!r}: a {vol.ndim}D image has no 3D grid to write onto")
    if vol.affine is not None:
        aff = np.asarray(vol.affine, dtype=float)[:, [2, 1, 0, 3]]
    else:
        aff = np.diag([*[float(s) for s in vol.spacing[::-1]], 1.0])
    z, y, x = vol.spatial_shape
    return {"shape": (x, y, z), "affine_ras": aff}
