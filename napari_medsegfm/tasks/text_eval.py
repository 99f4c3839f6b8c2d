"""Instance splitting and scoring of the CVPR 2025 text-guided segmentation task.

* :func:`split_instances` — one label per connected component (cc3d); what a session
  does with an *instance* text class ("lesions", "nuclei") and what ``medsegfm
  predict`` writes for ``instance_label = 1`` cases.
* :func:`instance_f1` — F1 at IoU >= 0.5 with one-to-one (Hungarian) matching of
  predicted and ground-truth instances.
* :func:`semantic_scores` — per-class DSC/NSD (via :mod:`~napari_medsegfm.tasks.metrics`)
  over the classes named in ``text_prompts``.
* :func:`score_text_case` / :func:`evaluate_text` — a whole case / folder, the way the
  challenge scores the text task: semantic cases (``instance_label = 0``) by mean DSC
  and NSD over the prompted classes (classes empty in both ground truth and
  prediction are skipped), instance cases (``instance_label = 1``) by F1; a binary
  instance prediction is split into components first (6-connectivity, as the official
  scorer does).

Arrays are ``(Z, Y, X)`` (or ``(Y, X)``); spacing for NSD follows
:func:`~napari_medsegfm.tasks.metrics.scorer_spacing` (``"official"``: the npz ``(x, y, z)``
value as-is, like the challenge; ``"physical"``: array axis order).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..utils import label_dtype_for
from .metrics import per_class_dsc, per_class_nsd, scorer_spacing

__all__ = [
    "split_instances",
    "instances_to_labels",
    "text_masks_to_segs",
    "relabel_sequential",
    "match_instances",
    "instance_f1",
    "InstanceScore",
    "semantic_scores",
    "TextCaseScore",
    "score_text_case",
    "evaluate_text",
    "summarize_text",
    "format_text_table",
    "IOU_THRESHOLD",
]

log = logging.getLogger(__name__)

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


# ------------------------------------------------------------------------- semantic
def semantic_scores(
    gt: np.ndarray,
    seg: np.ndarray,
    label_ids: Sequence[int],
    spacing: Sequence[float],
    tolerance: float = 2.0,
) -> tuple[dict[int, float], dict[int, float]]:
    """Per-class DSC and NSD over ``label_ids`` (NaN where a class is empty in both).

    Parameters
    ----------
    gt, seg : np.ndarray
        Integer labels of one shape, ``(Z, Y, X)`` or ``(Y, X)``.
    label_ids : sequence of int
        The prompted classes.
    spacing : sequence of float
        Voxel size in mm, array axis order (as :func:`~napari_medsegfm.tasks.metrics.nsd` wants it).
    tolerance : float
        NSD tolerance in mm.

    Returns
    -------
    dsc, nsd : dict of int to float
        Label -> score.
    """
    labs = [int(v) for v in label_ids]
    d = per_class_dsc(gt, seg, labs)
    n = per_class_nsd(gt, seg, spacing, tolerance, labs)
    return d, n


def _nanmean(vals: Sequence[float]) -> float:
    v = [x for x in vals if x is not None and not math.isnan(x)]
    return float(np.mean(v)) if v else float("nan")


# ----------------------------------------------------------------------------- cases
@dataclass
class TextCaseScore:
    """Scores of one text-task case.

    Parameters
    ----------
    name : str
        Case name.
    instance : bool
        An instance case (scored by F1) rather than a semantic one (DSC/NSD).
    labels : list of int
        The prompted class ids.
    dsc, nsd, f1 : float
        Case scores (NaN where they do not apply).
    per_class_dsc, per_class_nsd : dict of int to float
        Semantic cases: per class.
    instance_score : InstanceScore, optional
        Instance cases: the matching details.
    texts : dict of int to str
        Class id -> prompt text.
    error : str
        Why the case scored 0 (missing prediction), else empty.
    """

    name: str
    instance: bool
    labels: list[int] = field(default_factory=list)
    dsc: float = float("nan")
    nsd: float = float("nan")
    f1: float = float("nan")
    per_class_dsc: dict[int, float] = field(default_factory=dict)
    per_class_nsd: dict[int, float] = field(default_factory=dict)
    instance_score: InstanceScore | None = None
    texts: dict[int, str] = field(default_factory=dict)
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (:func:`dataclasses.asdict`, with the dict keys turned into strings)."""
        d = asdict(self)
        d["per_class_dsc"] = {str(k): v for k, v in self.per_class_dsc.items()}
        d["per_class_nsd"] = {str(k): v for k, v in self.per_class_nsd.items()}
        d["texts"] = {str(k): v for k, v in self.texts.items()}
        return d


def _text_prompts_dict(text_prompts: Any) -> dict[str, Any]:
    tp = text_prompts
    if isinstance(tp, np.ndarray) and tp.dtype == object and tp.shape == ():
        tp = tp.item()
    if not isinstance(tp, Mapping):
        raise ValueError(f"text_prompts must be a dict {{'1': text, ..., 'instance_label': 0|1}}; got {type(tp).__name__}")
    return dict(tp)


def score_text_case(
    gts: np.ndarray,
    segs: np.ndarray,
    text_prompts: Any,
    npz_spacing: Sequence[float] | None,
    *,
    name: str = "",
    spacing_order: str = "official",
    tolerance: float = 2.0,
    iou_threshold: float = IOU_THRESHOLD,
) -> TextCaseScore:
    """Score one text-task case.

    Parameters
    ----------
    gts, segs : np.ndarray
        Ground truth and prediction, same shape ``(Z, Y, X)`` / ``(Y, X)``.
    text_prompts : dict or 0-d object array
        ``{"1": text, ..., "instance_label": 0|1}``: the prompted class ids and the task kind.
    npz_spacing : sequence of float or None
        The npz ``spacing`` member, ``(x, y, z)``.
    spacing_order : {"official", "physical"}
        See :func:`~napari_medsegfm.tasks.metrics.scorer_spacing`.
    """
    tp = _text_prompts_dict(text_prompts)
    inst = bool(int(tp.get("instance_label", 0) or 0))
    labels = sorted(int(k) for k in tp if str(k) != "instance_label")
    texts = {int(k): str(v) for k, v in tp.items() if str(k) != "instance_label"}
    g = np.asarray(gts)
    s = np.asarray(segs)
    if g.shape != s.shape:
        raise ValueError(f"{name or 'case'}: segs shape {s.shape} differs from gts shape {g.shape}")
    res = TextCaseScore(name=name, instance=inst, labels=labels, texts=texts)
    if inst:
        sc = instance_f1(g, s, iou_threshold)
        res.f1 = sc.f1
        res.instance_score = sc
        return res
    sp = scorer_spacing(npz_spacing, g.ndim, spacing_order)
    d, n = semantic_scores(g, s, labels, sp, tolerance)
    res.per_class_dsc, res.per_class_nsd = d, n
    res.dsc = _nanmean(list(d.values()))
    res.nsd = _nanmean(list(n.values()))
    return res


def _load(path: Path) -> dict[str, Any]:
    from ..io import safe_load_npz  # the restricted unpickler for text_prompts

    return safe_load_npz(path)


def evaluate_text(
    segs_dir: str | Path,
    gts_dir: str | Path,
    imgs_dir: str | Path,
    *,
    spacing_order: str = "official",
    tolerance: float = 2.0,
    iou_threshold: float = IOU_THRESHOLD,
    names: Sequence[str] | None = None,
) -> list[TextCaseScore]:
    """Score every prediction in ``segs_dir`` against ``gts_dir`` (text prompts from ``imgs_dir``).

    Each case ``NAME.npz`` needs ``segs_dir/NAME.npz`` (``segs``), ``gts_dir/NAME.npz``
    (``gts``) and ``imgs_dir/NAME.npz`` (``text_prompts``, ``spacing``); a ground-truth
    file holding ``text_prompts`` itself may stand in for the image file. A missing
    prediction scores 0 (as a failed case does in the challenge) and is reported in
    ``error``.

    Parameters
    ----------
    segs_dir, gts_dir, imgs_dir : path-like
        Predictions, ground truth, images.
    spacing_order : {"official", "physical"}
        See :func:`~napari_medsegfm.tasks.metrics.scorer_spacing`.
    tolerance : float
        NSD tolerance in mm.
    iou_threshold : float
        IoU a predicted instance needs to match a ground-truth one.
    names : sequence of str, optional
        The cases to score (default every ``.npz`` in ``gts_dir``).

    Returns
    -------
    list of TextCaseScore
        One per case, in order.

    Raises
    ------
    FileNotFoundError
        A missing folder, or no ground-truth files.
    ValueError
        A case without ``text_prompts`` or ``gts``, or with shapes that differ.
    """
    segs_dir, gts_dir, imgs_dir = Path(segs_dir), Path(gts_dir), Path(imgs_dir)
    for d, what in ((gts_dir, "ground-truth"), (imgs_dir, "image")):
        if not d.is_dir():
            raise FileNotFoundError(f"{what} folder not found: {d}")
    case_names = list(names) if names is not None else sorted(p.name for p in gts_dir.glob("*.npz"))
    if not case_names:
        raise FileNotFoundError(f"no .npz ground-truth files in {gts_dir}")
    out: list[TextCaseScore] = []
    for cn in case_names:
        fname = cn if cn.endswith(".npz") else cn + ".npz"
        stem = fname[:-4]
        gt_m = _load(gts_dir / fname)
        img_path = imgs_dir / fname
        meta = _load(img_path) if img_path.is_file() else gt_m
        if "text_prompts" not in meta:
            raise ValueError(f"{img_path}: no 'text_prompts' (needed to know the classes and the task kind)")
        if "gts" not in gt_m:
            raise ValueError(f"{gts_dir / fname}: no 'gts' member")
        spacing = meta.get("spacing", gt_m.get("spacing"))
        seg_path = segs_dir / fname
        if not seg_path.is_file():
            tp = _text_prompts_dict(meta["text_prompts"])
            inst = bool(int(tp.get("instance_label", 0) or 0))
            labels = sorted(int(k) for k in tp if str(k) != "instance_label")
            out.append(TextCaseScore(stem, inst, labels, dsc=0.0 if not inst else float("nan"),
                                     nsd=0.0 if not inst else float("nan"), f1=0.0 if inst else float("nan"),
                                     error=f"no prediction {seg_path}"))
            continue
        seg_m = _load(seg_path)
        if "segs" not in seg_m:
            raise ValueError(f"{seg_path}: no 'segs' member")
        out.append(score_text_case(gt_m["gts"], seg_m["segs"], meta["text_prompts"], spacing, name=stem,
                                   spacing_order=spacing_order, tolerance=tolerance, iou_threshold=iou_threshold))
    return out


def summarize_text(results: Sequence[TextCaseScore]) -> dict[str, float]:
    """Means over cases: DSC/NSD over semantic cases, F1 over instance cases.

    Parameters
    ----------
    results : sequence of TextCaseScore
        From :func:`evaluate_text`.

    Returns
    -------
    dict of str to float
        ``cases``, ``semantic_cases``, ``instance_cases``, ``DSC``, ``NSD``, ``F1`` (NaN-skipping means).
    """
    sem = [r for r in results if not r.instance]
    ins = [r for r in results if r.instance]
    return {
        "cases": float(len(results)),
        "semantic_cases": float(len(sem)),
        "instance_cases": float(len(ins)),
        "DSC": _nanmean([r.dsc for r in sem]),
        "NSD": _nanmean([r.nsd for r in sem]),
        "F1": _nanmean([r.f1 for r in ins]),
    }


def format_text_table(results: Sequence[TextCaseScore], title: str = "") -> str:
    """Markdown table of per-case scores plus the summary row.

    Parameters
    ----------
    results : sequence of TextCaseScore
        From :func:`evaluate_text`.
    title : str
        A ``###`` heading, if given.

    Returns
    -------
    str
    """

    def f(v: float) -> str:
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"

    lines = []
    if title:
        lines += [f"### {title}", ""]
    lines += ["| case | kind | classes | DSC | NSD | F1 | note |", "|---|---|---|---|---|---|---|"]
    for r in results:
        note = r.error
        if r.instance_score is not None:
            s = r.instance_score
            note = note or f"tp {s.tp}, fp {s.fp}, fn {s.fn}"
        lines.append(f"| {r.name} | {'instance' if r.instance else 'semantic'} | {len(r.labels)} | "
                     f"{f(r.dsc)} | {f(r.nsd)} | {f(r.f1)} | {note} |")
    s = summarize_text(results)
    lines.append(f"| **mean** | {int(s['semantic_cases'])} sem / {int(s['instance_cases'])} inst | | "
                 f"{f(s['DSC'])} | {f(s['NSD'])} | {f(s['F1'])} | |")
    return "\n".join(lines)
