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
from collections.abc import Mapping
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
from .cvpr_prompts import (
    BOX_POLICY,
    _boxes_to_prompts,
    _brief,
    _check_clicks,
    _clicks_order,
    _raw_boxes,
    _raw_clicks,
    _text_prompts,
    _warn_clipped,
    boxes_to_cvpr25,
    click_prompts,
    parse_boxes,
    text_prompt_list,
)
from .npzfile import NpzReader, read_npy_header
from .npzwrite import rewrite_npz

__all__ = [
    "sniff_npz",
    "load_cvpr_npz",
    "read_cvpr_members",
    "click_prompts",
    "text_prompt_list",
    "BOX_POLICY",
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
_RESERVED_SAVE_KEYS = {"imgs", "spacing", "boxes", "text_prompts", "clicks", "clicks_order", "direction", "origin"}


# ------------------------------------------------------------------------------ sniffing
def sniff_npz(path: str | os.PathLike[str]) -> str | None:
    """Which CVPR layout an ``.npz`` is in; never raises.

    An ``.npz`` that is not a readable zip is still claimed (``"cvpr25_npz"``) so that
    opening it reports what is wrong instead of "no reader".

    Parameters
    ----------
    path : path-like
        The file (only its zip directory is read).

    Returns
    -------
    str or None
        ``"cvpr25_npz"``, ``"cvpr24_npz"``, or ``None`` for an npz of another kind.
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


# ------------------------------------------------------------------ 2D RGB or 3D volume
def _decide_rgb(imgs: np.ndarray, label_shapes: dict[str, tuple[int, ...]], n_spacing: int | None,
                box_dims: set[int], click_dims: set[int], src: Any) -> bool:
    """Whether ``imgs`` of shape ``(A, B, 3)`` is a 2D RGB image ``(H, W, 3)`` rather than a 3D
    volume ``(D, H, W)`` with 3 voxels along x, from all the evidence of the file.

    Decisive: label images (``gts``/``segs``/``prev_pred``) of shape ``(A, B)`` (2D) or
    ``(A, B, 3)`` (3D); boxes ``(N, 4)`` (2D) or ``(N, 6)``/CVPR25 dicts with z keys (3D); click
    coordinates of 2 or 3 values. Without those, a uint8 image is RGB; a non-uint8 one is RGB
    only without a 3-value ``spacing`` (the presence of ``spacing`` alone never makes a uint8
    ``(H, W, 3)`` file 3D). Conflicting or no evidence either way raises ``ValueError``
    saying how to disambiguate.
    """
    shape = tuple(imgs.shape)
    votes: dict[str, str] = {}
    for k, s in label_shapes.items():
        if tuple(s) == shape[:2]:
            votes[f"'{k}' {tuple(s)}"] = "2D"
        elif tuple(s) == shape:
            votes[f"'{k}' {tuple(s)}"] = "3D"
    for d in sorted(box_dims):
        votes["'boxes' " + ("(N, 4)" if d == 2 else "3D (N, 6) / z_min..z_max")] = "2D" if d == 2 else "3D"
    for d in sorted(click_dims):
        votes[f"'clicks' with {d} coordinates"] = "2D" if d == 2 else "3D"
    kinds = set(votes.values())
    if len(kinds) == 2:
        detail = "; ".join(f"{k} says {v}" for k, v in votes.items())
        raise ValueError(f"{src}: 'imgs' {shape} could be a 2D RGB image or a 3D volume, and the file contradicts "
                         f"itself: {detail}. Make the label images, boxes and clicks agree")
    if kinds:
        return kinds == {"2D"}
    if shape[-1] == 3 and imgs.dtype == np.uint8:
        if n_spacing == 3:
            logger.info("%s: 'imgs' %s uint8 read as a 2D RGB image (its 3-value 'spacing' is taken as a "
                        "placeholder; add 'gts' (D, H, W) or 3D boxes to read it as a volume)", src, shape)
        return True
    if n_spacing != 3:
        return shape[-1] == 3
    raise ValueError(
        f"{src}: 'imgs' has shape {shape} ({imgs.dtype}) and 'spacing' has 3 values; nothing else in the file says "
        f"whether it is a 2D RGB image or a 3D volume of {shape[-1]} voxels along x. To read it as 2D RGB, store "
        f"it as uint8, give 'spacing' 2 values (or none), or add 'gts' of shape {shape[:2]} or 2D 'boxes' (N, 4); "
        f"as 3D, add 'gts' of shape {shape} or 3D 'boxes' (CVPR25 dicts or (N, 6))")


# ------------------------------------------------------------------------------ reading
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


def _spacing(raw: Any, nd: int, rgb: bool, src: Any) -> tuple[float, ...]:
    """The file's spacing (as stored, x first): 3 values for 3D; 2 (or a 3-value placeholder) for 2D."""
    if nd == 3:
        return check_spacing(raw, 3, src)
    n = int(np.size(raw)) if isinstance(raw, np.ndarray) else len(raw) if isinstance(raw, (list, tuple)) else 0
    return check_spacing(raw, 3 if n == 3 else 2, src)


def read_cvpr_members(
    members: Mapping[str, Any], src: str | os.PathLike[str] = "<input>", *, fmt: str | None = None,
    _label_evidence: Mapping[str, tuple[int, ...]] | None = None,
) -> Case:
    """A :class:`Case` from the members of a CVPR 2025/2024 npz, read or handed over in memory.

    This is the one parser of the CVPR npz meaning: :func:`load_cvpr_npz` (the napari
    reader, :func:`~napari_medsegfm.io.load_case`), each step of ``medsegfm predict`` and
    ``medsegfm evaluate`` and ``medsegfm batch`` all come here.

    Parameters
    ----------
    members : mapping
        Member name -> value: arrays as ``np.load``/:class:`~.npzfile.NpzReader` give them;
        pickled members as 0-d/1-D object arrays or as the plain objects inside.
    src : path-like or str
        What the members came from, for messages (the file).
    fmt : {"cvpr25_npz", "cvpr24_npz"}, optional
        Recorded as ``Case.format`` (default ``"cvpr25_npz"``).

    Returns
    -------
    Case
        See :func:`load_cvpr_npz`. 2D RGB vs 3D is decided by :func:`_decide_rgb`; boxes
        follow :data:`BOX_POLICY` (``meta["clipped_boxes"]`` lists what was clipped).

    Raises
    ------
    ValueError
        Naming ``src``, the member, the offending value (short) and what was expected.
    """
    fmt = fmt or "cvpr25_npz"
    keys = list(members)
    imgs = members.get("imgs")
    labels: dict[str, Any] = {k: members[k] for k in LABEL_KEYS if k in members and members[k] is not None}
    for k, v in labels.items():
        if not isinstance(v, np.ndarray):
            labels[k] = check_labels(v, None, src, k)  # raises: not an array
    if imgs is None and not labels:
        raise ValueError(
            f"{src}: no 'imgs' member (members: {', '.join(keys) or 'none'}); expected 'imgs' "
            "(D, H, W) uint8 or at least a 'gts'/'segs' label image"
        )
    spacing_raw = members.get("spacing")
    if spacing_raw is not None and isinstance(spacing_raw, np.ndarray) and spacing_raw.dtype.hasobject:
        raise ValueError(f"{src}: 'spacing' has dtype object ({_brief(spacing_raw)}); expected 3 floats (x, y, z) in mm")
    raw_boxes = _raw_boxes(members["boxes"], src) if members.get("boxes") is not None else None
    raw_clicks = _raw_clicks(members["clicks"], src) if members.get("clicks") is not None else None

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
        rgb = False
        if imgs.ndim == 3 and imgs.shape[-1] in (3, 4):
            n_sp = None if spacing_raw is None else int(np.size(spacing_raw))
            box_dims = {d for d, _ in raw_boxes or []}
            click_dims = {len(p) for c in raw_clicks or [] for kind in ("fg", "bg") for p in c[kind]}
            shapes = {k: tuple(v.shape) for k, v in labels.items()}
            shapes.update(_label_evidence or {})
            rgb = _decide_rgb(imgs, shapes, n_sp, box_dims, click_dims, src)
    spatial = tuple(imgs.shape[:2]) if rgb else tuple(imgs.shape)
    for k in list(labels):
        if tuple(labels[k].shape) != spatial and imgs.ndim == 3 and tuple(labels[k].shape) in (imgs.shape[:2], imgs.shape):
            raise ValueError(f"{src}: '{k}' has shape {labels[k].shape}, but the file reads as "
                             f"{'2D RGB' if rgb else '3D'} with spatial shape {spatial}")
        labels[k] = check_labels(labels[k], spatial, src, k)

    meta: dict[str, Any] = {"source": str(src), "format": fmt, "npz_keys": keys, "rgb": rgb,
                            "modality": modality_from_name(Path(str(src)).stem)}
    if spacing_raw is not None:
        sp_file = _spacing(spacing_raw, len(spatial), rgb, src)
        spacing = tuple(reversed(sp_file[:len(spatial)]))
        meta["spacing_xyz"] = sp_file
    else:
        spacing = (1.0,) * len(spatial)
    direction, origin = members.get("direction"), members.get("origin")
    affine = None
    if len(spatial) == 3 and (direction is not None or origin is not None):
        try:
            affine = _itk_affine_zyx(meta.get("spacing_xyz", spacing[::-1]), direction, origin)
        except (ValueError, TypeError):
            raise ValueError(f"{src}: 'direction'/'origin' have shapes {np.shape(direction)}/{np.shape(origin)}; "
                             "expected 9 and 3 values") from None
    if labels_only:
        meta["labels_only"] = True

    volume = Volume(array=imgs, spacing=spacing, affine=affine, meta=meta) if not rgb else Volume.rgb(
        imgs, spacing=spacing, meta=meta)
    name = Path(str(src)).stem if src else ""
    case = Case(image=volume, source=Path(str(src)) if src and str(src) != "<input>" else None, format=fmt,
                name=name, labels=labels, meta=meta)
    if raw_boxes is not None:
        clipped: list[str] = []
        case.boxes = _boxes_to_prompts(raw_boxes, spatial, src, clipped)
        _warn_clipped(src, clipped)
        if clipped:
            meta["clipped_boxes"] = clipped
    if members.get("text_prompts") is not None:
        case.text_prompts, case.instance_label = _text_prompts(members["text_prompts"], src)
        case.label_names = dict(case.text_prompts)
    if raw_clicks is not None:
        case.clicks = _check_clicks(raw_clicks, spatial, src)
    if members.get("clicks_order") is not None:
        case.clicks_order = _clicks_order(members["clicks_order"], src)
    return case


def load_cvpr_npz(
    path: str | os.PathLike[str], *, fmt: str | None = None, gts_path: str | os.PathLike[str] | None = "auto"
) -> Case:
    """Read a CVPR 2025/2024 npz case (members parsed by :func:`read_cvpr_members`).

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
    members: dict[str, Any] = {}
    with NpzReader(src) as r:
        all_keys = r.keys()
        img_shape = tuple(r.header("imgs").shape) if "imgs" in r else None
        for k in all_keys:
            if k in LABEL_KEYS or k in ("spacing", "direction", "origin"):
                if k in LABEL_KEYS and img_shape is not None:
                    # a wrong shape is refused from the header, before decompressing
                    _check_label_header(r, k, img_shape, src)
                members[k] = r.read(k, allow_object=False)
            elif k == "imgs" or k in PICKLED_KEYS:
                members[k] = r.read(k)
    gp = None
    evidence: dict[str, tuple[int, ...]] = {}
    if "gts" not in members and gts_path is not None:
        gp = _sibling_gts(src) if gts_path == "auto" else Path(gts_path)
        if gp is not None:
            with NpzReader(gp) as g:
                if "gts" in g:
                    if img_shape is not None:
                        _check_label_header(g, "gts", img_shape, gp)
                    evidence[f"gts of {gp.name}"] = tuple(g.header("gts").shape)
                else:
                    gp = None
    case = read_cvpr_members(members, src, fmt=fmt, _label_evidence=evidence)
    case.meta["npz_keys"] = all_keys  # every member of the file, also those not parsed
    if gp is not None:
        with NpzReader(gp) as g:
            case.labels["gts"] = check_labels(g.read("gts", allow_object=False), case.image.spatial_shape, gp, "gts")
            case.meta["gts_source"] = str(gp)
            if "spacing" in g:
                gsp = _spacing(g.read("spacing", allow_object=False), case.image.ndim, case.image.is_rgb, gp)
                own = case.meta.get("spacing_xyz", gsp)
                if len(own) != len(gsp) or not np.allclose(gsp, own):
                    logger.warning("%s: spacing %s differs from the image's %s", gp, gsp, case.meta.get("spacing_xyz"))
    return case


# ------------------------------------------------------------------------------ writing
def _file_spatial_shapes(r: NpzReader, ref_key: str, target: Path, case: Case | None) -> list[tuple[int, ...]]:
    """The label shape(s) an existing npz accepts: its image's spatial shape, decided for an
    ``(H, W, 3)`` image by the same evidence as the reader (:func:`_decide_rgb`); both
    readings when the file does not tell."""
    shape = tuple(r.header(ref_key).shape)
    if ref_key != "imgs" or len(shape) != 3 or shape[-1] not in (3, 4):
        return [shape]
    if case is not None and case.source is not None and same_file(case.source, target):
        return [tuple(case.image.spatial_shape)]
    try:
        hdr = r.header("imgs")
        fake = np.broadcast_to(np.zeros((), dtype=hdr.dtype), shape)
        labels = {k: tuple(r.header(k).shape) for k in LABEL_KEYS if k in r}
        n_sp = int(np.prod(r.header("spacing").shape)) if "spacing" in r else None
        box_dims = {d for d, _ in _raw_boxes(r.read("boxes"), target)} if "boxes" in r else set()
        clicks = _raw_clicks(r.read("clicks"), target) if "clicks" in r else []
        click_dims = {len(p) for c in clicks for kind in ("fg", "bg") for p in c[kind]}
        rgb = _decide_rgb(fake, labels, n_sp, box_dims, click_dims, target)
    except ValueError:  # the file itself does not say: either reading
        return [shape[:2], shape]
    return [shape[:2] if rgb else shape]


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
                shapes = _file_spatial_shapes(r, ref_key, target, case)
                if tuple(arr.shape) not in shapes:
                    need = " or ".join(str(s) for s in shapes)
                    raise ValueError(f"{target}: labels have shape {arr.shape}; the file's '{ref_key}' needs {need}")
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
    """Write a whole case as a CVPR25-style npz, atomically.

    Members: ``imgs``, ``spacing`` (``(x, y, z)`` order, mm), labels, ``boxes``,
    ``text_prompts``. RGB images are stored as ``(H, W, 3)`` without spacing (CVPR24 2D
    layout). Pickled members are written from plain dicts/lists.

    Parameters
    ----------
    case : Case
        ``imgs`` is its ``image.array`` as it is (``(Z, Y, X)``, ``(Y, X)`` or ``(Y, X, 3)``).
    path : path-like
        The ``.npz`` to write.
    labels_key : str, optional
        Which of ``case.labels`` to store (default ``gts``, else ``segs``).
    out_key : str
        The member name for those labels.
    compress : bool
        Deflate the members.

    Returns
    -------
    Path
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
