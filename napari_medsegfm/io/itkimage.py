"""NRRD (``.nrrd``, ``.nhdr``) and MetaImage (``.mha``, ``.mhd``) images and label maps, via SimpleITK.

Reading
    The header is read first (``ReadImageInformation``: size, pixel type, components)
    and the declared size checked against :mod:`~napari_medsegfm.io.limits`; then
    the voxels. ITK gives the grid in LPS (``direction``, ``spacing``, ``origin``; NRRD
    files in RAS space are converted by ITK); the volume is handed to
    :func:`~napari_medsegfm.io.geometry.canonical_view` (RAS, closest canonical,
    ``(Z, Y, X)``), so it opens like the same image stored as NIfTI. 2D files stay
    ``(Y, X)`` (``(Y, X, 3)`` for RGB).

    A file is read as a **label map** (``labels["gts"]``, ``meta["labels_only"]``) when
    ``as_labels=True``, or with ``as_labels=None`` when its name says so (``_seg``,
    ``_label``, ``_mask``, ... as for NIfTI) and its voxels are integers (or
    integer-valued floats). Slicer ``.seg.nrrd`` files are read by
    :mod:`~napari_medsegfm.io.slicerseg`.

Writing
    :func:`save_itk_labels` writes labels (``.nrrd`` or ``.mha``, gzip-compressed) on
    the case's **source grid** (:func:`~napari_medsegfm.io.geometry.source_grid`: the
    NRRD/MHA/DICOM/NIfTI grid it was read from, voxel for voxel), atomically.
    :func:`write_itk_volume` does the same for an image. Detached formats (``.nhdr``,
    ``.mhd`` + data file) are read but not written: two files cannot be replaced in one
    atomic step.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..types import Case, Volume
from ..utils import label_dtype_for
from ._common import (
    GroundTruthProtected,
    as_label_array,
    modality_from_name,
    same_file,
)
from .atomic import atomic_path, backup_file
from .geometry import LPS_TO_RAS, canonical_view, source_grid, to_source_order
from .limits import check_declared_size

__all__ = [
    "ITK_EXTENSIONS",
    "WRITABLE_EXTENSIONS",
    "is_itk_path",
    "itk_stem",
    "itk_format",
    "load_itk",
    "save_itk_labels",
    "write_itk_volume",
    "labels_from_array",
]

logger = logging.getLogger(__name__)

ITK_EXTENSIONS = (".nrrd", ".nhdr", ".mha", ".mhd")
WRITABLE_EXTENSIONS = (".nrrd", ".mha")


def is_itk_path(path: str | os.PathLike[str]) -> bool:
    """True for an NRRD/MetaImage name (``.nrrd``, ``.nhdr``, ``.mha``, ``.mhd``), not ``.seg.nrrd``.

    Parameters
    ----------
    path : path-like
        The file (no file access).
    """
    n = Path(path).name.lower()
    return n.endswith(ITK_EXTENSIONS) and not n.endswith(".seg.nrrd")


def itk_format(path: str | os.PathLike[str]) -> str:
    """``"nrrd"`` or ``"metaimage"`` by extension.

    Parameters
    ----------
    path : path-like
        The file.

    Returns
    -------
    str
    """
    return "nrrd" if Path(path).name.lower().endswith((".nrrd", ".nhdr")) else "metaimage"


def itk_stem(path: str | os.PathLike[str]) -> str:
    """The file name without its NRRD/MetaImage (or ``.seg.nrrd``) extension.

    Parameters
    ----------
    path : path-like
        The file.

    Returns
    -------
    str
    """
    n = Path(path).name
    for ext in (".seg.nrrd", *ITK_EXTENSIONS):
        if n.lower().endswith(ext):
            return n[: -len(ext)]
    return Path(path).stem


def _sitk() -> Any:
    import SimpleITK as sitk

    return sitk


def _np_dtype(reader: Any, src: Path) -> np.dtype:
    sitk = _sitk()
    pid = reader.GetPixelID()
    table = {
        sitk.sitkUInt8: np.uint8, sitk.sitkInt8: np.int8, sitk.sitkUInt16: np.uint16, sitk.sitkInt16: np.int16,
        sitk.sitkUInt32: np.uint32, sitk.sitkInt32: np.int32, sitk.sitkUInt64: np.uint64, sitk.sitkInt64: np.int64,
        sitk.sitkFloat32: np.float32, sitk.sitkFloat64: np.float64,
        sitk.sitkVectorUInt8: np.uint8, sitk.sitkVectorInt8: np.int8, sitk.sitkVectorUInt16: np.uint16,
        sitk.sitkVectorInt16: np.int16, sitk.sitkVectorUInt32: np.uint32, sitk.sitkVectorInt32: np.int32,
        sitk.sitkVectorFloat32: np.float32, sitk.sitkVectorFloat64: np.float64,
    }
    if pid not in table:
        raise ValueError(f"{src}: pixel type {reader.GetPixelIDTypeAsString()} is not supported; expected integer "
                         "or real voxels")
    return np.dtype(table[pid])


def _read(src: Path) -> tuple[np.ndarray, np.ndarray | None, tuple[float, ...], int]:
    """(array in ITK order (z, y, x[, c]), LPS affine of (i, j, k) or None for 2D, 2D spacing, components)."""
    sitk = _sitk()
    if not src.is_file():
        raise FileNotFoundError(f"{src}: no such file")
    if itk_format(src) == "nrrd":
        _check_nrrd_header(src)  # ITK's NRRD reader gives up on huge headers without saying why
    r = sitk.ImageFileReader()
    r.SetFileName(str(src))
    try:
        r.ReadImageInformation()
    except RuntimeError as exc:
        raise ValueError(f"{src}: not a readable {itk_format(src).upper()} file ({_first_line(exc)})") from None
    size = tuple(int(s) for s in r.GetSize())
    ncomp = int(r.GetNumberOfComponents())
    dim = int(r.GetDimension())
    if dim == 4 and size[3] == 1:
        dim, size = 3, size[:3]
    if dim not in (2, 3):
        raise ValueError(f"{src}: a {dim}D image of size {size}; expected a 2D or 3D image")
    if 0 in size:
        raise ValueError(f"{src}: image is empty (size {size})")
    check_declared_size(src, (*size, ncomp), _np_dtype(r, src))
    try:
        img = r.Execute()
    except RuntimeError as exc:
        raise ValueError(f"{src}: voxel data cannot be read ({_first_line(exc)}); the file may be truncated") from None
    if img.GetDimension() == 4:
        img = img[:, :, :, 0]
    arr = sitk.GetArrayFromImage(img)
    sp = np.asarray(img.GetSpacing(), dtype=float)
    if not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise ValueError(f"{src}: spacing {sp.tolist()}; expected finite positive mm")
    if img.GetDimension() == 2:
        return arr, None, (float(sp[1]), float(sp[0])), ncomp
    d = np.asarray(img.GetDirection(), dtype=float).reshape(3, 3)
    aff = np.eye(4)
    aff[:3, :3] = d @ np.diag(sp)
    aff[:3, 3] = np.asarray(img.GetOrigin(), dtype=float)
    if not np.all(np.isfinite(aff)) or abs(np.linalg.det(aff[:3, :3])) < 1e-12:
        raise ValueError(f"{src}: direction/spacing {aff[:3, :3].tolist()} are singular or not finite")
    return arr, aff, (), ncomp


def _check_nrrd_header(src: Path) -> None:
    """Declared sizes x type of an NRRD header (pynrrd) against the size limit."""
    import nrrd

    try:
        header = nrrd.read_header(str(src))
        sizes = [int(v) for v in np.atleast_1d(header.get("sizes", []))]
        dtype = nrrd.reader._determine_datatype(header)  # pynrrd's own mapping of the 'type' field
    except (nrrd.NRRDError, OSError, ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{src}: not a readable NRRD header ({exc})") from None
    check_declared_size(src, sizes, dtype)


def _first_line(exc: Exception) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    for ln in lines:
        if "Exception" not in ln and not ln.startswith("itk::"):
            return ln[:300]
    return lines[-1][:300] if lines else type(exc).__name__


def labels_from_array(arr: np.ndarray, src: Any, key: str = "voxel data") -> np.ndarray:
    """Integer labels from a file's voxels.

    Integer dtypes pass as they are (>= 0), integer-valued floats are cast; fractional or
    negative values are refused naming the file and a sample value.

    Parameters
    ----------
    arr : np.ndarray
        The voxels, any shape.
    src : object
        The file (for messages).
    key : str
        What messages call the data.

    Returns
    -------
    np.ndarray
        Unsigned integer labels, same shape.

    Raises
    ------
    ValueError
    """
    a = np.asarray(arr)
    if a.dtype == bool:
        return a.view(np.uint8)
    if a.dtype.kind == "f":
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{src}: '{key}' has NaN/inf values; expected integer labels")
        frac = a != np.round(a)
        if frac.any():
            v = float(a[frac].flat[0])
            raise ValueError(f"{src}: '{key}' holds fractional values (e.g. {v}); expected integer labels "
                             "(0 = background)")
        if a.size and a.min() < 0:
            raise ValueError(f"{src}: '{key}' has negative labels (min {a.min()}); expected labels >= 0")
        return a.astype(label_dtype_for(int(a.max()) if a.size else 0))
    if a.dtype.kind not in "ui":
        raise ValueError(f"{src}: '{key}' has dtype {a.dtype}; expected integer labels (0 = background)")
    if a.dtype.kind == "i" and a.size and int(a.min()) < 0:
        raise ValueError(f"{src}: '{key}' has negative labels (min {int(a.min())}); expected labels >= 0")
    return a


def _looks_like_labels(src: Path, dtype: np.dtype) -> bool:
    from .nifti import looks_like_labels

    return looks_like_labels(src.with_name(itk_stem(src) + ".nii"), None) and dtype.kind in "uifb"


def load_itk(path: str | os.PathLike[str], *, as_labels: bool | None = None) -> Case:
    """Read an NRRD/MetaImage image or label map as a :class:`Case` (see the module docstring).

    Parameters
    ----------
    path : path-like
        ``.nrrd``, ``.nhdr``, ``.mha`` or ``.mhd``.
    as_labels : bool, optional
        ``None`` decides from the file name and dtype.

    Returns
    -------
    Case
        ``image`` ``(Z, Y, X)`` closest canonical (2D: ``(Y, X)``, RGB ``(Y, X, 3)``), spacing in mm.

    Raises
    ------
    ValueError, FileNotFoundError
        Naming the file: unreadable, a declared size above the limits, or bad geometry.
    """
    src = Path(path)
    fmt = itk_format(src)
    arr, aff_lps, sp2d, ncomp = _read(src)
    if as_labels is None:
        as_labels = ncomp == 1 and _looks_like_labels(src, arr.dtype)
        if as_labels and arr.dtype.kind == "f" and np.any(arr != np.round(arr)):
            as_labels = False  # a float image that merely has "mask" in its name
    if ncomp not in (1, 3) or (ncomp == 3 and aff_lps is not None):
        raise ValueError(f"{src}: {ncomp} components per voxel; expected a scalar image (or 2D RGB)")
    if as_labels:
        if ncomp != 1:
            raise ValueError(f"{src}: a label map needs one component per voxel; has {ncomp}")
        arr = labels_from_array(arr, src)
    meta: dict[str, Any] = {"source": str(src), "format": fmt, "modality": modality_from_name(itk_stem(src))}
    if aff_lps is None:
        if ncomp == 3:
            volume = Volume.rgb(arr.astype(np.uint8) if arr.dtype != np.uint8 else arr, spacing=sp2d,
                                meta=dict(meta))
        else:
            volume = Volume(array=arr, spacing=sp2d, meta=dict(meta))
    else:
        view, spacing, affine_zyx, grid = canonical_view(arr.transpose(2, 1, 0), LPS_TO_RAS @ aff_lps)
        grid["space"] = "LPS"
        meta["grid"] = grid
        volume = Volume(array=view, spacing=spacing, affine=affine_zyx, meta=dict(meta))
    case = Case(image=volume, source=src, format=fmt, name=itk_stem(src), meta=meta)
    if as_labels:
        case.labels["gts"] = volume.array
        case.meta["labels_only"] = True
        case.meta["labels_source"] = str(src)
        volume.meta["labels_only"] = True
    return case


# ----------------------------------------------------------------------------- writing
def _itk_image(data_ijk: np.ndarray, grid: dict[str, Any] | None, spacing2d: tuple[float, ...] = ()) -> Any:
    sitk = _sitk()
    if data_ijk.ndim == 2:
        img = sitk.GetImageFromArray(np.ascontiguousarray(data_ijk))
        if spacing2d:
            img.SetSpacing((float(spacing2d[1]), float(spacing2d[0])))
        return img
    assert grid is not None
    aff = LPS_TO_RAS @ np.asarray(grid["affine_ras"], dtype=float)
    sp = np.sqrt((aff[:3, :3] ** 2).sum(axis=0))
    img = sitk.GetImageFromArray(np.ascontiguousarray(data_ijk.transpose(2, 1, 0)))
    img.SetSpacing(tuple(float(s) for s in sp))
    img.SetDirection(tuple(float(v) for v in (aff[:3, :3] / sp).reshape(-1)))
    img.SetOrigin(tuple(float(v) for v in aff[:3, 3]))
    return img


def guard_ground_truth(target: Path, gt: str | os.PathLike[str] | None, overwrite_gt: bool) -> None:
    """Refuse to write over the case's own label file ``gt`` unless ``overwrite_gt`` (then keep a ``.bak``)."""
    if gt is not None and target.exists() and same_file(target, gt):
        if not overwrite_gt:
            raise GroundTruthProtected(f"{target}: refusing to overwrite the case's ground-truth labels; pass "
                                       "overwrite_gt=True (a .bak copy is kept) or choose another file")
        backup_file(target)


def _check_target(target: Path) -> None:
    n = target.name.lower()
    if n.endswith((".nhdr", ".mhd")):
        raise ValueError(f"{target}: detached headers (.nhdr/.mhd + data file) are not written; write "
                         f"{'.nrrd' if n.endswith('.nhdr') else '.mha'} (one file, replaced atomically)")
    if not n.endswith(WRITABLE_EXTENSIONS):
        raise ValueError(f"{target}: expected a .nrrd or .mha file name")
    if not target.parent.is_dir():
        raise FileNotFoundError(f"cannot write {target}: folder {target.parent} does not exist")


def _write(img: Any, target: Path) -> None:
    sitk = _sitk()
    with atomic_path(target) as tmp:
        try:
            sitk.WriteImage(img, str(tmp), True)
        except RuntimeError as exc:
            raise OSError(f"{target}: SimpleITK could not write it ({_first_line(exc)})") from None


def save_itk_labels(labels: np.ndarray, path: str | os.PathLike[str], *, case: Case | None = None,
                    overwrite_gt: bool = False) -> Path:
    """Write labels as an NRRD/MHA label map on the case's source grid.

    Parameters
    ----------
    labels : np.ndarray
        Integer labels ``(Z, Y, X)`` (or ``(Y, X)``).
    path : path-like
        The file to write (atomically).
    case : Case, optional
        Gives the source grid; without one the labels are written as they are.
    overwrite_gt : bool
        Overwriting the case's own label file (``case.meta["labels_source"]``) needs it
        (a ``.bak`` copy is kept).

    Returns
    -------
    Path

    Raises
    ------
    GroundTruthProtected
        ``path`` is the ground-truth file and ``overwrite_gt`` is False.
    ValueError
        A bad target name, or labels that do not fit the grid.
    """
    target = Path(path)
    _check_target(target)
    arr = as_label_array(labels, f"labels for {target}")
    if case is not None and tuple(arr.shape) != tuple(case.image.spatial_shape):
        raise ValueError(f"{target}: labels have shape {arr.shape}; case {case.name!r} has {case.image.spatial_shape}")
    guard_ground_truth(target, case.meta.get("labels_source") if case is not None else None, overwrite_gt)
    if arr.ndim == 2:
        sp = tuple(case.image.spacing) if case is not None else ()
        img = _itk_image(arr, None, sp)
    else:
        if case is None:
            vol = Volume(array=np.broadcast_to(np.zeros((), np.uint8), arr.shape), spacing=(1.0, 1.0, 1.0))
            case = Case(image=vol)
        grid = source_grid(case)
        img = _itk_image(to_source_order(arr, grid), grid)
    _write(img, target)
    logger.info("saved labels %s %s to %s", arr.shape, arr.dtype, target)
    return target


def write_itk_volume(volume: Volume, path: str | os.PathLike[str], case: Case | None = None) -> Path:
    """Write an image :class:`Volume` as NRRD/MHA on its source grid (RGB only in 2D).

    Parameters
    ----------
    volume : Volume
        ``(Z, Y, X)``, ``(Y, X)`` or ``(Y, X, 3)``.
    path : path-like
        The file to write (atomically).
    case : Case, optional
        Gives the source grid (default the volume's own geometry).

    Returns
    -------
    Path

    Raises
    ------
    ValueError
        A target name that is not NRRD/MetaImage.
    """
    target = Path(path)
    _check_target(target)
    arr = np.asarray(volume.array)
    if volume.ndim == 2:
        if volume.is_rgb:
            sitk = _sitk()
            img = sitk.GetImageFromArray(np.ascontiguousarray(arr), isVector=True)
            img.SetSpacing((float(volume.spacing[1]), float(volume.spacing[0])))
        else:
            img = _itk_image(arr, None, tuple(volume.spacing))
    else:
        grid = source_grid(case if case is not None else Case(image=volume, meta=dict(volume.meta)))
        img = _itk_image(to_source_order(arr, grid), grid)
    _write(img, target)
    return target
