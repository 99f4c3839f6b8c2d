"""What an evaluation run produces: the per-case results and their summary, table and CSV.

:func:`~napari_medsegfm.tasks.evaluation.evaluate` fills :class:`CaseResult` objects;
every name here is importable from :mod:`~napari_medsegfm.tasks.evaluation` too.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import metrics

__all__ = ["EvalCase", "CaseResult", "summarize", "format_table", "write_csv"]


@dataclass
class EvalCase:
    """One case of an evaluation run.

    Parameters
    ----------
    name : str
        Case name (the image file's stem).
    image_path : Path
        The image npz (CVPR 2025 layout).
    gt_path : Path, optional
        Its ground-truth npz; ``None``: ``gts`` is inside the image file.
    """

    name: str
    image_path: Path
    gt_path: Path | None = None


@dataclass
class CaseResult:
    """Scores of one case over the steps (index 0 is the box step, then one per click).

    Parameters
    ----------
    name : str
        Case name.
    n_classes : int
        Classes scored.
    box_source : str
        ``"file"``, ``"synthesized"`` or ``"none"``.
    dsc, nsd : list of float
        Mean DSC and NSD per step (NSD with the official spacing order).
    nsd_physical : list of float
        NSD per step with the physically correct spacing order.
    seconds : list of float
        Prediction time per step, in seconds.
    clicks, clicks_order : list
        The simulated clicks, in the CVPR file's form (``[{"fg": [[z, y, x], ...], "bg": [...]}, ...]``).
    n_clicks : int
        Click steps the AUCs cover.
    error : str
        Why the case failed (empty when it ran).
    """

    name: str
    n_classes: int = 0
    box_source: str = ""  # "file" | "synthesized" | "none"
    dsc: list[float] = field(default_factory=list)
    nsd: list[float] = field(default_factory=list)  # official spacing order
    nsd_physical: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    clicks: list[dict[str, list[list[int]]]] = field(default_factory=list)
    clicks_order: list[list[str]] = field(default_factory=list)
    n_clicks: int = 5
    error: str = ""

    @property
    def dsc_auc(self) -> float:
        """Area under the DSC of the last ``n_clicks`` steps (:func:`~napari_medsegfm.tasks.metrics.auc`); NaN without steps."""
        return metrics.auc(self.dsc, self.n_clicks) if self.dsc else float("nan")

    @property
    def nsd_auc(self) -> float:
        """Area under the NSD of the last ``n_clicks`` steps; NaN without steps."""
        return metrics.auc(self.nsd, self.n_clicks) if self.nsd else float("nan")

    @property
    def nsd_auc_physical(self) -> float:
        """Area under the physical-order NSD of the last ``n_clicks`` steps; NaN without steps."""
        return metrics.auc(self.nsd_physical, self.n_clicks) if self.nsd_physical else float("nan")

    @property
    def dsc_final(self) -> float:
        """DSC of the last step; NaN without steps."""
        return self.dsc[-1] if self.dsc else float("nan")

    @property
    def nsd_final(self) -> float:
        """NSD of the last step; NaN without steps."""
        return self.nsd[-1] if self.nsd else float("nan")

    @property
    def nsd_final_physical(self) -> float:
        """Physical-order NSD of the last step; NaN without steps."""
        return self.nsd_physical[-1] if self.nsd_physical else float("nan")

    @property
    def seconds_per_step(self) -> float:
        """Mean over the steps that ran (a box-less case's step 0 did not)."""
        ran = [s for i, s in enumerate(self.seconds) if not (i == 0 and self.box_source == "none")]
        return float(np.mean(ran)) if ran else float("nan")

    def row(self) -> dict[str, Any]:
        """Flat dict for CSV/JSON."""
        r: dict[str, Any] = {"case": self.name, "n_classes": self.n_classes, "boxes": self.box_source}
        r.update(DSC_AUC=self.dsc_auc, NSD_AUC=self.nsd_auc, DSC_Final=self.dsc_final,
                 NSD_Final=self.nsd_final, NSD_AUC_physical=self.nsd_auc_physical,
                 NSD_Final_physical=self.nsd_final_physical, sec_per_step=self.seconds_per_step,
                 TotalRunningTime=float(np.sum(self.seconds)) if self.seconds else float("nan"))
        for i, v in enumerate(self.dsc):
            r[f"DSC_{i + 1}"] = v
        for i, v in enumerate(self.nsd):
            r[f"NSD_{i + 1}"] = v
        for i, v in enumerate(self.nsd_physical):
            r[f"NSDphys_{i + 1}"] = v
        for i, v in enumerate(self.seconds):
            r[f"RunningTime_{i + 1}"] = v
        r["error"] = self.error
        return r


# -------------------------------------------------------------------------- reports
_SUMMARY_KEYS = ("DSC_AUC", "NSD_AUC", "DSC_Final", "NSD_Final", "NSD_Final_physical", "sec_per_step")


def summarize(results: Sequence[CaseResult]) -> dict[str, float]:
    """Mean of the case scores over the cases that ran (errors excluded).

    Parameters
    ----------
    results : sequence of CaseResult
        From :func:`evaluate`.

    Returns
    -------
    dict of str to float
        ``n_cases``, ``n_failed``, ``DSC_AUC``, ``NSD_AUC``, ``DSC_Final``, ``NSD_Final``,
        ``NSD_Final_physical``, ``sec_per_step`` and ``DSC_<step>`` (1-based) per step.
    """
    ok = [r for r in results if not r.error]
    out: dict[str, float] = {"n_cases": float(len(ok)), "n_failed": float(len(results) - len(ok))}
    rows = [r.row() for r in ok]
    for k in _SUMMARY_KEYS:
        vals = [float(row[k]) for row in rows if not math.isnan(float(row[k]))]
        out[k] = float(np.mean(vals)) if vals else float("nan")
    n = max((len(r.dsc) for r in ok), default=0)
    for i in range(n):
        vals = [r.dsc[i] for r in ok if i < len(r.dsc)]
        out[f"DSC_{i + 1}"] = float(np.mean(vals))
    return out


def _fmt(v: Any, nd: int = 3) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.{nd}f}"
    return str(v)


def format_table(results: Sequence[CaseResult], title: str = "") -> str:
    """Plain-text table: per case and mean DSC per step, AUCs, finals, seconds per step.

    Parameters
    ----------
    results : sequence of CaseResult
        From :func:`evaluate`.
    title : str
        First line, if given.

    Returns
    -------
    str
    """
    n = max((len(r.dsc) for r in results), default=0)
    head = ["case", "cls", "box"] + [f"DSC{i}" for i in range(n)] + [
        "DSC_AUC", "NSD_AUC", "DSC_fin", "NSD_fin", "NSDphys", "s/step"]
    rows = []
    for r in results:
        if r.error:
            rows.append([r.name, "-", "-"] + ["-"] * n + ["error: " + r.error[:60]] + [""] * 5)
            continue
        rows.append([r.name, str(r.n_classes), r.box_source] + [_fmt(v) for v in r.dsc] + [
            _fmt(r.dsc_auc), _fmt(r.nsd_auc), _fmt(r.dsc_final), _fmt(r.nsd_final),
            _fmt(r.nsd_final_physical), _fmt(r.seconds_per_step, 2)])
    s = summarize(results)
    if s["n_cases"]:
        rows.append(["MEAN", "", ""] + [_fmt(s.get(f"DSC_{i + 1}", float("nan"))) for i in range(n)] + [
            _fmt(s["DSC_AUC"]), _fmt(s["NSD_AUC"]), _fmt(s["DSC_Final"]), _fmt(s["NSD_Final"]),
            _fmt(s["NSD_Final_physical"]), _fmt(s["sec_per_step"], 2)])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)] if rows else [len(h) for h in head]
    lines = []
    if title:
        lines.append(title)
    lines.append("  ".join(h.ljust(w) for h, w in zip(head, widths)))
    lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        lines.append("  ".join(str(x).ljust(w) for x, w in zip(row, widths)))
    return "\n".join(lines)


def write_csv(results: Sequence[CaseResult], path: str | Path) -> Path:
    """Per-case rows plus a MEAN row, written atomically.

    Parameters
    ----------
    results : sequence of CaseResult
        From :func:`evaluate`.
    path : path-like
        The CSV file.

    Returns
    -------
    Path
        ``path``.
    """
    from ..io.atomic import atomic_writer

    rows = [r.row() for r in results]
    keys: list[str] = []
    for row in rows:
        for k in row:
            if k not in keys:
                keys.append(k)
    s = summarize(results)
    mean_row = {k: s.get(k, "") for k in keys}
    mean_row["case"] = "MEAN"
    path = Path(path)
    with atomic_writer(path, "w") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        for row in rows + [mean_row]:
            w.writerow(row)
    return path
