"""Small helpers every layer may use: file/folder SHA-256 and the label dtype rule.

No project imports (numpy and the standard library only), so ``io``, ``backends``,
``engine``, ``tasks`` and ``dataset`` share one implementation of each.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

__all__ = ["sha256_file", "sha256_path", "label_dtype_for"]


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
