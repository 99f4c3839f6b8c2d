"""NIfTI (``.nii``, ``.nii.gz``) images and label maps.

Reading
    The image is brought to nibabel's *closest canonical* orientation (RAS+, the
    orientation of the CVPR test cases) and then viewed in array order ``(Z, Y, X)``:
    ``array = canonical_data.transpose(2, 1, 0)`` (a view, no copy). ``Volume.spacing``
    is ``(dz, dy, dx)`` of the canonical image and ``Volume.affine`` maps ``(z, y, x)``
    indices to RAS mm. The *original* affine, header, shape and orientation are kept in
    ``Volume.meta`` (``nifti_affine``, ``nifti_header``, ``nifti_shape``, ``axcodes``).

Writing labels
    The inverse of the above: ``(Z, Y, X)`` → canonical ``(X, Y, Z)`` → the source
    orientation, saved with the source affine and header (data type kept when the labels
    fit), so reading a label file and saving it back gives the same voxels, affine and
    codes bit for bit.
"""

from __future__ import annotations

import gzip
import logging
import os
import re
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from ..types import Case, Volume
from ._common import (
    GroundTruthProtected,
    as_label_array,
    check_labels,
    modality_from_name,
    same_file,
)
from .atomic import atomic_path, backup_file
from .limits import check_shape

__all__ = [
    "is_nifti_path",
    "looks_like_labels",
    "load_nifti",
    "read_nifti_volume",
    "save_nifti_labels",
    "write_nifti_volume",
    "nifti_stem",
]

logger = logging.getLogger(__name__)

_LABEL_TOKENS = {"seg", "segs", "label", "labels", "mask", "masks", "gt", "gts", "annotation", "annotations",
                 "labelmap", "segmentation"}


def is_nifti_path(path: str | os.PathLike[str]) -> bool:
    """True for a ``.nii`` or ``.nii.gz`` name (no file access).

    Parameters
    ----------
    path : path-like
        The file.
    """
    n = Path(path).name.lower()
    return n.endswith(".nii") or n.endswith(".nii.gz")


def nifti_stem(path: str | os.PathLike[str]) -> str:
    """``case`` from ``case.nii.gz`` / ``case.nii``.

    Parameters
    ----------
    path : path-like
        The file.

    Returns
    -------
    str
    """
    n = Path(path).name
    for ext in (".nii.gz", ".nii", ".NII.GZ", ".NII"):
        if n.endswith(ext):
            return n[: -len(ext)]
    return Path(path).stem


def looks_like_labels(path: str | os.PathLike[str], dtype: np.dtype | None = None) -> bool:
    """File-name heuristic for a label map: a token like ``seg``/``label``/``mask``/``gt`` and an integer dtype.

    Parameters
    ----------
    path : path-like
        The file (its stem is split at ``_``, ``-``, ``.`` and spaces).
    dtype : np.dtype, optional
        The voxel dtype; ``None`` decides by the name only.

    Returns
    -------
    bool
    """
    toks = {t.lower() for t in re.split(r"[_\-.\s]+", nifti_stem(path)) if t}
    if not toks & _LABEL_TOKENS:
        return False
    return dtype is None or np.dtype(dtype).kind in "uib"


def _nib() -> Any:
    import nibabel as nib

    return nib


def _open(path: Path) -> Any:
    nib = _nib()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such NIfTI file")
    if not os.access(path, os.R_OK):
        raise PermissionError(f"{path}: permission denied (the file exists but may not be read; check its permissions)")
    try:
        img = nib.load(str(path))
    except PermissionError:
        raise PermissionError(f"{path}: permission denied (the file exists but may not be read; "
                              "check its permissions)") from None
    except (nib.filebasedimages.ImageFileError, OSError, EOFError, ValueError, zlib.error, gzip.BadGzipFile,
            OverflowError, MemoryError) as exc:
        raise ValueError(f"{path}: not a readable NIfTI file ({type(exc).__name__}: {exc})") from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise ValueError(f"{path}: nibabel reads it as {type(img).__name__}; expected a NIfTI-1/2 image")
    return img


def _squeeze_shape(img: Any, path: Path) -> tuple[int, ...]:
    shape = tuple(int(s) for s in img.shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) not in (2, 3):
        raise ValueError(f"{path}: image has shape {tuple(img.shape)}; expected a 2D or 3D image (4D series are not supported)")
    if 0 in shape:
        raise ValueError(f"{path}: image is empty (shape {tuple(img.shape)})")
    return shape


def _check_data_size(img: Any, shape: tuple[int, ...], src: Path, labels: bool) -> None:
    """Refuse voxel data whose header-declared size cannot be held, before reading it."""
    dtype = np.dtype(img.get_data_dtype())
    itemsize = dtype.itemsize
    if not labels:
        slope, inter = img.header.get_slope_inter()
        if (slope is not None and slope != 1) or (inter is not None and inter != 0):
            itemsize += 8  # the raw block and the scaled floats are in memory together
    check_shape(shape, itemsize, f"{src}: voxel data (header dims {shape}, {dtype})")


def read_nifti_volume(path: str | os.PathLike[str], *, labels: bool = False) -> tuple[Volume, Any]:
    """Read one NIfTI as a :class:`Volume` in canonical ``(Z, Y, X)`` order.

    Parameters
    ----------
    path : path-like
        ``.nii`` or ``.nii.gz``.
    labels : bool
        Check that the voxel data are integer labels (no scaling applied).

    Returns
    -------
    volume : Volume
        ``(Z, Y, X)`` (2D files: ``(Y, X)``) with spacing in mm in that order and the affine
        of array indices to RAS mm; ``meta["grid"]`` the source orientation.
    image : nibabel.Nifti1Image
        The file's image (header, source affine).

    Raises
    ------
    ValueError, FileNotFoundError
        Naming the file and the problem (truncated gzip, 4D data, NaN/zero zooms, a size
        above the limits, non-label values with ``labels=True``).
    """
    nib = _nib()
    src = Path(path)
    img = _open(src)
    shape = _squeeze_shape(img, src)
    _check_data_size(img, shape, src, labels)
    if len(shape) != len(img.shape):
        img = nib.funcs.squeeze_image(img)
    aff = img.affine
    if aff is None or not np.all(np.isfinite(aff)) or abs(np.linalg.det(aff[:3, :3])) < 1e-12:
        raise ValueError(f"{src}: affine {None if aff is None else aff.tolist()} is missing, singular or not finite")
    zooms = img.header.get_zooms()[: len(shape)]
    if not all(np.isfinite(z) and z > 0 for z in zooms):
        raise ValueError(f"{src}: voxel sizes (pixdim) {tuple(float(z) for z in zooms)}; expected finite positive mm")
    orig_header = img.header.copy()
    axcodes = nib.orientations.aff2axcodes(aff)
    if len(shape) == 3:
        canon = nib.as_closest_canonical(img)
    else:
        canon = img  # 2D: keep as stored
    try:
        if labels:
            data = np.asanyarray(canon.dataobj.get_unscaled() if hasattr(canon.dataobj, "get_unscaled") else canon.dataobj)
        else:
            data = np.asanyarray(canon.dataobj)
    except (OSError, EOFError, ValueError, zlib.error, gzip.BadGzipFile) as exc:
        raise ValueError(f"{src}: voxel data cannot be read ({type(exc).__name__}: {exc}); the file may be truncated") from None
    if data.ndim != len(shape):
        data = data.reshape(shape)
    if labels and isinstance(data, np.memmap):
        data = np.array(data)  # labels get edited: keep them off the (uncompressed) file's memory map
    arr = data.transpose(2, 1, 0) if data.ndim == 3 else data.T
    cz = canon.header.get_zooms()[: len(shape)]
    spacing = tuple(float(z) for z in cz[::-1])
    caff = canon.affine
    if len(shape) == 3:
        affine_zyx = caff[:, [2, 1, 0, 3]]
    else:
        affine_zyx = None
    meta: dict[str, Any] = {
        "source": str(src),
        "nifti_affine": np.array(aff, dtype=float),
        "nifti_header": orig_header,
        "nifti_shape": tuple(int(s) for s in img.shape),
        "axcodes": "".join(str(c) for c in axcodes),
        "modality": modality_from_name(nifti_stem(src)),
    }
    if labels:
        arr = check_labels(arr, None, src, "voxel data")
    elif arr.dtype.kind not in "uifb":
        raise ValueError(f"{src}: voxel dtype {arr.dtype}; expected a numeric image")
    return Volume(array=arr, spacing=spacing, affine=affine_zyx, meta=meta), img


def load_nifti(path: str | os.PathLike[str], *, as_labels: bool | None = None) -> Case:
    """Read a NIfTI image or label map as a :class:`Case`.

    Parameters
    ----------
    path : path-like
        ``.nii`` or ``.nii.gz``.
    as_labels : bool, optional
        ``None`` decides from the file name (:func:`looks_like_labels`). A label map becomes
        ``labels["gts"]`` and also the case's (geometry-only) image with
        ``meta["labels_only"] = True``.

    Returns
    -------
    Case
        ``image`` ``(Z, Y, X)`` (see :func:`read_nifti_volume`).

    Raises
    ------
    ValueError, FileNotFoundError
        As :func:`read_nifti_volume`.
    """
    src = Path(path)
    float_named = False  # named like a label map but stored as floats: labels if every value is whole
    if as_labels is None:
        dtype = None
        try:
            dtype = _open(src).get_data_dtype()
        except ValueError:
            dtype = None
        as_labels = looks_like_labels(src, dtype) if dtype is not None else False
        float_named = dtype is not None and dtype.kind == "f" and looks_like_labels(src)
    if float_named:
        try:
            vol, _img = read_nifti_volume(src, labels=True)
            as_labels = True
        except ValueError as exc:
            logger.info("%s is named like a label map but is not one (%s); reading it as an image", src, exc)
            vol, _img = read_nifti_volume(src, labels=False)
    else:
        vol, _img = read_nifti_volume(src, labels=bool(as_labels))
    vol.meta["format"] = "nifti"
    case = Case(image=vol, source=src, format="nifti", name=nifti_stem(src), meta=dict(vol.meta))
    if as_labels:
        case.labels["gts"] = vol.array
        case.meta["labels_only"] = True
        case.meta["labels_source"] = str(src)
        vol.meta["labels_only"] = True
    return case


# ------------------------------------------------------------------------------ writing
def _to_file_order(arr_zyx: np.ndarray, ref_affine: np.ndarray | None) -> np.ndarray:
    """``(Z, Y, X)`` canonical array → the voxel order of a file with ``ref_affine``."""
    nib = _nib()
    data = arr_zyx.transpose(2, 1, 0) if arr_zyx.ndim == 3 else arr_zyx.T
    if ref_affine is None or arr_zyx.ndim != 3:
        return data
    ornt = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt(("R", "A", "S")),
                                           nib.orientations.io_orientation(ref_affine))
    return nib.orientations.apply_orientation(data, ornt)


def _geometry_from(case: Case | None, path: Path) -> tuple[np.ndarray | None, Any, tuple[int, ...] | None]:
    """(original affine, original header, original shape) to write back into."""
    _nib()
    if case is not None:
        m = case.meta if "nifti_affine" in case.meta else case.image.meta
        if "nifti_affine" in m:
            return m["nifti_affine"], m.get("nifti_header"), m.get("nifti_shape")
        return None, None, None
    if path.exists():
        img = _open(path)
        return img.affine, img.header.copy(), tuple(int(s) for s in img.shape)
    return None, None, None


def _affine_xyz_from_volume(vol: Volume) -> np.ndarray:
    if vol.affine is not None and vol.ndim == 3:
        return np.asarray(vol.affine)[:, [2, 1, 0, 3]]
    aff = np.eye(4)
    sp = vol.spacing[::-1]
    for i, s in enumerate(sp):
        aff[i, i] = s
    return aff


def save_nifti_labels(
    labels: np.ndarray,
    path: str | os.PathLike[str],
    *,
    case: Case | None = None,
    overwrite_gt: bool = False,
    gt_path: str | os.PathLike[str] | None = None,
) -> Path:
    """Write labels ``(Z, Y, X)`` to a NIfTI file, atomically.

    Geometry comes from ``case`` when it was read from NIfTI (the labels are in canonical
    order and go back into the source orientation, affine and header) or, without a case,
    from the existing ``path`` (same); for other cases from ``case.image.affine`` /
    spacing with the array stored as is (``(Z, Y, X)`` -> file ``(X, Y, Z)``); else identity.

    Parameters
    ----------
    labels : np.ndarray
        Integer labels ``(Z, Y, X)`` (or ``(Y, X)``).
    path : path-like
        ``.nii`` or ``.nii.gz`` to write.
    case : Case, optional
        The case the labels belong to.
    overwrite_gt : bool
        Overwriting the case's own label file needs it (a ``.bak`` is kept).
    gt_path : path-like, optional
        That label file (default ``case.meta["labels_source"]``).

    Returns
    -------
    Path

    Raises
    ------
    GroundTruthProtected
        ``path`` is the ground-truth file and ``overwrite_gt`` is False.
    ValueError
        Labels that do not fit the geometry, or values that are not labels.
    """
    nib = _nib()
    target = Path(path)
    if not is_nifti_path(target):
        raise ValueError(f"{target}: expected a .nii or .nii.gz file name")
    if not target.parent.is_dir():
        raise FileNotFoundError(f"cannot write {target}: folder {target.parent} does not exist")
    arr = as_label_array(labels, f"labels for {target}")
    gt = gt_path if gt_path is not None else (case.meta.get("labels_source") if case is not None else None)
    if gt is not None and target.exists() and same_file(target, gt):
        if not overwrite_gt:
            raise GroundTruthProtected(
                f"{target}: refusing to overwrite the case's ground-truth labels; pass overwrite_gt=True "
                "(a .bak copy is kept) or choose another file"
            )
        backup_file(target)
    aff, hdr, shape = _geometry_from(case, target)
    if case is not None and tuple(arr.shape) != tuple(case.image.spatial_shape):
        raise ValueError(f"{target}: labels have shape {arr.shape}; case {case.name!r} has {case.image.spatial_shape}")
    if aff is None:
        # not a NIfTI source: the labels are in the case's own array order, which the
        # case's affine (or spacing) describes; no canonical re-orientation to undo
        aff = _affine_xyz_from_volume(case.image) if case is not None else np.eye(4)
        hdr = None
        data = arr.transpose(2, 1, 0) if arr.ndim == 3 else arr.T
    else:
        data = _to_file_order(arr, aff)
    if shape is not None and int(np.prod(shape)) == data.size and tuple(shape) != data.shape:
        data = data.reshape(shape)
    elif shape is not None and tuple(shape) != data.shape:
        raise ValueError(f"{target}: labels {arr.shape} do not fit the reference NIfTI shape {shape}")
    dtype = arr.dtype
    if hdr is not None:
        ref = np.dtype(hdr.get_data_dtype())
        if ref.kind in "ui" and (np.can_cast(data.dtype, ref, "safe") or
                                 (data.size and int(data.max()) <= np.iinfo(ref).max)):
            dtype = ref
    if dtype != data.dtype:
        data = data.astype(dtype)
    if hdr is not None:
        hdr = hdr.copy()
        hdr.set_data_dtype(dtype)
        slope, inter = hdr.get_slope_inter()
        if not ((slope is None or slope == 1) and (inter is None or inter == 0)):
            hdr.set_slope_inter(np.nan, np.nan)  # labels are stored unscaled
        # affine=None: the header's own qform/sform (codes and matrices) stay exactly as in the source
        img = type_for(hdr)(data, None, header=hdr)
    else:
        img = nib.Nifti1Image(data, aff)
        img.header.set_data_dtype(dtype)
    with atomic_path(target) as tmp:
        nib.save(img, str(tmp))
    logger.info("saved labels %s %s to %s", arr.shape, dtype, target)
    return target


def type_for(hdr: Any) -> Any:
    nib = _nib()
    return nib.Nifti2Image if isinstance(hdr, nib.Nifti2Header) else nib.Nifti1Image


def write_nifti_volume(volume: Volume, path: str | os.PathLike[str]) -> Path:
    """Write an image :class:`Volume` (``(Z, Y, X)``) as NIfTI, atomically.

    A volume read from NIfTI goes back into its source orientation and header; others
    get ``volume.affine`` (array order) or a diagonal affine from ``volume.spacing`` (mm).

    Parameters
    ----------
    volume : Volume
        Grey ``(Z, Y, X)`` or ``(Y, X)``.
    path : path-like
        ``.nii`` or ``.nii.gz`` to write.

    Returns
    -------
    Path

    Raises
    ------
    ValueError
        An RGB image.
    """
    nib = _nib()
    target = Path(path)
    if volume.is_rgb:
        raise ValueError(f"{target}: cannot write an RGB image as NIfTI; convert it to grey first")
    aff = volume.meta.get("nifti_affine")
    hdr = volume.meta.get("nifti_header")
    if aff is None:
        aff = _affine_xyz_from_volume(volume)
        hdr = None
    data = _to_file_order(np.asarray(volume.array), aff if hdr is not None else None)
    if hdr is not None:
        hdr = hdr.copy()
        hdr.set_data_dtype(data.dtype)
        img = type_for(hdr)(data, None, header=hdr)
    else:
        img = nib.Nifti1Image(data, aff)
        img.header.set_data_dtype(data.dtype)
        img.header.set_xyzt_units("mm")
    with atomic_path(target) as tmp:
        nib.save(img, str(tmp))
    return target
