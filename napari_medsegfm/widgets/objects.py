"""The object list's data: one row per object with colour, name, status and volume (Qt-free).

Voxel counts come from the session (``object_voxels``, which scans only the object's
bounding box) and are refreshed only for the objects a change touched.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["ObjectRow", "format_volume", "latency_text", "rgba_to_hex", "short_class_name"]


@dataclass(frozen=True)
class ObjectRow:
    """What the object list shows for one object."""

    label_id: int
    name: str
    color_hex: str
    status: str
    voxels: int
    volume_ml: float
    busy: bool = False
    #: ``""``: the image has a physical voxel spacing and the size is a volume in mL; else the
    #: size is counted: ``"px"`` (a 2D image) or ``"vox"`` (a volume without spacing)
    size_unit: str = ""
    #: the z range of the object's boxes, ``"3–9"`` (3D images; ``""`` without a box)
    z_range: str = ""

    @property
    def volume_text(self) -> str:
        if self.size_unit:
            return f"{self.voxels:,} {self.size_unit}"
        return format_volume(self.volume_ml)


def rgba_to_hex(rgba: Iterable[float] | None) -> str:
    """``#rrggbb`` of an RGBA colour in 0..1 (grey when ``None``)."""
    if rgba is None:
        return "#808080"
    c = [min(max(float(x), 0.0), 1.0) for x in list(rgba)[:3]]
    return "#" + "".join(f"{round(x * 255):02x}" for x in c)


def format_volume(ml: float) -> str:
    """Volume for display: ``12.3 mL``, ``0.042 mL``, ``0 mL``."""
    if ml <= 0:
        return "0 mL"
    if ml >= 100:
        return f"{ml:.0f} mL"
    if ml >= 1:
        return f"{ml:.1f} mL"
    return f"{ml:.3g} mL"


def short_class_name(text: str) -> str:
    """A short object name for a class description (CVPR text prompts are sentences).

    ``"CT imaging of the spleen within the abdomen"`` -> ``"spleen"`` through the class
    vocabulary; text of up to three words, or text the vocabulary cannot place, is kept.
    """
    text = text.strip()
    if len(text.split()) <= 3:
        return text
    try:
        from ..engine.vocab import resolve

        res = resolve(text)
    except (ImportError, OSError, ValueError):
        return text
    return str(res.name) if res.ok and res.name else text


def latency_text(model_s: float, roundtrip_s: float, queued_s: float = 0.0, warmup_wait_s: float = 0.0) -> str:
    """The dock's line about the last result: time in the model, then what the rest of the
    prompt-to-mask time went to — waiting for the model's warm-up (the image being encoded
    after the backend loaded) or queueing behind other prompts — when it was noticeable."""
    parts = [f"last: model {model_s:.2f} s"]
    if warmup_wait_s >= 0.05:
        parts.append(f"warm-up {warmup_wait_s:.1f} s (encoding the image)")
    if queued_s >= 0.05:
        parts.append(f"queued {queued_s:.1f} s behind other prompts")
    parts.append(f"prompt→mask {roundtrip_s:.2f} s")
    return " · ".join(parts)
