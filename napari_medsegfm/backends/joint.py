"""All objects of one step at once: the ``predict_labels`` hook, and the ``joint`` backend.

:func:`~napari_medsegfm.tasks.predict.predict_case` predicts objects one by one and
merges their masks, larger objects first. For a click step that merge can undo a
click: a positive click of object A inside object B's wrong voxels adds them to A's
mask, but when B is the smaller object it is written on top and takes them back, so
the same error draws the same click again. A backend that defines

``predict_labels(objects, prev_labels, cancel) -> labels``

(``objects``: label -> prompts as ``predict_case`` builds them; ``prev_labels``: the
step's ``prev_pred`` or ``None``) gets the whole step instead.
:class:`JointPredictor` implements it on top of any per-object ``predict``:

* box step (no ``prev_labels``): every object from its prompts; merged by the
  size of its box, larger boxes first, so an object whose box lies inside another's
  (a tumour core in its oedema, the left-ventricle cavity in the myocardium's box) is
  written on top of it;
* click step: the previous labels are the starting point; each object whose newest
  click the previous labels do not already satisfy is re-predicted from its prompts
  and only its *change* is applied: voxels it dropped become background (unless
  another object claims them), voxels it added become its own - whoever held them -
  smaller additions last so they win (optionally, ``box_reach``, only near the
  object's box); a click adds at most 0.6 x its box's volume (or the object's size, if larger) - the
  voxels of a larger addition nearest to the click; objects without a new click, and every voxel no
  object changed, keep their labels. The newest positive click's voxel always gets
  its object.

The ``joint`` backend is the weight-free ``classic`` graph cut with this joint step.
Measured on the development set (benchmarks/results/accuracy_dev.md) it is *not* better
than ``classic`` on average (better on some multi-object cases, worse on others), so it
is not the default; it is available by name for that comparison.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np

from ..types import Box3D, CancelToken, Point, Prompt, Scribble, box_volume, nested_inner
from .base import BackendStatus
from .classic import ClassicBackend

__all__ = ["JointPredictor", "JointClassicBackend", "newest_edit", "box_volume"]

log = logging.getLogger(__name__)


def newest_edit(prompts: Sequence[Prompt]) -> Point | Scribble | None:
    """The last click or scribble of an object's prompt list.

    Parameters
    ----------
    prompts : sequence of Prompt
        Oldest first.

    Returns
    -------
    Point, Scribble or None
        ``None`` when the list holds neither.
    """
    for p in reversed(list(prompts)):
        if isinstance(p, (Point, Scribble)):
            return p
    return None


#: how far (fraction of the box's size, per side) an addition may reach beyond an object's box;
#: ``None``: no limit (the default: 0.5 cut MR_pyradiomics_brain1 from 0.764 to 0.531 final DSC,
#: its clicks fell outside the reach, see benchmarks/results/accuracy_dev.md)
BOX_REACH: float | None = None


def _box_reach(prompts: Sequence[Prompt], shape: tuple[int, ...], reach: float | None = BOX_REACH
               ) -> tuple[slice, ...] | None:
    """Region an object's clicks may add to: its box's z range, the xy box grown by ``reach`` x its size.

    ``None`` when ``reach`` is ``None`` or the object has no 3D box.
    """
    if reach is None:
        return None
    for p in prompts:
        if isinstance(p, Box3D) and len(shape) == 3:
            gy = int(np.ceil(reach * (p.y_max - p.y_min + 1)))
            gx = int(np.ceil(reach * (p.x_max - p.x_min + 1)))
            return (slice(p.z_min, p.z_max + 1), slice(max(p.y_min - gy, 0), min(p.y_max + 1 + gy, shape[1])),
                    slice(max(p.x_min - gx, 0), min(p.x_max + 1 + gx, shape[2])))
    return None


#: a click may add at most this fraction of its object's box volume (or the object's own size)
ADD_LIMIT = 0.6


def _nearest(mask: np.ndarray, zyx: tuple[int, ...], n: int, spacing: Sequence[float]) -> np.ndarray:
    """The ``n`` voxels of ``mask`` nearest (mm) to ``zyx``."""
    idx = np.argwhere(mask)
    d2 = (((idx - np.asarray(zyx)) * np.asarray(spacing, dtype=float)) ** 2).sum(axis=1)
    keep = idx[np.argsort(d2, kind="stable")[:n]]
    out = np.zeros_like(mask)
    out[tuple(keep.T)] = True
    return out


def _satisfied(edit: Point | Scribble, mask: np.ndarray) -> bool:
    """Whether ``mask`` (the object's previous mask) already agrees with the edit."""
    if isinstance(edit, Point):
        return bool(mask[edit.zyx]) == edit.positive
    vox = tuple(np.asarray(edit.voxels).T)
    return bool(np.all(mask[vox] == edit.positive))


class JointPredictor:
    """Mixin: ``predict_labels`` for a backend with a per-object ``predict`` (see module docstring)."""

    def predict_labels(
        self,
        objects: Mapping[int, Sequence[Prompt]],
        prev_labels: np.ndarray | None,
        cancel: CancelToken | None = None,
    ) -> np.ndarray:
        """Labels of every object after one step.

        Parameters
        ----------
        objects : mapping label -> prompts
            Each object's prompts of this step, oldest first (its box, then its clicks).
        prev_labels : np.ndarray or None
            The previous labels ``(Z, Y, X)`` / ``(Y, X)`` (``prev_pred``); ``None`` on a box step.
        cancel : CancelToken, optional

        Returns
        -------
        np.ndarray
            Labels of the image's spatial shape, dtype of ``prev_labels`` (uint8 on a
            box step unless a label needs more).
        """
        cancel = cancel or CancelToken()
        shape = self._joint_shape()
        top = max([0, *objects] + ([int(prev_labels.max())] if prev_labels is not None and prev_labels.size else []))
        dtype = prev_labels.dtype if prev_labels is not None else (np.uint8 if top <= 255 else np.uint16)
        if prev_labels is None or not any(newest_edit(ps) is not None for ps in objects.values()):
            out = np.zeros(shape, dtype=dtype) if prev_labels is None else np.asarray(prev_labels).copy()
            order = sorted(objects, key=lambda lab: (-box_volume(objects[lab]), lab))
            masks: dict[int, np.ndarray] = {}
            # smallest boxes first, so an object whose box holds other boxes (oedema around a
            # tumour core, myocardium around the blood pool) is cut knowing what it surrounds
            for lab in reversed(order):
                cancel.check()
                inner = nested_inner(lab, objects, masks) if getattr(self, "nested", False) else None
                if inner is not None and callable(getattr(self, "predict_nested", None)):
                    m = self.predict_nested(list(objects[lab]), inner, cancel)  # type: ignore[attr-defined]
                else:
                    m = self.predict(list(objects[lab]), None, cancel)  # type: ignore[attr-defined]
                masks[lab] = np.asarray(m, dtype=bool)
            for lab in order:  # written largest first, nested objects on top
                m = masks[lab]
                if prev_labels is not None:
                    out[(out == lab) & ~m] = 0
                out[m] = lab
            return out
        prev = np.asarray(prev_labels)
        out = prev.copy()
        adds: list[tuple[int, np.ndarray]] = []
        keep_voxels: list[tuple[int, tuple[int, ...]]] = []
        for lab, ps in sorted(objects.items()):
            cancel.check()
            edit = newest_edit(ps)
            old = prev == lab
            if edit is None or _satisfied(edit, old):
                continue  # no new correction for this object: it keeps its voxels
            new = np.asarray(self.predict(list(ps), old, cancel), dtype=bool)  # type: ignore[attr-defined]
            removed = old & ~new
            out[removed & (out == lab)] = 0
            # an addition takes background voxels; another object's voxels only where the click
            # lies in that object (the click says that object is wrong there), so a refined outer
            # object (oedema, myocardium) does not swallow the objects nested in it
            owner = int(prev[edit.zyx]) if isinstance(edit, Point) else 0
            added = new & ~old & ((prev == 0) | (prev == owner))
            reach = _box_reach(ps, shape, getattr(self, "box_reach", BOX_REACH))
            if reach is not None:  # an object stays near its box: no flooding of the image
                inside = np.zeros(shape, dtype=bool)
                inside[reach] = True
                added &= inside
            limit = max(int(np.count_nonzero(old)), int(getattr(self, "add_limit", ADD_LIMIT) * box_volume(ps)))
            if isinstance(edit, Point) and edit.positive and limit and np.count_nonzero(added) > limit:
                # a flood, not a correction: keep the part of it nearest to the click
                added = _nearest(added, edit.zyx, limit, self._joint_spacing())
            if added.any():
                adds.append((lab, added))
            if isinstance(edit, Point) and edit.positive:
                keep_voxels.append((lab, edit.zyx))
        for lab, added in sorted(adds, key=lambda t: -int(np.count_nonzero(t[1]))):
            out[added] = lab
        for lab, zyx in keep_voxels:
            out[zyx] = lab
        return out

    def _joint_spacing(self) -> tuple[float, ...]:
        vol = getattr(self, "_vol", None)
        return tuple(vol.spacing) if vol is not None else (1.0,) * 3

    def _joint_shape(self) -> tuple[int, ...]:
        vol = getattr(self, "_vol", None)
        if vol is None:
            raise RuntimeError(f"{getattr(self, 'name', type(self).__name__)}: call set_image(volume) first")
        return tuple(vol.spatial_shape)


class JointClassicBackend(JointPredictor, ClassicBackend):
    """The ``classic`` graph cut with the joint multi-object step (``predict_labels``).

    Parameters
    ----------
    device : str, optional
        As for :class:`~napari_medsegfm.backends.classic.ClassicBackend` (CPU only).
    add_limit : float
        > 0; a click adds at most ``add_limit`` x its object's box volume in voxels (or the
        object's own size, if larger); the voxels of a larger addition nearest the click are kept.
    box_reach : float or None
        >= 0; a click's addition stays within the box's z range and its xy rectangle grown by
        ``box_reach`` x its size on each side; ``None``: no limit.
    **classic_options : float
        Options of :class:`~napari_medsegfm.backends.classic.ClassicBackend`.

    Raises
    ------
    ValueError
        ``add_limit <= 0`` or ``box_reach < 0``.
    """

    name = "joint"

    def __init__(self, device: str | None = None, *, add_limit: float = ADD_LIMIT,
                 box_reach: float | None = BOX_REACH, **classic_options: float) -> None:
        super().__init__(device, **classic_options)
        if add_limit <= 0 or (box_reach is not None and box_reach < 0):
            raise ValueError(f"add_limit must be > 0 and box_reach None or >= 0; got {add_limit}, {box_reach}")
        self.add_limit = float(add_limit)
        self.box_reach = None if box_reach is None else float(box_reach)

    @classmethod
    def status(cls) -> BackendStatus:
        """The classic backend's status under the name ``joint``.

        Returns
        -------
        BackendStatus
            The classic backend's readiness, device and weights.
        """
        st = ClassicBackend.status()
        st.name = cls.name
        if st.ready:
            st.message = "classic graph cuts; all objects of a step together, a click edits only its object's change"
        return st
