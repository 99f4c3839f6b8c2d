"""Small real cases for the eval helper's tests: crops of the shared CVPR 2025 / MedSAM2 files.

Everything is cached per process so the crops are read once.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np


@functools.cache
def amos_full(shared: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(imgs, gts, spacing (x, y, z), boxes object array) of CT_AMOS_amos_0018."""
    from napari_medsegfm.io import safe_load_npz

    d = safe_load_npz(Path(shared) / "cvpr25" / "imgs" / "CT_AMOS_amos_0018.npz")
    g = safe_load_npz(Path(shared) / "cvpr25" / "gts" / "CT_AMOS_amos_0018.npz")
    return d["imgs"], g["gts"], d["spacing"], d["boxes"]


@functools.cache
def amos_crop(shared: str, labels: tuple[int, ...] = (1, 3), z: tuple[int, int] = (30, 46),
              yx: tuple[int, int, int, int] = (170, 250, 360, 450)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 16-slice crop of CT_AMOS (spleen = 1, left kidney = 3 by default), labels renumbered 1..N.

    Returns (imgs (D, H, W) uint8, gts (D, H, W) uint8, spacing (x, y, z)).
    """
    imgs, gts, spacing, _ = amos_full(shared)
    y0, x0, y1, x1 = yx
    im = np.ascontiguousarray(imgs[z[0]:z[1], y0:y1, x0:x1])
    gt = gts[z[0]:z[1], y0:y1, x0:x1]
    out = np.zeros(gt.shape, dtype=np.uint8)
    for i, lab in enumerate(labels):
        out[gt == lab] = i + 1
    return im, out, np.asarray(spacing, dtype=float)


def write_case(folder: Path, name: str, imgs: np.ndarray, gts: np.ndarray, spacing: np.ndarray,
               boxes: np.ndarray | None = None, gts_inside: bool = False, text: dict | None = None) -> Path:
    """Write a CVPR25-style case: ``folder/imgs/name.npz`` (+ ``folder/gts/name.npz``)."""
    (folder / "imgs").mkdir(parents=True, exist_ok=True)
    mem = {"imgs": imgs, "spacing": spacing}
    if boxes is not None:
        mem["boxes"] = boxes
    if text is not None:
        mem["text_prompts"] = np.array(text, dtype=object)
    if gts_inside:
        mem["gts"] = gts
    else:
        (folder / "gts").mkdir(parents=True, exist_ok=True)
        np.savez_compressed(folder / "gts" / f"{name}.npz", gts=gts, spacing=spacing)
    path = folder / "imgs" / f"{name}.npz"
    np.savez_compressed(path, **mem)
    return path
