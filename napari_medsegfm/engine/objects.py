"""Object-table helpers of the session: default colours, colour checks, copies of an ObjectInfo."""

from __future__ import annotations

import colorsys
import dataclasses
from typing import Any

from ..types import ObjectInfo

__all__ = ["default_color", "check_color", "copy_info"]


def default_color(label_id: int) -> tuple[float, float, float, float]:
    """A distinct, deterministic RGBA colour (0..1) for a label id (golden-angle hues)."""
    h = (int(label_id) * 0.618033988749895) % 1.0
    s = 0.65 + 0.25 * ((int(label_id) * 7) % 3) / 2
    r, g, b = colorsys.hsv_to_rgb(h, s, 0.95)
    return (round(r, 4), round(g, 4), round(b, 4), 1.0)


def check_color(color: Any) -> tuple[float, float, float, float]:
    """RGBA (0..1) from 3 or 4 numbers; ``ValueError`` naming the value otherwise."""
    try:
        c = tuple(float(v) for v in color)
    except (TypeError, ValueError):
        raise ValueError(f"color must be 3 or 4 numbers in 0..1 (RGB[A]); got {color!r}") from None
    if len(c) not in (3, 4) or not all(0.0 <= v <= 1.0 for v in c):
        raise ValueError(f"color must be 3 or 4 numbers in 0..1 (RGB[A]); got {color!r}")
    return c + (1.0,) if len(c) == 3 else c  # type: ignore[return-value]


def copy_info(info: ObjectInfo) -> ObjectInfo:
    """A copy of ``info`` whose ``meta`` dict is not shared."""
    return dataclasses.replace(info, meta=dict(info.meta))
