"""Small helpers shared by the dataset modules (no public API)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def label_ids(labels: np.ndarray) -> list[int]:
    """Sorted non-zero label ids present in ``labels`` (bincount for small unsigned types).

    Parameters
    ----------
    labels : np.ndarray
        Integer labels, any shape.

    Returns
    -------
    list of int
    """
    arr = np.asarray(labels)
    if arr.size == 0:
        return []
    if arr.dtype in (np.uint8, np.uint16, np.bool_):
        counts = np.bincount(arr.ravel().astype(np.intp, copy=False) if arr.dtype == np.bool_ else arr.ravel())
        return [int(i) for i in np.flatnonzero(counts) if i != 0]
    return [int(i) for i in np.unique(arr) if i != 0]


def json_default(o: Any) -> Any:
    """``json.dumps`` default for numpy values, sets, tuples and paths.

    Parameters
    ----------
    o : object
        What ``json`` cannot serialise itself.

    Returns
    -------
    object
        A JSON-able value (numpy scalars via ``.item()``, arrays, sets and tuples as lists,
        paths as str).

    Raises
    ------
    TypeError
        Anything else.
    """
    if isinstance(o, np.generic):
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
