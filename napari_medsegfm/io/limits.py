"""Size limits for reading untrusted files: refuse what cannot fit *before* allocating it.

Every reader checks the size a file *declares* (npy header shape × dtype, NIfTI header
dims, HDF5 dataset shape, PNG width × height, zip member sizes) against these limits
before it decompresses or allocates anything, and refuses with
:class:`ArrayTooLargeError` (a ``ValueError``) naming the file, the member and the size.

Limits (environment variables; sizes accept ``123``, ``64K``, ``512M``, ``2G``, ``1T``)

``MEDSEGFM_MAX_ARRAY_BYTES``
    Largest single array a reader allocates. Default: half the machine's physical
    memory (at least 1 GiB). Independently of it, an array larger than the memory
    available right now (``MemAvailable`` + free swap, and what is left under an
    address-space limit ``RLIMIT_AS``) is refused too: allocating it would only end in a
    ``MemoryError`` or the out-of-memory killer.
``MEDSEGFM_MAX_PICKLE_BYTES``
    Largest pickled npz member (``boxes``, ``text_prompts``, ``clicks``, ``clicks_order``)
    read at all. Default 64 MiB (the largest in the CVPR 2025 sample files: 39 KB).
``MEDSEGFM_MAX_PICKLE_NODES``
    Most objects a pickle may build, counting shared objects once per reference (so a
    "billion laughs" structure of shared lists counts as what it expands to). Default
    1,000,000 (the CVPR sample files: at most 3,826).
``MEDSEGFM_MAX_PICKLE_DEPTH``
    Deepest nesting of containers in a pickle. Default 100 (the CVPR sample files: 2).
``MEDSEGFM_MAX_JSON_BYTES``
    Largest JSON sidecar read (medsegpy metadata, SA-Med2D class mapping). Default 64 MiB.

Use :func:`check_array_bytes` (or :func:`check_shape`) in new readers.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = [
    "ArrayTooLargeError",
    "ENV_MAX_ARRAY_BYTES",
    "ENV_MAX_PICKLE_BYTES",
    "ENV_MAX_PICKLE_NODES",
    "ENV_MAX_PICKLE_DEPTH",
    "ENV_MAX_JSON_BYTES",
    "max_array_bytes",
    "available_memory_bytes",
    "max_pickle_bytes",
    "max_pickle_nodes",
    "max_pickle_depth",
    "max_json_bytes",
    "array_nbytes",
    "check_array_bytes",
    "check_shape",
    "check_declared_size",
    "format_bytes",
    "parse_bytes",
]

ENV_MAX_ARRAY_BYTES = "MEDSEGFM_MAX_ARRAY_BYTES"
ENV_MAX_PICKLE_BYTES = "MEDSEGFM_MAX_PICKLE_BYTES"
ENV_MAX_PICKLE_NODES = "MEDSEGFM_MAX_PICKLE_NODES"
ENV_MAX_PICKLE_DEPTH = "MEDSEGFM_MAX_PICKLE_DEPTH"
ENV_MAX_JSON_BYTES = "MEDSEGFM_MAX_JSON_BYTES"

DEFAULT_MAX_PICKLE_BYTES = 64 << 20
DEFAULT_MAX_PICKLE_NODES = 1_000_000
DEFAULT_MAX_PICKLE_DEPTH = 100
DEFAULT_MAX_JSON_BYTES = 64 << 20
_MIN_DEFAULT_ARRAY_BYTES = 1 << 30

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


class ArrayTooLargeError(ValueError):
    """A file declares an array (or member) larger than a limit or than the free memory."""


def parse_bytes(text: str, name: str = "size") -> int:
    """A size with an optional unit, in bytes: ``"512M"`` -> 536870912; plain integers are bytes.

    Parameters
    ----------
    text : str
        ``<number>[K|M|G|T][i][B]``, binary units (``K`` = 1024).
    name : str
        What messages call it (an environment variable's name, say).

    Returns
    -------
    int

    Raises
    ------
    ValueError
        Naming ``name``: not a size, or below 1 byte.
    """
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", str(text), flags=re.IGNORECASE)
    if not m:
        raise ValueError(f"{name}={text!r} is not a size; expected bytes such as 1073741824, 512M or 2G")
    value = float(m.group(1)) * _UNITS[m.group(2).upper()]
    if value < 1:
        raise ValueError(f"{name}={text!r} must be at least 1 byte")
    return int(value)


def format_bytes(n: int | float) -> str:
    """``21474836480`` -> ``"20.0 GiB"`` (binary units, one decimal; bytes without).

    Parameters
    ----------
    n : int or float
        Bytes.

    Returns
    -------
    str
    """
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"  # pragma: no cover


def _env_int(name: str, default: int, *, is_size: bool) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if is_size:
        return parse_bytes(raw, name)
    try:
        v = int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not an integer") from None
    if v < 1:
        raise ValueError(f"{name}={raw!r} must be at least 1")
    return v


def _physical_memory() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def max_array_bytes() -> int:
    """The configured per-array limit (``$MEDSEGFM_MAX_ARRAY_BYTES``, default half the RAM)."""
    phys = _physical_memory()
    default = max(_MIN_DEFAULT_ARRAY_BYTES, phys // 2) if phys else 8 << 30
    return _env_int(ENV_MAX_ARRAY_BYTES, default, is_size=True)


def _meminfo() -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                k, _, rest = line.partition(":")
                parts = rest.split()
                if parts and parts[0].isdigit():
                    out[k] = int(parts[0]) * 1024
    except OSError:
        pass
    return out


def _address_space_left() -> int | None:
    """Bytes left under ``RLIMIT_AS`` (``None`` when unlimited or unknown)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return None
    try:
        soft, _hard = resource.getrlimit(resource.RLIMIT_AS)
    except (OSError, ValueError):
        return None
    if soft == resource.RLIM_INFINITY or soft <= 0:
        return None
    used = None
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmSize:"):
                    used = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError):
        pass
    return max(0, soft - (used or 0))


def available_memory_bytes() -> int | None:
    """Memory an allocation can use now: ``MemAvailable`` + free swap, capped by what is left
    under ``RLIMIT_AS``; ``None`` when unknown (non-Linux without a limit)."""
    info = _meminfo()
    avail = None
    if "MemAvailable" in info:
        avail = info["MemAvailable"] + info.get("SwapFree", 0)
    left = _address_space_left()
    if left is not None:
        avail = left if avail is None else min(avail, left)
    return avail


def max_pickle_bytes() -> int:
    """Largest pickled member read (``$MEDSEGFM_MAX_PICKLE_BYTES``, default 64 MiB)."""
    return _env_int(ENV_MAX_PICKLE_BYTES, DEFAULT_MAX_PICKLE_BYTES, is_size=True)


def max_pickle_nodes() -> int:
    """Most objects (references counted) a pickle may build (``$MEDSEGFM_MAX_PICKLE_NODES``)."""
    return _env_int(ENV_MAX_PICKLE_NODES, DEFAULT_MAX_PICKLE_NODES, is_size=False)


def max_pickle_depth() -> int:
    """Deepest container nesting in a pickle (``$MEDSEGFM_MAX_PICKLE_DEPTH``, default 100)."""
    return _env_int(ENV_MAX_PICKLE_DEPTH, DEFAULT_MAX_PICKLE_DEPTH, is_size=False)


def max_json_bytes() -> int:
    """Largest JSON sidecar read (``$MEDSEGFM_MAX_JSON_BYTES``, default 64 MiB)."""
    return _env_int(ENV_MAX_JSON_BYTES, DEFAULT_MAX_JSON_BYTES, is_size=True)


def array_nbytes(shape: Iterable[Any], itemsize: int, *, what: str = "array") -> int:
    """``prod(shape) * itemsize`` in exact integers (no int64 wrap-around).

    Parameters
    ----------
    shape : iterable
        Dimensions (ints, or whole floats).
    itemsize : int
        Bytes per element.
    what : str
        What messages call the array.

    Returns
    -------
    int
        Bytes.

    Raises
    ------
    ValueError
        Naming ``what``: a negative or non-integer dimension.
    """
    dims = []
    for s in shape:
        try:
            d = int(s)
        except (TypeError, ValueError, OverflowError):
            raise ValueError(f"{what}: dimension {s!r} is not an integer") from None
        if d != s and not (isinstance(s, float) and s.is_integer()):
            raise ValueError(f"{what}: dimension {s!r} is not an integer")
        if d < 0:
            raise ValueError(f"{what}: shape {tuple(shape)} has a negative dimension")
        dims.append(d)
    return math.prod(dims) * int(itemsize)


def check_array_bytes(nbytes: int, what: str, *, limit: int | None = None) -> None:
    """Refuse an allocation of ``nbytes`` for ``what``.

    Parameters
    ----------
    nbytes : int
        Bytes about to be allocated.
    what : str
        For the message, e.g. ``"FILE: member 'imgs' (shape, dtype)"``.
    limit : int, optional
        Instead of :func:`max_array_bytes`.

    Raises
    ------
    ArrayTooLargeError
        ``nbytes`` exceeds :func:`max_array_bytes` (or ``limit``), or the memory available now.
    """
    nbytes = int(nbytes)
    cap = max_array_bytes() if limit is None else int(limit)
    if nbytes > cap:
        raise ArrayTooLargeError(
            f"{what} needs {format_bytes(nbytes)}, more than the limit of {format_bytes(cap)} "
            f"(set {ENV_MAX_ARRAY_BYTES} to raise it); not read"
        )
    avail = available_memory_bytes()
    if avail is not None and nbytes > avail:
        raise ArrayTooLargeError(
            f"{what} needs {format_bytes(nbytes)}, more than the memory available now "
            f"({format_bytes(avail)}); not read"
        )


def check_shape(shape: Iterable[Any], itemsize: int, what: str, *, copies: int = 1) -> int:
    """:func:`array_nbytes`, then :func:`check_array_bytes` for ``copies`` arrays of that size at once.

    Parameters
    ----------
    shape : iterable
        Dimensions.
    itemsize : int
        Bytes per element.
    what : str
        For the message.
    copies : int
        Arrays of that size held at once.

    Returns
    -------
    int
        Bytes of one array.

    Raises
    ------
    ArrayTooLargeError, ValueError
        Too large, or a bad dimension.
    """
    shape = tuple(shape)
    n = array_nbytes(shape, itemsize, what=what)
    check_array_bytes(n * max(1, int(copies)), what)
    return n


def check_declared_size(src: object, shape: Iterable[Any], dtype: Any, what: str = "voxel data") -> int:
    """Refuse what a file's header declares (``shape`` x ``dtype``) before it is allocated.

    The entry point of the clinical readers (DICOM, DICOM-SEG, NRRD/MetaImage,
    ``.seg.nrrd``): :func:`check_shape` with a message that names the file, ``what``, the
    declared dimensions (any order, as the header gives them) and the data type.

    Parameters
    ----------
    src : object
        The file (for the message).
    shape : iterable
        Declared dimensions.
    dtype : dtype-like
        Declared element type.
    what : str
        What the header describes.

    Returns
    -------
    int
        The declared size in bytes.

    Raises
    ------
    ArrayTooLargeError
        Above :func:`max_array_bytes` or the memory available now.
    ValueError
        Negative or non-integer dimensions.
    """
    dims = tuple(shape)
    dt = np.dtype(dtype)
    return check_shape(dims, dt.itemsize, f"{src}: {what} declares {tuple(int(d) for d in dims)} x {dt}")
