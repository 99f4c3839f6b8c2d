"""Small helpers every layer may use: file/folder SHA-256, the label dtype rule, allocator tuning.

No project imports (numpy and the standard library only), so ``io``, ``backends``,
``engine``, ``tasks`` and ``dataset`` share one implementation of each.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import numpy as np

__all__ = ["sha256_file", "sha256_path", "label_dtype_for", "keep_freed_memory"]

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_KEEP_BYTES = 1 << 30


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 22) -> str:
    """Hex SHA-256 of a file's bytes.

    Parameters
    ----------
    path : path-like
        The file.
    chunk : int
        Bytes read per step.

    Returns
    -------
    str
        64 lower-case hex digits.

    Raises
    ------
    OSError
        The file cannot be read.
    """
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            b = fh.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def sha256_path(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, or of a folder's files (relative names and contents, sorted).

    Parameters
    ----------
    path : path-like
        A file (same as :func:`sha256_file`) or a folder (every file below it, recursively).

    Returns
    -------
    str
        64 lower-case hex digits; the same for two folders with the same files.

    Raises
    ------
    OSError
        A file cannot be read.
    """
    p = Path(path)
    if p.is_file():
        return sha256_file(p)
    h = hashlib.sha256()
    for f in sorted(q for q in p.rglob("*") if q.is_file()):
        h.update(str(f.relative_to(p)).encode())
        h.update(sha256_file(f).encode())
    return h.hexdigest()


def label_dtype_for(max_label: int) -> np.dtype:
    """The smallest unsigned label dtype holding ``max_label``.

    Parameters
    ----------
    max_label : int
        The largest label id to store.

    Returns
    -------
    np.dtype
        ``uint8`` up to 255, ``uint16`` up to 65535, else ``uint32``.
    """
    if max_label <= 255:
        return np.dtype(np.uint8)
    if max_label <= 65535:
        return np.dtype(np.uint16)
    return np.dtype(np.uint32)


def keep_freed_memory() -> bool:
    """Let glibc's allocator keep and reuse freed memory for the rest of this process.

    By default glibc maps large blocks (over 128 KiB, a threshold it raises to at most 32 MiB as
    blocks are freed) afresh from the kernel, and hands them and the freed top of its heap back
    on ``free``, so each volume-sized temporary of a step page-faults in again; on a 63x512x512 CT
    with 15 boxes that was about half of a ``medsegfm predict`` step (system time 1.7-3.1 s
    of 4.1-6.0 s; ``benchmarks/predict_speed_bench.py``). Raising the mmap and trim thresholds
    to 1 GiB keeps that memory in the heap for reuse: the process's peak memory grows a few
    percent (447 -> 474 MB there) and it is returned when the process ends. Meant for
    short-lived command-line processes (``medsegfm predict``, one per challenge step), not
    for long-lived ones such as napari's.

    A no-op (returning False) off Linux, without glibc's ``mallopt`` (musl), or when the
    environment variable ``MEDSEGFM_MALLOC_TUNING`` is ``0``.

    Returns
    -------
    bool
        Whether both thresholds were set.
    """
    if os.environ.get("MEDSEGFM_MALLOC_TUNING", "1").strip() == "0" or not sys.platform.startswith("linux"):
        return False
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, _KEEP_BYTES) == 1 and mallopt(_M_TRIM_THRESHOLD, _KEEP_BYTES) == 1)
