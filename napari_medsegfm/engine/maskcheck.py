"""What a backend may return as an object's mask, checked before anything is applied.

A backend's ``predict`` must return a **binary** mask in the volume's spatial shape:

* ``bool``, or
* an integer array holding only 0 and 1.

Anything else is refused with :class:`BackendOutputError` (a ``ValueError``) naming the
backend and what it returned, and nothing is applied to the labels:

* floats (probabilities, logits, soft masks) — even 0.0/1.0, since a backend that returns
  floats means something else by them (threshold in the backend); the message gives the
  value range and the number of NaN/inf values, so "returned NaN" and "returned
  probabilities" are told apart;
* integers other than 0/1 (a label image, a 0/255 mask);
* another shape, a 0-d array, ``None``, objects.

Before, ``mask != 0`` turned NaN (and every probability above 0) into foreground: one NaN
model output labelled the whole volume.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["BackendOutputError", "binary_mask"]


class BackendOutputError(ValueError):
    """A backend returned something that is not a binary mask of the volume's shape."""


def _range_text(arr: np.ndarray) -> str:
    if arr.dtype.kind == "c":
        arr = np.abs(arr)
    finite = np.isfinite(arr)
    n_bad = int(arr.size - np.count_nonzero(finite))
    vals = arr[finite] if n_bad else arr
    rng = f"values {float(vals.min()):.4g}..{float(vals.max()):.4g}" if vals.size else "no finite values"
    if n_bad:
        n_nan = int(np.count_nonzero(np.isnan(arr)))
        rng += f", {n_nan} NaN and {n_bad - n_nan} inf of {arr.size}"
    return rng


def binary_mask(mask: Any, shape: tuple[int, ...], backend: str) -> np.ndarray:
    """``mask`` as a bool array of ``shape`` (a view where possible), or :class:`BackendOutputError`.

    Parameters
    ----------
    mask : array-like
        What ``backend.predict`` returned; ``(Z, Y, X)`` or ``(Y, X)`` like the volume.
    shape : tuple of int
        The volume's spatial shape.
    backend : str
        The backend's name, for the message.
    """
    if mask is None:
        raise BackendOutputError(f"backend {backend!r} returned no mask (None); expected a binary mask of shape {shape}")
    arr = np.asarray(mask)
    if arr.dtype.hasobject or arr.dtype.kind not in "biufc":
        raise BackendOutputError(f"backend {backend!r} returned a mask of dtype {arr.dtype}; expected a binary mask "
                                 "(bool, or integers 0/1)")
    if arr.shape != tuple(shape):
        raise BackendOutputError(f"backend {backend!r} returned a mask of shape {arr.shape}; expected {tuple(shape)}")
    if arr.dtype == bool:
        return arr
    if arr.dtype.kind in "ui":
        if arr.size == 0:
            return arr.astype(bool)
        lo, hi = int(arr.min()), int(arr.max())
        if lo >= 0 and hi <= 1:
            return arr.view(bool) if arr.dtype.itemsize == 1 else arr != 0
        raise BackendOutputError(f"backend {backend!r} returned an integer mask with values {lo}..{hi}; expected a "
                                 "binary mask (bool, or integers 0/1), not a label image or a 0/255 mask")
    raise BackendOutputError(f"backend {backend!r} returned a {arr.dtype} mask ({_range_text(arr)}); expected a "
                             "binary mask (bool, or integers 0/1): probabilities or logits must be thresholded by "
                             "the backend; nothing was applied")
