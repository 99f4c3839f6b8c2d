"""The object list's data: one row per object with colour, name, status and volume (Qt-free).

Voxel counts come from the session (``object_voxels``, which scans only the object's
bounding box) and are refreshed only for the objects a change touched.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["ObjectRow", "format_volume", "rgba_to_hex", "short_class_name"]


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

    @property
    def volume_text(self) -> str:
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
        from ..core.vocab import resolve

        res = resolve(text)
    except (ImportError, OSError, ValueError):
        return text
    return str(res.name) if res.ok and res.name else text
