"""CVPR 2025 SegFM and CVPR 2024 MedSAM-on-Laptop npz cases.

Members (all optional except one of ``imgs``/``gts``/``segs``):

``imgs``
    ``(D, H, W)`` = ``(z, y, x)`` 3D, ``(H, W, 3)`` 2D RGB (CVPR24) or ``(H, W)``; uint8 0..255.
``gts``, ``segs``, ``prev_pred``
    label images in the image's spatial shape (``segs`` is a prediction/correction).
``spacing``
    3 floats in **(x, y, z)** order — *reversed* relative to the array axes. The reader
    returns ``Volume.spacing`` in array order ``(dz, dy, dx)``; the writer never
    touches the stored member.
``boxes``
    CVPR25: pickled 1-D object array of dicts ``z_min, z_max, z_mid, z_mid_x_min,
    z_mid_y_min, z_mid_x_max, z_mid_y_max`` (inclusive), ``boxes[i]`` prompts label
    ``i + 1``. CVPR24: int array ``(N, 4)`` ``[x_min, y_min, x_max, y_max]`` (2D) or
    ``(N, 6)`` ``[x_min, y_min, z_min, x_max, y_max, z_max]`` (3D).
``text_prompts``
    pickled 0-d object array of a dict ``{"1": text, ..., "instance_label": 0|1}``.
``clicks``, ``clicks_order``
    pickled; per class ``{"fg": [[z, y, x], ...], "bg": [...]}`` and the order of clicks.

Pickled members are read with the restricted unpickler
(:mod:`~napari_medsegfm.io.safe_pickle`). A case file ``.../imgs/NAME.npz`` with a
sibling ``.../gts/NAME.npz`` (the challenge's validation layout) gets its ``gts`` from
there.
"""

from __future__ import annotations

import logging
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ..types import Box2D, Box3D, Case, Volume
from ._common import (
    GroundTruthProtected,
    as_label_array,
    check_image,
    check_labels,
    check_spacing,
    modality_from_name,
    same_file,
)
from .atomic import backup_file
from .npzfile import NpzReader, read_npy_header, rewrite_npz

__all__ = [
    "sniff_npz",
    "load_cvpr_npz",
    "save_npz_labels",
    "write_cvpr_npz",
    "parse_boxes",
    "boxes_to_cvpr25",
    "LABEL_KEYS",
    "KNOWN_KEYS",
]

logger = logging.getLogger(__name__)

LABEL_KEYS = ("gts", "segs", "prev_pred")
PICKLED_KEYS = ("boxes", "text_prompts", "clicks", "clicks_order")
KNOWN_KEYS = frozenset(
    {"imgs", "gts", "segs", "spacing", "boxes", "text_prompts", "clicks", "clicks_order", "prev_pred",
     "all_segs", "direction", "origin"}
)
_BOX25_KEYS = ("z_min", "z_max", "z_mid", "z_mid_x_min", "z_mid_y_min", "z_mid_x_max", "z_mid_y_max")
_RESERVED_SAVE_KEYS = {"imgs", "spacing", "boxes", "text_prompts", "clicks", "clicks_order", "direction", "origin"}


# ------------------------------------------------------------------------------ sniffing
def sniff_npz(path: str | os.PathLike[str]) -> str | None:
    """``"cvpr25_npz"``, ``"cvpr24_npz"`` or ``None``; never raises.

    An ``.npz`` that is not a readable zip is still claimed (``"cvpr25_npz"``) so that
    opening it reports what is wrong instead of "no reader".
    """
    p = Path(path)
    if not p.name.lower().endswith(".npz") or not p.is_file():
        return None
    try:
        with zipfile.ZipFile(p) as zf:
            names = [n[:-4] if n.endswith(".npy") else n for n in zf.namelist()]
            keys = set(names)
            if not keys & KNOWN_KEYS:
                return None
            if keys & {"text_prompts", "clicks", "clicks_order", "prev_pred"}:
                return "cvpr25_npz"
            if "boxes" in keys:
                with zf.open(zf.getinfo("boxes.npy" if "boxes.npy" in zf.namelist() else "boxes")) as fp:
                    dtype = read_npy_header(fp).dtype  # header length bounded (a header bomb is not read)
                return "cvpr25_npz" if dtype.hasobject else "cvpr24_npz"
            if "imgs" in keys:
                with zf.open(zf.getinfo("imgs.npy" if "imgs.npy" in zf.namelist() else "imgs")) as fp:
                    shape = read_npy_header(fp).shape
                if len(shape) == 3 and shape[-1] == 3 and "spacing" not in keys:
                    return "cvpr24_npz"
            return "cvpr25_npz"
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, KeyError):
        return "cvpr25_npz"


# ------------------------------------------------------------------------------- boxes
def _int(v: Any, where: str) -> int:
    try:
        iv = int(v)
    except (TypeError, ValueError):
        raise ValueError(f"{where} = {v!r} is not an integer voxel index") from None
    if isinstance(v, (float, np.floating)) and not float(v).is_integer():
        raise ValueError(f"{where} = {v!r} is not an integer voxel index")
    return iv


def parse_boxes(
    boxes: Any, spatial_shape: tuple[int, ...], src: str | os.PathLike[str] = "boxes"
) -> list[Box3D | Box2D]:
    """Boxes of a CVPR25 (list of dicts) or CVPR24 (``N x 4`` / ``N x 6``) file as prompts.

    ``boxes[i]`` prompts label ``i + 1``. Coordinates are checked against
    ``spatial_shape`` (``(D, H, W)`` or ``(H, W)``); an entry outside raises
    ``ValueError`` naming the file, the entry, the field and the valid range.
    """
    out: list[Box3D | Box2D] = []
    arr = np.asarray(boxes, dtype=object) if not isinstance(boxes, np.ndarray) else boxes
    nd = len(spatial_shape)

    def inside(i: int, field: str, v: int, axis: int) -> None:
        if not 0 <= v < spatial_shape[axis]:
            raise ValueError(
                f"{src}: 'boxes'[{i}].{field} = {v} is outside the image "
                f"(axis {axis} has size {spatial_shape[axis]}, valid 0..{spatial_shape[axis] - 1})"
            )

    if arr.dtype.hasobject:
        for i, b in enumerate(arr.reshape(-1)):
            if not isinstance(b, dict):
                raise ValueError(f"{src}: 'boxes'[{i}] is a {type(b).__name__}; expected a dict with keys {_BOX25_KEYS}")
            missing = [k for k in _BOX25_KEYS if k not in b and not (k == "z_mid" and nd == 3)]
            if missing:
                raise ValueError(f"{src}: 'boxes'[{i}] lacks {missing}; expected keys {_BOX25_KEYS}")
            if nd != 3:
                raise ValueError(f"{src}: 'boxes' are 3D (z_min/z_max) but the image is 2D {spatial_shape}")
            v = {k: _int(b[k], f"{src}: 'boxes'[{i}].{k}") for k in _BOX25_KEYS if k in b}
            for k, ax in (("z_min", 0), ("z_max", 0), ("z_mid", 0), ("z_mid_y_min", 1), ("z_mid_y_max", 1),
                          ("z_mid_x_min", 2), ("z_mid_x_max", 2)):
                if k in v:
                    inside(i, k, v[k], ax)
            try:
                out.append(Box3D(z_min=v["z_min"], z_max=v["z_max"], y_min=v["z_mid_y_min"], x_min=v["z_mid_x_min"],
                                 y_max=v["z_mid_y_max"], x_max=v["z_mid_x_max"], object_id=i + 1,
                                 z_mid=v.get("z_mid")))
            except ValueError as exc:
                raise ValueError(f"{src}: 'boxes'[{i}]: {exc}") from None
        return out
    if arr.dtype.kind not in "iuf":
        raise ValueError(f"{src}: 'boxes' has dtype {arr.dtype}; expected an int array (N, 4) or (N, 6) or dicts")
    if arr.size == 0:
        return out
    a = arr.reshape(1, -1) if arr.ndim == 1 else arr
    if a.ndim != 2 or a.shape[1] not in (4, 6):
        raise ValueError(f"{src}: 'boxes' has shape {arr.shape}; expected (N, 4) [x_min, y_min, x_max, y_max] "
                         f"or (N, 6) [x_min, y_min, z_min, x_max, y_max, z_max]")
    if a.shape[1] == 6 and nd != 3:
        raise ValueError(f"{src}: 'boxes' is (N, 6) (3D) but the image is 2D {spatial_shape}")
    if a.shape[1] == 4 and nd != 2:
        raise ValueError(f"{src}: 'boxes' is (N, 4) (2D) but the image is 3D {spatial_shape}")
    for i, row in enumerate(a):
        vals = [_int(x, f"{src}: 'boxes'[{i}]") for x in row]
        try:
            if a.shape[1] == 4:
                x0, y0, x1, y1 = vals
                for f, v, ax in (("x_min", x0, 1), ("x_max", x1, 1), ("y_min", y0, 0), ("y_max", y1, 0)):
                    inside(i, f, v, ax)
                out.append(Box2D(y_min=y0, x_min=x0, y_max=y1, x_max=x1, object_id=i + 1))
            else:
                x0, y0, z0, x1, y1, z1 = vals
                for f, v, ax in (("x_min", x0, 2), ("x_max", x1, 2), ("y_min", y0, 1), ("y_max", y1, 1),
                                 ("z_min", z0, 0), ("z_max", z1, 0)):
                    inside(i, f, v, ax)
                out.append(Box3D(z_min=z0, z_max=z1, y_min=y0, x_min=x0, y_max=y1, x_max=x1, object_id=i + 1))
        except ValueError as exc:
            if str(exc).startswith(str(src)):
                raise
            raise ValueError(f"{src}: 'boxes'[{i}]: {exc}") from None
    return out


def boxes_to_cvpr25(boxes: list[Box3D]) -> np.ndarray:
    """Box3D prompts as the CVPR25 object array of dicts (``boxes[i]`` for label ``i + 1``)."""
    out = np.empty(len(boxes), dtype=object)
    for i, b in enumerate(sorted(boxes, key=lambda b: b.object_id)):
        out[i] = {"z_min": np.int64(b.z_min), "z_max": np.int64(b.z_max), "z_mid": np.int64(b.mid_slice),
                  "z_mid_x_min": np.int64(b.x_min), "z_mid_y_min": np.int64(b.y_min),
                  "z_mid_x_max": np.int64(b.x_max), "z_mid_y_max": np.int64(b.y_max)}
    return out


# ------------------------------------------------------------------------------ reading
def _text_prompts(obj: Any, src: Path) -> tuple[dict[int, str], int | None]:
    tp = obj.item() if isinstance(obj, np.ndarray) and obj.dtype.hasobject and obj.ndim == 0 else obj
    if not isinstance(tp, dict):
        raise ValueError(f"{src}: 'text_prompts' is a {type(tp).__name__}; expected a dict "
                         "{'1': text, ..., 'instance_label': 0|1}")
    texts: dict[int, str] = {}
    inst: int | None = None
    for k, v in tp.items():
        if k == "instance_label":
            try:
                inst = int(v)
            except (TypeError, ValueError):
                raise ValueError(f"{src}: 'text_prompts'['instance_label'] = {v!r}; expected 0 or 1") from None
            continue
        try:
            lab = int(k)
        except (TypeError, ValueError):
            logger.warning("%s: ignoring text_prompts key %r (expected a label id)", src, k)
            continue
        if not isinstance(v, str):
            raise ValueError(f"{src}: 'text_prompts'[{k!r}] is a {type(v).__name__}; expected a string")
        texts[lab] = v
    return texts, inst


def _clicks(obj: Any, spatial_shape: tuple[int, ...], src: Path) -> list[dict[str, list[list[int]]]]:
    seq = obj.tolist() if isinstance(obj, np.ndarray) else obj
    if isinstance(seq, dict):
        seq = [seq]
    if not isinstance(seq, (list, tuple)):
        raise ValueError(f"{src}: 'clicks' is a {type(seq).__name__}; expected a list of {{'fg': [...], 'bg': [...]}}")
    out = []
    for i, c in enumerate(seq):
        if not isinstance(c, dict):
            raise ValueError(f"{src}: 'clicks'[{i}] is a {type(c).__name__}; expected {{'fg': [...], 'bg': [...]}}")
        entry: dict[str, list[list[int]]] = {}
        for kind in ("fg", "bg"):
            pts = []
            for j, p in enumerate(c.get(kind, []) or []):
                q = [_int(x, f"{src}: 'clicks'[{i}]['{kind}'][{j}]") for x in np.asarray(p).reshape(-1)]
                if len(q) != len(spatial_shape) or any(not 0 <= x < s for x, s in zip(q, spatial_shape)):
                    raise ValueError(f"{src}: 'clicks'[{i}]['{kind}'][{j}] = {q} is outside the image {spatial_shape}")
                pts.append(q)
            entry[kind] = pts
        out.append(entry)
    return out


def _plain(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return [_plain(x) for x in obj.tolist()] if obj.dtype.hasobject else obj.tolist()
    if isinstance(obj, (list, tuple)):
        return [_plain(x) for x in obj]
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _itk_affine_zyx(spacing_xyz: tuple[float, ...], direction: np.ndarray | None, origin: np.ndarray | None) -> np.ndarray:
    """RAS affine for array-order (z, y, x) indices from ITK-style (LPS) geometry."""
    d = np.eye(3) if direction is None else np.asarray(direction, float).reshape(3, 3)
    o = np.zeros(3) if origin is None else np.asarray(origin, float).reshape(3)
    m = np.eye(4)
    m[:3, :3] = d @ np.diag(spacing_xyz)
    m[:3, 3] = o
    lps2ras = np.diag([-1.0, -1.0, 1.0, 1.0])
    m = lps2ras @ m  # columns: x, y, z index
    return m[:, [2, 1, 0, 3]]


def _check_label_header(r: NpzReader, key: str, image_shape: tuple[int, ...], src: Path) -> None:
    """Refuse a label member whose header shape fits neither ``image_shape`` nor its RGB
    spatial part, before the member is decompressed."""
    shape = tuple(r.header(key).shape)
    ok = {tuple(image_shape)}
    if len(image_shape) == 3 and image_shape[-1] == 3:
        ok.add(tuple(image_shape[:2]))
    if shape not in ok:
        raise ValueError(f"{src}: '{key}' has shape {shape}; expected the image's spatial shape "
                         f"{' or '.join(str(s) for s in sorted(ok, key=len))} (not read)")


def _sibling_gts(path: Path) -> Path | None:
    if path.parent.name != "imgs":
        return None
    cand = path.parent.parent / "gts" / path.name
    return cand if cand.is_file() else None


def load_cvpr_npz(
    path: str | os.PathLike[str], *, fmt: str | None = None, gts_path: str | os.PathLike[str] | None = "auto"
) -> Case:
    """Read a CVPR 2025/2024 npz case.

    Parameters
    ----------
    path : path-like
        The ``.npz`` file.
    fmt : {"cvpr25_npz", "cvpr24_npz"}, optional
        Skip sniffing.
    gts_path : path-like, "auto" or None
        Where to take ``gts`` from when the file has none: ``"auto"`` looks for the
        challenge's sibling ``../gts/<name>.npz``; ``None`` disables.

    Returns
    -------
    Case
        ``image.array`` ``(D, H, W)`` / ``(H, W, 3)`` / ``(H, W)``; ``image.spacing`` in
        array order; ``labels`` with ``gts``/``segs``/``prev_pred`` present; ``boxes``
        (Box3D with ``z_mid`` or Box2D), ``text_prompts``/``label_names``,
        ``instance_label``, ``clicks``, ``clicks_order``. ``meta`` keeps
        ``spacing_xyz`` (as stored), ``npz_keys``, ``gts_source``.

    Raises
    ------
    FileNotFoundError, ValueError
        With the file, the member and what was expected.
    """
    src = Path(path)
    fmt = fmt or sniff_npz(src) or "cvpr25_npz"
    with NpzReader(src) as r:
        keys = r.keys()
        imgs = r.read("imgs") if "imgs" in r else None
        labels: dict[str, np.ndarray] = {}
        for k in LABEL_KEYS:
            if k in r:
                if imgs is not None:  # a wrong shape is refused from the header, before decompressing
                    _check_label_header(r, k, imgs.shape, src)
                labels[k] = r.read(k, allow_object=False)
        if imgs is None and not labels:
            raise ValueError(
                f"{src}: no 'imgs' member (members: {', '.join(keys) or 'none'}); expected 'imgs' "
                "(D, H, W) uint8 or at least a 'gts'/'segs' label image"
            )
        spacing_raw = r.read("spacing", allow_object=False) if "spacing" in r else None
        pickled = {k: r.read(k) for k in PICKLED_KEYS if k in r}
        direction = r.read("direction", allow_object=False) if "direction" in r else None
        origin = r.read("origin", allow_object=False) if "origin" in r else None

    labels_only = imgs is None
    if labels_only:
        first = next(iter(labels))
        arr = check_labels(labels[first], None, src, first)
        if arr.ndim not in (2, 3):
            raise ValueError(f"{src}: '{first}' has shape {arr.shape}; expected (D, H, W) or (H, W)")
        imgs = arr
        rgb = False
    else:
        imgs = check_image(imgs, src, "imgs")
        rgb = imgs.ndim == 3 and imgs.shape[-1] == 3 and (spacing_raw is None or np.size(spacing_raw) == 2)
        if fmt == "cvpr25_npz" and rgb and spacing_raw is None and "boxes" in pickled and pickled["boxes"].dtype.hasobject:
            rgb = False  # a CVPR25 3D volume that happens to be 3 voxels wide
    spatial = tuple(imgs.shape[:2]) if rgb else tuple(imgs.shape)
    for k in list(labels):
        labels[k] = check_labels(labels[k], spatial, src, k)

    meta: dict[str, Any] = {"source": str(src), "format": fmt, "npz_keys": keys, "rgb": rgb,
                            "modality": modality_from_name(src.stem)}
    if spacing_raw is not None:
        sp_file = check_spacing(spacing_raw, len(spatial), src)
        spacing = sp_file[::-1]
        meta["spacing_xyz"] = sp_file
    else:
        spacing = (1.0,) * len(spatial)
    affine = None
    if len(spatial) == 3 and (direction is not None or origin is not None):
        try:
            affine = _itk_affine_zyx(meta.get("spacing_xyz", spacing[::-1]), direction, origin)
        except ValueError:
            raise ValueError(f"{src}: 'direction'/'origin' have shapes {np.shape(direction)}/{np.shape(origin)}; "
                             "expected 9 and 3 values") from None

    if "gts" not in labels and gts_path is not None:
        gp = _sibling_gts(src) if gts_path == "auto" else Path(gts_path)
        if gp is not None:
            with NpzReader(gp) as g:
                if "gts" in g:
                    _check_label_header(g, "gts", spatial, gp)
                    labels["gts"] = check_labels(g.read("gts", allow_object=False), spatial, gp, "gts")
                    meta["gts_source"] = str(gp)
                    if "spacing" in g:
                        gsp = check_spacing(g.read("spacing", allow_object=False), len(spatial), gp)
                        if not np.allclose(gsp, meta.get("spacing_xyz", gsp)):
                            logger.warning("%s: spacing %s differs from the image's %s", gp, gsp, meta.get("spacing_xyz"))
    if labels_only:
        meta["labels_only"] = True

    volume = Volume(array=imgs, spacing=spacing, affine=affine, meta=meta) if not rgb else Volume.rgb(
        imgs, spacing=spacing, meta=meta)
    case = Case(image=volume, source=src, format=fmt, name=src.stem, labels=labels, meta=meta)

    if "boxes" in pickled:
        case.boxes = parse_boxes(pickled["boxes"], spatial, src)
    if "text_prompts" in pickled:
        case.text_prompts, case.instance_label = _text_prompts(pickled["text_prompts"], src)
        case.label_names = dict(case.text_prompts)
    if "clicks" in pickled:
        case.clicks = _clicks(pickled["clicks"], spatial, src)
    if "clicks_order" in pickled:
        case.clicks_order = _plain(pickled["clicks_order"])
    return case


# ------------------------------------------------------------------------------ writing
def save_npz_labels(
    labels: np.ndarray,
    path: str | os.PathLike[str],
    *,
    case: Case | None = None,
    key: str = "segs",
    overwrite_gt: bool = False,
    compresslevel: int = 6,
) -> Path:
    """Write a label image as member ``key`` of the npz ``path``, atomically.

    If ``path`` exists, every other member is kept byte-for-byte (raw zip copy; pickled
    members are not re-pickled) and the new member follows the file's compression.
    If it does not, a new compressed npz is written with ``key`` (and ``spacing`` from
    ``case`` when known).

    ``key="gts"`` replaces ground truth only with ``overwrite_gt=True``; the previous
    file is kept as ``<path>.bak``.

    Parameters
    ----------
    labels : np.ndarray
        Integer labels in the image's spatial shape (``(D, H, W)`` / ``(H, W)``);
        stored as uint8 when the largest label fits, else uint16.
    """
    target = Path(path)
    if key in _RESERVED_SAVE_KEYS or not key.isidentifier():
        raise ValueError(f"cannot save labels as npz member {key!r}; use 'segs' (default), 'gts' or 'prev_pred'")
    arr = as_label_array(labels, f"labels for {target}")
    if target.exists():
        with NpzReader(target) as r:
            ref_key = "imgs" if "imgs" in r else next((k for k in LABEL_KEYS if k in r), None)
            if ref_key is not None:
                hdr = r.header(ref_key)
                shape = hdr.shape
                if ref_key == "imgs" and len(shape) == 3 and shape[-1] == 3 and "spacing" not in r:
                    shape = shape[:2]
                if tuple(arr.shape) != tuple(shape):
                    raise ValueError(f"{target}: labels have shape {arr.shape}; the file's '{ref_key}' needs {tuple(shape)}")
            has_gt = "gts" in r
        if key == "gts":
            if has_gt and not overwrite_gt:
                raise GroundTruthProtected(
                    f"{target}: refusing to overwrite ground truth 'gts'; pass overwrite_gt=True "
                    "(a .bak copy is kept) or save as 'segs'"
                )
            backup_file(target)
        rewrite_npz(target, {key: arr}, compresslevel=compresslevel)
    else:
        if not target.parent.is_dir():
            raise FileNotFoundError(f"cannot write {target}: folder {target.parent} does not exist")
        extra: dict[str, np.ndarray] = {}
        if case is not None:
            if tuple(arr.shape) != tuple(case.image.spatial_shape):
                raise ValueError(f"{target}: labels have shape {arr.shape}; case {case.name!r} has spatial "
                                 f"shape {case.image.spatial_shape}")
            sp = case.meta.get("spacing_xyz")
            if sp is None and len(case.image.spacing) in (2, 3) and case.format in ("cvpr25_npz", "cvpr24_npz",
                                                                                 "nifti", "ivdm3seg", "medsegpy_h5",
                                                                                 "medsegpy_slices"):
                sp = case.image.spacing[::-1]
            if sp is not None:
                extra["spacing"] = np.asarray(sp, dtype=np.float64)
        rewrite_npz(target, {key: arr, **extra}, source=None, compress=True, compresslevel=compresslevel)
    logger.info("saved labels %s %s as '%s' in %s", arr.shape, arr.dtype, key, target)
    return target


def write_cvpr_npz(
    case: Case,
    path: str | os.PathLike[str],
    *,
    labels_key: str | None = None,
    out_key: str = "gts",
    compress: bool = True,
) -> Path:
    """Write a whole case as a CVPR25-style npz (``imgs``, ``spacing`` (x, y, z), labels, boxes, text).

    ``labels_key`` picks which of ``case.labels`` to store (default: ``gts``, else
    ``segs``) under ``out_key``. RGB images are stored as ``(H, W, 3)`` without spacing
    (CVPR24 2D layout). Pickled members are written from plain dicts/lists.
    """
    target = Path(path)
    if same_file(target, case.source):
        raise ValueError(f"{target}: refusing to overwrite the case's own source file; choose another output path")
    img = case.image
    arrays: dict[str, Any] = {"imgs": img.array}
    if not img.is_rgb:
        arrays["spacing"] = np.asarray(img.spacing[::-1], dtype=np.float64)
    key = labels_key or ("gts" if "gts" in case.labels else "segs" if "segs" in case.labels else None)
    if key is not None:
        if key not in case.labels:
            raise ValueError(f"case {case.name!r} has no labels {key!r} (has: {', '.join(case.labels) or 'none'})")
        arrays[out_key] = as_label_array(case.labels[key], f"labels '{key}'")
    boxes3d = [b for b in case.boxes if isinstance(b, Box3D)]
    if boxes3d and img.ndim == 3:
        arrays["boxes"] = boxes_to_cvpr25(boxes3d)
    elif case.boxes and img.ndim == 2:
        arrays["boxes"] = np.asarray([[b.x_min, b.y_min, b.x_max, b.y_max] for b in
                                      sorted(case.boxes, key=lambda b: b.object_id) if isinstance(b, Box2D)],
                                     dtype=np.int64)
    if case.text_prompts or case.instance_label is not None:
        tp: dict[str, Any] = {str(k): v for k, v in sorted(case.text_prompts.items())}
        tp["instance_label"] = int(case.instance_label or 0)
        arrays["text_prompts"] = np.array(tp, dtype=object)
    rewrite_npz(target, arrays, source=None, compress=compress, allow_pickle=True)
    return target
