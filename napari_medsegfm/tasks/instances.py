"""Instance segmentation of the text task: splitting masks into instances, one-to-one matching, F1.

Used by :mod:`~napari_medsegfm.tasks.text_eval` (every name here is importable from
there too).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..utils import label_dtype_for

__all__ = ["IOU_THRESHOLD", "split_instances", "instances_to_labels", "text_masks_to_segs", "relabel_sequential",
           "match_instances", "InstanceScore", "instance_f1"]

#: IoU a predicted instance needs with its matched ground-truth instance to count.
IOU_THRESHOLD = 0.5


# ------------------------------------------------------------------------ instances
def split_instances(
    mask: np.ndarray,
    connectivity: int = 26,
    min_voxels: int = 0,
    dtype: Any = None,
) -> tuple[np.ndarray, int]:
    """Connected components of a binary mask, numbered ``1..n`` (largest first).

    Parameters
    ----------
    mask : np.ndarray
        Binary mask ``(Z, Y, X)`` or ``(Y, X)`` (non-zero = foreground).
    connectivity : int
        3D: 6, 18 or 26; 2D: 4 or 8 (26 -> 8 and 6 -> 4 are mapped for 2D input).
        26 is how the CVPR 2025 instance ground truth was made (``cc3d`` default).
    min_voxels : int
        Components smaller than this are dropped (background).
    dtype : numpy dtype, optional
        Output dtype; default the smallest unsigned type holding ``n``.

    Returns
    -------
    labels, n : np.ndarray, int
        Label image of the mask's shape and the number of components kept.
    """
    import cc3d

    m = np.asarray(mask)
    if m.ndim not in (2, 3):
        raise ValueError(f"split_instances: mask must be 2D or 3D; got shape {m.shape}")
    if m.ndim == 2:
        connectivity = {26: 8, 18: 8, 6: 4}.get(connectivity, connectivity)
        if connectivity not in (4, 8):
            raise ValueError(f"2D connectivity must be 4 or 8; got {connectivity}")
    elif connectivity not in (6, 18, 26):
        raise ValueError(f"3D connectivity must be 6, 18 or 26; got {connectivity}")
    binary = (m != 0).astype(np.uint8)
    cc, n = cc3d.connected_components(binary, connectivity=connectivity, return_N=True)
    if n == 0:
        return np.zeros(m.shape, dtype=dtype or np.uint8), 0
    sizes = np.bincount(cc.ravel(), minlength=n + 1)
    sizes[0] = 0
    order = np.argsort(-sizes[1:], kind="stable") + 1  # component ids, largest first
    keep = order[sizes[order] >= max(int(min_voxels), 1)]
    lut = np.zeros(n + 1, dtype=np.int64)
    lut[keep] = np.arange(1, len(keep) + 1)
    k = len(keep)
    out_dtype = np.dtype(dtype) if dtype is not None else label_dtype_for(k)
    return lut[cc].astype(out_dtype, copy=False), k


def instances_to_labels(
    instances: np.ndarray,
    labels: np.ndarray,
    first_label: int,
    overwrite: bool = False,
) -> list[int]:
    """Write an instance image into a label image as new labels ``first_label, first_label+1, ...``.

    Parameters
    ----------
    instances : np.ndarray
        ``1..n`` per component (from :func:`split_instances`), 0 background.
    labels : np.ndarray
        Label image of the same shape, modified in place; must fit the new labels.
    first_label : int
        Label of instance 1.
    overwrite : bool
        Let instances take voxels of other objects (else only background is written).

    Returns
    -------
    list of int
        The label ids written, in instance order.
    """
    inst = np.asarray(instances)
    if inst.shape != labels.shape:
        raise ValueError(f"instances shape {inst.shape} differs from labels shape {labels.shape}")
    n = int(inst.max()) if inst.size else 0
    if n == 0:
        return []
    last = first_label + n - 1
    if first_label < 1 or last > np.iinfo(labels.dtype).max:
        raise ValueError(
            f"labels {first_label}..{last} do not fit a {labels.dtype} label image; "
            f"use a wider dtype (napari_medsegfm.utils.label_dtype_for({last}))"
        )
    fg = inst > 0
    if not overwrite:
        fg &= labels == 0
    labels[fg] = (inst[fg].astype(np.int64) + (first_label - 1)).astype(labels.dtype)
    return list(range(first_label, last + 1))


def text_masks_to_segs(
    masks: Mapping[int, np.ndarray],
    instance_labels: Sequence[int],
    shape: tuple[int, ...],
    connectivity: int = 26,
) -> np.ndarray:
    """Label image of a text-task prediction with instance classes split into components.

    Semantic classes keep their label id (larger masks written first, smaller ones on
    top). Each class in ``instance_labels`` (CVPR25 ``instance_label = 1``) is split with
    :func:`split_instances` and its components get consecutive ids after the highest
    semantic id: with the usual single instance class ``1`` and no semantic class, the
    components are ``1..n`` like the challenge's instance ground truth.

    Parameters
    ----------
    masks : mapping
        Label id -> bool mask of ``shape``.
    instance_labels : sequence of int
        The label ids whose masks are instance classes.
    shape : tuple
        Spatial shape ``(Z, Y, X)`` / ``(Y, X)``.
    """
    inst = [int(v) for v in instance_labels if int(v) in masks]
    sem = [lab for lab in masks if lab not in inst]
    split = {lab: split_instances(masks[lab], connectivity=connectivity) for lab in inst}
    total = sum(n for _, n in split.values())
    first = (max(sem) + 1) if sem else 1
    segs = np.zeros(shape, dtype=label_dtype_for(max([first + total - 1, *sem, 0])))
    for lab in sorted(sem, key=lambda v: (-int(np.count_nonzero(masks[v])), v)):
        segs[np.asarray(masks[lab], dtype=bool)] = lab
    nxt = first
    for lab in inst:
        comp, n = split[lab]
        if n:
            instances_to_labels(comp, segs, nxt, overwrite=True)
        nxt += n
    return segs


def relabel_sequential(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Renumber the non-zero values of ``labels`` to ``1..n`` in increasing order of value.

    Parameters
    ----------
    labels : np.ndarray
        Integer labels, any shape.

    Returns
    -------
    relabelled : np.ndarray
        Same shape, the smallest unsigned dtype holding ``n``.
    n : int
        Number of distinct non-zero values.
    """
    lab = np.asarray(labels)
    vals = np.unique(lab)
    vals = vals[vals != 0]
    if vals.size == 0:
        return np.zeros(lab.shape, dtype=np.uint8), 0
    out = np.searchsorted(vals, lab) + 1
    out[lab == 0] = 0
    return out.astype(label_dtype_for(len(vals)), copy=False), int(vals.size)


def _iou_matrix(gt: np.ndarray, pred: np.ndarray, n_gt: int, n_pred: int) -> np.ndarray:
    """IoU of every (gt instance, pred instance) pair, ``(n_gt, n_pred)`` (sequential labels)."""
    g = gt.ravel().astype(np.int64)
    p = pred.ravel().astype(np.int64)
    both = (g > 0) & (p > 0)
    inter = np.zeros((n_gt + 1, n_pred + 1), dtype=np.float64)
    if both.any():
        pairs, counts = np.unique(g[both] * (n_pred + 1) + p[both], return_counts=True)
        inter[pairs // (n_pred + 1), pairs % (n_pred + 1)] = counts
    size_g = np.bincount(g, minlength=n_gt + 1).astype(np.float64)
    size_p = np.bincount(p, minlength=n_pred + 1).astype(np.float64)
    union = size_g[:, None] + size_p[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
    return iou[1:, 1:]


def match_instances(
    gt: np.ndarray,
    pred: np.ndarray,
    iou_threshold: float = IOU_THRESHOLD,
) -> tuple[list[tuple[int, int, float]], int, int]:
    """One-to-one matching of instances by IoU (Hungarian assignment).

    Parameters
    ----------
    gt, pred : np.ndarray
        Instance label images of one shape (any non-zero values; renumbered internally).
    iou_threshold : float
        A matched pair counts as a true positive when its IoU >= this.

    Returns
    -------
    matches, n_gt, n_pred
        ``matches`` lists ``(gt_index, pred_index, iou)`` of the true positives, with
        indices into the sequentially renumbered instances (1-based, in order of the
        original label values).
    """
    from scipy.optimize import linear_sum_assignment

    g, n_gt = relabel_sequential(gt)
    p, n_pred = relabel_sequential(pred)
    if g.shape != p.shape:
        raise ValueError(f"instance images differ in shape: gt {g.shape} vs pred {p.shape}")
    if n_gt == 0 or n_pred == 0:
        return [], n_gt, n_pred
    iou = _iou_matrix(g, p, n_gt, n_pred)
    # maximize the number of pairs above threshold first, then their IoU
    n_min = min(n_gt, n_pred)
    cost = -(iou >= iou_threshold).astype(np.float64) - iou / (2.0 * n_min)
    rows, cols = linear_sum_assignment(cost)
    matches = [(int(r) + 1, int(c) + 1, float(iou[r, c])) for r, c in zip(rows, cols) if iou[r, c] >= iou_threshold]
    return matches, n_gt, n_pred


@dataclass
class InstanceScore:
    """F1 of one instance case: ``tp`` matched pairs with IoU >= threshold.

    Parameters
    ----------
    f1, precision, recall : float
        Instance-level scores in ``[0, 1]``.
    tp, fp, fn : int
        Matched pairs, unmatched predictions, unmatched ground-truth instances.
    n_gt, n_pred : int
        Instances in the ground truth and in the prediction.
    mean_matched_iou : float
        Mean IoU of the matched pairs (NaN without any).
    """

    f1: float
    precision: float
    recall: float
    tp: int
    fp: int
    fn: int
    n_gt: int
    n_pred: int
    mean_matched_iou: float = float("nan")


def instance_f1(
    gt: np.ndarray,
    pred: np.ndarray,
    iou_threshold: float = IOU_THRESHOLD,
    *,
    split_binary_pred: bool = True,
    pred_connectivity: int = 6,
) -> InstanceScore:
    """F1 of predicted instances against ground-truth instances at IoU >= ``iou_threshold``.

    Parameters
    ----------
    gt : np.ndarray
        Ground-truth instance labels (each non-zero value is one instance).
    pred : np.ndarray
        Predicted instance labels. A *binary* prediction (a single non-zero value) is
        split into connected components first when ``split_binary_pred`` (the official
        scorer does this with 6-connectivity).
    iou_threshold : float
        0.5 in the challenge.

    Returns
    -------
    InstanceScore
        Precision ``tp / n_pred``, recall ``tp / n_gt``, F1 their harmonic mean; all 0
        when there is no predicted instance (as the challenge scores it).
    """
    g = np.asarray(gt)
    p = np.asarray(pred)
    if g.shape != p.shape:
        raise ValueError(f"instance_f1: shapes differ: gt {g.shape} vs pred {p.shape}")
    if split_binary_pred:
        vals = np.unique(p)
        if vals.size == 2 and vals[0] == 0:
            p, _n = split_instances(p, connectivity=pred_connectivity)
    matches, n_gt, n_pred = match_instances(g, p, iou_threshold)
    tp = len(matches)
    fp = n_pred - tp
    fn = n_gt - tp
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_gt if n_gt else 0.0
    f1 = 2 * precision * recall / (precision + recall) if (precision + recall) > 0 else 0.0
    miou = float(np.mean([m[2] for m in matches])) if matches else float("nan")
    return InstanceScore(f1, precision, recall, tp, fp, fn, n_gt, n_pred, miou)
