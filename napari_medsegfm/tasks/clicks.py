"""Click simulation of the CVPR 2025 interactive protocol.

For each class (the labels present in the ground truth, in increasing order):

1. the error mask is where the prediction and the ground truth disagree for that class;
2. its largest 26-connected component (8-connected in 2D) is taken, ties going to
   the component met first in raster order;
3. the click goes to that component's Euclidean distance-transform maximum, in voxel
   units, the transform computed on the component's bounding box padded by 25 %
   (at least one voxel), so the box border counts as outside; among equal maxima one is
   drawn with a fixed seed (42), as the challenge's evaluator does;
4. it is a foreground click if the voxel is inside the ground truth, background otherwise.

A class without error gets no click. With an empty prediction (a box-less case's
first click) the error is the class itself, so the click lands at the distance
maximum of the class's largest component.

Clicks are stored like the challenge's npz: ``clicks[i] = {'fg': [[z, y, x], ...],
'bg': [...]}`` and ``clicks_order[i] = ['fg', 'bg', ...]`` for the ``i``-th class.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cc3d
import numpy as np
from scipy import ndimage

__all__ = ["SimulatedClick", "largest_error_component", "click_position", "simulate_click",
           "simulate_clicks", "empty_clicks"]


@dataclass(frozen=True)
class SimulatedClick:
    """One simulated click and where it came from.

    Parameters
    ----------
    label : int
        The class (label id) it corrects.
    position : tuple of int
        Array indices ``(z, y, x)`` or ``(y, x)``.
    kind : str
        ``"fg"`` (a missed region: add) or ``"bg"`` (a false region: remove).
    component_size : int
        Voxels of the error component it was placed in.
    distance : float
        Distance-transform value at the click, in voxels (its depth inside the component).
    """

    label: int
    position: tuple[int, ...]
    kind: str  # "fg" | "bg"
    component_size: int
    distance: float  # distance-transform value at the click (voxels)


def _bbox(mask: np.ndarray) -> tuple[slice, ...] | None:
    objs = ndimage.find_objects(mask.astype(np.uint8))
    return objs[0] if objs and objs[0] is not None else None


def largest_error_component(error: np.ndarray) -> tuple[np.ndarray, tuple[slice, ...], int] | None:
    """Largest connected component of a bool ``error`` mask.

    Connectivity is 26 in 3D and 8 in 2D. The work is done in the bounding box of the
    error voxels.

    Parameters
    ----------
    error : np.ndarray
        Bool ``(Z, Y, X)`` or ``(Y, X)``: the voxels where prediction and ground truth differ.

    Returns
    -------
    (component, roi, size) or None
        ``component`` is a bool array of the shape of ``error[roi]``, ``roi`` a tuple of
        slices, ``size`` its voxel count; ``None`` if there is no error.
    """
    roi = _bbox(error)
    if roi is None:
        return None
    sub = np.ascontiguousarray(error[roi], dtype=np.uint8)
    conn = 26 if sub.ndim == 3 else 8
    lab = cc3d.connected_components(sub, connectivity=conn)
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    best = int(np.argmax(sizes))
    return lab == best, roi, int(sizes[best])


def click_position(component: np.ndarray, seed: int = 42) -> tuple[tuple[int, ...], float]:
    """Distance-transform maximum of a bool ``component``, where the challenge clicks.

    The transform (unit voxels) is computed on the component's bounding box padded by
    25 % per axis (at least 1 voxel). Ties are broken by a draw with ``seed`` among the
    maxima in raster order, as the challenge does.

    Parameters
    ----------
    component : np.ndarray
        Bool ``(Z, Y, X)`` or ``(Y, X)``, non-empty.
    seed : int
        Seed of the tie-breaking draw (``numpy.random.RandomState``).

    Returns
    -------
    position : tuple of int
        Indices into ``component``, array axis order.
    distance : float
        The transform's value there, in voxels.

    Raises
    ------
    ValueError
        ``component`` is empty.
    """
    box = _bbox(component)
    if box is None:
        raise ValueError("click_position: the component is empty")
    crop = component[box]
    shape = np.asarray(crop.shape)
    pad = np.maximum((shape * 0.25).astype(int), 1)
    padded = np.pad(crop, [(int(p), int(p)) for p in pad])
    edt = ndimage.distance_transform_edt(padded)
    inner = edt[tuple(slice(int(p), int(p) + int(s)) for p, s in zip(pad, shape))]
    vmax = inner.max()
    cand = np.argwhere(inner == vmax)
    pick = cand[np.random.RandomState(seed).choice(len(cand))]
    pos = tuple(int(b.start + c) for b, c in zip(box, pick))
    return pos, float(vmax)


def simulate_click(gt: np.ndarray, seg: np.ndarray, label: int) -> SimulatedClick | None:
    """The next click for ``label`` given ground truth ``gt`` and prediction ``seg``.

    Parameters
    ----------
    gt, seg : np.ndarray
        Label images of the same spatial shape ``(Z, Y, X)`` or ``(Y, X)``.
    label : int
        The class.

    Returns
    -------
    SimulatedClick or None
        ``None`` when the prediction of ``label`` is already perfect.
    """
    if gt.shape != seg.shape:
        raise ValueError(f"simulate_click: gts {gt.shape} and segs {seg.shape} differ in shape")
    g = gt == label
    s = seg == label
    # error voxels lie in the union of both masks: work in that box only
    roi = _bbox(g | s)
    if roi is None:
        return None
    err = g[roi] != s[roi]
    found = largest_error_component(err)
    if found is None:
        return None
    comp, croi, size = found
    pos_c, dist = click_position(comp)
    pos = tuple(r.start + c.start + p for r, c, p in zip(roi, croi, pos_c))
    kind = "fg" if g[pos] else "bg"
    return SimulatedClick(label=int(label), position=pos, kind=kind, component_size=size, distance=dist)


def empty_clicks(n_classes: int) -> tuple[list[dict[str, list[list[int]]]], list[list[str]]]:
    """Fresh ``(clicks, clicks_order)`` for ``n_classes`` classes.

    Parameters
    ----------
    n_classes : int
        Number of classes.

    Returns
    -------
    clicks : list of dict
        ``[{"fg": [], "bg": []}, ...]``, one per class.
    clicks_order : list of list of str
        One empty list per class (filled with ``"fg"``/``"bg"`` as clicks are added).
    """
    return [{"fg": [], "bg": []} for _ in range(n_classes)], [[] for _ in range(n_classes)]


def simulate_clicks(
    gt: np.ndarray,
    seg: np.ndarray,
    clicks: list[dict[str, list[list[int]]]],
    clicks_order: list[list[str]],
    labels: Sequence[int] | None = None,
) -> list[SimulatedClick | None]:
    """Add one click per class with an error, in place, like one round of the challenge.

    Parameters
    ----------
    gt, seg : np.ndarray
        Ground truth and current prediction (label images, same shape).
    clicks, clicks_order : list
        Per class ``i`` (``labels[i]``): ``{'fg': [...], 'bg': [...]}`` and the
        order list; both are extended in place.
    labels : sequence of int, optional
        The classes, default the sorted non-zero labels of ``gt``.

    Returns
    -------
    list
        The click added for each class (``None`` where the class needed none).
    """
    labs = [int(v) for v in (labels if labels is not None else np.unique(gt)) if v != 0]
    if len(clicks) != len(labs) or len(clicks_order) != len(labs):
        raise ValueError(
            f"simulate_clicks: {len(labs)} classes but {len(clicks)} click dicts and "
            f"{len(clicks_order)} order lists"
        )
    added: list[SimulatedClick | None] = []
    for i, lab in enumerate(labs):
        c = simulate_click(gt, seg, lab)
        if c is not None:
            clicks[i][c.kind].append(list(c.position))
            clicks_order[i].append(c.kind)
        added.append(c)
    return added
