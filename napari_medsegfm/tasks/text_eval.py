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

from .instances import (
    IOU_THRESHOLD,
    InstanceScore,
    instance_f1,
    instances_to_labels,
    match_instances,
    relabel_sequential,
    split_instances,
    text_masks_to_segs,
)
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
