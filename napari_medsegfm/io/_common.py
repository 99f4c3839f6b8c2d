"""Validation helpers shared by the format modules (errors name file, key, expectation)."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..utils import label_dtype_for

__all__ = [
    "check_image",
    "check_labels",
    "integer_labels",
    "check_spacing",
    "as_label_array",
    "present_labels",
    "modality_from_name",
    "CaseRef",
    "GroundTruthProtected",
    "read_json_file",
    "pick_case",
]

#: modality prefixes of CVPR file names (``CT_AMOS_amos_0018``)
_MODALITIES = ("CT", "MR", "PET", "US", "Microscopy", "Endoscopy", "X-ray", "Xray", "Dermoscopy",
               "Fundus", "Mammography", "OCT")


class GroundTruthProtected(ValueError):
    """Saving would overwrite ground truth and ``overwrite_gt`` was not given."""


@dataclass(frozen=True)
class CaseRef:
    """One case of a dataset folder, loadable with ``load_case(ref.path, ref.format, case_id=ref.case_id)``.

    Parameters
    ----------
    name : str
        Case name for listings.
    path : Path
        The file or folder to load.
    format : str
        Reader name (one of :data:`~napari_medsegfm.io.FORMATS`).
    case_id : str, optional
        Which case of a multi-case source (a DICOM series, a medsegpy scan).
    """

    name: str
    path: Path
    format: str
    case_id: str | None = None

    def load(self) -> Any:
        """Read the case (:func:`~napari_medsegfm.io.load_case`).

        Returns
        -------
        Case
        """
        from . import load_case

        return load_case(self.path, self.format, case_id=self.case_id)


def modality_from_name(name: str) -> str:
    """The modality named in a case name: ``"CT"`` from ``CT_AMOS_amos_0018`` / ``3DBox_CT_Lesion...``.

    Parameters
    ----------
    name : str
        Case or file name; split at ``_``, ``-`` and ``.``.

    Returns
    -------
    str
        ``"CT"``, ``"MR"``, ``"PET"``, ... (as spelled in the known list); ``""`` when unknown.
    """
    for tok in re.split(r"[_\-.]", name):
        for m in _MODALITIES:
            if tok.lower() == m.lower():
                return m
    return ""


def check_image(arr: Any, src: str | os.PathLike[str], key: str, *, allow_rgb: bool = True) -> np.ndarray:
    """Accept a real-valued 2D ``(Y, X)``, RGB ``(Y, X, 3)`` or 3D ``(Z, Y, X)`` image.

    Parameters
    ----------
    arr : object
        What the file held.
    src : path-like
        The file (for messages).
    key : str
        The member or dataset name (for messages).
    allow_rgb : bool
        Not used: a ``(Y, X, 3)`` array passes either way (it has three axes).

    Returns
    -------
    np.ndarray
        ``arr`` itself.

    Raises
    ------
    ValueError
        Naming ``src`` and ``key``: not an array, a non-numeric dtype, not 2 or 3 axes, an
        empty axis, or NaN/inf in a float image.
    """
    if not isinstance(arr, np.ndarray):
        raise ValueError(f"{src}: '{key}' is a {type(arr).__name__}, expected a numeric image array")
    if arr.dtype.hasobject or arr.dtype.kind not in "uif":
        raise ValueError(
            f"{src}: '{key}' has dtype {arr.dtype}; expected a numeric image (uint8 0..255, int or float)"
        )
    if arr.ndim not in (2, 3):
        raise ValueError(
            f"{src}: '{key}' has shape {arr.shape} (ndim {arr.ndim}); expected 2D (H, W), "
            f"2D RGB (H, W, 3) or 3D (D, H, W)"
        )
    if 0 in arr.shape:
        raise ValueError(f"{src}: '{key}' is empty (shape {arr.shape})")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ValueError(f"{src}: '{key}' contains NaN/inf values; expected finite intensities")
    return arr


_CHUNK = 1 << 22  # elements per pass of the float-label check (bounded temporaries)


def _first_fractional(flat: np.ndarray) -> tuple[int, float] | None:
    """(index, value) of the first non-finite, negative or fractional element of a float array."""
    for start in range(0, flat.size, _CHUNK):
        part = flat[start:start + _CHUNK]
        bad = ~np.isfinite(part)
        np.logical_or(bad, part < 0, out=bad)
        np.logical_or(bad, part != np.floor(part), out=bad)
        if bad.any():
            i = int(np.argmax(bad))
            return start + i, float(part[i])
    return None


def integer_labels(arr: Any, src: str | os.PathLike[str], key: str | None) -> np.ndarray:
    """A label image as an integer (unsigned where it was float/bool) array: the one rule every
    reader and writer applies.

    * integer dtypes pass unchanged (negative values are refused);
    * ``bool`` becomes ``uint8`` (a view, no copy);
    * floats whose values are all whole, finite and >= 0 (NIfTI label maps stored as float32,
      e.g. IVDM3Seg ``NN_Labels.nii``) become the smallest unsigned dtype that holds them;
    * floats with a fractional, negative or non-finite value are refused with a ``ValueError``
      naming ``src``, ``key``, the dtype and a sample value with its voxel index.

    Parameters
    ----------
    arr : np.ndarray
        Any shape; the axis order is kept.
    src, key : str
        The file and the member (``None``: ``src`` alone names the array), for messages.
    """
    what = f"{src}: '{key}'" if key else str(src)
    if not isinstance(arr, np.ndarray):
        raise ValueError(f"{what} is a {type(arr).__name__}, expected an integer label array")
    if arr.dtype == bool:
        return arr.view(np.uint8)
    if arr.dtype.kind == "f":
        if arr.size == 0:
            return arr.astype(np.uint8)
        flat = arr.reshape(-1)
        bad = _first_fractional(flat)
        if bad is not None:
            i, v = bad
            where = np.unravel_index(i, arr.shape)
            raise ValueError(
                f"{what} has dtype {arr.dtype} with a value that is not a label: {v!r} at voxel "
                f"{tuple(int(c) for c in where)}; expected whole numbers >= 0 (0 = background; float "
                "label maps are accepted when every value is a whole number)")
        return arr.astype(label_dtype_for(int(arr.max())))
    if arr.dtype.hasobject or arr.dtype.kind not in "ui":
        raise ValueError(f"{what} has dtype {arr.dtype}; expected integer labels (uint8, 0 = background)")
    if arr.dtype.kind == "i" and arr.size and int(arr.min()) < 0:
        raise ValueError(f"{what} has negative labels (min {int(arr.min())}); expected labels >= 0")
    return arr


def check_labels(
    arr: Any, shape: tuple[int, ...] | None, src: str | os.PathLike[str], key: str
) -> np.ndarray:
    """A label image read from ``src``: the spatial ``shape`` when given, then :func:`integer_labels`.

    Parameters
    ----------
    arr : object
        What the file held.
    shape : tuple of int or None
        The image's spatial shape ``(Z, Y, X)`` / ``(Y, X)`` it must match.
    src : path-like
        The file (for messages).
    key : str
        The member name (for messages).

    Returns
    -------
    np.ndarray
        Integer labels (see :func:`integer_labels`).

    Raises
    ------
    ValueError
        Another shape, or values that are not labels.
    """
    if isinstance(arr, np.ndarray) and shape is not None and tuple(arr.shape) != tuple(shape):
        raise ValueError(f"{src}: '{key}' has shape {arr.shape}; expected the image's spatial shape {tuple(shape)}")
    return integer_labels(arr, src, key)


def as_label_array(labels: Any, what: str = "labels") -> np.ndarray:
    """Labels handed to a writer, checked and cast to the smallest unsigned dtype.

    Parameters
    ----------
    labels : array-like
        Integer (or whole-valued float, or bool) labels, any shape; 0 is background.
    what : str
        How messages name them.

    Returns
    -------
    np.ndarray
        ``uint8``, ``uint16`` or ``uint32`` (``uint8`` input is returned as it is).

    Raises
    ------
    ValueError
        A non-numeric dtype, an empty array, negative values, or fractional floats.
    """
    arr = np.asarray(labels)
    if arr.dtype.kind not in "uifb" or arr.dtype.hasobject:
        raise ValueError(f"{what} must be integer labels (0 = background); got dtype {arr.dtype}")
    if arr.size == 0:
        raise ValueError(f"{what} is empty (shape {arr.shape})")
    arr = integer_labels(arr, what, None) if arr.dtype.kind in "fb" else arr
    if arr.dtype == np.uint8:
        return arr  # nothing to check or shrink: no pass over the data
    lo, hi = (int(arr.min()), int(arr.max())) if arr.dtype.kind == "i" else (0, int(arr.max()))
    if lo < 0:
        raise ValueError(f"{what} has negative values (min {lo}); expected labels >= 0")
    want = label_dtype_for(hi)
    if arr.dtype != want and (arr.dtype.kind == "i" or arr.dtype.itemsize > want.itemsize):
        arr = arr.astype(want)
    return arr


def present_labels(arr: np.ndarray) -> list[int]:
    """The non-zero label values of an integer array, ascending.

    One O(n) pass (a bincount) for 8/16-bit labels; ``np.unique`` otherwise.

    Parameters
    ----------
    arr : np.ndarray
        Integer or bool labels, any shape.

    Returns
    -------
    list of int
    """
    a = np.asarray(arr)
    if a.dtype.kind == "b":
        return [1] if a.any() else []
    if a.dtype in (np.uint8, np.uint16) and a.size:
        flat = a.reshape(-1)  # a copy only for a non-contiguous view
        counts = np.zeros(1 << (8 * a.dtype.itemsize), dtype=np.int64)
        step = 1 << 16  # chunks whose intp copy (bincount widens them) stays in cache: 2x faster than one pass
        for i in range(0, flat.size, step):
            c = np.bincount(flat[i:i + step])
            counts[: c.size] += c
        return [int(i) for i in np.flatnonzero(counts) if i != 0]
    return [int(v) for v in np.unique(a) if v != 0]


def check_spacing(values: Any, n: int, src: str | os.PathLike[str], key: str = "spacing") -> tuple[float, ...]:
    """``n`` finite positive spacings, in the file's own order.

    Parameters
    ----------
    values : array-like
        What the file gives (mm).
    n : int
        Spatial axes expected.
    src : path-like
        The file (for messages).
    key : str
        The member or field name (for messages).

    Returns
    -------
    tuple of float

    Raises
    ------
    ValueError
        Not numeric, not ``n`` values, or a value that is not finite and positive.
    """
    try:
        sp = np.asarray(values, dtype=float).reshape(-1)
    except (TypeError, ValueError):
        raise ValueError(f"{src}: '{key}' = {values!r} is not numeric; expected {n} spacings in mm") from None
    if sp.size != n:
        raise ValueError(f"{src}: '{key}' has {sp.size} values {sp.tolist()}; expected {n} (one per spatial axis, mm)")
    if not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise ValueError(f"{src}: '{key}' = {sp.tolist()}; expected finite positive spacings in mm")
    return tuple(float(s) for s in sp)


def same_file(a: str | os.PathLike[str] | None, b: str | os.PathLike[str] | None) -> bool:
    """True when both name the same existing file/folder (or the same resolved path)."""
    if a is None or b is None:
        return False
    pa, pb = Path(a), Path(b)
    try:
        if pa.exists() and pb.exists():
            return os.path.samefile(pa, pb)
    except OSError:
        pass
    return pa.resolve() == pb.resolve()


def read_json_file(path: str | os.PathLike[str], what: str = "JSON file") -> Any:
    """Parse a JSON sidecar, refusing what a hostile file could do to the parser.

    The file is checked against :func:`~napari_medsegfm.io.limits.max_json_bytes` before it is
    read.

    Parameters
    ----------
    path : path-like
        The JSON file.
    what : str
        How messages name it.

    Returns
    -------
    object
        The parsed JSON value.

    Raises
    ------
    ValueError
        Larger than the limit, invalid UTF-8 or JSON, or nested too deeply (naming the file).
    PermissionError
        The file exists but may not be read.
    FileNotFoundError
        No such file.
    """
    from .limits import ENV_MAX_JSON_BYTES, format_bytes, max_json_bytes

    p = Path(path)
    try:
        size = p.stat().st_size
        cap = max_json_bytes()
        if size > cap:
            raise ValueError(f"{p}: {what} of {format_bytes(size)} is larger than the limit of "
                             f"{format_bytes(cap)} ({ENV_MAX_JSON_BYTES}); not read")
        text = p.read_text(encoding="utf-8")
    except PermissionError:
        raise PermissionError(f"{p}: permission denied (the {what} exists but may not be read)") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{p}: {what} is not valid UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{p}: {what} is not valid JSON ({exc})") from None
    except RecursionError:
        raise ValueError(f"{p}: {what} is nested too deeply to parse; not a valid sidecar") from None


def pick_case(found: dict[str, Any], wanted: str | None, where: str | os.PathLike[str], noun: str,
              empty_hint: str, logger: Any, list_limit: int | None = None) -> str:
    """The id of the case to open from a folder holding several: ``wanted``, or the first.

    Parameters
    ----------
    found : dict
        The folder's cases by id, in listing order.
    wanted : str or None
        The requested id; ``None`` opens the first (with a warning when there are more).
    where : path-like
        The folder, for messages.
    noun : str
        What a case is called there (``"scan"``, ``"case"``).
    empty_hint : str
        What the folder should hold, for the message when it holds nothing.
    logger : logging.Logger
        Where the warning about several cases goes.
    list_limit : int, optional
        List at most this many ids in the unknown-id message (then ``...``).

    Returns
    -------
    str
        The chosen id.

    Raises
    ------
    ValueError
        No cases, or no case ``wanted``; the message names the folder and the ids it holds.
    """
    if not found:
        raise ValueError(f"{where}: {empty_hint}")
    if wanted is None:
        wanted = next(iter(found))
        if len(found) > 1:
            logger.warning("%s holds %d %ss; opening %s (list them with list_cases)", where, len(found), noun, wanted)
    if wanted not in found:
        ids = list(found)
        shown = ", ".join(ids) if list_limit is None else ", ".join(ids[:list_limit]) + "..."
        raise ValueError(f"{where}: no {noun} {wanted!r} ({noun}s: {shown})")
    return wanted
