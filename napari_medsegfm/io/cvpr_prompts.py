"""Prompts stored in CVPR npz cases: ``boxes``, ``text_prompts``, ``clicks`` and ``clicks_order``.

Every value comes from a pickled member that was read by the restricted unpickler, and is
checked before use: bounded integers, boxes clipped to the image and reported with a
warning (``BOX_POLICY``), and clicks inside the image. Points are ``(z, y, x)`` in array
axis order. The member layouts are described in :mod:`~napari_medsegfm.io.cvpr`.
"""

from __future__ import annotations

import logging
import os
import reprlib
from typing import Any

import numpy as np

from ..types import Box2D, Box3D, Case, Point, TextPrompt

__all__ = ["BOX_POLICY", "parse_boxes", "boxes_to_cvpr25", "click_prompts", "text_prompt_list"]

logger = logging.getLogger("napari_medsegfm.io.cvpr")  # the reader's messages, one logger

_BOX25_KEYS = ("z_min", "z_max", "z_mid", "z_mid_x_min", "z_mid_y_min", "z_mid_x_max", "z_mid_y_max")


# ------------------------------------------------------------------------ bounded values
class _Brief(reprlib.Repr):
    """``repr`` for messages about hostile values: short, never deep, never a whole array."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel, self.maxlist, self.maxtuple, self.maxdict = 3, 6, 6, 6
        self.maxstring, self.maxother, self.maxlong = 60, 60, 40

    def repr_int(self, x: int, level: int) -> str:
        return repr(x) if x.bit_length() <= 128 else f"<int of {x.bit_length()} bits>"

    def repr_ndarray(self, x: np.ndarray, level: int) -> str:
        if x.ndim == 0 and not x.dtype.hasobject:
            return self.repr1(x.item(), level)
        if x.size <= 6 and not x.dtype.hasobject:
            return f"array({x.tolist()!r}, dtype={x.dtype})"
        return f"array(shape={x.shape}, dtype={x.dtype})"


_brief = _Brief().repr
_MAX_INDEX = 2**53  # beyond any image axis; keeps every later message and comparison small


def _int(v: Any, where: str) -> int:
    """An integer voxel index from a file value: ints, whole finite floats, size-1 arrays of those.

    Anything else (NaN, ±inf, fractions, strings, containers, booleans) is a ``ValueError``
    naming ``where`` and the value (short repr)."""
    x = v
    if isinstance(x, np.ndarray) and x.size == 1 and not x.dtype.hasobject:
        x = x.reshape(()).item()
    if isinstance(x, (bool, np.bool_)):
        raise ValueError(f"{where} = {_brief(v)} is a boolean; expected an integer voxel index")
    if isinstance(x, (int, np.integer)):
        if not -_MAX_INDEX <= int(x) <= _MAX_INDEX:
            raise ValueError(f"{where} = {_brief(v)} is out of range for a voxel index")
        return int(x)
    if isinstance(x, (float, np.floating)):
        f = float(x)
        if not np.isfinite(f):
            raise ValueError(f"{where} = {_brief(v)} is not finite; expected an integer voxel index")
        if not f.is_integer():
            raise ValueError(f"{where} = {_brief(v)} is not a whole number; expected an integer voxel index")
        if abs(f) > _MAX_INDEX:
            raise ValueError(f"{where} = {_brief(v)} is out of range for a voxel index")
        return int(f)
    raise ValueError(f"{where} = {_brief(v)} ({type(v).__name__}) is not an integer voxel index")


def _unwrap(obj: Any) -> Any:
    """A 0-d object array (how npz stores a pickled dict/list) -> the object inside."""
    if isinstance(obj, np.ndarray) and obj.dtype.hasobject and obj.ndim == 0:
        return obj.item()
    return obj


def _items(obj: Any, where: str, expected: str) -> list[Any]:
    """The elements of a list/tuple/1-D array (one level, never deeper)."""
    obj = _unwrap(obj)
    if isinstance(obj, np.ndarray):
        if obj.ndim == 0:
            raise ValueError(f"{where} is a scalar {_brief(obj)}; expected {expected}")
        return [obj[i] for i in range(obj.shape[0])]
    if isinstance(obj, (list, tuple)):
        return list(obj)
    raise ValueError(f"{where} is a {type(obj).__name__} ({_brief(obj)}); expected {expected}")


# ------------------------------------------------------------------------------- boxes
#: The out-of-bounds policy for file boxes, the same for the napari reader, ``medsegfm
#: predict``/``evaluate`` and ``medsegfm batch`` (they all read boxes here):
BOX_POLICY = (
    "a box that overlaps the image but reaches outside it is clipped to the image (and z_mid "
    "into the box's z range), with a logged warning naming each clipped field; a box that lies "
    "wholly outside the image on some axis, has min > max, or a coordinate that is not a whole "
    "finite number is refused with a ValueError naming the file, the box and the field"
)

_BOX24_FIELDS = {4: ("x_min", "y_min", "x_max", "y_max"), 6: ("x_min", "y_min", "z_min", "x_max", "y_max", "z_max")}


def _raw_boxes(boxes: Any, src: Any) -> list[tuple[int, dict[str, int]]]:
    """Structure and integer values of a ``boxes`` member, before any shape is known.

    Returns ``(ndim, fields)`` per box: ndim 3 for CVPR25 dicts and ``(N, 6)`` rows, 2 for
    ``(N, 4)`` rows; ``fields`` hold the CVPR25 keys (``z_min``, ..., ``z_mid_y_max``) or the
    CVPR24 names (``x_min``, ...).
    """
    obj = _unwrap(boxes)
    if obj is None:
        return []
    if isinstance(obj, dict):
        obj = [obj]
    out: list[tuple[int, dict[str, int]]] = []
    if isinstance(obj, np.ndarray) and not obj.dtype.hasobject:
        if obj.dtype.kind not in "iuf":
            raise ValueError(f"{src}: 'boxes' has dtype {obj.dtype}; expected an int array (N, 4) or (N, 6) "
                             "or a list of dicts")
        if obj.size == 0:
            return out
        a = obj.reshape(1, -1) if obj.ndim == 1 else obj
        if a.ndim != 2 or a.shape[1] not in (4, 6):
            raise ValueError(f"{src}: 'boxes' has shape {obj.shape}; expected (N, 4) [x_min, y_min, x_max, y_max] "
                             f"or (N, 6) [x_min, y_min, z_min, x_max, y_max, z_max]")
        names = _BOX24_FIELDS[a.shape[1]]
        for i in range(a.shape[0]):
            out.append((2 if a.shape[1] == 4 else 3,
                        {f: _int(a[i, j], f"{src}: 'boxes'[{i}].{f}") for j, f in enumerate(names)}))
        return out
    for i, b in enumerate(_items(obj, f"{src}: 'boxes'", "a list of dicts or an (N, 4)/(N, 6) array")):
        b = _unwrap(b)
        if isinstance(b, np.ndarray) and not b.dtype.hasobject and b.size in (4, 6) and b.ndim == 1:
            names = _BOX24_FIELDS[b.size]
            out.append((2 if b.size == 4 else 3, {f: _int(b[j], f"{src}: 'boxes'[{i}].{f}") for j, f in enumerate(names)}))
            continue
        if not isinstance(b, dict):
            raise ValueError(f"{src}: 'boxes'[{i}] is a {type(b).__name__} ({_brief(b)}); expected a dict with keys "
                             f"{', '.join(_BOX25_KEYS)}")
        missing = [k for k in _BOX25_KEYS if k != "z_mid" and k not in b]
        if missing:
            raise ValueError(f"{src}: 'boxes'[{i}] lacks {', '.join(missing)} (has {_brief(sorted(map(str, b)))}); "
                             f"expected keys {', '.join(_BOX25_KEYS)}")
        vals = {k: _int(b[k], f"{src}: 'boxes'[{i}].{k}") for k in _BOX25_KEYS if k in b and b[k] is not None}
        out.append((3, vals))
    return out


def _clip_axis(src: Any, i: int, lo_name: str, hi_name: str, lo: int, hi: int, size: int, axis: int,
               clipped: list[str]) -> tuple[int, int]:
    if lo > hi:
        raise ValueError(f"{src}: 'boxes'[{i}]: {lo_name}={lo} > {hi_name}={hi}; expected min <= max")
    if hi < 0 or lo > size - 1:
        raise ValueError(f"{src}: 'boxes'[{i}] lies outside the image: {lo_name}..{hi_name} = {lo}..{hi} "
                         f"but axis {axis} has size {size} (valid 0..{size - 1})")
    nlo, nhi = max(lo, 0), min(hi, size - 1)
    if nlo != lo:
        clipped.append(f"'boxes'[{i}].{lo_name} {lo} -> {nlo}")
    if nhi != hi:
        clipped.append(f"'boxes'[{i}].{hi_name} {hi} -> {nhi}")
    return nlo, nhi


def _boxes_to_prompts(raw: list[tuple[int, dict[str, int]]], spatial_shape: tuple[int, ...], src: Any,
                      clipped: list[str]) -> list[Box3D | Box2D]:
    nd = len(spatial_shape)
    out: list[Box3D | Box2D] = []
    for i, (bnd, v) in enumerate(raw):
        if bnd != nd:
            kind = "3D (z_min/z_max)" if bnd == 3 else "2D (N, 4)"
            raise ValueError(f"{src}: 'boxes'[{i}] is {kind} but the image is {nd}D with spatial shape "
                             f"{tuple(spatial_shape)}")
        if nd == 3:
            if "z_mid_x_min" in v:  # CVPR25 dict
                names = {"z": ("z_min", "z_max"), "y": ("z_mid_y_min", "z_mid_y_max"), "x": ("z_mid_x_min", "z_mid_x_max")}
            else:
                names = {"z": ("z_min", "z_max"), "y": ("y_min", "y_max"), "x": ("x_min", "x_max")}
            z0, z1 = _clip_axis(src, i, *names["z"], v[names["z"][0]], v[names["z"][1]], spatial_shape[0], 0, clipped)
            y0, y1 = _clip_axis(src, i, *names["y"], v[names["y"][0]], v[names["y"][1]], spatial_shape[1], 1, clipped)
            x0, x1 = _clip_axis(src, i, *names["x"], v[names["x"][0]], v[names["x"][1]], spatial_shape[2], 2, clipped)
            zm = v.get("z_mid")
            if zm is not None and not z0 <= zm <= z1:
                nzm = min(max(zm, z0), z1)
                clipped.append(f"'boxes'[{i}].z_mid {zm} -> {nzm} (into z {z0}..{z1})")
                zm = nzm
            out.append(Box3D(z_min=z0, z_max=z1, y_min=y0, x_min=x0, y_max=y1, x_max=x1, object_id=i + 1, z_mid=zm))
        else:
            y0, y1 = _clip_axis(src, i, "y_min", "y_max", v["y_min"], v["y_max"], spatial_shape[0], 0, clipped)
            x0, x1 = _clip_axis(src, i, "x_min", "x_max", v["x_min"], v["x_max"], spatial_shape[1], 1, clipped)
            out.append(Box2D(y_min=y0, x_min=x0, y_max=y1, x_max=x1, object_id=i + 1))
    return out


def _warn_clipped(src: Any, clipped: list[str]) -> None:
    if clipped:
        shown = "; ".join(clipped[:8]) + (f"; ... ({len(clipped) - 8} more)" if len(clipped) > 8 else "")
        logger.warning("%s: box coordinates outside the image were clipped to it: %s", src, shown)


def parse_boxes(
    boxes: Any, spatial_shape: tuple[int, ...], src: str | os.PathLike[str] = "boxes"
) -> list[Box3D | Box2D]:
    """Boxes of a CVPR25 (list of dicts) or CVPR24 (``N x 4`` / ``N x 6``) file as prompts.

    ``boxes[i]`` prompts label ``i + 1``. Out-of-bounds boxes follow :data:`BOX_POLICY`
    (clipped with a warning when they overlap the image, refused when they lie wholly outside).

    Parameters
    ----------
    boxes : object
        The file's ``boxes`` member (object array of dicts, or an ``(N, 4)``/``(N, 6)``
        array of ``x_min, y_min, [z_min,] x_max, y_max, [z_max]``).
    spatial_shape : tuple of int
        ``(D, H, W)`` or ``(H, W)``.
    src : path-like
        The file (for messages).

    Returns
    -------
    list of Box3D or Box2D
        Voxel indices, inclusive, array axis order.

    Raises
    ------
    ValueError
        Malformed values (naming ``src``, the box and the field), or a box wholly outside.
    """
    clipped: list[str] = []
    out = _boxes_to_prompts(_raw_boxes(boxes, src), tuple(int(s) for s in spatial_shape), src, clipped)
    _warn_clipped(src, clipped)
    return out


def boxes_to_cvpr25(boxes: list[Box3D]) -> np.ndarray:
    """Box3D prompts as the CVPR25 object array of dicts.

    Parameters
    ----------
    boxes : list of Box3D
        ``boxes[i]`` for label ``i + 1``.

    Returns
    -------
    np.ndarray
        1D object array of ``{"z_min", "z_max", "z_mid", "z_mid_x_min", "z_mid_y_min",
        "z_mid_x_max", "z_mid_y_max"}`` dicts (voxel indices, inclusive).
    """
    out = np.empty(len(boxes), dtype=object)
    for i, b in enumerate(sorted(boxes, key=lambda b: b.object_id)):
        out[i] = {"z_min": np.int64(b.z_min), "z_max": np.int64(b.z_max), "z_mid": np.int64(b.mid_slice),
                  "z_mid_x_min": np.int64(b.x_min), "z_mid_y_min": np.int64(b.y_min),
                  "z_mid_x_max": np.int64(b.x_max), "z_mid_y_max": np.int64(b.y_max)}
    return out


# ------------------------------------------------------------------------ text, clicks
def _text_prompts(obj: Any, src: Any) -> tuple[dict[int, str], int | None]:
    tp = _unwrap(obj)
    if not isinstance(tp, dict):
        raise ValueError(f"{src}: 'text_prompts' is a {type(tp).__name__} ({_brief(tp)}); expected a dict "
                         "{'1': text, ..., 'instance_label': 0|1}")
    texts: dict[int, str] = {}
    inst: int | None = None
    for k, v in tp.items():
        if k == "instance_label":
            try:
                inst = _int(v, f"{src}: 'text_prompts'['instance_label']")
            except ValueError:
                raise ValueError(f"{src}: 'text_prompts'['instance_label'] = {_brief(v)}; expected 0 or 1") from None
            continue
        try:
            lab = int(k) if isinstance(k, (str, int, np.integer)) and not isinstance(k, bool) else None
        except ValueError:
            lab = None
        if lab is None or lab < 1:
            logger.warning("%s: ignoring text_prompts key %s (expected a label id 1, 2, ...)", src, _brief(k))
            continue
        if not isinstance(v, str):
            raise ValueError(f"{src}: 'text_prompts'[{_brief(k)}] is a {type(v).__name__} ({_brief(v)}); "
                             "expected a string")
        if not v.strip():
            logger.warning("%s: text_prompts[%s] is empty; label %d has no text", src, _brief(k), lab)
            continue
        texts[lab] = v
    return texts, inst


_CLICKS_EXPECTED = "a list with one {'fg': [[z, y, x], ...], 'bg': [...]} per class"


def _points(obj: Any, where: str) -> list[tuple[int, ...]]:
    """``[[z, y, x], ...]`` (or one ``[z, y, x]``, or an ``(N, 3)`` array) as integer tuples;
    never deeper than two levels."""
    obj = _unwrap(obj)
    if obj is None:
        return []
    if isinstance(obj, np.ndarray) and not obj.dtype.hasobject:
        if obj.size == 0:
            return []
        if obj.ndim == 1:
            obj = obj.reshape(1, -1)
        if obj.ndim != 2 or obj.shape[1] not in (2, 3):
            raise ValueError(f"{where} has shape {obj.shape}; expected (N, 3) [z, y, x] (or (N, 2) [y, x] in 2D)")
        return [tuple(_int(obj[j, a], f"{where}[{j}][{a}]") for a in range(obj.shape[1])) for j in range(obj.shape[0])]
    rows = _items(obj, where, "a list of [z, y, x] coordinates")
    if rows and all(isinstance(_unwrap(r), (int, float, np.integer, np.floating)) for r in rows) and len(rows) in (2, 3):
        rows = [rows]  # one point given flat
    out = []
    for j, r in enumerate(rows):
        coords = _items(r, f"{where}[{j}]", "[z, y, x] (or [y, x] in 2D)")
        if len(coords) not in (2, 3):
            raise ValueError(f"{where}[{j}] = {_brief(r)} has {len(coords)} values; expected [z, y, x] (or [y, x] in 2D)")
        out.append(tuple(_int(c, f"{where}[{j}][{a}]") for a, c in enumerate(coords)))
    return out


def _raw_clicks(obj: Any, src: Any) -> list[dict[str, list[tuple[int, ...]]]]:
    """Structure and integer coordinates of a ``clicks`` member (one entry per class; ``None``
    entries stay as empty ones so that ``clicks[i]`` keeps prompting label ``i + 1``)."""
    seq = _unwrap(obj)
    if isinstance(seq, dict):
        seq = [seq]
    out = []
    for i, c in enumerate(_items(seq, f"{src}: 'clicks'", _CLICKS_EXPECTED)):
        c = _unwrap(c)
        if c is None:
            out.append({"fg": [], "bg": []})
            continue
        if not isinstance(c, dict):
            raise ValueError(f"{src}: 'clicks'[{i}] is a {type(c).__name__} ({_brief(c)}); expected "
                             "{'fg': [[z, y, x], ...], 'bg': [...]}")
        unknown = [k for k in c if k not in ("fg", "bg")]
        if unknown:
            logger.warning("%s: 'clicks'[%d] has unknown keys %s (expected 'fg', 'bg'); ignored", src, i, _brief(unknown))
        out.append({kind: _points(c.get(kind), f"{src}: 'clicks'[{i}]['{kind}']") for kind in ("fg", "bg")})
    return out


def _check_clicks(raw: list[dict[str, list[tuple[int, ...]]]], spatial: tuple[int, ...], src: Any
                  ) -> list[dict[str, list[list[int]]]]:
    out = []
    for i, c in enumerate(raw):
        entry: dict[str, list[list[int]]] = {}
        for kind in ("fg", "bg"):
            pts = []
            for j, q in enumerate(c[kind]):
                if len(q) != len(spatial) or any(not 0 <= x < s for x, s in zip(q, spatial)):
                    raise ValueError(f"{src}: 'clicks'[{i}]['{kind}'][{j}] = {list(q)} is outside the image "
                                     f"{tuple(spatial)} (expected {len(spatial)} indices, each 0..size-1)")
                pts.append(list(q))
            entry[kind] = pts
        out.append(entry)
    return out


def _clicks_order(obj: Any, src: Any) -> list[list[str]]:
    """``clicks_order``: per class a list of ``'fg'``/``'bg'`` (``None``: no click for it)."""
    seq = _unwrap(obj)
    if seq is None:
        return []
    out: list[list[str]] = []
    for i, entry in enumerate(_items(seq, f"{src}: 'clicks_order'", "a list with one ['fg', 'bg', ...] per class")):
        entry = _unwrap(entry)
        if entry is None:
            out.append([])
            continue
        if isinstance(entry, (str, np.str_)):
            vals: list[Any] = [entry]
        else:
            vals = _items(entry, f"{src}: 'clicks_order'[{i}]", "a list of 'fg'/'bg'")
        kinds = []
        for j, v in enumerate(vals):
            v = _unwrap(v)
            if v is None or (isinstance(v, (str, np.str_)) and str(v) == ""):
                continue
            if not isinstance(v, (str, np.str_)) or str(v) not in ("fg", "bg"):
                raise ValueError(f"{src}: 'clicks_order'[{i}][{j}] = {_brief(v)}; expected 'fg' or 'bg'")
            kinds.append(str(v))
        out.append(kinds)
    return out


def click_prompts(case: Case) -> dict[int, list[Point]]:
    """The case's clicks as :class:`Point` prompts per label (``clicks[i]`` -> label ``i + 1``), oldest first.

    ``clicks_order[i]`` gives the chronology of class ``i``'s clicks; where it is missing or
    does not match the numbers of fg/bg clicks (logged), foreground clicks come first.

    Parameters
    ----------
    case : Case
        With ``clicks`` (``[{"fg": [[z, y, x], ...], "bg": [...]}, ...]``) and ``clicks_order``.

    Returns
    -------
    dict of int to list of Point
        Labels without clicks are left out.
    """
    out: dict[int, list[Point]] = {}
    order_all = case.clicks_order or []
    for i, c in enumerate(case.clicks or []):
        fg, bg = [tuple(p) for p in c.get("fg", [])], [tuple(p) for p in c.get("bg", [])]
        order = list(order_all[i]) if i < len(order_all) and order_all[i] is not None else []
        if sorted(order) != sorted(["fg"] * len(fg) + ["bg"] * len(bg)):
            if order:
                logger.warning("%s: clicks_order[%d] %s does not match %d fg / %d bg clicks; using fg first",
                               case.source or case.name, i, order, len(fg), len(bg))
            order = ["fg"] * len(fg) + ["bg"] * len(bg)
        it = {"fg": iter(fg), "bg": iter(bg)}
        pts = [Point(next(it[k]), positive=(k == "fg"), object_id=i + 1) for k in order]
        if pts:
            out[i + 1] = pts
    return out


def text_prompt_list(case: Case) -> list[TextPrompt]:
    """One :class:`TextPrompt` per label of the case's ``text_prompts`` (label order).

    Parameters
    ----------
    case : Case
        With ``text_prompts`` (label -> text) and ``instance_label``.

    Returns
    -------
    list of TextPrompt
        ``instance`` set for the instance label.
    """
    inst = bool(case.instance_label)
    return [TextPrompt(t, instance=inst, object_id=lab) for lab, t in sorted(case.text_prompts.items())]
