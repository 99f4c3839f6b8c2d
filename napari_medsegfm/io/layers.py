"""Case → napari layer data tuples ``(data, kwargs, layer_type)`` (plain data, no napari import).

* one ``image`` layer per image (IVDM3Seg: four, only the primary visible), ``scale`` =
  spacing in array order, ``rgb`` for 2D colour images;
* one ``labels`` layer per label image (``gts``, ``segs``, ``prev_pred``), carrying
  ``metadata`` {``medsegfm_case``: source path, ``medsegfm_format``, ``medsegfm_key``,
  ``medsegfm_labels_file``, ``medsegfm_meta`` (what the writer needs), ``medsegfm_spacing``}
  and, when names are known, ``features`` with one row per label (``index`` = label
  value, ``name``, ``text_prompt``, ``instance``); ``metadata["medsegfm_instance_label"]``
  keeps CVPR's ``instance_label``;
* boxes as an editable ``shapes`` layer: a rectangle on slice ``z_mid`` (3D) with
  features ``label, z_min, z_max, z_mid`` (2D boxes: ``label``);
* CVPR clicks as a ``points`` layer with features ``label, positive``;
* DICOM images carry their identifiers (patient, study, series, frame of reference) in
  ``metadata["medsegfm_dicom"]``.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from ..types import Box2D, Box3D, Case

__all__ = ["case_to_layers", "LayerData", "contrast_limits_for"]

LayerData = tuple[Any, dict[str, Any], str]

_BOX_COLOR = "#ffd000"

logger = logging.getLogger(__name__)


def _count_nonfinite(arr: np.ndarray) -> int:
    """NaN/inf voxels of a float array, one slice at a time (no volume-sized temporary)."""
    if arr.dtype.kind not in "fc" or arr.size == 0:
        return 0
    if arr.ndim < 3:
        return int(arr.size - np.count_nonzero(np.isfinite(arr)))
    return sum(int(arr[z].size - np.count_nonzero(np.isfinite(arr[z]))) for z in range(arr.shape[0]))


def contrast_limits_for(arr: np.ndarray, name: str = "") -> list[float]:
    """Display window: full range for uint8, else the 0.5-99.5 % percentiles of a subsample.

    Always finite: NaN/inf voxels are left out (with a warning naming ``name`` and how many
    there are); an image without any finite value gets ``[0, 1]``.

    Parameters
    ----------
    arr : np.ndarray
        The image, any shape.
    name : str
        For the warning.

    Returns
    -------
    list of 2 float
        ``[low, high]``, ``low < high``.
    """
    if arr.dtype == np.uint8:
        return [0.0, 255.0]
    bad = _count_nonfinite(arr)
    if bad:
        logger.warning("%s: %d of %d voxels are NaN or infinite; the contrast limits are taken from the "
                       "finite voxels only", name or "image", bad, arr.size)
    step = max(1, int(round((arr.size / 2_000_000) ** (1 / max(arr.ndim, 1)))))
    sub = np.asarray(arr[tuple(slice(None, None, step) for _ in range(arr.ndim))], dtype=np.float64)
    if bad:
        sub = sub[np.isfinite(sub)]
        if not sub.size:  # every sampled voxel was NaN/inf: take the finite ones of the whole image
            flat = np.asarray(arr, dtype=np.float64).reshape(-1)
            sub = flat[np.isfinite(flat)][:2_000_000]
    if not sub.size:
        return [0.0, 1.0]
    lo, hi = np.percentile(sub, [0.5, 99.5])
    if not hi > lo:
        lo, hi = float(sub.min()), float(sub.max()) + 1.0
    return [float(lo), float(hi)]


def _common_meta(case: Case) -> dict[str, Any]:
    return {
        "medsegfm_case": str(case.source) if case.source is not None else "",
        "medsegfm_format": case.format,
        "medsegfm_name": case.name,
    }


def _writeback_meta(case: Case) -> dict[str, Any]:
    """``case.meta`` without anything big (it is copied with the layer)."""
    out = {}
    for k, v in case.meta.items():
        if isinstance(v, np.ndarray) and v.size > 64:
            continue
        out[k] = v
    return out


def _features(case: Case, key: str) -> dict[str, list[Any]] | None:
    ids = set(case.label_names) | set(case.text_prompts)
    ids |= {b.object_id for b in case.boxes}
    if not ids:
        return None
    ids_sorted = sorted(i for i in ids if i > 0)
    inst = bool(case.instance_label) if case.instance_label is not None else False
    feats: dict[str, list[Any]] = {
        "index": [0, *ids_sorted],
        "name": ["background", *[case.label_names.get(i, f"label {i}") for i in ids_sorted]],
    }
    if case.text_prompts:
        feats["text_prompt"] = ["", *[case.text_prompts.get(i, "") for i in ids_sorted]]
    if case.instance_label is not None:
        feats["instance"] = [False, *[inst for _ in ids_sorted]]
    return feats


def _label_colormap(case: Case) -> dict[Any, Any] | None:
    colors = case.meta.get("label_colors") or {}
    if not colors:
        return None
    cmap: dict[Any, Any] = {0: (0.0, 0.0, 0.0, 0.0), None: (1.0, 1.0, 1.0, 1.0)}
    for lab, rgb in colors.items():
        c = [float(x) / 255.0 for x in rgb][:3]
        cmap[int(lab)] = (*c, 1.0)
    return cmap


def _labels_file(case: Case, key: str) -> str:
    if key == "gts":
        return str(case.meta.get("gts_source") or case.meta.get("labels_source") or case.source or "")
    return str(case.source or "")


def _box_layer(case: Case, scale: tuple[float, ...], nd: int) -> LayerData | None:
    rects: list[np.ndarray] = []
    feats: dict[str, list[int]] = {"label": [], "z_min": [], "z_max": [], "z_mid": []}
    for b in case.boxes:
        if isinstance(b, Box3D) and nd == 3:
            z = b.mid_slice
            rects.append(np.array([[z, b.y_min, b.x_min], [z, b.y_min, b.x_max], [z, b.y_max, b.x_max],
                                   [z, b.y_max, b.x_min]], dtype=float))
            feats["label"].append(b.object_id)
            feats["z_min"].append(b.z_min)
            feats["z_max"].append(b.z_max)
            feats["z_mid"].append(z)
        elif isinstance(b, Box2D):
            if nd == 3:
                z = b.z or 0
                rects.append(np.array([[z, b.y_min, b.x_min], [z, b.y_min, b.x_max], [z, b.y_max, b.x_max],
                                       [z, b.y_max, b.x_min]], dtype=float))
                feats["z_min"].append(z)
                feats["z_max"].append(z)
                feats["z_mid"].append(z)
            else:
                rects.append(np.array([[b.y_min, b.x_min], [b.y_min, b.x_max], [b.y_max, b.x_max],
                                       [b.y_max, b.x_min]], dtype=float))
            feats["label"].append(b.object_id)
    if not rects:
        return None
    if nd == 2:
        feats = {"label": feats["label"]}
    names = case.label_names
    kwargs = {
        "name": f"{case.name} boxes",
        "shape_type": "rectangle",
        "scale": scale,
        "features": feats,
        "edge_color": _BOX_COLOR,
        "face_color": "transparent",
        "edge_width": max(1.0, 2.0 * min(scale)),
        "text": {"string": "{label}", "color": _BOX_COLOR, "size": 9, "anchor": "upper_left"},
        "metadata": {**_common_meta(case), "medsegfm_kind": "boxes",
                     "medsegfm_box_names": {int(k): v for k, v in names.items()}},
    }
    return rects, kwargs, "shapes"


def _clicks_layer(case: Case, scale: tuple[float, ...]) -> LayerData | None:
    if not case.clicks:
        return None
    pts, lab, pos = [], [], []
    for i, c in enumerate(case.clicks):
        for kind in ("fg", "bg"):
            for p in c.get(kind, []):
                pts.append(p)
                lab.append(i + 1)
                pos.append(kind == "fg")
    if not pts:
        return None
    colors = np.array([[0.1, 0.9, 0.2, 1.0] if p else [1.0, 0.2, 0.2, 1.0] for p in pos])
    return (np.asarray(pts, dtype=float),
            {"name": f"{case.name} clicks", "scale": scale, "features": {"label": lab, "positive": pos},
             "face_color": colors, "size": max(3.0, 6.0 * min(scale)) if scale else 6.0,
             "metadata": {**_common_meta(case), "medsegfm_kind": "clicks"}},
            "points")


def case_to_layers(case: Case) -> list[LayerData]:
    """The napari layers of a case (image(s) first, then labels, boxes, clicks).

    Layers get ``scale`` = spacing (mm) in array axis order and metadata that lets
    :func:`~napari_medsegfm.io.save_labels` write labels back to the case's source.

    Parameters
    ----------
    case : Case
        A case from :func:`~napari_medsegfm.io.load_case`.

    Returns
    -------
    list of (data, kwargs, layer_type)
        napari layer data tuples.
    """
    layers: list[LayerData] = []
    img = case.image
    scale = tuple(float(s) for s in img.spacing)
    nd = img.ndim
    labels_only = bool(case.meta.get("labels_only"))
    if not labels_only:
        images = case.images or {"": img}
        primary = case.meta.get("primary")
        for seq, vol in images.items():
            name = f"{case.name}_{seq}" if seq else case.name
            kw: dict[str, Any] = {
                "name": name,
                "scale": tuple(float(s) for s in vol.spacing),
                "metadata": {**_common_meta(case), "medsegfm_role": "image", "medsegfm_sequence": seq or None},
                "visible": (not seq) or seq == primary,
            }
            if vol.is_rgb:
                kw["rgb"] = True
            else:
                kw["colormap"] = "gray"
                kw["contrast_limits"] = contrast_limits_for(vol.array, str(case.source or name))
            if vol.affine is not None:
                kw["metadata"]["medsegfm_affine"] = np.asarray(vol.affine).tolist()
            if isinstance(case.meta.get("dicom"), dict):  # patient/study/series identifiers (DICOM)
                kw["metadata"]["medsegfm_dicom"] = {k: v for k, v in case.meta["dicom"].items()
                                                    if not isinstance(v, (list, tuple))}
            layers.append((vol.array, kw, "image"))
    writeback = _writeback_meta(case)
    cmap = _label_colormap(case)
    for key in ("gts", "segs", "prev_pred"):
        if key not in case.labels:
            continue
        arr = case.labels[key]
        md = {
            **_common_meta(case),
            "medsegfm_key": key,
            "medsegfm_labels_file": _labels_file(case, key),
            "medsegfm_meta": writeback,
            "medsegfm_spacing": list(scale),
        }
        if case.instance_label is not None:
            md["medsegfm_instance_label"] = int(case.instance_label)
        if case.label_names:
            md["medsegfm_label_names"] = {int(k): v for k, v in case.label_names.items()}
        kw = {"name": f"{case.name} {key}", "scale": scale, "metadata": md,
              "opacity": 0.6, "visible": key != "prev_pred"}
        feats = _features(case, key)
        if feats is not None:
            kw["features"] = feats
        if cmap is not None:
            kw["colormap"] = cmap
        layers.append((arr, kw, "labels"))
    box = _box_layer(case, scale, nd)
    if box is not None:
        layers.append(box)
    clicks = _clicks_layer(case, scale)
    if clicks is not None:
        layers.append(clicks)
    return layers
