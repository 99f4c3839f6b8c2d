"""Writing SA-Med2D-20M: one binary mask PNG per object and slice, or a whole case as a tree.

The layout and the label <-> ``(class, instance)`` rule are described in
:mod:`~napari_medsegfm.io.samed2d`, which reads it.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
from pathlib import Path

import numpy as np

from ..types import Case
from ._common import (
    GroundTruthProtected,
    as_label_array,
    read_json_file,
    same_file,
)
from .atomic import atomic_writer, backup_file
from .samed2d import (
    CLASS_MAPPING_NAME,
    INDEX_NAME,
    glob_escape,
    parse_mask_stem,
    read_class_mapping,
)

__all__ = ["save_samed2d_masks", "write_samed2d_case"]

logger = logging.getLogger("napari_medsegfm.io.samed2d")


# ------------------------------------------------------------------------------ writing
def _png_bytes(mask: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def _resolve_class(label: int, label_names: dict[int, str] | None, classes: dict[int, str]) -> int:
    name = (label_names or {}).get(label)
    if name:
        inv = {v.lower(): k for k, v in classes.items()}
        key = name.strip().lower()
        if key in inv:
            return inv[key]
        base = re.sub(r"\s+\d+$", "", key)
        if base in inv:
            return inv[base]
    raise ValueError(
        f"label {label} ({name or 'unnamed'}) has no SA-Med2D class: name it after a class of "
        f"{CLASS_MAPPING_NAME} (e.g. {', '.join(list(classes.values())[:3]) or 'liver'})"
    )


def save_samed2d_masks(
    labels: np.ndarray,
    masks_dir: str | os.PathLike[str],
    *,
    case: Case,
    overwrite_gt: bool = False,
    label_names: dict[int, str] | None = None,
) -> list[Path]:
    """Write one binary PNG per object and slice, named ``<image stem>--{class:04d}_{inst:03d}.png``.

    Labels keep their ``(class, instance)`` from ``case.meta["label_map"]``; new labels are
    resolved through the class mapping by name (``label_names``). Writing into the case's
    own ``masks/`` folder replaces ground truth: it needs ``overwrite_gt=True``, keeps a
    ``.bak`` of every replaced or removed mask of those images, and updates ``SAMed2D_v1.json``.

    Parameters
    ----------
    labels : np.ndarray
        ``(H, W)`` for a 2D case or ``(N, H, W)`` for a re-stacked case (one slice per image
        of ``case.meta["image_stems"]``).
    masks_dir : path-like
        The output folder.
    case : Case
        The case the labels belong to.
    overwrite_gt : bool
        Allow replacing the case's own masks.
    label_names : dict of int to str, optional
        Names of labels the case did not have.

    Returns
    -------
    list of Path
        The files written.

    Raises
    ------
    GroundTruthProtected
        Writing into the case's own ``masks/`` without ``overwrite_gt``.
    ValueError
        Labels of another shape, or a new label without a class.
    """
    out = Path(masks_dir)
    if out.suffix.lower() == ".png":
        out = out.parent
    if case is None or "image_stems" not in case.meta:
        raise ValueError(f"{out}: saving SA-Med2D masks needs the case they belong to (case=)")
    arr = as_label_array(labels, f"labels for {out}")
    stems: list[str] = list(case.meta["image_stems"])
    pos: list[int] = list(case.meta.get("slice_positions", range(len(stems))))
    if arr.ndim == 2:
        arr = arr[None]
    if tuple(arr.shape) != tuple(case.image.spatial_shape) and tuple(arr.shape[1:]) != tuple(case.image.spatial_shape):
        raise ValueError(f"{out}: labels have shape {labels.shape}; case {case.name!r} has {case.image.spatial_shape}")
    root = Path(case.meta.get("root", out.parent))
    classes = read_class_mapping(root)
    lmap: dict[int, tuple[int, int]] = {int(k): tuple(v) for k, v in case.meta.get("label_map", {}).items()}
    own = same_file(out, case.meta.get("labels_source")) if out.exists() else False
    if own and not overwrite_gt:
        raise GroundTruthProtected(f"{out}: refusing to overwrite the dataset's ground-truth masks; pass "
                                   "overwrite_gt=True (.bak copies are kept) or choose another folder")
    used = {c_i for c_i in lmap.values()}
    for lab in (int(v) for v in np.unique(arr) if v):
        if lab not in lmap:
            cid = _resolve_class(lab, {**case.label_names, **(label_names or {})}, classes)
            inst = 0
            while (cid, inst) in used:
                inst += 1
            lmap[lab] = (cid, inst)
            used.add((cid, inst))
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    index_updates: dict[str, list[str]] = {}
    for stem, z in zip(stems, pos):
        sl = arr[z]
        existing = {p.name: p for p in out.glob(f"{glob_escape(stem)}--*.png")
                    if (pm := parse_mask_stem(p.stem)) is not None and pm[0] == stem}
        new_names = []
        for lab in (int(v) for v in np.unique(sl) if v):
            cid, inst = lmap[lab]
            p = out / f"{stem}--{cid:04d}_{inst:03d}.png"
            if p.exists() and own:
                backup_file(p)
            with atomic_writer(p) as fh:
                fh.write(_png_bytes(sl == lab))
            written.append(p)
            new_names.append(p.name)
        for name, p in existing.items():
            if name not in new_names and own:
                backup_file(p)
                p.unlink()
                logger.info("removed mask %s (its object is gone from slice %s)", p, stem)
        index_updates[stem] = sorted(new_names)
    index = root / INDEX_NAME
    if own and index.is_file():
        _update_index(index, index_updates)
    return written


def _update_index(index: Path, updates: dict[str, list[str]]) -> None:
    data = read_json_file(index, "SA-Med2D image→mask index")
    if not isinstance(data, dict):
        raise ValueError(f"{index}: expected {{image path: [mask paths]}}")
    prefix = "./"
    for k in data:
        prefix = "./" if k.startswith("./") else ""
        break
    for stem, names in updates.items():
        data[f"{prefix}images/{stem}.png"] = [f"{prefix}masks/{n}" for n in names]
    with atomic_writer(index, "w") as fh:
        json.dump(data, fh, indent=1)


def write_samed2d_case(case: Case, root: str | os.PathLike[str], *, labels_key: str | None = None,
                       dataset: str | None = None, modality: str | None = None) -> Path:
    """Write a whole case as an SA-Med2D-20M tree (images/, masks/, class mapping, index).

    3D volumes are sliced along axis 0 (``z_{index:04d}``), 2D images are ``2d_none``.
    Intensities are written as 8-bit (rescaled min..max when not uint8); classes are
    the case's label names (``label {i}`` when unnamed), ids in label order.

    Parameters
    ----------
    case : Case
        ``(Z, Y, X)``, ``(Y, X)`` or ``(Y, X, 3)``.
    root : path-like
        The dataset root to write (created).
    labels_key : str, optional
        Which of ``case.labels`` to write (default ``gts``, else ``segs``; none: images only).
    dataset : str, optional
        The dataset part of the names (default the case's format).
    modality : str, optional
        The modality part (default the image's ``meta["modality"]``, else ``ct``).

    Returns
    -------
    Path
        ``root``.
    """
    from PIL import Image

    r = Path(root)
    (r / "images").mkdir(parents=True, exist_ok=True)
    (r / "masks").mkdir(parents=True, exist_ok=True)
    mod = modality or (case.image.meta.get("modality") or case.meta.get("modality") or "ct").lower()
    mod = f"{mod}_00" if "_" not in mod else mod
    ds = dataset or case.format or "medsegfm"
    prefix = f"{mod}--{ds}--{case.name}"
    img = np.asarray(case.image.array)
    if img.dtype != np.uint8:
        lo, hi = float(img.min()), float(img.max())
        img = ((img.astype(np.float32) - lo) / max(hi - lo, 1e-6) * 255).round().astype(np.uint8)
    key = labels_key or ("gts" if "gts" in case.labels else "segs" if "segs" in case.labels else None)
    lab = as_label_array(case.labels[key], "labels") if key else None
    classes = read_class_mapping(r)
    name_to_id = {v: k for k, v in classes.items()}
    lab_to_class: dict[int, int] = {}
    if lab is not None:
        for v in (int(x) for x in np.unique(lab) if x):
            name = case.label_names.get(v, f"label {v}")
            if name not in name_to_id:
                name_to_id[name] = max(name_to_id.values(), default=-1) + 1
            lab_to_class[v] = name_to_id[name]
    index: dict[str, list[str]] = {}
    planes = [(None, img, lab)] if case.image.ndim == 2 else [(z, img[z], None if lab is None else lab[z])
                                                              for z in range(img.shape[0])]
    for z, im, lb in planes:
        stem = f"{prefix}--{'2d_none' if z is None else f'z_{z:04d}'}"
        b = io.BytesIO()
        Image.fromarray(im).save(b, format="PNG")
        with atomic_writer(r / "images" / f"{stem}.png") as fh:
            fh.write(b.getvalue())
        names = []
        if lb is not None:
            for v in (int(x) for x in np.unique(lb) if x):
                mname = f"{stem}--{lab_to_class[v]:04d}_000.png"
                with atomic_writer(r / "masks" / mname) as fh:
                    fh.write(_png_bytes(lb == v))
                names.append(f"./masks/{mname}")
        index[f"./images/{stem}.png"] = names
    with atomic_writer(r / CLASS_MAPPING_NAME, "w") as fh:
        json.dump({k: f"{v:04d}" for k, v in name_to_id.items()}, fh, indent=1)
    idx = r / INDEX_NAME
    if idx.is_file():
        old = json.loads(idx.read_text(encoding="utf-8"))
        if isinstance(old, dict):
            index = {**old, **index}
    with atomic_writer(idx, "w") as fh:
        json.dump(index, fh, indent=1)
    return r
