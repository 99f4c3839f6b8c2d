"""medsegpy HDF5 data: 2D slice folders and 3D volumes.

2D slices (one scan = many files in one folder)
    ``%07d_V%02d-Aug%02d_%03d.im`` holds dataset ``data`` ``H x W x 1``;
    the matching ``.seg`` holds ``data`` ``H x W x 1 x C`` (one binary channel per
    class). The scan id is ``%07d_V%02d-Aug%02d``; slice numbers are 1-based. Slices are
    re-stacked in slice order into ``(D, H, W)``.
3D
    one ``.h5`` with ``volume`` ``H x W x D`` and ``seg`` ``H x W x D x C``; the reader
    transposes to ``(D, H, W)`` = ``(Z, Y, X)`` (``volume.transpose(2, 0, 1)``).

Channels → label image
    ``category_ids`` (from the JSON sidecar or the caller) lists the categories to show;
    each is a channel index or a collated tuple such as ``(0, 2)`` (union of channels 0
    and 2). Category ``i`` of the list becomes label ``i + 1``; where categories overlap
    the one listed first wins. Default: every channel, ``c`` → ``c + 1``.

JSON sidecar (optional): ``<file stem>.json`` or ``<scan id>.json`` beside the data,
else ``metadata.json`` in the folder, with any of ``categories``, ``category_ids``
(lists stand for tuples), ``category_colors`` (RGB 0..255), ``category_abbreviations``,
``spacing`` (``dH, dW[, dD]`` mm, medsegpy order).

This module reads and writes the 3D ``.h5`` files and lists slice folders; re-stacking
and writing the 2D slices is :mod:`~napari_medsegfm.io.medsegpy_slices`.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from ..types import Case, Volume
from ._common import (
    CaseRef,
    GroundTruthProtected,
    as_label_array,
    check_spacing,
    integer_labels,
    read_json_file,
    same_file,
)
from .atomic import atomic_path, atomic_writer, backup_file, is_temp_name
from .limits import check_shape

__all__ = [
    "SLICE_RE",
    "parse_slice_name",
    "is_hdf5_file",
    "list_scans",
    "list_medsegpy_cases",
    "load_medsegpy_h5",
    "read_sidecar",
    "seg_to_labels",
    "labels_to_seg",
    "save_medsegpy_h5_labels",
    "write_medsegpy_h5",
]

logger = logging.getLogger(__name__)

SLICE_RE = re.compile(r"^(\d+)_V(\d+)-Aug(\d+)_(\d+)$")
_HDF5_SIG = b"\x89HDF\r\n\x1a\n"
CategoryId = int | tuple[int, ...]


def _h5py() -> Any:
    import h5py

    return h5py


def parse_slice_name(stem: str) -> tuple[str, int] | None:
    """Scan id and slice number of a medsegpy slice name.

    Parameters
    ----------
    stem : str
        File name without suffix, e.g. ``0123456_V00-Aug00_999``.

    Returns
    -------
    (scan_id, slice_no) or None
        ``("0123456_V00-Aug00", 999)``; ``None`` if it does not match.
    """
    m = SLICE_RE.match(stem)
    if not m:
        return None
    scan = f"{m.group(1)}_V{m.group(2)}-Aug{m.group(3)}"
    return scan, int(m.group(4))


def is_hdf5_file(path: str | os.PathLike[str]) -> bool:
    """True if the file starts with the HDF5 signature (at 0, 512, 1024, ... as HDF5 allows).

    Parameters
    ----------
    path : path-like
        Any file; unreadable files give False.
    """
    try:
        with open(path, "rb") as fh:
            for off in (0, 512, 1024, 2048, 4096):
                fh.seek(off)
                if fh.read(8) == _HDF5_SIG:
                    return True
    except OSError:
        return False
    return False


def list_scans(folder: str | os.PathLike[str]) -> dict[str, dict[int, dict[str, Path]]]:
    """The scans of a folder of 2D medsegpy slices.

    Parameters
    ----------
    folder : path-like
        The folder (not searched recursively).

    Returns
    -------
    dict
        ``{scan_id: {slice_no: {"im": path, "seg": path}}}``.
    """
    scans: dict[str, dict[int, dict[str, Path]]] = {}
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return scans
    for e in entries:
        name = e.name
        ext = name[-3:] if name.endswith((".im",)) else name[-4:] if name.endswith(".seg") else None
        if ext is None or not e.is_file():
            continue
        parsed = parse_slice_name(name[: -len(ext)])
        if parsed is None:
            continue
        scan, k = parsed
        scans.setdefault(scan, {}).setdefault(k, {})[ext.lstrip(".")] = Path(e.path)
    return dict(sorted(scans.items()))


def list_medsegpy_cases(path: str | os.PathLike[str]) -> list[CaseRef]:
    """Scans of a slice folder and ``.h5`` volumes of a folder, as :class:`CaseRef`.

    Parameters
    ----------
    path : path-like
        The folder.

    Returns
    -------
    list of CaseRef
    """
    p = Path(path)
    refs = [CaseRef(name=s, path=p, format="medsegpy_slices", case_id=s) for s in list_scans(p)]
    for h in sorted(p.glob("*.h5")):
        if is_temp_name(h.name):  # a save in progress (or killed): not a case
            continue
        refs.append(CaseRef(name=h.stem, path=h, format="medsegpy_h5"))
    return refs


# ------------------------------------------------------------------------------ metadata
def _norm_cat(c: Any, where: str) -> CategoryId:
    if isinstance(c, (list, tuple)):
        if not c:
            raise ValueError(f"{where}: empty collated category {c!r}")
        return tuple(int(x) for x in c)
    try:
        return int(c)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: category id {c!r}; expected a channel index or a list of them") from None


def read_sidecar(*candidates: str | os.PathLike[str]) -> tuple[dict[str, Any], Path | None]:
    """Load the first existing JSON file of ``candidates``.

    Parameters
    ----------
    *candidates : path-like
        Sidecar paths, most specific first.

    Returns
    -------
    meta : dict
        ``{}`` if none exists.
    path : Path or None
        The file read.

    Raises
    ------
    ValueError
        A sidecar that is not a JSON object (or not valid JSON).
    """
    for c in candidates:
        p = Path(c)
        if p.is_file():
            meta = read_json_file(p, "medsegpy metadata sidecar")
            if not isinstance(meta, dict):
                raise ValueError(f"{p}: medsegpy metadata sidecar holds a {type(meta).__name__}; expected an object")
            return meta, p
    return {}, None


def _categories(
    meta: dict[str, Any], n_channels: int, category_ids: list[Any] | None, src: Path | str
) -> tuple[list[CategoryId], dict[int, str], dict[int, tuple[int, ...]]]:
    ids_raw = category_ids if category_ids is not None else meta.get("category_ids")
    ids = [_norm_cat(c, str(src)) for c in ids_raw] if ids_raw is not None else list(range(n_channels))
    for c in ids:
        for ch in (c if isinstance(c, tuple) else (c,)):
            if not 0 <= ch < n_channels:
                raise ValueError(f"{src}: category id {c} refers to channel {ch}; the seg has {n_channels} channels "
                                 f"(0..{n_channels - 1})")
    names: dict[int, str] = {}
    cats = meta.get("categories")
    if cats is not None:
        if category_ids is None or meta.get("category_ids") is not None:
            meta_ids = [_norm_cat(c, str(src)) for c in meta.get("category_ids", list(range(len(cats))))]
            if len(meta_ids) != len(cats):
                raise ValueError(f"{src}: sidecar has {len(cats)} categories but {len(meta_ids)} category_ids")
            by_id = dict(zip(meta_ids, cats))
            for i, c in enumerate(ids):
                if c in by_id:
                    names[i + 1] = str(by_id[c])
    colors: dict[int, tuple[int, ...]] = {}
    cols = meta.get("category_colors")
    if cols is not None and meta.get("category_ids") is not None:
        meta_ids = [_norm_cat(c, str(src)) for c in meta["category_ids"]]
        by_id = dict(zip(meta_ids, cols))
        for i, c in enumerate(ids):
            if c in by_id:
                colors[i + 1] = tuple(int(v) for v in by_id[c])
    for i, c in enumerate(ids):
        names.setdefault(i + 1, f"channel {c}" if isinstance(c, int) else "channels " + "+".join(map(str, c)))
    return ids, names, colors


def seg_to_labels(seg: np.ndarray, category_ids: list[CategoryId]) -> np.ndarray:
    """Binary channels -> label image; category ``i`` -> label ``i + 1``, the first listed wins on overlap.

    Parameters
    ----------
    seg : np.ndarray
        ``(..., C)`` one channel per class (non-zero: inside).
    category_ids : list of int or tuple of int
        Each a channel index or a tuple of channels (their union).

    Returns
    -------
    np.ndarray
        ``(...)`` labels, ``uint8`` (``uint16`` beyond 255 categories).

    Raises
    ------
    IndexError
        A category names a channel ``seg`` does not have.
    """
    out = np.zeros(seg.shape[:-1], dtype=np.uint8 if len(category_ids) <= 255 else np.uint16)
    overlap = False
    for i in range(len(category_ids) - 1, -1, -1):
        c = category_ids[i]
        chans = c if isinstance(c, tuple) else (c,)
        mask = np.zeros(seg.shape[:-1], dtype=bool)
        for ch in chans:
            mask |= seg[..., ch] > 0
        if not overlap and np.any(out[mask]):
            overlap = True
        out[mask] = i + 1
    if overlap:
        logger.info("medsegpy categories overlap; the first listed category wins in the label image")
    return out


def labels_to_seg(labels: np.ndarray, n_channels: int, category_ids: list[CategoryId], dtype: Any = np.uint8) -> np.ndarray:
    """Label image -> binary channels: channel ``c`` is set where the label's category contains ``c``.

    Parameters
    ----------
    labels : np.ndarray
        ``(...)`` labels; label ``i + 1`` is ``category_ids[i]``.
    n_channels : int
        C.
    category_ids : list of int or tuple of int
        As for :func:`seg_to_labels`.
    dtype : dtype-like
        Of the result.

    Returns
    -------
    np.ndarray
        ``(..., C)`` 0/1.
    """
    out = np.zeros(labels.shape + (n_channels,), dtype=dtype)
    for i, c in enumerate(category_ids):
        m = labels == i + 1
        if not m.any():
            continue
        for ch in c if isinstance(c, tuple) else (c,):
            out[m, ch] = 1  # (any dtype the source file used, float included)
    maxl = int(labels.max()) if labels.size else 0
    if maxl > len(category_ids):
        raise ValueError(f"labels go up to {maxl} but only {len(category_ids)} categories map to seg channels; "
                         "add categories (category_ids) for the new labels")
    return out


def _spacing_zyx(meta: dict[str, Any], src: Path | str) -> tuple[float, float, float]:
    sp = meta.get("spacing")
    if sp is None:
        return (1.0, 1.0, 1.0)
    n = len(sp) if isinstance(sp, (list, tuple)) else 0
    if n == 2:
        dh, dw = check_spacing(sp, 2, src, "spacing")
        dd = float(meta.get("slice_thickness", 1.0))
        return (dd, dh, dw)
    dh, dw, dd = check_spacing(sp, 3, src, "spacing")
    return (dd, dh, dw)


def _h5_open(path: Path) -> Any:
    h5py = _h5py()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such HDF5 file")
    if not os.access(path, os.R_OK):
        raise PermissionError(f"{path}: permission denied (the file exists but may not be read; check its permissions)")
    try:
        return h5py.File(path, "r")
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable HDF5 file ({exc}); it may be truncated") from None


def _dataset(f: Any, key: str, path: Path, expect: str) -> np.ndarray:
    h5py = _h5py()
    obj = f.get(key)
    if obj is None or not isinstance(obj, h5py.Dataset):
        raise ValueError(f"{path}: no dataset '{key}' (has: {', '.join(f.keys()) or 'none'}); expected {expect}")
    if obj.dtype.kind not in "uifb":
        raise ValueError(f"{path}: dataset '{key}' has dtype {obj.dtype}; expected numbers")
    # the shape is what the file declares: refuse what cannot be held before HDF5 allocates it
    check_shape(obj.shape or (), obj.dtype.itemsize, f"{path}: dataset '{key}' (shape {obj.shape}, {obj.dtype})")
    try:
        arr = obj[()]
    except (OSError, ValueError, TypeError) as exc:
        raise ValueError(f"{path}: dataset '{key}' cannot be read ({exc})") from None
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "uifb":
        raise ValueError(f"{path}: dataset '{key}' has dtype {getattr(arr, 'dtype', type(arr).__name__)}; expected numbers")
    return arr


# ---------------------------------------------------------------------------- 3D volumes
def load_medsegpy_h5(path: str | os.PathLike[str], *, category_ids: list[Any] | None = None) -> Case:
    """Read a 3D medsegpy ``.h5`` (``volume`` H x W x D, optional ``seg`` H x W x D x C).

    Parameters
    ----------
    path : path-like
        The ``.h5`` file.
    category_ids : list, optional
        Categories to show (see the module docstring); default the sidecar's, else every channel.

    Returns
    -------
    Case
        ``image.array`` ``(D, H, W)`` = ``(Z, Y, X)`` (``volume.transpose(2, 0, 1)``),
        ``labels["gts"]`` from ``seg``, names/colours/spacing (mm) from the sidecar.

    Raises
    ------
    ValueError
        Missing or malformed datasets, shapes that disagree, or sizes above the limits.
    """
    src = Path(path)
    meta_json, side = read_sidecar(src.with_suffix(".json"), src.parent / "metadata.json")
    with _h5_open(src) as f:
        vol = _dataset(f, "volume", src, "an H x W x D image")
        declared = getattr(f.get("seg"), "shape", None)
        if declared is not None and tuple(declared[:3]) != tuple(vol.shape[:3]):
            raise ValueError(f"{src}: 'seg' has shape {tuple(declared)}; expected H x W x D x C = "
                             f"{tuple(vol.shape[:3])} x C (not read)")
        seg = _dataset(f, "seg", src, "H x W x D x C masks") if "seg" in f else None
        attrs_spacing = f.attrs.get("spacing")
    if vol.ndim == 4 and vol.shape[-1] == 1:
        vol = vol[..., 0]
    if vol.ndim != 3:
        raise ValueError(f"{src}: 'volume' has shape {vol.shape}; expected H x W x D")
    if attrs_spacing is not None and "spacing" not in meta_json:
        meta_json = {**meta_json, "spacing": [float(x) for x in np.ravel(attrs_spacing)]}
    img = vol.transpose(2, 0, 1)
    spacing = _spacing_zyx(meta_json, side or src)
    meta: dict[str, Any] = {"source": str(src), "format": "medsegpy_h5", "sidecar": str(side) if side else None}
    case = Case(image=Volume(array=img, spacing=spacing, meta=meta), source=src, format="medsegpy_h5",
                name=src.stem, meta=meta)
    if seg is not None:
        if seg.ndim == 3:
            seg = seg[..., None]
        if seg.ndim != 4 or seg.shape[:3] != vol.shape:
            raise ValueError(f"{src}: 'seg' has shape {seg.shape}; expected H x W x D x C = {vol.shape} x C")
        seg_dtype = str(seg.dtype)
        seg = integer_labels(seg, src, "seg")  # whole-number float masks accepted, fractional refused
        ids, names, colors = _categories(meta_json, seg.shape[-1], category_ids, side or src)
        case.labels["gts"] = seg_to_labels(seg, ids).transpose(2, 0, 1)
        case.label_names = names
        meta.update(category_ids=ids, n_channels=int(seg.shape[-1]), seg_dtype=seg_dtype,
                    label_colors=colors, labels_source=str(src))
    return case


def write_medsegpy_h5(case: Case, path: str | os.PathLike[str], *, labels_key: str | None = None) -> Path:
    """Write a case as a 3D medsegpy ``.h5`` (``volume`` H x W x D, ``seg`` H x W x D x C one-hot) + JSON sidecar.

    Parameters
    ----------
    case : Case
        3D, ``(Z, Y, X)`` with spacing in mm.
    path : path-like
        The ``.h5`` to write (atomically).
    labels_key : str, optional
        Which of ``case.labels`` to write (default ``gts``, else ``segs``; none: no ``seg``).

    Returns
    -------
    Path
    """
    h5py = _h5py()
    target = Path(path)
    if case.image.ndim != 3 or case.image.is_rgb:
        raise ValueError(f"{target}: medsegpy 3D needs a 3D grey volume; case {case.name!r} has shape {case.image.array.shape}")
    key = labels_key or ("gts" if "gts" in case.labels else "segs" if "segs" in case.labels else None)
    with atomic_path(target) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("volume", data=np.asarray(case.image.array).transpose(1, 2, 0), compression="gzip",
                         compression_opts=1)
        ids: list[CategoryId] = []
        if key is not None:
            lab = as_label_array(case.labels[key], f"labels '{key}'")
            n = int(lab.max())
            ids = list(range(n))
            f.create_dataset("seg", data=labels_to_seg(lab, n, ids).transpose(1, 2, 0, 3), compression="gzip",
                             compression_opts=1)
    dz, dy, dx = case.image.spacing
    side = {"spacing": [dy, dx, dz], "category_ids": ids,
            "categories": [case.label_names.get(i + 1, f"label {i + 1}") for i in range(len(ids))]}
    with atomic_writer(target.with_suffix(".json"), "w") as fh:
        json.dump(side, fh, indent=1)
    return target


def _channels_for(max_label: int, ids: list[CategoryId], n_ch: int, empty: int) -> tuple[list[CategoryId], int]:
    """The category ids and the number of seg channels to write labels up to ``max_label`` with.

    Parameters
    ----------
    max_label : int
        The largest label to write.
    ids : list of CategoryId
        The case's category ids (label ``i + 1`` -> ``ids[i]``: a channel or a tuple of channels);
        empty: one channel per label.
    n_ch : int
        The channels the source file has (0: unknown).
    empty : int
        The channel count when there are no ids at all.

    Returns
    -------
    (list of CategoryId, int)
        ``ids`` extended with new channels for labels it does not cover, and the channel count.
    """
    if not ids:
        ids = list(range(max(n_ch, max_label)))
    if max_label > len(ids):
        ids = ids + list(range(n_ch, n_ch + max_label - len(ids)))
    n_ch = max(n_ch, max((max(c) if isinstance(c, tuple) else c) for c in ids) + 1 if ids else empty)
    return ids, n_ch


def _write_category_sidecar(candidates: tuple[Path, Path], base: dict[str, Any], base_path: Path | None,
                            ids: list[CategoryId], names: dict[int, str] | None) -> Path | None:
    """Keep label ``i + 1`` <-> category ``ids[i]`` readable beside saved segs.

    ``candidates`` are the sidecars the reader looks for at the target, in order (the first
    is the one written); ``base``/``base_path`` the source's sidecar. Nothing is written when
    the reader would find the same categories anyway (the source's own sidecar, or none and
    one channel per label); else the first candidate gets the base sidecar's other keys,
    ``category_ids`` and ``categories`` (names: the base's, else ``names``, else
    ``label N``), atomically. Returns the path written, or ``None``.
    """
    base_ids = [_norm_cat(c, str(base_path)) for c in base["category_ids"]] if base.get("category_ids") else None
    found = next((c for c in candidates if c.is_file()), None)
    if base_path is not None and found is not None and same_file(found, base_path) and ids == base_ids:
        return None
    if base_path is None and found is None and ids == list(range(len(ids))):
        return None
    old_names = list(base.get("categories") or [])
    cats = []
    for i, c in enumerate(ids):
        if base_ids is not None and c in base_ids and base_ids.index(c) < len(old_names):
            cats.append(str(old_names[base_ids.index(c)]))
        else:
            cats.append(str((names or {}).get(i + 1) or f"label {i + 1}"))
    meta = dict(base)
    meta["category_ids"] = [list(c) if isinstance(c, tuple) else int(c) for c in ids]
    meta["categories"] = cats
    colors = meta.get("category_colors")
    if isinstance(colors, list) and len(colors) != len(ids):
        meta["category_colors"] = (colors + [[200, 200, 200]] * len(ids))[:len(ids)]
    with atomic_writer(candidates[0], "w") as fh:
        json.dump(meta, fh, indent=1)
    logger.info("wrote the category sidecar %s (%d categories)", candidates[0], len(ids))
    return candidates[0]


def save_medsegpy_h5_labels(
    labels: np.ndarray, path: str | os.PathLike[str], *, case: Case | None = None, overwrite_gt: bool = False,
    label_names: dict[int, str] | None = None,
) -> Path:
    """Write labels as the ``seg`` dataset (H x W x D x C) of a medsegpy ``.h5``, atomically.

    The target is a copy of the source file (``case.source``, or ``path`` itself) with
    ``seg`` replaced; every other dataset/attribute is copied unchanged. Labels beyond the
    case's categories get new channels, and a ``<target>.json`` sidecar records the
    categories (names from ``label_names``) whenever the reader could not tell them.

    Parameters
    ----------
    labels : np.ndarray
        ``(D, H, W)`` = ``(Z, Y, X)`` integer labels.
    path : path-like
        The ``.h5`` to write.
    case : Case, optional
        The case read from the source file.
    overwrite_gt : bool
        Replacing the ``seg`` of the case's own file needs it (a ``.bak`` is kept).
    label_names : dict of int to str, optional
        Names for the sidecar.

    Returns
    -------
    Path

    Raises
    ------
    GroundTruthProtected
        The case's own file without ``overwrite_gt``.
    ValueError
        Labels that do not fit the volume.
    """
    h5py = _h5py()
    target = Path(path)
    arr = as_label_array(labels, f"labels for {target}")
    source = Path(case.source) if case is not None and case.source is not None else (target if target.exists() else None)
    if source is None:
        raise ValueError(f"{target}: saving a medsegpy seg needs the source .h5 (its volume); pass case=")
    ids: list[CategoryId] = list(case.meta.get("category_ids", [])) if case is not None else []
    n_ch = int(case.meta.get("n_channels", 0)) if case is not None else 0
    seg_dtype = np.dtype(case.meta.get("seg_dtype", "uint8")) if case is not None else np.dtype(np.uint8)
    with _h5_open(source) as f:
        vshape = f["volume"].shape if "volume" in f else None
        if "seg" in f and not n_ch:
            n_ch = int(f["seg"].shape[-1]) if f["seg"].ndim == 4 else 1
            seg_dtype = f["seg"].dtype
    if vshape is None:
        raise ValueError(f"{source}: no 'volume' dataset; expected a medsegpy 3D file")
    if tuple(arr.shape) != (vshape[2], vshape[0], vshape[1]):
        raise ValueError(f"{target}: labels have shape {arr.shape}; the volume H x W x D {tuple(vshape)} needs "
                         f"(D, H, W) = {(vshape[2], vshape[0], vshape[1])}")
    ids, n_ch = _channels_for(int(arr.max()), ids, n_ch, empty=0)
    if target.exists() and same_file(target, source):
        if not overwrite_gt:
            raise GroundTruthProtected(f"{target}: refusing to overwrite the ground-truth 'seg' of the source file; "
                                       "pass overwrite_gt=True (a .bak copy is kept) or choose another .h5")
        backup_file(target)
    seg = labels_to_seg(arr, n_ch, ids, dtype=seg_dtype).transpose(1, 2, 0, 3)
    with atomic_path(target) as tmp:
        with h5py.File(source, "r") as src_f, h5py.File(tmp, "w") as dst:
            for k, v in src_f.attrs.items():
                dst.attrs[k] = v
            old = src_f.get("seg")
            for name in src_f:
                if name != "seg":
                    src_f.copy(src_f[name], dst, name=name)
            kw: dict[str, Any] = {}
            if old is not None:
                kw = {"compression": old.compression, "compression_opts": old.compression_opts,
                      "chunks": old.chunks if old.chunks and old.shape == seg.shape else True if old.chunks else None}
                if old.compression is None:
                    kw.pop("compression_opts")
            ds = dst.create_dataset("seg", data=seg, **kw)
            if old is not None:
                for k, v in old.attrs.items():
                    ds.attrs[k] = v
    base, side = read_sidecar(source.with_suffix(".json"), source.parent / "metadata.json")
    _write_category_sidecar((target.with_suffix(".json"), target.parent / "metadata.json"), base, side, ids,
                            label_names)
    return target
