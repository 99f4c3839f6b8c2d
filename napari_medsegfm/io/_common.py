"""Validation helpers shared by the format modules (errors name file, key, expectation)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "check_image",
    "check_labels",
    "check_spacing",
    "label_dtype",
    "as_label_array",
    "present_labels",
    "modality_from_name",
    "CaseRef",
    "GroundTruthProtected",
]

#: modality prefixes of CVPR file names (``CT_AMOS_amos_0018``)
_MODALITIES = ("CT", "MR", "PET", "US", "Microscopy", "Endoscopy", "X-ray", "Xray", "Dermoscopy",
               "Fundus", "Mammography", "OCT")


class GroundTruthProtected(ValueError):
    """Saving would overwrite ground truth and ``overwrite_gt`` was not given."""


@dataclass(frozen=True)
class CaseRef:
    """One case of a dataset folder: ``load_case(ref.path, ref.format, case_id=ref.case_id)``."""

    name: str
    path: Path
    format: str
    case_id: str | None = None

    def load(self) -> Any:
        from . import load_case

        return load_case(self.path, self.format, case_id=self.case_id)


def modality_from_name(name: str) -> str:
    """``"CT"`` from ``CT_AMOS_amos_0018`` / ``3DBox_CT_Lesion...``; ``""`` when unknown."""
    for tok in re.split(r"[_\-.]", name):
        for m in _MODALITIES:
            if tok.lower() == m.lower():
                return m
    return ""


def check_image(arr: Any, src: str | os.PathLike[str], key: str, *, allow_rgb: bool = True) -> np.ndarray:
    """Accept a real-valued 2D ``(Y, X)``, RGB ``(Y, X, 3)`` or 3D ``(Z, Y, X)`` image."""
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


def label_dtype(max_label: int) -> np.dtype:
    """uint8 up to 255, uint16 up to 65535, else uint32."""
    if max_label <= 255:
        return np.dtype(np.uint8)
    if max_label <= 65535:
        return np.dtype(np.uint16)
    return np.dtype(np.uint32)


def check_labels(
    arr: Any, shape: tuple[int, ...] | None, src: str | os.PathLike[str], key: str
) -> np.ndarray:
    """A label image: integer (or bool) dtype, non-negative, spatial ``shape`` when given."""
    if not isinstance(arr, np.ndarray):
        raise ValueError(f"{src}: '{key}' is a {type(arr).__name__}, expected an integer label array")
    if arr.dtype == bool:
        arr = arr.view(np.uint8)
    if arr.dtype.hasobject or arr.dtype.kind not in "ui":
        raise ValueError(f"{src}: '{key}' has dtype {arr.dtype}; expected integer labels (uint8, 0 = background)")
    if shape is not None and tuple(arr.shape) != tuple(shape):
        raise ValueError(f"{src}: '{key}' has shape {arr.shape}; expected the image's spatial shape {tuple(shape)}")
    if arr.dtype.kind == "i" and arr.size and int(arr.min()) < 0:
        raise ValueError(f"{src}: '{key}' has negative labels (min {int(arr.min())}); expected labels >= 0")
    return arr


def as_label_array(labels: Any, what: str = "labels") -> np.ndarray:
    """Labels handed to a writer: an integer/bool array, cast to the smallest unsigned dtype."""
    arr = np.asarray(labels)
    if arr.dtype == bool:
        return arr.view(np.uint8)
    if arr.dtype.kind not in "ui":
        if arr.dtype.kind == "f" and arr.size and np.array_equal(arr, np.round(arr)) and arr.min() >= 0:
            arr = arr.astype(label_dtype(int(arr.max())))
        else:
            raise ValueError(f"{what} must be integer labels (0 = background); got dtype {arr.dtype}")
    if arr.size == 0:
        raise ValueError(f"{what} is empty (shape {arr.shape})")
    if arr.dtype == np.uint8:
        return arr  # nothing to check or shrink: no pass over the data
    lo, hi = (int(arr.min()), int(arr.max())) if arr.dtype.kind == "i" else (0, int(arr.max()))
    if lo < 0:
        raise ValueError(f"{what} has negative values (min {lo}); expected labels >= 0")
    want = label_dtype(hi)
    if arr.dtype != want and (arr.dtype.kind == "i" or arr.dtype.itemsize > want.itemsize):
        arr = arr.astype(want)
    return arr


def present_labels(arr: np.ndarray) -> list[int]:
    """The non-zero label values of an integer array, ascending (one O(n) pass for 8/16-bit labels)."""
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
    """``n`` finite positive floats (in the file's own order)."""
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
