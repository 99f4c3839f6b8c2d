"""SA-Med2D-20M: PNG slices with one binary PNG per object instance.

Layout (dataset root)::

    images/{modality_sub}--{dataset}--{case}--{axis_slice}.png     axis_slice: x_0125 | 2d_none
    masks/<image stem>--{class:04d}_{instance:03d}.png              0/255 (or 0/1) binary
    SAMed2D_v1_class_mapping_id.json                                {"liver": "0003", ...}
    SAMed2D_v1.json                                                 {"./images/a.png": ["./masks/...png"]}

A *case* is ``{modality_sub}--{dataset}--{case}``; its slices can be re-stacked along
the slicing axis into a volume ``(N, H, W)`` (slice order; ``meta["slice_indices"]``
keeps the original indices; ``fill_gaps=True`` puts them at their true positions with
empty slices between).

Objects → labels: every distinct ``(class, instance)`` of a case gets one label id
(1, 2, ... in sorted order), named from the class mapping (``liver``, or
``liver 1`` when a class has several instances). ``meta["label_map"]`` keeps
``label -> (class_id, instance)`` so masks are written back under the same names.
Where masks overlap, the lower label id wins.

Writing masks back and writing whole cases is :mod:`~napari_medsegfm.io.samed2d_write`.
"""

from __future__ import annotations

import logging
import os
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from ..types import Case, Volume
from ._common import (
    CaseRef,
    modality_from_name,
    pick_case,
    read_json_file,
)
from .limits import ArrayTooLargeError, check_shape

__all__ = [
    "CLASS_MAPPING_NAME",
    "INDEX_NAME",
    "parse_image_stem",
    "parse_mask_stem",
    "find_root",
    "is_samed2d_png",
    "is_samed2d_root",
    "read_class_mapping",
    "list_samed2d_cases",
    "load_samed2d_image",
    "load_samed2d_case",
]

logger = logging.getLogger(__name__)

CLASS_MAPPING_NAME = "SAMed2D_v1_class_mapping_id.json"
INDEX_NAME = "SAMed2D_v1.json"
_SLICE_RE = re.compile(r"^(?:([xyz])_(\d+)|2d_none)$")
_MASK_RE = re.compile(r"^(\d+)_(\d+)$")


def parse_image_stem(stem: str) -> dict[str, Any] | None:
    """The parts of an SA-Med2D image name ``modality--dataset--<ori>--<slice>``.

    Parameters
    ----------
    stem : str
        File name without ``.png``.

    Returns
    -------
    dict or None
        ``{"modality", "dataset", "ori", "axis", "index", "case"}``; ``None`` if not an SA-Med2D name.
    """
    parts = stem.split("--")
    if len(parts) < 4:
        return None
    m = _SLICE_RE.match(parts[-1])
    if not m or not all(parts):
        return None
    modality, dataset, ori = parts[0], parts[1], "--".join(parts[2:-1])
    return {
        "modality": modality,
        "dataset": dataset,
        "ori": ori,
        "axis": m.group(1),  # None for 2d_none
        "index": int(m.group(2)) if m.group(2) is not None else None,
        "case": f"{modality}--{dataset}--{ori}",
    }


def parse_mask_stem(stem: str) -> tuple[str, int, int] | None:
    """The image stem, class id and instance of an SA-Med2D mask name ``<image stem>--CCCC_III``.

    Parameters
    ----------
    stem : str
        File name without ``.png``.

    Returns
    -------
    (image_stem, class_id, instance) or None
    """
    head, sep, tail = stem.rpartition("--")
    if not sep:
        return None
    m = _MASK_RE.match(tail)
    if not m or parse_image_stem(head) is None:
        return None
    return head, int(m.group(1)), int(m.group(2))


def is_samed2d_png(path: str | os.PathLike[str]) -> bool:
    """True for a ``.png`` whose name is an SA-Med2D image or mask name (no file access).

    Parameters
    ----------
    path : path-like
        The file.
    """
    p = Path(path)
    if p.suffix.lower() != ".png":
        return False
    return parse_image_stem(p.stem) is not None or parse_mask_stem(p.stem) is not None


def is_samed2d_root(path: str | os.PathLike[str]) -> bool:
    """True for a folder with ``images/`` holding at least one ``--``-named PNG.

    Parameters
    ----------
    path : path-like
        The folder.
    """
    p = Path(path)
    img = p / "images"
    if not img.is_dir():
        return False
    try:
        for e in os.scandir(img):
            if e.name.lower().endswith(".png") and parse_image_stem(e.name[:-4]) is not None:
                return True
    except OSError:
        return False
    return False


def find_root(path: str | os.PathLike[str]) -> Path:
    """The dataset root of an image/mask PNG (the folder above ``images``/``masks``).

    Parameters
    ----------
    path : path-like
        A PNG of the dataset, or the root itself.

    Returns
    -------
    Path
    """
    p = Path(path)
    if p.is_dir():
        return p
    if p.parent.name in ("images", "masks"):
        return p.parent.parent
    return p.parent


def read_class_mapping(root: str | os.PathLike[str]) -> dict[int, str]:
    """Class id -> name from ``SAMed2D_v1_class_mapping_id.json``.

    Parameters
    ----------
    root : path-like
        The dataset root.

    Returns
    -------
    dict of int to str
        ``{}`` when the file is absent.

    Raises
    ------
    ValueError
        An unreadable or malformed mapping file.
    """
    p = Path(root) / CLASS_MAPPING_NAME
    if not p.is_file():
        return {}
    raw = read_json_file(p, "SA-Med2D class mapping (expected {class name: 'NNNN'})")
    if not isinstance(raw, dict):
        raise ValueError(f"{p}: holds a {type(raw).__name__}; expected {{class name: 'NNNN'}}")
    out: dict[int, str] = {}
    for name, cid in raw.items():
        try:
            i = int(cid)
        except (TypeError, ValueError):
            raise ValueError(f"{p}: class {name!r} has id {cid!r}; expected a number string like '0003'") from None
        out[i] = name if i not in out else f"{out[i]}/{name}"
    return out


def _index_masks(root: Path) -> dict[str, list[tuple[int, int, Path]]]:
    """``{image_stem: [(class, instance, path), ...]}`` by scanning ``masks/`` once."""
    out: dict[str, list[tuple[int, int, Path]]] = defaultdict(list)
    mdir = root / "masks"
    if not mdir.is_dir():
        return out
    for e in os.scandir(mdir):
        if not e.name.lower().endswith(".png"):
            continue
        parsed = parse_mask_stem(e.name[:-4])
        if parsed is not None:
            out[parsed[0]].append((parsed[1], parsed[2], Path(e.path)))
    for v in out.values():
        v.sort()
    return out


def _masks_of(root: Path, stem: str) -> list[tuple[int, int, Path]]:
    mdir = root / "masks"
    out = []
    for p in mdir.glob(f"{glob_escape(stem)}--*.png"):
        parsed = parse_mask_stem(p.stem)
        if parsed is not None and parsed[0] == stem:
            out.append((parsed[1], parsed[2], p))
    return sorted(out)


def glob_escape(s: str) -> str:
    import glob

    return glob.escape(s)


def _cases(root: Path) -> dict[str, list[tuple[int | None, str | None, Path]]]:
    """``{case: [(index, axis, image_path), ...]}`` sorted by slice index."""
    out: dict[str, list[tuple[int | None, str | None, Path]]] = defaultdict(list)
    idir = root / "images"
    if not idir.is_dir():
        return out
    for e in os.scandir(idir):
        if not e.name.lower().endswith(".png"):
            continue
        info = parse_image_stem(e.name[:-4])
        if info is not None:
            out[info["case"]].append((info["index"], info["axis"], Path(e.path)))
    for v in out.values():
        v.sort(key=lambda t: (t[1] or "", -1 if t[0] is None else t[0]))
    return dict(sorted(out.items()))


def list_samed2d_cases(root: str | os.PathLike[str]) -> list[CaseRef]:
    """Cases of a dataset root (one per ``modality--dataset--case``), sorted by name.

    Parameters
    ----------
    root : path-like
        The dataset root.

    Returns
    -------
    list of CaseRef
    """
    r = Path(root)
    return [CaseRef(name=c, path=r, format="samed2d", case_id=c) for c in _cases(r)]


def _png_declared_size(path: Path) -> tuple[int | str, int | str]:
    """(width, height) from a PNG's IHDR, without decoding; ``("?", "?")`` when unreadable."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(24)
    except OSError:
        return "?", "?"
    if len(head) == 24 and head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
        return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    return "?", "?"


def _read_png(path: Path, *, grey: bool) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            # the declared size, before anything is decoded (PIL itself refuses > 2 x MAX_IMAGE_PIXELS)
            w, h = im.size
            bands = max(len(im.getbands()), 1 if grey else 3)
            per = 4 if im.mode in ("I", "F") else 2 if im.mode.startswith("I;16") else 1
            check_shape((h, w), bands * per * 2, f"{path}: PNG of {w} x {h} pixels ({im.mode})")
            im.load()
            if im.mode in ("I;16", "I;16B", "I", "F"):
                arr = np.asarray(im)
            elif grey:
                arr = np.asarray(im.convert("L") if im.mode not in ("L", "1") else im)
            else:
                arr = np.asarray(im.convert("RGB") if im.mode not in ("L", "RGB") else im)
    except PermissionError:
        raise PermissionError(f"{path}: permission denied (the file exists but may not be read)") from None
    except Image.DecompressionBombError:
        w, h = _png_declared_size(path)
        raise ArrayTooLargeError(f"{path}: PNG of {w} x {h} pixels is too large to decode safely (more than "
                                 f"{2 * Image.MAX_IMAGE_PIXELS:,} pixels); not read") from None
    except ArrayTooLargeError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable PNG ({exc})") from None
    return np.array(arr)


def _read_image(path: Path) -> tuple[np.ndarray, bool]:
    """(array, is_rgb): a grey image replicated to 3 channels comes back as (H, W)."""
    arr = _read_png(path, grey=False)
    if arr.ndim == 3:
        if np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2]):
            return np.ascontiguousarray(arr[..., 0]), False
        return arr, True
    return arr, False


def _label_map(masks: list[tuple[int, int, Path]]) -> dict[tuple[int, int], int]:
    pairs = sorted({(c, i) for c, i, _ in masks})
    return {pair: k + 1 for k, pair in enumerate(pairs)}


def _names(label_map: dict[tuple[int, int], int], classes: dict[int, str]) -> dict[int, str]:
    per_class: dict[int, int] = defaultdict(int)
    for c, _i in label_map:
        per_class[c] += 1
    out = {}
    for (c, i), lab in label_map.items():
        base = classes.get(c, f"class {c:04d}")
        out[lab] = f"{base} {i}" if per_class[c] > 1 else base
    return out


def _paint(labels: np.ndarray, masks: list[tuple[int, int, Path]], label_map: dict[tuple[int, int], int]) -> None:
    # paint highest label first so the lowest label wins on overlaps
    for c, i, p in sorted(masks, key=lambda t: -label_map[(t[0], t[1])]):
        m = _read_png(p, grey=True)
        if m.ndim != 2 or m.shape != labels.shape:
            raise ValueError(f"{p}: mask has shape {m.shape}; expected the image's {labels.shape}")
        labels[m > 0] = label_map[(c, i)]


def load_samed2d_image(path: str | os.PathLike[str]) -> Case:
    """One SA-Med2D slice (image PNG, or one of its mask PNGs) with all its masks, as a 2D case.

    Parameters
    ----------
    path : path-like
        The image PNG or one of its masks.

    Returns
    -------
    Case
        ``image`` ``(H, W)`` grey or ``(H, W, 3)`` RGB; ``labels["gts"]`` ``(H, W)``, one
        label per (class, instance) mask; ``meta["label_map"]`` label -> (class, instance).

    Raises
    ------
    FileNotFoundError, ValueError
        A missing image, or masks of another size.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such PNG")
    parsed_mask = parse_mask_stem(p.stem)
    root = find_root(p)
    if parse_image_stem(p.stem) is None and parsed_mask is not None:
        stem = parsed_mask[0]
        img_path = root / "images" / f"{stem}.png"
        if not img_path.is_file():
            raise FileNotFoundError(f"{p}: mask of image {img_path}, which does not exist")
    else:
        stem, img_path = p.stem, p
    info = parse_image_stem(stem)
    if info is None:
        raise ValueError(f"{p}: name does not follow modality--dataset--case--axis_slice.png")
    arr, rgb = _read_image(img_path)
    masks = _masks_of(root, stem)
    classes = read_class_mapping(root)
    lmap = _label_map(masks)
    labels = np.zeros(arr.shape[:2], dtype=np.uint8 if len(lmap) <= 255 else np.uint16)
    _paint(labels, masks, lmap)
    meta = {"source": str(img_path), "format": "samed2d", "root": str(root), "case_id": info["case"],
            "image_stems": [stem], "slice_indices": [info["index"]], "axis": info["axis"],
            "label_map": {lab: pair for pair, lab in lmap.items()}, "labels_source": str(root / "masks"),
            "modality": modality_from_name(info["modality"]) or info["modality"].split("_")[0].upper(), "rgb": rgb}
    vol = Volume.rgb(arr, meta=meta) if rgb else Volume(array=arr, meta=meta)
    case = Case(image=vol, source=img_path, format="samed2d", name=stem, meta=meta,
                label_names=_names(lmap, classes))
    case.labels["gts"] = labels
    return case


def load_samed2d_case(root: str | os.PathLike[str], case_id: str | None = None, *, fill_gaps: bool = False) -> Case:
    """Re-stack the slices of one case of a dataset root into ``(N, H, W)`` with its labels.

    A 2D source (``2d_none``) gives a 2D case.

    Parameters
    ----------
    root : path-like
        The dataset root.
    case_id : str, optional
        ``modality--dataset--case``; ``None`` takes the first case (sorted; a warning names
        how many there are).
    fill_gaps : bool
        Place slices at their true index (empty slices in between) instead of packing them.

    Returns
    -------
    Case
        ``image`` ``(N, H, W)`` (axis 0 = slice order), spacing 1 mm (PNG slices carry none);
        ``labels["gts"]`` ``(N, H, W)``; ``meta["image_stems"]`` the slice images in order.

    Raises
    ------
    ValueError
        No such case, slices of different sizes, or a volume above the size limits.
    """
    r = Path(root)
    cases = _cases(r)
    case_id = pick_case(cases, case_id, r, "case", "no SA-Med2D images (images/modality--dataset--case--axis_slice.png)",
                        logger, list_limit=10)
    slices = cases[case_id]
    if len(slices) == 1:  # a 2D source (2d_none) or a single slice: a 2D case
        return load_samed2d_image(slices[0][2])
    axes = {a for _, a, _ in slices}
    if len(axes) != 1 or None in axes:
        raise ValueError(f"{r}: case {case_id} mixes slicing axes {sorted(map(str, axes))}; cannot stack")
    axis = axes.pop()
    by_stem = _index_masks(r)
    all_masks = [m for _, _, p in slices for m in by_stem.get(p.stem, [])]
    lmap = _label_map(all_masks)
    classes = read_class_mapping(r)
    indices = [k for k, _, _ in slices]
    if len(set(indices)) != len(indices):
        raise ValueError(f"{r}: case {case_id} has duplicate slice indices")
    pos = [k - indices[0] for k in indices] if fill_gaps else list(range(len(indices)))
    first, rgb = _read_image(slices[0][2])
    if rgb:
        logger.warning("%s: colour slices stacked as grey (channel 0)", case_id)
        first = first[..., 0]
    n = pos[-1] + 1
    check_shape((n,) + first.shape, first.dtype.itemsize + 2,  # the volume and its uint16 labels
                f"{r}: case {case_id} stacked to {n} slices of {first.shape} {first.dtype}"
                + (" (fill_gaps: slice indices " f"{indices[0]}..{indices[-1]})" if fill_gaps else ""))
    vol = np.zeros((n,) + first.shape, dtype=first.dtype)
    labels = np.zeros((n,) + first.shape, dtype=np.uint8 if len(lmap) <= 255 else np.uint16)
    for (_k, _a, p), z in zip(slices, pos):
        arr, is_rgb = _read_image(p) if z else (first, False)
        if is_rgb:
            arr = arr[..., 0]
        if arr.shape != first.shape:
            raise ValueError(f"{p}: slice has shape {arr.shape}; slice {indices[0]} of case {case_id} has {first.shape}")
        vol[z] = arr
        _paint(labels[z], by_stem.get(p.stem, []), lmap)
    meta = {"source": str(r), "format": "samed2d", "root": str(r), "case_id": case_id, "axis": axis,
            "image_stems": [p.stem for _, _, p in slices], "slice_indices": indices, "slice_positions": pos,
            "label_map": {lab: pair for pair, lab in lmap.items()}, "labels_source": str(r / "masks"),
            "modality": case_id.split("--")[0].split("_")[0].upper()}
    case = Case(image=Volume(array=vol, meta=meta), source=r, format="samed2d", name=case_id, meta=meta,
                label_names=_names(lmap, classes))
    case.labels["gts"] = labels
    return case


