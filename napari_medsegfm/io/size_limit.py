"""A ceiling on what one file may make the readers allocate, checked before allocating.

Readers of the clinical formats (DICOM, NRRD, MetaImage, DICOM-SEG, ``.seg.nrrd``)
compute the size a file *declares* (dimensions x data type, from its header) and call
:func:`check_declared_size` before they read or decode a byte of voxel data: a 1 KB
header that declares a 20 GiB volume is refused with an error naming the file and the
size instead of exhausting memory.

The limit is ``MEDSEGFM_MAX_ARRAY_BYTES`` (bytes; suffixes ``K``, ``M``, ``G``, ``T``
accepted, e.g. ``8G``), default 16 GiB.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

import numpy as np

__all__ = ["ENV_VAR", "DEFAULT_MAX_BYTES", "max_array_bytes", "check_declared_size"]

ENV_VAR = "MEDSEGFM_MAX_ARRAY_BYTES"
DEFAULT_MAX_BYTES = 16 * 1024**3

_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def max_array_bytes() -> int:
    """The configured ceiling in bytes (:data:`ENV_VAR`, default :data:`DEFAULT_MAX_BYTES`)."""
    raw = os.environ.get(ENV_VAR, "").strip()
    if not raw:
        return DEFAULT_MAX_BYTES
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?", raw, flags=re.IGNORECASE)
    if not m:
        raise ValueError(f"{ENV_VAR}={raw!r}; expected a size in bytes such as 8G, 500M or 1073741824")
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def check_declared_size(src: object, shape: Sequence[int], dtype: np.dtype | str | type, what: str = "voxel data"
                        ) -> int:
    """Refuse a declared array larger than :func:`max_array_bytes`; returns its size in bytes.

    Parameters
    ----------
    src : path-like or str
        The file, named in the error.
    shape : sequence of int
        Declared dimensions (any order).
    dtype : numpy dtype
        Declared element type.
    what : str
        What is being allocated (``"voxel data"``, ``"300 slices"``, ...).

    Raises
    ------
    ValueError
        Negative dimensions, or more bytes than the limit (the message names the file,
        the shape, the size and :data:`ENV_VAR`).
    """
    dims = [int(s) for s in shape]
    if any(d < 0 for d in dims):
        raise ValueError(f"{src}: {what} declares negative dimensions {tuple(dims)}")
    n = np.dtype(dtype).itemsize
    for d in dims:
        n *= d
    limit = max_array_bytes()
    if n > limit:
        raise ValueError(f"{src}: {what} declares {tuple(dims)} x {np.dtype(dtype)} = {_human(n)}, above the "
                         f"limit of {_human(limit)}; refusing to allocate it (raise {ENV_VAR} if the file is "
                         "genuine)")
    return n
