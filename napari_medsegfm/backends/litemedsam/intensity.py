"""The LiteMedSAM input range: image intensities to 0..255 (no torch here).

:class:`~napari_medsegfm.backends.litemedsam.backend.LiteMedSAMBackend` scales every
image with :func:`to_uint8` once in ``set_image``; the name stays importable from
:mod:`~napari_medsegfm.backends.litemedsam.backend`.
"""

from __future__ import annotations

import numpy as np

__all__ = ["CT_WINDOW", "to_uint8"]


CT_WINDOW = (-160.0, 240.0)  # soft-tissue window (level 40, width 400), as in MedSAM's CT preprocessing


def to_uint8(arr: np.ndarray, modality: str = "") -> np.ndarray:
    """The model's 0..255 input range.

    uint8 stays as it is (CVPR npz images are already normalised). CT in Hounsfield
    units (``modality`` "CT", or values spanning below -500 and above 500) gets the
    soft-tissue window -160..240 HU; anything else is clipped to its 0.5-99.5
    percentiles (from a strided sample of at most ~2 M values) and rescaled.

    Parameters
    ----------
    arr : np.ndarray
        ``(Z, Y, X)``, ``(Y, X)`` or ``(Y, X, 3)``, any numeric or bool dtype.
    modality : str
        ``"CT"`` forces the HU window.

    Returns
    -------
    np.ndarray
        ``uint8``, same shape (non-finite values count as 0 before scaling).
    """
    a = np.asarray(arr)
    if a.dtype == np.uint8:
        return a
    if a.dtype == bool:
        return a.astype(np.uint8) * 255
    step = max(1, a.size // 2_000_000)
    sample = a.reshape(-1)[::step].astype(np.float32)
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return np.zeros(a.shape, dtype=np.uint8)
    smin, smax = float(sample.min()), float(sample.max())
    if modality.upper() == "CT" or (smin <= -500 and smax >= 500 and np.issubdtype(a.dtype, np.signedinteger)):
        lo, hi = CT_WINDOW
    else:
        lo, hi = np.percentile(sample, [0.5, 99.5])
    if hi <= lo:
        lo, hi = smin, smax
    scale = 255.0 / max(float(hi - lo), 1e-6)
    out = np.empty(a.shape, dtype=np.uint8)
    for i in range(a.shape[0]) if a.ndim == 3 else [None]:
        src = a if i is None else a[i]
        v = (np.nan_to_num(src.astype(np.float32)) - lo) * scale
        (out if i is None else out[i])[...] = np.clip(v, 0, 255).round().astype(np.uint8)
    return out
