"""napari sample data (``File > Open Sample > MedSegFM``): small real cases bundled in
``resources/samples`` (sources and licences in its README.md / LICENSE.md).

Each function returns napari layer data tuples through the plugin's own reader, so a
sample opens exactly like the file would.
"""

from __future__ import annotations

import os
from pathlib import Path

from .io.layers import LayerData
from .io.reader import read_layers

__all__ = ["samples_dir", "sample_path", "ct_lesion", "mr_totalseg", "samed2d_slice", "SAMPLES"]

#: sample key -> path relative to the samples folder
SAMPLES = {
    "ct_lesion": "CT_Lesion_000001_02_01_008-023.npz",
    "mr_totalseg": "totalseg_mr/example_mr_sm.nii.gz",
    "mr_totalseg_labels": "totalseg_mr/example_seg_mr.nii.gz",
    "samed2d_slice": "sammed2d/images/ct_00--TotalSegmentator--s0114--z_0111.png",
}


def samples_dir() -> Path:
    """The bundled samples folder (``MEDSEGFM_SAMPLES`` overrides)."""
    env = os.environ.get("MEDSEGFM_SAMPLES")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[1] / "resources" / "samples")
    for c in candidates:
        if c.is_dir():
            return c
    raise FileNotFoundError(
        "the bundled sample folder resources/samples was not found (looked in "
        + ", ".join(str(c) for c in candidates)
        + "); install the plugin from its source checkout (scripts/setup.sh) or set MEDSEGFM_SAMPLES"
    )


def sample_path(key: str) -> Path:
    """Path of a bundled sample by key (see :data:`SAMPLES`)."""
    try:
        rel = SAMPLES[key]
    except KeyError:
        raise ValueError(f"unknown sample {key!r}; expected one of {', '.join(SAMPLES)}") from None
    p = samples_dir() / rel
    if not p.exists():
        raise FileNotFoundError(f"sample {key!r} is missing: {p}")
    return p


def ct_lesion() -> list[LayerData]:
    """CT slab with a lesion and its 3D mask (CVPR25 training-layout npz, 16×512×512)."""
    return read_layers(sample_path("ct_lesion"))


def mr_totalseg() -> list[LayerData]:
    """Abdominal MR (NIfTI, LPS on disk, shown canonical) with a TotalSegmentator label map."""
    return read_layers(sample_path("mr_totalseg")) + read_layers(sample_path("mr_totalseg_labels"))


def samed2d_slice() -> list[LayerData]:
    """One SA-Med2D-20M-layout CT slice with its 15 named object masks."""
    return read_layers(sample_path("samed2d_slice"))
