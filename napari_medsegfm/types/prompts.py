"""Prompts (boxes, points, scribbles, text), backend capabilities and box geometry.

Coordinates are integer voxel indices in array axis order ``(Z, Y, X)`` / ``(Y, X)``,
inclusive. Constructors validate what they can know alone (ordering, non-negativity,
kinds); :func:`validate_prompt` checks a prompt against a volume shape. All names are
importable from :mod:`napari_medsegfm.types`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "Box3D",
    "Box2D",
    "Point",
    "Scribble",
    "TextPrompt",
    "Prompt",
    "Capability",
    "prompt_kind",
    "required_capability",
    "validate_prompt",
    "prompt_to_dict",
    "prompt_from_dict",
    "box_volume",
    "boxes_extent",
    "extent_nested",
    "nested_inner",
]


# -------------------------------------------------------------------------- prompts
def _as_int(name: str, value: Any) -> int:
    try:
        iv = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an integer voxel index; got {value!r}") from None
    if iv != value and not (isinstance(value, (float, np.floating)) and float(value).is_integer()):
        raise ValueError(f"{name} must be an integer voxel index; got {value!r}")
    return iv


def _check_object_id(object_id: Any) -> int:
    oid = _as_int("object_id", object_id)
    if oid < 1:
        raise ValueError(f"object_id must be >= 1 (0 is background); got {object_id!r}")
    return oid


@dataclass(frozen=True)
class Box3D:
    """A 3D box, inclusive voxel indices, array axis order ``(Z, Y, X)``.

    Parameters
    ----------
    z_min, z_max : int
        First and last slice (inclusive, ``z_min <= z_max``).
    y_min, x_min, y_max, x_max : int
        Rows and columns of the rectangle (inclusive, ``y_min <= y_max``, ``x_min <= x_max``).
    object_id : int
        Label id of the object the box prompts (>= 1).
    z_mid : int, optional
        The slice on which the xy rectangle was drawn (CVPR 2025 boxes give it), within
        ``[z_min, z_max]``; ``None`` means the middle of ``[z_min, z_max]``.

    Raises
    ------
    ValueError
        A negative or non-integer index, ``min > max`` on an axis, ``z_mid`` outside the
        box, or ``object_id < 1``.
    """

    z_min: int
    z_max: int
    y_min: int
    x_min: int
    y_max: int
    x_max: int
    object_id: int = 1
    z_mid: int | None = None

    def __post_init__(self) -> None:
        for n in ("z_min", "z_max", "y_min", "x_min", "y_max", "x_max"):
            v = _as_int(f"Box3D.{n}", getattr(self, n))
            if v < 0:
                raise ValueError(f"Box3D.{n} must be >= 0; got {v}")
            object.__setattr__(self, n, v)
        for lo, hi in (("z_min", "z_max"), ("y_min", "y_max"), ("x_min", "x_max")):
            if getattr(self, lo) > getattr(self, hi):
                raise ValueError(f"Box3D: {lo}={getattr(self, lo)} > {hi}={getattr(self, hi)}")
        object.__setattr__(self, "object_id", _check_object_id(self.object_id))
        if self.z_mid is not None:
            zm = _as_int("Box3D.z_mid", self.z_mid)
            if not self.z_min <= zm <= self.z_max:
                raise ValueError(f"Box3D.z_mid={zm} outside [z_min={self.z_min}, z_max={self.z_max}]")
            object.__setattr__(self, "z_mid", zm)

    @property
    def mid_slice(self) -> int:
        """The slice the rectangle was drawn on: ``z_mid``, else ``(z_min + z_max) // 2``."""
        return self.z_mid if self.z_mid is not None else (self.z_min + self.z_max) // 2


@dataclass(frozen=True)
class Box2D:
    """A 2D box, inclusive pixel indices ``(Y, X)``, optionally on one slice of a 3D volume.

    Parameters
    ----------
    y_min, x_min, y_max, x_max : int
        Rows and columns (inclusive, ``y_min <= y_max``, ``x_min <= x_max``).
    z : int, optional
        The slice of a 3D volume (axis 0 of ``(Z, Y, X)``); ``None`` for a 2D image.
    object_id : int
        Label id of the object the box prompts (>= 1).

    Raises
    ------
    ValueError
        A negative or non-integer index, ``min > max`` on an axis, or ``object_id < 1``.
    """

    y_min: int
    x_min: int
    y_max: int
    x_max: int
    z: int | None = None
    object_id: int = 1

    def __post_init__(self) -> None:
        for n in ("y_min", "x_min", "y_max", "x_max"):
            v = _as_int(f"Box2D.{n}", getattr(self, n))
            if v < 0:
                raise ValueError(f"Box2D.{n} must be >= 0; got {v}")
            object.__setattr__(self, n, v)
        for lo, hi in (("y_min", "y_max"), ("x_min", "x_max")):
            if getattr(self, lo) > getattr(self, hi):
                raise ValueError(f"Box2D: {lo}={getattr(self, lo)} > {hi}={getattr(self, hi)}")
        if self.z is not None:
            z = _as_int("Box2D.z", self.z)
            if z < 0:
                raise ValueError(f"Box2D.z must be >= 0; got {z}")
            object.__setattr__(self, "z", z)
        object.__setattr__(self, "object_id", _check_object_id(self.object_id))


@dataclass(frozen=True)
class Point:
    """A click at one voxel.

    Parameters
    ----------
    zyx : tuple of int
        ``(z, y, x)`` in a 3D volume or ``(y, x)`` in a 2D image (voxel indices, array order).
    positive : bool
        True: the voxel belongs to the object; False: it does not (a background click).
    object_id : int
        Label id of the object (>= 1).

    Raises
    ------
    ValueError
        Not 2 or 3 coordinates, a negative or non-integer coordinate, or ``object_id < 1``.
    """

    zyx: tuple[int, ...]
    positive: bool = True
    object_id: int = 1

    def __post_init__(self) -> None:
        coords = tuple(_as_int("Point.zyx", c) for c in np.asarray(self.zyx).ravel().tolist())
        if len(coords) not in (2, 3):
            raise ValueError(f"Point.zyx must have 2 (y, x) or 3 (z, y, x) coordinates; got {self.zyx!r}")
        if min(coords) < 0:
            raise ValueError(f"Point.zyx must be >= 0; got {coords}")
        object.__setattr__(self, "zyx", coords)
        object.__setattr__(self, "positive", bool(self.positive))
        object.__setattr__(self, "object_id", _check_object_id(self.object_id))


@dataclass(frozen=True, eq=False)
class Scribble:
    """A painted stroke: the voxels the brush covered.

    Parameters
    ----------
    voxels : np.ndarray
        ``(N, 3)`` rows of ``(z, y, x)`` (3D) or ``(N, 2)`` rows of ``(y, x)`` (2D) voxel
        indices, N >= 1; stored as a read-only ``int64`` array.
    positive : bool
        True: the stroke marks the object; False: it marks background.
    object_id : int
        Label id of the object (>= 1).

    Raises
    ------
    ValueError
        ``voxels`` is not a non-empty ``(N, 2|3)`` array of non-negative integers, or
        ``object_id < 1``.
    """

    voxels: np.ndarray
    positive: bool = True
    object_id: int = 1

    def __post_init__(self) -> None:
        v = np.asarray(self.voxels)
        if v.ndim != 2 or v.shape[1] not in (2, 3) or v.shape[0] == 0:
            raise ValueError(f"Scribble.voxels must be a non-empty (N, 2|3) index array; got shape {v.shape}")
        if not np.issubdtype(v.dtype, np.integer):
            if not np.all(np.equal(np.mod(v, 1), 0)):
                raise ValueError("Scribble.voxels must hold integer voxel indices")
        v = v.astype(np.int64)
        if v.min() < 0:
            raise ValueError(f"Scribble.voxels must be >= 0; got min {int(v.min())}")
        v.setflags(write=False)
        object.__setattr__(self, "voxels", v)
        object.__setattr__(self, "positive", bool(self.positive))
        object.__setattr__(self, "object_id", _check_object_id(self.object_id))

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Scribble)
            and self.positive == other.positive
            and self.object_id == other.object_id
            and np.array_equal(self.voxels, other.voxels)
        )

    def __hash__(self) -> int:
        return hash((self.positive, self.object_id, self.voxels.shape, self.voxels[:8].tobytes()))


@dataclass(frozen=True)
class TextPrompt:
    """A free-text prompt such as ``"left kidney"``.

    Parameters
    ----------
    text : str
        The class description (stripped; must not be empty).
    instance : bool
        True asks for one label per connected component (instance segmentation).
    object_id : int
        Label id the result is written to (>= 1).

    Raises
    ------
    ValueError
        Empty ``text`` or ``object_id < 1``.
    """

    text: str
    instance: bool = False
    object_id: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.text, str) or not self.text.strip():
            raise ValueError(f"TextPrompt.text must be a non-empty string; got {self.text!r}")
        object.__setattr__(self, "text", self.text.strip())
        object.__setattr__(self, "instance", bool(self.instance))
        object.__setattr__(self, "object_id", _check_object_id(self.object_id))


Prompt = Box3D | Box2D | Point | Scribble | TextPrompt


class Capability(enum.Flag):
    """What a backend can serve (flags, combined with ``|``).

    ``BOX3D``, ``BOX2D``, ``POINTS``, ``SCRIBBLE`` and ``TEXT`` are the prompt kinds
    (:func:`required_capability` maps a prompt to its flag); ``MULTI_OBJECT``: several
    objects per image; ``LASSO``: polygon prompts.
    """

    NONE = 0
    BOX3D = enum.auto()
    BOX2D = enum.auto()
    POINTS = enum.auto()
    SCRIBBLE = enum.auto()
    TEXT = enum.auto()
    MULTI_OBJECT = enum.auto()
    LASSO = enum.auto()


def prompt_kind(prompt: Prompt) -> str:
    """Short kind name of a prompt.

    Parameters
    ----------
    prompt : Box3D, Box2D, Point, Scribble or TextPrompt
        The prompt.

    Returns
    -------
    str
        ``"box3d"``, ``"box2d"``, ``"point"``, ``"scribble"`` or ``"text"``.

    Raises
    ------
    ValueError
        ``prompt`` is not one of the prompt types.
    """
    kinds = {Box3D: "box3d", Box2D: "box2d", Point: "point", Scribble: "scribble", TextPrompt: "text"}
    try:
        return kinds[type(prompt)]
    except KeyError:
        raise ValueError(f"not a prompt: {prompt!r}") from None


def required_capability(prompt: Prompt) -> Capability:
    """The capability flag a backend needs to serve ``prompt``.

    Parameters
    ----------
    prompt : Box3D, Box2D, Point, Scribble or TextPrompt
        The prompt.

    Returns
    -------
    Capability
        ``BOX3D``, ``BOX2D``, ``POINTS``, ``SCRIBBLE`` or ``TEXT``.

    Raises
    ------
    ValueError
        ``prompt`` is not one of the prompt types.
    """
    return {
        "box3d": Capability.BOX3D,
        "box2d": Capability.BOX2D,
        "point": Capability.POINTS,
        "scribble": Capability.SCRIBBLE,
        "text": Capability.TEXT,
    }[prompt_kind(prompt)]


def validate_prompt(prompt: Prompt, shape: tuple[int, ...]) -> None:
    """Check that ``prompt`` fits a volume of spatial shape ``shape``.

    Parameters
    ----------
    prompt : Box3D, Box2D, Point, Scribble or TextPrompt
        The prompt, in voxel indices of that volume.
    shape : tuple of int
        The spatial shape ``(Z, Y, X)`` or ``(Y, X)`` (no RGB channel).

    Raises
    ------
    ValueError
        Naming the field and value: a :class:`Box3D` on a 2D image, a :class:`Box2D` without
        ``z`` on a 3D volume, a coordinate count that does not match ``len(shape)``, or an
        index outside ``0 .. shape[axis] - 1``.
    """
    shape = tuple(int(s) for s in shape)
    nd = len(shape)

    def check(name: str, value: int, axis: int) -> None:
        if not 0 <= value < shape[axis]:
            raise ValueError(
                f"{type(prompt).__name__}.{name}={value} is outside the volume: axis {axis} has size {shape[axis]} "
                f"(valid 0..{shape[axis] - 1}, volume shape {shape})"
            )

    if isinstance(prompt, Box3D):
        if nd != 3:
            raise ValueError(f"Box3D needs a 3D volume; this one has shape {shape}")
        for n, ax in (("z_min", 0), ("z_max", 0), ("y_min", 1), ("y_max", 1), ("x_min", 2), ("x_max", 2)):
            check(n, getattr(prompt, n), ax)
    elif isinstance(prompt, Box2D):
        off = 1 if nd == 3 else 0
        if nd == 3:
            if prompt.z is None:
                raise ValueError(f"Box2D on a 3D volume {shape} needs its slice index z")
            check("z", prompt.z, 0)
        elif prompt.z not in (None, 0):
            raise ValueError(f"Box2D.z={prompt.z} given for a 2D image of shape {shape}")
        for n, ax in (("y_min", 0), ("y_max", 0), ("x_min", 1), ("x_max", 1)):
            check(n, getattr(prompt, n), ax + off)
    elif isinstance(prompt, Point):
        if len(prompt.zyx) != nd:
            raise ValueError(f"Point.zyx={prompt.zyx} has {len(prompt.zyx)} coordinates; volume shape {shape} needs {nd}")
        for ax, c in enumerate(prompt.zyx):
            check(f"zyx[{ax}]", c, ax)
    elif isinstance(prompt, Scribble):
        if prompt.voxels.shape[1] != nd:
            raise ValueError(
                f"Scribble.voxels has {prompt.voxels.shape[1]} columns; volume shape {shape} needs {nd}"
            )
        hi = prompt.voxels.max(axis=0)
        for ax in range(nd):
            if hi[ax] >= shape[ax]:
                raise ValueError(
                    f"Scribble.voxels reach index {int(hi[ax])} on axis {ax}, outside the volume (size {shape[ax]})"
                )
    elif isinstance(prompt, TextPrompt):
        return
    else:
        raise ValueError(f"not a prompt: {prompt!r}")


def prompt_to_dict(prompt: Prompt) -> dict[str, Any]:
    """JSON-ready dict of a prompt (inverse: :func:`prompt_from_dict`).

    Parameters
    ----------
    prompt : Box3D, Box2D, Point, Scribble or TextPrompt
        The prompt.

    Returns
    -------
    dict
        ``{"kind": <prompt_kind>, <field>: <value>, ...}``; tuples and the scribble's voxel
        array become lists.
    """
    kind = prompt_kind(prompt)
    if isinstance(prompt, Scribble):
        return {"kind": kind, "voxels": prompt.voxels.tolist(), "positive": prompt.positive,
                "object_id": prompt.object_id}
    d = {"kind": kind}
    for k, v in prompt.__dict__.items():
        d[k] = list(v) if isinstance(v, tuple) else v
    return d


def prompt_from_dict(d: dict[str, Any]) -> Prompt:
    """Rebuild a prompt from :func:`prompt_to_dict` output.

    Parameters
    ----------
    d : dict
        ``{"kind": ..., <field>: <value>, ...}``; ``voxels`` of a scribble as a list of
        ``[z, y, x]`` (or ``[y, x]``) rows.

    Returns
    -------
    Box3D, Box2D, Point, Scribble or TextPrompt
        The prompt, checked as its constructor checks it.

    Raises
    ------
    ValueError
        An unknown ``kind`` or a field value the prompt's constructor refuses.
    TypeError
        A field the prompt does not have.
    """
    d = dict(d)
    kind = d.pop("kind", None)
    cls = {"box3d": Box3D, "box2d": Box2D, "point": Point, "scribble": Scribble, "text": TextPrompt}.get(kind)
    if cls is None:
        raise ValueError(f"unknown prompt kind {kind!r}; expected one of box3d, box2d, point, scribble, text")
    if cls is Scribble:
        d["voxels"] = np.asarray(d["voxels"], dtype=np.int64).reshape(-1, len(d["voxels"][0]) if d["voxels"] else 3)
    if cls is Point:
        d["zyx"] = tuple(d["zyx"])
    return cls(**d)


# ------------------------------------------------------------------ box geometry
def box_volume(prompts: Sequence[Prompt]) -> int:
    """Voxel count of the largest box among ``prompts`` (its area for a :class:`Box2D`).

    Parameters
    ----------
    prompts : sequence of prompts
        Any prompts; those that are not boxes are ignored.

    Returns
    -------
    int
        Voxels (inclusive extents multiplied), 0 when there is no box.
    """
    best = 0
    for p in prompts:
        if isinstance(p, Box3D):
            v = (p.z_max - p.z_min + 1) * (p.y_max - p.y_min + 1) * (p.x_max - p.x_min + 1)
        elif isinstance(p, Box2D):
            v = (p.y_max - p.y_min + 1) * (p.x_max - p.x_min + 1)
        else:
            continue
        best = max(best, int(v))
    return best


def boxes_extent(prompts: Sequence[Any]) -> tuple[tuple[int, int, int], tuple[int, int, int]] | None:
    """Inclusive ``(z, y, x)`` corners of the union of the boxes in ``prompts``.

    Parameters
    ----------
    prompts : sequence
        Any prompts; only :class:`Box3D` and :class:`Box2D` count (a 2D image's boxes get
        ``z = 0``; a :class:`Box2D` on a slice gets its ``z``).

    Returns
    -------
    tuple of two (z, y, x) tuples, or None
        ``(lo, hi)`` voxel indices, inclusive; ``None`` when ``prompts`` hold no box.
    """
    los: list[tuple[int, int, int]] = []
    his: list[tuple[int, int, int]] = []
    for p in prompts:
        if isinstance(p, Box3D):
            los.append((p.z_min, p.y_min, p.x_min))
            his.append((p.z_max, p.y_max, p.x_max))
        elif isinstance(p, Box2D):
            z = 0 if p.z is None else int(p.z)
            los.append((z, p.y_min, p.x_min))
            his.append((z, p.y_max, p.x_max))
    if not los:
        return None
    lo = tuple(min(v[i] for v in los) for i in range(3))
    hi = tuple(max(v[i] for v in his) for i in range(3))
    return lo, hi  # type: ignore[return-value]


def extent_nested(inner: tuple[tuple[int, ...], tuple[int, ...]], outer: tuple[tuple[int, ...], tuple[int, ...]],
                  slack: int = 2) -> bool:
    """True when box ``inner`` lies inside box ``outer`` and is not the same box.

    Parameters
    ----------
    inner, outer : (lo, hi) pair of index tuples
        Inclusive corners as :func:`boxes_extent` gives them, ``(z, y, x)``.
    slack : int
        Voxels ``inner`` may stick out of ``outer`` on every side.

    Returns
    -------
    bool
        False when both boxes are identical.
    """
    if tuple(inner[0]) == tuple(outer[0]) and tuple(inner[1]) == tuple(outer[1]):
        return False
    return all(a >= b - slack for a, b in zip(inner[0], outer[0])) and \
        all(a <= b + slack for a, b in zip(inner[1], outer[1]))


def nested_inner(lab: int, objects: Mapping[int, Sequence[Any]],
                 done: Mapping[int, np.ndarray]) -> np.ndarray | None:
    """Union of the masks of the objects whose boxes nest inside object ``lab``'s box.

    Parameters
    ----------
    lab : int
        The outer object's label id.
    objects : mapping of int to sequence of prompts
        Each object's prompts (its boxes give its extent).
    done : mapping of int to np.ndarray
        Boolean masks (same spatial shape) of the objects already segmented.

    Returns
    -------
    np.ndarray or None
        Boolean mask, the union of the non-empty nested objects' masks; ``None`` when no
        object of ``done`` nests in ``lab`` (or ``lab`` has no box).
    """
    outer = boxes_extent(objects[lab])
    if outer is None:
        return None
    inner = None
    for other, m in done.items():
        ext = boxes_extent(objects[other])
        if other != lab and ext is not None and extent_nested(ext, outer) and m.any():
            inner = m.copy() if inner is None else (inner | m)
    return inner
