"""napari reader hook (npe2 command ``napari-medsegfm.get_reader``).

``napari_get_reader(path)`` returns a reader function for paths this plugin claims
(:func:`~napari_medsegfm.io.detect_format` is not ``None``) and ``None`` otherwise; it
never raises at claim time. The reader returns layer data tuples built by
:func:`~napari_medsegfm.io.layers.case_to_layers`; a claimed but broken file raises
``ValueError`` naming the file, the key and what was expected, which napari shows.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from . import detect_format, load_case
from .layers import LayerData, case_to_layers

__all__ = ["napari_get_reader", "read_layers"]

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]


def _paths(path: PathLike | Sequence[PathLike]) -> list[Path] | None:
    if isinstance(path, (str, os.PathLike)):
        return [Path(path)]
    if isinstance(path, (list, tuple)) and path and all(isinstance(p, (str, os.PathLike)) for p in path):
        return [Path(p) for p in path]
    return None


def napari_get_reader(path: PathLike | Sequence[PathLike]) -> Callable[[Any], list[LayerData]] | None:
    """A reader for ``path`` (or every path of a list), or ``None`` if one is not ours."""
    paths = _paths(path)
    if not paths:
        return None
    fmts = []
    for p in paths:
        fmt = detect_format(p)
        if fmt is None:
            return None
        fmts.append(fmt)

    def reader(_path: Any) -> list[LayerData]:
        layers: list[LayerData] = []
        for p, fmt in zip(paths, fmts):
            layers.extend(read_layers(p, fmt))
        return layers

    return reader


def read_layers(path: PathLike, fmt: str | None = None, **options: Any) -> list[LayerData]:
    """Read one case and return its napari layer data tuples."""
    case = load_case(path, fmt, **options)
    logger.info("opened %s (%s): image %s, labels %s", path, case.format, case.image.array.shape, list(case.labels))
    return case_to_layers(case)
