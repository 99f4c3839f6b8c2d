"""3D Slicer segmentations (``.seg.nrrd``) read and written with slicerio (pynrrd underneath).

Reading
    The NRRD header is checked first (declared sizes × type against
    :mod:`~napari_medsegfm.io.limits`). Segments (name, colour, label value,
    layer, terminology) come from the ``Segment<N>_*`` header fields. A single-layer
    segmentation keeps its label values; with several layers (Slicer stores
    overlapping segments in separate layers) each segment gets label ``1..N`` in
    segment order, and voxels claimed by more than one segment go to the later one
    (a warning names the segments and the voxel count). The label map is shown in
    the closest canonical orientation like every 3D reader.

Writing
    :func:`save_slicer_seg` writes one layer with one segment per label value present:
    name and colour from the objects list (``label_names``/``colors``, else the
    case's), the DICOM category/type codes of :func:`~napari_medsegfm.io.dicomseg.segment_codes`
    as Slicer terminology, on the case's source grid, gzip-compressed, atomically.
"""

from __future__ import annotations

import colorsys
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..types import Case, Volume
from ..utils import label_dtype_for
from ._common import (
    as_label_array,
    modality_from_name,
    present_labels,
)
from .atomic import atomic_path
from .geometry import LPS_TO_RAS, canonical_view, source_grid, to_source_order

__all__ = ["is_slicer_seg_path", "load_slicer_seg", "save_slicer_seg", "default_color"]

logger = logging.getLogger(__name__)

def is_slicer_seg_path(path: str | os.PathLike[str]) -> bool:
    """True for a ``.seg.nrrd`` name (no file access).

    Parameters
    ----------
    path : path-like
        The file.
    """
    return Path(path).name.lower().endswith(".seg.nrrd")


def default_color(label: int) -> tuple[float, float, float]:
    """A distinct colour for a label without one (golden-angle hues).

    Parameters
    ----------
    label : int
        Label id.

    Returns
    -------
    tuple of 3 float
        RGB in 0..1.
    """
    h = (label * 0.618033988749895) % 1.0
    return colorsys.hsv_to_rgb(h, 0.65, 0.95)


def _stem(p: Path) -> str:
    return p.name[: -len(".seg.nrrd")] if is_slicer_seg_path(p) else p.stem


def load_slicer_seg(path: str | os.PathLike[str]) -> Case:
    """Read a Slicer ``.seg.nrrd`` as a labels-only :class:`Case` (``labels["gts"]``).

    ``label_names`` and ``meta["label_colors"]`` (0..255 RGB) come from the segments;
    ``meta["segments"]`` keeps each segment's id, name, label, layer and terminology.

    Parameters
    ----------
    path : path-like
        The ``.seg.nrrd`` file.

    Returns
    -------
    Case
        Labels ``(Z, Y, X)`` closest canonical (spacing in mm), on a geometry-only image.

    Raises
    ------
    ValueError, FileNotFoundError
        Naming the file: unreadable, not 3D (or 4D with layers), a segment in a layer the
        file lacks, or a declared size above the limits (overlapping layers are merged with
        a warning: the last segment listed wins).
    """
    import nrrd
    import slicerio

    src = Path(path)
    if not src.is_file():
        raise FileNotFoundError(f"{src}: no such file")
    from .itkimage import _check_nrrd_header

    _check_nrrd_header(src)
    try:
        seg = slicerio.read_segmentation(str(src))
    except (nrrd.NRRDError, OSError, ValueError, KeyError, IndexError, TypeError, EOFError) as exc:
        raise ValueError(f"{src}: Slicer segmentation cannot be read ({type(exc).__name__}: {exc})") from None
    vox = np.asarray(seg["voxels"])
    segments = list(seg.get("segments") or [])
    if vox.ndim == 4:
        labels_ijk, segments = _merge_layers(vox, segments, src)
    elif vox.ndim == 3:
        from .itkimage import labels_from_array

        labels_ijk = labels_from_array(vox, src, "voxels")
    else:
        raise ValueError(f"{src}: voxels of shape {vox.shape}; expected 3D (or 4D with layers)")
    aff_lps = np.asarray(seg["ijkToLPS"], dtype=float)
    view, spacing, affine_zyx, grid = canonical_view(labels_ijk, LPS_TO_RAS @ aff_lps)
    grid["space"] = "LPS"
    names, colors, info = {}, {}, []
    for s in segments:
        lab = int(s.get("labelValue", 0) or 0)
        if lab <= 0:
            continue
        names[lab] = str(s.get("name") or s.get("id") or f"segment {lab}")
        col = s.get("color")
        if col is not None and len(col) >= 3:
            colors[lab] = tuple(int(round(float(c) * 255)) for c in list(col)[:3])
        info.append({"id": s.get("id"), "name": names[lab], "label": lab, "layer": int(s.get("layer", 0) or 0),
                     "terminology": s.get("terminology")})
    arr = np.ascontiguousarray(view, dtype=label_dtype_for(int(view.max()) if view.size else 0))
    meta = {"source": str(src), "format": "slicer_seg", "modality": modality_from_name(_stem(src)), "grid": grid,
            "labels_only": True, "labels_source": str(src), "label_colors": colors, "segments": info}
    volume = Volume(array=arr, spacing=spacing, affine=affine_zyx, meta=dict(meta))
    case = Case(image=volume, source=src, format="slicer_seg", name=_stem(src), meta=meta, label_names=names)
    case.labels["gts"] = arr
    return case


def _merge_layers(vox: np.ndarray, segments: list[dict[str, Any]], src: Path) -> tuple[np.ndarray, list[dict]]:
    """(layers, I, J, K) -> one (I, J, K) label map, segments renumbered 1..N."""
    out = np.zeros(vox.shape[1:], dtype=label_dtype_for(max(1, len(segments))))
    claimed = np.zeros(vox.shape[1:], dtype=np.uint16)
    merged = []
    for n, s in enumerate(segments, start=1):
        layer, val = int(s.get("layer", 0) or 0), int(s.get("labelValue", 1) or 1)
        if not 0 <= layer < vox.shape[0]:
            raise ValueError(f"{src}: segment {s.get('name')!r} is in layer {layer}; the file has {vox.shape[0]}")
        m = vox[layer] == val
        claimed += m
        out[m] = n
        merged.append({**s, "labelValue": n})
    overlap = int((claimed > 1).sum())
    if overlap:
        logger.warning("%s: %d voxels belong to more than one segment (layers overlap); each goes to the last "
                       "segment listed", src, overlap)
    return out, merged


def save_slicer_seg(labels: np.ndarray, path: str | os.PathLike[str], *, case: Case | None = None,
                    label_names: dict[int, str] | None = None, colors: dict[int, Any] | None = None,
                    overwrite_gt: bool = False) -> Path:
    """Write labels ``(Z, Y, X)`` as a Slicer ``.seg.nrrd`` on the case's source grid, atomically.

    Parameters
    ----------
    labels : np.ndarray
        Integer labels in the case's array order.
    path : path-like
        ``*.seg.nrrd``.
    case : Case, optional
        Grid (and names/colours) source; without it an identity grid.
    label_names, colors : dict, optional
        ``{label: name}``, ``{label: (r, g, b)}`` 0..255.
    overwrite_gt : bool
        Allow replacing the case's own label file (a ``.bak`` is kept).
    """
    import slicerio

    from .dicomseg import segment_codes
    from .itkimage import guard_ground_truth

    target = Path(path)
    if not is_slicer_seg_path(target):
        raise ValueError(f"{target}: expected a .seg.nrrd file name")
    if not target.parent.is_dir():
        raise FileNotFoundError(f"cannot write {target}: folder {target.parent} does not exist")
    arr = as_label_array(labels, f"labels for {target}")
    if arr.ndim != 3:
        raise ValueError(f"{target}: a Slicer segmentation is 3D; labels have shape {arr.shape}")
    if case is None:
        case = Case(image=Volume(array=np.broadcast_to(np.zeros((), np.uint8), arr.shape), spacing=(1.0, 1.0, 1.0)))
    if tuple(arr.shape) != tuple(case.image.spatial_shape):
        raise ValueError(f"{target}: labels have shape {arr.shape}; case {case.name!r} has {case.image.spatial_shape}")
    guard_ground_truth(target, case.meta.get("labels_source"), overwrite_gt)
    grid = source_grid(case)
    ijk = to_source_order(arr, grid)  # a view: pynrrd writes it in Fortran order, i.e. sequentially
    names = {**case.label_names, **(label_names or {})}
    cols = {**(case.meta.get("label_colors") or {}), **(colors or {})}
    segments = []
    for lid in present_labels(arr):
        name = str(names.get(lid) or f"label {lid}")
        if lid in cols:
            rgb = [min(1.0, max(0.0, float(v) / 255)) for v in list(cols[lid])[:3]]
        else:
            rgb = list(default_color(lid))
        cat, typ, mod, _how = segment_codes(name)
        term = {"contextName": "Segmentation category and type - DICOM master list",
                "category": [cat.scheme_designator, cat.value, cat.meaning],
                "type": [typ.scheme_designator, typ.value, typ.meaning]}
        if mod is not None:
            term["typeModifier"] = [mod.scheme_designator, mod.value, mod.meaning]
        segments.append({"id": f"Segment_{lid}", "name": name, "color": [round(v, 6) for v in rgb],
                         "labelValue": lid, "layer": 0, "terminology": term})
    seg = {"voxels": ijk, "ijkToLPS": LPS_TO_RAS @ np.asarray(grid["affine_ras"], dtype=float),
           "encoding": "gzip", "segments": segments, "containedRepresentationNames": ["Binary labelmap"],
           "masterRepresentation": "Binary labelmap"}
    with atomic_path(target) as tmp:
        slicerio.write_segmentation(str(tmp), seg)
    logger.info("saved Slicer segmentation %s: %d segments", target, len(segments))
    return target
