"""napari writer hook (npe2 command ``napari-medsegfm.write_labels``) for Labels layers.

The labels layer made by the reader carries ``metadata`` with the case it came from
(``medsegfm_case``, ``medsegfm_format``, ``medsegfm_key``, ``medsegfm_meta``), so saving
goes back into the case's format:

* ``.npz``: member ``segs`` of the chosen file (every other member kept byte-for-byte).
  A ``gts`` layer is written as ``segs`` too, unless its metadata has
  ``medsegfm_overwrite_gt: True`` (set by the widget when the user asks), then as
  ``gts`` with a ``.bak`` of the old file.
* ``.nii``/``.nii.gz``: into the source orientation/affine/header.
* ``.h5``/``.seg``/``.png``: medsegpy ``seg`` / slices, SA-Med2D mask PNGs.
* ``.dcm``: a DICOM-SEG referencing the DICOM series the layer was read with
  (segment names from the layer's ``features``/label names, colours from its colormap,
  algorithm type ``metadata["medsegfm_algorithm_type"]``, default SEMIAUTOMATIC);
  ``.seg.nrrd``: a Slicer segmentation; ``.nrrd``/``.mha``: a label map — on the
  source grid of the case (a layer from elsewhere: its scale, identity orientation).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from . import case_from_layer_metadata, save_labels
from ._common import present_labels

__all__ = ["napari_write_labels"]

logger = logging.getLogger(__name__)


def _label_names(meta: dict[str, Any]) -> dict[int, str]:
    feats = meta.get("features")
    names: dict[int, str] = {}
    try:
        if feats is not None and "index" in feats and "name" in feats:
            for i, n in zip(list(feats["index"]), list(feats["name"])):
                if int(i) > 0 and isinstance(n, str) and n:
                    names[int(i)] = n
    except (TypeError, ValueError, KeyError):
        pass
    if not names:
        md = meta.get("metadata") or {}
        names = {int(k): v for k, v in (md.get("medsegfm_label_names") or {}).items()}
    return names


def _label_colors(meta: dict[str, Any], ids: list[int]) -> dict[int, tuple[int, int, int]]:
    """``{label: (r, g, b)}`` 0..255 from the layer's colormap (napari Labels state), if it maps labels."""
    cmap = meta.get("colormap")
    if cmap is None or not ids or not hasattr(cmap, "map"):
        return {}
    try:
        rgba = np.asarray(cmap.map(np.asarray(ids)), dtype=float).reshape(len(ids), -1)
    except (TypeError, ValueError, AttributeError, KeyError):
        return {}
    return {i: tuple(int(round(c * 255)) for c in row[:3]) for i, row in zip(ids, rgba)}


_CLINICAL_EXT = (".dcm", ".seg.nrrd", ".nrrd", ".mha")


def napari_write_labels(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """The npe2 writer hook: save one Labels layer.

    A ``gts`` layer is saved as ``segs`` unless its metadata sets ``medsegfm_overwrite_gt``.

    Parameters
    ----------
    path : str
        The file napari's save dialog chose.
    data : array-like
        The labels ``(Z, Y, X)`` or ``(Y, X)``.
    meta : dict
        The layer's attributes (``metadata``, ``name``, ``scale``, ``features``/``properties``).

    Returns
    -------
    list of str
        The written path(s).

    Raises
    ------
    ValueError
        A layer that did not come from this plugin, saved to a format that needs its case.
    """
    md = dict(meta.get("metadata") or {})
    arr = np.asarray(data)
    names = _label_names(meta)
    case = case_from_layer_metadata(md, arr.shape, names) if md else None
    key = md.get("medsegfm_key", "segs")
    overwrite = bool(md.get("medsegfm_overwrite_gt", False))
    if key != "segs" and not (key == "gts" and overwrite):
        if key == "gts":
            logger.info("saving the ground-truth layer as 'segs' (set metadata medsegfm_overwrite_gt to replace gts)")
        key = "segs"
    target = Path(path)
    lower = target.name.lower()
    src = md.get("medsegfm_case")
    if case is None and src and lower.endswith(_CLINICAL_EXT) and Path(src).exists():
        from . import load_case

        case = load_case(src)  # e.g. a labels layer the dock made for a DICOM series: its geometry
    if case is None and not lower.endswith((".npz", ".nii", ".nii.gz", ".seg.nrrd", ".nrrd", ".mha")):
        raise ValueError(f"{target}: this layer did not come from a case opened by napari-medsegfm; "
                         "save it as .npz, .nii.gz, .nrrd, .mha or .seg.nrrd")
    colors: dict[int, tuple[int, int, int]] = {}
    if lower.endswith(_CLINICAL_EXT):
        ids = present_labels(arr)
        colors = _label_colors(meta, ids)
        if case is None:
            from ..types import Case, Volume

            scale = meta.get("scale")
            sp = tuple(float(s) for s in scale) if scale is not None and len(scale) == arr.ndim else (1.0,) * arr.ndim
            case = Case(image=Volume(array=np.broadcast_to(np.zeros((), np.uint8), arr.shape), spacing=sp),
                        name=str(meta.get("name", "")))
    if case is not None and "spacing_xyz" not in case.meta and target.name.lower().endswith(".npz"):
        scale = meta.get("scale")
        if scale is not None and len(scale) == arr.ndim:
            case.image.spacing = tuple(float(s) for s in scale)
    out = save_labels(arr, target, case=case, key=key, overwrite_gt=overwrite and key == "gts",
                      label_names=names or None, colors=colors or None,
                      algorithm_type=md.get("medsegfm_algorithm_type"))
    return [str(out)]
