"""napari reader hook (npe2 command ``napari-medsegfm.get_reader``).

``napari_get_reader(path)`` returns a reader function for paths this plugin claims
(:func:`~napari_medsegfm.io.detect_format` is not ``None``) and ``None`` otherwise; it
never raises at claim time. The reader returns layer data tuples built by
:func:`~napari_medsegfm.io.layers.case_to_layers`; a claimed but broken file raises
``ValueError`` naming the file, the key and what was expected, which napari shows.

DICOM: a folder holding several image series opens each series as its own layer set
(named after modality, description and series number); a DICOM-SEG opened together
with the series folder (or a file of it) that it references lands on that series as
its labels layer.
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
    """The npe2 reader hook: a reader for ``path`` (or every path of a list), or ``None`` if one is not ours.

    Parameters
    ----------
    path : path-like or sequence of path-like
        What napari was asked to open.

    Returns
    -------
    callable or None
        ``reader(path) -> list of layer data tuples``.
    """
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
        segs = [p for p, f in zip(paths, fmts) if f == "dicom_seg"]
        images = [(p, f) for p, f in zip(paths, fmts) if f != "dicom_seg"]
        used: set[Path] = set()
        for p, fmt in images:
            if fmt == "dicom" and segs:
                case_layers, seg = _dicom_with_seg(p, segs)
                if seg is not None:
                    used.add(seg)
                    layers.extend(case_layers)
                    continue
            layers.extend(read_layers(p, fmt))
        for s in segs:
            if s not in used:
                layers.extend(read_layers(s, "dicom_seg"))
        return layers

    return reader


def _dicom_with_seg(p: Path, segs: list[Path]) -> tuple[list[LayerData], Path | None]:
    """The series at ``p`` with the first SEG of ``segs`` that references it."""
    case = load_case(p, "dicom")
    for s in segs:
        from .dicomseg import read_seg_onto_case

        try:
            labels, names, colors = read_seg_onto_case(s, case)
        except ValueError as exc:
            logger.info("%s does not go with %s: %s", s, p, exc)
            continue
        case.labels["gts"] = labels
        case.label_names.update(names)
        case.meta["label_colors"] = {**(case.meta.get("label_colors") or {}), **colors}
        case.meta["gts_source"] = case.meta["labels_source"] = str(s)
        return case_to_layers(case), s
    return [], None


def read_layers(path: PathLike, fmt: str | None = None, **options: Any) -> list[LayerData]:
    """Read one case (every series of a multi-series DICOM folder) as napari layer data tuples.

    Parameters
    ----------
    path : path-like
        A file or case folder.
    fmt : str, optional
        Reader name (default detected).
    **options
        Passed to :func:`~napari_medsegfm.io.load_case`.

    Returns
    -------
    list of (data, kwargs, layer_type)

    Raises
    ------
    ValueError, FileNotFoundError
        From the reader, naming the file.
    """
    p = Path(path)
    fmt = fmt or detect_format(p)
    if fmt == "dicom" and p.is_dir() and "series" not in options and "case_id" not in options:
        from .dicom import load_dicom, scan_dicom

        scan = scan_dicom(p)  # headers read once for every series of the folder
        if len(scan.series) > 1:
            logger.info("%s: %d image series, each opened as its own layers", p, len(scan.series))
        layers: list[LayerData] = []
        for s in scan.series or [None]:
            case = load_dicom(p, series=s.uid if s is not None else None, scan=scan)
            layers.extend(case_to_layers(case))
        return layers
    case = load_case(p, fmt, **options)
    logger.info("opened %s (%s): image %s, labels %s", path, case.format, case.image.array.shape, list(case.labels))
    return case_to_layers(case)
