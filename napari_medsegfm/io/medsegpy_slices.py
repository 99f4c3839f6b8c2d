"""medsegpy 2D slice folders: re-stacking one scan's slices into a volume, writing them back.

One scan is many ``%07d_V%02d-Aug%02d_%03d.im`` files (dataset ``data`` ``H x W x 1``)
with matching ``.seg`` files (``H x W x 1 x C``); see :mod:`~napari_medsegfm.io.medsegpy`
for the layout, the channel -> label rule and the JSON sidecar.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..types import Case, Volume
from ._common import (
    GroundTruthProtected,
    as_label_array,
    integer_labels,
    pick_case,
    same_file,
)
from .atomic import atomic_path, atomic_writer, backup_file
from .limits import check_shape
from .medsegpy import (
    CategoryId,
    _categories,
    _channels_for,
    _dataset,
    _h5_open,
    _h5py,
    _spacing_zyx,
    _write_category_sidecar,
    labels_to_seg,
    list_scans,
    parse_slice_name,
    read_sidecar,
    seg_to_labels,
)

__all__ = ["load_medsegpy_scan", "save_medsegpy_slices", "write_medsegpy_slices"]

logger = logging.getLogger(__name__)


def _gaps(nums: list[int], first: int = 10) -> tuple[list[int], int]:
    """The first ``first`` slice numbers missing from sorted ``nums`` (expected ``1..max``), and how
    many are missing, from the numbers present (never a range as long as the largest number)."""
    out: list[int] = []
    n = 0
    prev = 0
    for k in nums:
        if k > prev + 1:
            n += k - prev - 1
            out.extend(range(prev + 1, min(k, prev + 1 + first - len(out))))
        prev = k
    return out[:first], n


def load_medsegpy_scan(
    path: str | os.PathLike[str], scan_id: str | None = None, *, category_ids: list[Any] | None = None
) -> Case:
    """Re-stack one scan of 2D medsegpy slices into a volume ``(D, H, W)`` = ``(Z, Y, X)``.

    Parameters
    ----------
    path : path-like
        The folder, or one ``.im``/``.seg`` file of the scan (then ``scan_id`` comes from its name).
    scan_id : str, optional
        With several scans in the folder and no ``scan_id``, the first (sorted) is read.
    category_ids : list, optional
        Categories to show (see :mod:`~napari_medsegfm.io.medsegpy`).

    Returns
    -------
    Case
        ``labels["gts"]`` from the ``.seg`` files where present.

    Raises
    ------
    ValueError
        Slices not numbered ``1..D`` without gaps (naming the missing ones), slices of
        different sizes, or a volume above the size limits.
    """
    p = Path(path)
    if p.is_file():
        parsed = parse_slice_name(p.name.rsplit(".", 1)[0])
        if parsed is None:
            raise ValueError(f"{p}: name does not follow %07d_V%02d-Aug%02d_%03d")
        scan_id = scan_id or parsed[0]
        folder = p.parent
    else:
        folder = p
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder of medsegpy slices")
    scans = list_scans(folder)
    scan_id = pick_case(scans, scan_id, folder, "scan", "no medsegpy slice files (%07d_V%02d-Aug%02d_%03d.im)", logger)
    slices = scans[scan_id]
    nums = sorted(k for k, v in slices.items() if "im" in v)
    if not nums:
        raise ValueError(f"{folder}: scan {scan_id} has .seg files but no .im images")
    missing, n_missing = _gaps(nums)
    if n_missing:
        more = f" and {n_missing - len(missing)} more" if n_missing > len(missing) else ""
        raise ValueError(f"{folder}: scan {scan_id} lacks slice(s) {missing}{more} (.im); expected slices "
                         f"1..{nums[-1]}")
    meta_json, side = read_sidecar(folder / f"{scan_id}.json", folder / "metadata.json")
    images = []
    segs: list[np.ndarray | None] = []
    seg_dtypes: list[str] = []
    h5py = _h5py()
    for k in nums:
        im_path = slices[k]["im"]
        with _h5_open(im_path) as f:
            im = _dataset(f, "data", im_path, "an H x W x 1 image")
        if im.ndim == 3 and im.shape[-1] == 1:
            im = im[..., 0]
        if im.ndim != 2:
            raise ValueError(f"{im_path}: 'data' has shape {im.shape}; expected H x W x 1")
        if images and im.shape != images[0].shape:
            raise ValueError(f"{im_path}: 'data' has shape {im.shape}; slice 1 of the scan has {images[0].shape}")
        if not images:  # the stacked volume (and the list of slices) must fit before the rest is read
            check_shape((len(nums), *im.shape), im.dtype.itemsize,
                        f"{folder}: scan {scan_id} ({len(nums)} slices of {im.shape} {im.dtype})", copies=2)
        images.append(im)
        seg_path = slices[k].get("seg")
        if seg_path is not None:
            with _h5_open(seg_path) as f:
                s = _dataset(f, "data", seg_path, "an H x W x 1 x C mask")
            if s.ndim == 4 and s.shape[2] == 1:
                s = s[:, :, 0, :]
            elif s.ndim == 3 and s.shape[-1] == 1:
                s = s[..., 0][..., None]
            elif s.ndim == 2:
                s = s[..., None]
            if s.ndim != 3 or s.shape[:2] != im.shape:
                raise ValueError(f"{seg_path}: 'data' has shape {s.shape}; expected H x W x 1 x C with H x W = {im.shape}")
            seg_dtypes.append(str(s.dtype))
            segs.append(integer_labels(s, seg_path, "data"))
        else:
            segs.append(None)
    del h5py
    vol = np.stack(images, axis=0)
    spacing = _spacing_zyx(meta_json, side or folder)
    meta: dict[str, Any] = {"source": str(folder), "format": "medsegpy_slices", "scan_id": scan_id,
                            "slice_numbers": nums, "sidecar": str(side) if side else None}
    case = Case(image=Volume(array=vol, spacing=spacing, meta=meta), source=folder, format="medsegpy_slices",
                name=scan_id, meta=meta)
    present = [s for s in segs if s is not None]
    if present:
        n_ch = present[0].shape[-1]
        for k, s in zip(nums, segs):
            if s is not None and s.shape[-1] != n_ch:
                raise ValueError(f"{slices[k]['seg']}: {s.shape[-1]} channels; slice {nums[0]} has {n_ch}")
        ids, names, colors = _categories(meta_json, n_ch, category_ids, side or folder)
        check_shape(vol.shape + (n_ch,), present[0].dtype.itemsize,
                    f"{folder}: scan {scan_id} masks ({len(nums)} slices x {n_ch} channels)")
        full = np.zeros(vol.shape + (n_ch,), dtype=present[0].dtype)
        for i, s in enumerate(segs):
            if s is not None:
                full[i] = s
        case.labels["gts"] = seg_to_labels(full, ids)
        case.label_names = names
        meta.update(category_ids=ids, n_channels=int(n_ch), seg_dtype=seg_dtypes[0], label_colors=colors,
                    labels_source=str(folder))
    return case


def save_medsegpy_slices(
    labels: np.ndarray,
    folder: str | os.PathLike[str],
    *,
    case: Case | None = None,
    scan_id: str | None = None,
    overwrite_gt: bool = False,
    label_names: dict[int, str] | None = None,
) -> list[Path]:
    """Write labels as one ``.seg`` file per slice (``data`` H x W x 1 x C), each atomically.

    Writing into the folder the scan was read from replaces its ground truth: that needs
    ``overwrite_gt=True`` and keeps a ``.bak`` of every replaced file. A ``<scan>.json``
    sidecar records the categories whenever the reader could not tell them.

    Parameters
    ----------
    labels : np.ndarray
        ``(D, H, W)`` integer labels, one slice per file.
    folder : path-like
        The output folder.
    case : Case, optional
        The scan's case.
    scan_id : str, optional
        Default the case's.
    overwrite_gt : bool
        Allow replacing the scan's own ``.seg`` files.
    label_names : dict of int to str, optional
        Names for the sidecar.

    Returns
    -------
    list of Path
        The files written.

    Raises
    ------
    GroundTruthProtected
        The scan's own folder without ``overwrite_gt``.
    """
    h5py = _h5py()
    out = Path(folder)
    if out.suffix == ".seg":
        out = out.parent
    out.mkdir(parents=True, exist_ok=True)
    arr = as_label_array(labels, f"labels for {out}")
    if arr.ndim == 2:
        arr = arr[None]
    scan_id = scan_id or (case.meta.get("scan_id") if case is not None else None)
    if scan_id is None:
        raise ValueError(f"{out}: saving medsegpy slices needs the scan id (pass case= or scan_id=)")
    nums = list(case.meta.get("slice_numbers", [])) if case is not None else []
    if not nums:
        nums = list(range(1, arr.shape[0] + 1))
    if len(nums) != arr.shape[0]:
        raise ValueError(f"{out}: labels have {arr.shape[0]} slices; scan {scan_id} has {len(nums)}")
    ids: list[CategoryId] = list(case.meta.get("category_ids", [])) if case is not None else []
    n_ch = int(case.meta.get("n_channels", 0)) if case is not None else 0
    dtype = np.dtype(case.meta.get("seg_dtype", "uint8")) if case is not None else np.dtype(np.uint8)
    ids, n_ch = _channels_for(int(arr.max()), ids, n_ch, empty=1)
    own = case is not None and case.source is not None and same_file(out, case.meta.get("labels_source", case.source))
    written = []
    for z, k in enumerate(nums):
        p = out / f"{scan_id}_{k:03d}.seg"
        if p.exists() and own:
            if not overwrite_gt:
                raise GroundTruthProtected(f"{p}: refusing to overwrite the scan's ground-truth .seg files; pass "
                                           "overwrite_gt=True (.bak copies are kept) or choose another folder")
            backup_file(p)
        seg = labels_to_seg(arr[z], n_ch, ids, dtype=dtype)[:, :, None, :]
        with atomic_path(p) as tmp, h5py.File(tmp, "w") as f:
            f.create_dataset("data", data=seg)
        written.append(p)
    src_dir = Path(case.source) if case is not None and case.source is not None else out
    base, side = read_sidecar(src_dir / f"{scan_id}.json", src_dir / "metadata.json")
    _write_category_sidecar((out / f"{scan_id}.json", out / "metadata.json"), base, side, ids, label_names)
    return written


def write_medsegpy_slices(case: Case, folder: str | os.PathLike[str], *, scan_id: str | None = None,
                          labels_key: str | None = None) -> list[Path]:
    """Write a whole 3D case as 2D medsegpy slices ``<scan>_%03d.im`` (+ ``.seg``) and ``metadata.json``.

    Parameters
    ----------
    case : Case
        3D ``(Z, Y, X)``; one slice file per z.
    folder : path-like
        The output folder (created).
    scan_id : str, optional
        Must follow ``%07d_V%02d-Aug%02d`` (default ``0000001_V00-Aug00``).
    labels_key : str, optional
        Which of ``case.labels`` to write (default ``gts``, else ``segs``).

    Returns
    -------
    list of Path
        The files written.

    Raises
    ------
    ValueError
        A malformed ``scan_id``, or a case that is not a 3D grey volume.
    """
    h5py = _h5py()
    out = Path(folder)
    scan = scan_id or "0000001_V00-Aug00"
    if parse_slice_name(f"{scan}_001") is None:
        raise ValueError(f"scan id {scan!r} does not follow %07d_V%02d-Aug%02d")
    if case.image.ndim != 3 or case.image.is_rgb:
        raise ValueError(f"{out}: medsegpy slices need a 3D grey volume; case {case.name!r} has shape "
                         f"{case.image.array.shape}")
    out.mkdir(parents=True, exist_ok=True)
    img = np.asarray(case.image.array)
    key = labels_key or ("gts" if "gts" in case.labels else "segs" if "segs" in case.labels else None)
    lab = as_label_array(case.labels[key], f"labels '{key}'") if key else None
    n = int(lab.max()) if lab is not None else 0
    ids: list[CategoryId] = list(range(n))
    written = []
    for z in range(img.shape[0]):
        p = out / f"{scan}_{z + 1:03d}.im"
        with atomic_path(p) as tmp, h5py.File(tmp, "w") as f:
            f.create_dataset("data", data=img[z][..., None])
        written.append(p)
        if lab is not None:
            q = out / f"{scan}_{z + 1:03d}.seg"
            with atomic_path(q) as tmp, h5py.File(tmp, "w") as f:
                f.create_dataset("data", data=labels_to_seg(lab[z], n, ids)[:, :, None, :])
            written.append(q)
    dz, dy, dx = case.image.spacing
    side = {"spacing": [dy, dx], "slice_thickness": dz, "category_ids": ids,
            "categories": [case.label_names.get(i + 1, f"label {i + 1}") for i in range(n)]}
    with atomic_writer(out / "metadata.json", "w") as fh:
        json.dump(side, fh, indent=1)
    return written
