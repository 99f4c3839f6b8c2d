"""Accuracy benchmark: every backend on the whole development set, CVPR 2025 interactive protocol.

Run::

    nice -n 5 .venv/bin/python benchmarks/accuracy_bench.py                      # all backends, in process
    nice -n 5 .venv/bin/python benchmarks/accuracy_bench.py --backends boxfill,hybrid --fresh hybrid
    .venv/bin/python benchmarks/accuracy_bench.py --render                       # tables/plot from the JSON
    nice -n 5 .venv/bin/python benchmarks/accuracy_bench.py --boxless --backends classic --name accuracy_boxless

What it does, per backend and case: the box step (skipped and scored 0 for a box-less
case), then 5 simulated clicks (largest 26-connected error component, its
distance-transform maximum; :mod:`napari_medsegfm.tasks.clicks`), each step predicted by
:func:`napari_medsegfm.tasks.predict.predict_case` - in this process (``--backends``), or as a
fresh ``medsegfm predict`` process per step exactly as the challenge drives a container
(``--fresh``: an npz written per step, the process started, ``segs`` read back; the step's
seconds are that wall time, process start and model load included; the on-disk embedding
cache starts empty for every backend run).

Cases (``CASES``; 20 runs over 19 files): the 13 ``dev3d`` cases; the two dev3d BraTS 2013 cases
a second time without boxes (the challenge evaluates brain-tumour cases box-less, from the
first click on); the official CVPR 2025 ``CT_AMOS`` and the box-less ``MR_BraTS-T1c`` file;
the 2 MedSAM2 DeepLesion CT lesions (boxes made from the ground truth by the challenge's
rule); the CVPR 2024 3D lesion box. Left out: ``Microscopy_SELMA3D_patchvolume_nuclei_004``,
whose ground truth is not a clean label image (uint8 instance ids wrapped past 255: every
value is the union of ~7 separate nuclei, its 255 boxes span almost the whole volume; see
shared/data/MANIFEST.md) - scoring against it measures the wrapping, not the method.

Reported per run (JSON ``benchmarks/results/<name>.json``, markdown ``<name>.md``, plot
``<name>.png``): per case DSC per step, DSC_AUC, NSD_AUC, final DSC, the largest drop of
the case's DSC caused by one click, s/step; the means over all cases and over the "hidden
kinds" (all but microscopy: the held-out set has no microscopy); the ratio of s/step to
``boxfill`` measured in the same invocation (the machine is shared, absolute seconds are
noisy); split figures (``--sweep``): a parameter chosen on half A reported on half B and vice
versa, and leave-one-case-out.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import io
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
PY = sys.executable
N_CLICKS = 5
DROP_LIMIT = 0.01  # issue 17: no single click may lower a case's DSC by more than this


def _find_data() -> Path:
    env = os.environ.get("MEDSEGFM_TEST_DATA")
    for c in ([Path(env)] if env else []) + [REPO.parent / "shared" / "data"]:
        if (c / "MANIFEST.md").is_file():
            return c
    raise FileNotFoundError("shared data (MANIFEST.md) not found next to the checkout; set MEDSEGFM_TEST_DATA")


@dataclass(frozen=True)
class BenchCase:
    name: str  # as reported
    image: str  # relative to the data folder
    gt: str | None  # relative; None: gts inside the image file
    boxes: str  # run_case's boxes mode
    kind: str
    split: str  # "A" / "B": halves for the tuning check (same subject kept in one half)


CASES: tuple[BenchCase, ...] = (
    BenchCase("MR_BraTS2013_pat0002_T1c", "dev3d/MR_BraTS2013_pat0002_T1c.npz", None, "file", "brain tumour", "A"),
    BenchCase("MR_BraTS2013_pat0006_Flair", "dev3d/MR_BraTS2013_pat0006_Flair.npz", None, "file", "brain tumour", "B"),
    BenchCase("MR_BraTS2013_pat0002_T1c [box-less]", "dev3d/MR_BraTS2013_pat0002_T1c.npz", None, "none",
              "brain tumour (box-less)", "A"),
    BenchCase("MR_BraTS2013_pat0006_Flair [box-less]", "dev3d/MR_BraTS2013_pat0006_Flair.npz", None, "none",
              "brain tumour (box-less)", "B"),
    BenchCase("MR_BraTS-T1c_bratsgli_0017", "cvpr25/imgs/MR_BraTS-T1c_bratsgli_0017.npz",
              "cvpr25/gts/MR_BraTS-T1c_bratsgli_0017.npz", "auto", "brain tumour (box-less)", "A"),
    BenchCase("MR_pyradiomics_brain1_tumor", "dev3d/MR_pyradiomics_brain1_tumor.npz", None, "file", "brain tumour", "A"),
    BenchCase("MR_pyradiomics_brain2_tumor", "dev3d/MR_pyradiomics_brain2_tumor.npz", None, "file", "brain tumour", "A"),
    BenchCase("CT_TPTBox_spine_L2-L4", "dev3d/CT_TPTBox_spine_L2-L4.npz", None, "file", "spine", "A"),
    BenchCase("MR_SCT_errsm30_T2_cord_levels", "dev3d/MR_SCT_errsm30_T2_cord_levels.npz", None, "file", "spine", "B"),
    BenchCase("MR_SCT_errsm30_T2star_GM_WM", "dev3d/MR_SCT_errsm30_T2star_GM_WM.npz", None, "file", "spine", "B"),
    BenchCase("MR_SCT_errsm30_T1_cord", "dev3d/MR_SCT_errsm30_T1_cord.npz", None, "file", "spine", "B"),
    BenchCase("MR_ACDC_patient001_frame01", "dev3d/MR_ACDC_patient001_frame01.npz", None, "file", "cardiac MR", "A"),
    BenchCase("MR_ACDC_patient045_frame02", "dev3d/MR_ACDC_patient045_frame02.npz", None, "file", "cardiac MR", "B"),
    BenchCase("MR_ACDC_patient075_frame01", "dev3d/MR_ACDC_patient075_frame01.npz", None, "file", "cardiac MR", "A"),
    BenchCase("CT_MSD_spleen_2_crop", "dev3d/CT_MSD_spleen_2_crop.npz", None, "file", "CT organ", "A"),
    BenchCase("CT_AMOS_amos_0018", "cvpr25/imgs/CT_AMOS_amos_0018.npz", "cvpr25/gts/CT_AMOS_amos_0018.npz", "auto",
              "CT organ", "B"),
    BenchCase("CT_Lesion_000001_02_01_008-023", "medsam2_recist/CT_Lesion_000001_02_01_008-023.npz", None, "auto",
              "CT lesion", "A"),
    BenchCase("CT_Lesion_000002_03_01_035-047", "medsam2_recist/CT_Lesion_000002_03_01_035-047.npz", None, "auto",
              "CT lesion", "B"),
    BenchCase("3DBox_CT_Lesion_000001_02_01_008-023", "cvpr24/imgs/3DBox_CT_Lesion_000001_02_01_008-023.npz",
              "cvpr24/gts/3DBox_CT_Lesion_000001_02_01_008-023.npz", "auto", "CT lesion", "A"),
    BenchCase("Microscopy_PlantSeg_ovule_cells", "dev3d/Microscopy_PlantSeg_ovule_cells.npz", None, "file",
              "microscopy", "B"),
)
HIDDEN_KINDS_EXCLUDE = ("microscopy",)


def boxless_cases(cases: tuple[BenchCase, ...] | list[BenchCase]) -> list[BenchCase]:
    """Every file of ``cases`` once, run without boxes (``--boxless``).

    The challenge runs only brain-tumour cases box-less; running every kind that way checks
    what objects grown from clicks alone do on kinds their rules were not tuned on (the dock
    user who clicks on an empty layer meets the same code).
    """
    out: list[BenchCase] = []
    seen: set[str] = set()
    for c in cases:
        if c.image in seen:
            continue
        seen.add(c.image)
        base = c.name.replace(" [box-less]", "")
        kind = c.kind if c.kind.endswith("(box-less)") else f"{c.kind} (box-less)"
        out.append(BenchCase(f"{base} [box-less]", c.image, c.gt, "none", kind, c.split))
    return out


def _eval_case(c: BenchCase, data: Path) -> Any:
    from napari_medsegfm.tasks.evaluation import EvalCase

    name = Path(c.image).stem  # run_case seeds synthesized boxes by this name, as `medsegfm evaluate` does
    return EvalCase(name, data / c.image, None if c.gt is None else data / c.gt)


# ----------------------------------------------------------------------- one run
def _per_class(gts: np.ndarray, segs: list[np.ndarray]) -> list[list[float]]:
    from napari_medsegfm.tasks.metrics import per_class_dsc

    labels = [int(v) for v in np.unique(gts) if v]
    return [[float(v) for v in per_class_dsc(gts, s, labels).values()] for s in segs]


def _write_step_npz(path: Path, inputs: dict[str, Any]) -> None:
    """The step's input npz as the challenge writes it (pickled boxes / clicks)."""
    arrs: dict[str, Any] = {}
    for k, v in inputs.items():
        if isinstance(v, np.ndarray):
            arrs[k] = v
        elif isinstance(v, dict):
            a = np.empty((), dtype=object)
            a[()] = v
            arrs[k] = a
        else:
            arrs[k] = np.asarray(v)
    buf = io.BytesIO()
    np.savez(buf, **arrs)
    path.write_bytes(buf.getvalue())


class FreshProcess:
    """``predict_fn`` for run_case: one ``medsegfm predict`` process per step."""

    def __init__(self, backend: str, workdir: Path, cache_dir: Path) -> None:
        self.backend = backend
        self.workdir = workdir
        self.env = {**os.environ, "MEDSEGFM_CACHE_DIR": str(cache_dir)}
        self.exe = str(Path(PY).with_name("medsegfm"))
        self.n = 0

    def __call__(self, inputs: dict[str, Any]) -> np.ndarray:
        self.n += 1
        src = self.workdir / f"step{self.n:04d}.npz"
        dst = self.workdir / f"segs{self.n:04d}.npz"
        _write_step_npz(src, inputs)
        cmd = [self.exe, "predict", "-i", str(src), "-o", str(dst), "--backend", self.backend, "--device", "cpu",
               "--no-progress"]
        p = subprocess.run(cmd, capture_output=True, text=True, env=self.env, timeout=1800)
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr[-2000:]}")
        with np.load(dst) as z:
            segs = np.asarray(z["segs"])
        src.unlink()
        dst.unlink()
        return segs


def run_backend(backend: str, cases: list[BenchCase], data: Path, *, fresh: bool = False,
                options: dict[str, Any] | None = None, log: Any = print) -> dict[str, Any]:
    """All ``cases`` with one backend; returns the run record (per-case scores)."""
    from napari_medsegfm.backends.registry import get_backend
    from napari_medsegfm.tasks.evaluation import load_case_arrays, run_case

    options = dict(options or {})
    if fresh and options:
        raise ValueError("a fresh-process run uses the backend's defaults (what `medsegfm predict` runs); no options")
    out: dict[str, Any] = {"backend": backend, "mode": "fresh process per step" if fresh else "in process",
                           "options": options, "cases": {},
                           "when": _dt.datetime.now().isoformat(timespec="seconds"),
                           "load_avg_start": list(os.getloadavg())}
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="accbench-") as tmp:
        cache = Path(tmp) / "cache"
        cache.mkdir()
        # every run starts with an empty on-disk cache (in process too: no embeddings left by earlier runs)
        saved_env = os.environ.get("MEDSEGFM_CACHE_DIR")
        os.environ["MEDSEGFM_CACHE_DIR"] = str(cache)
        try:
            be = None if fresh else get_backend(backend, device="cpu", **options)
        finally:
            if saved_env is None:
                os.environ.pop("MEDSEGFM_CACHE_DIR", None)
            else:
                os.environ["MEDSEGFM_CACHE_DIR"] = saved_env
        for c in cases:
            ec = _eval_case(c, data)
            fn = FreshProcess(backend, Path(tmp), cache) if fresh else None
            t0 = time.perf_counter()
            try:
                res, segs = run_case(ec, be, n_clicks=N_CLICKS, boxes=c.boxes, keep_segs=True, predict_fn=fn)
                _, gts = load_case_arrays(ec)
                pcd = _per_class(gts, segs)
                err = ""
            except (ValueError, RuntimeError, FileNotFoundError, OSError) as exc:
                res, pcd, err = None, [], f"{type(exc).__name__}: {exc}"
            finally:
                if be is not None and callable(getattr(be, "reset", None)):
                    be.reset()
            rec: dict[str, Any] = {"kind": c.kind, "split": c.split, "boxes": c.boxes, "error": err,
                                   "wall_s": time.perf_counter() - t0}
            if res is not None:
                rec.update(n_classes=res.n_classes, box_source=res.box_source, dsc=res.dsc, nsd=res.nsd,
                           nsd_physical=res.nsd_physical, seconds=res.seconds, per_class_dsc=pcd,
                           clicks_order=res.clicks_order, DSC_AUC=res.dsc_auc, NSD_AUC=res.nsd_auc,
                           DSC_Final=res.dsc_final, NSD_Final=res.nsd_final,
                           sec_per_step=res.seconds_per_step, max_step_s=float(max(res.seconds)))
                log(f"  {backend:>10} {c.name:<40} " + " ".join(f"{v:.3f}" for v in res.dsc)
                    + f"  AUC {res.dsc_auc:.3f}  {res.seconds_per_step:.2f} s/step")
            else:
                log(f"  {backend:>10} {c.name:<40} ERROR {err}")
            out["cases"][c.name] = rec
    out["seconds"] = time.perf_counter() - t_all
    out["load_avg_end"] = list(os.getloadavg())
    return out


# ----------------------------------------------------------------------- summaries
def _ok(run: dict[str, Any], names: list[str] | None = None) -> list[tuple[str, dict[str, Any]]]:
    return [(n, r) for n, r in run["cases"].items() if not r.get("error") and (names is None or n in names)]


def click_deltas(rec: dict[str, Any]) -> list[float]:
    """DSC change of each click step (step k minus step k-1; a box-less case's step 1 from 0)."""
    d = rec["dsc"]
    return [float(d[k] - d[k - 1]) for k in range(1, len(d))]


def summarize(run: dict[str, Any], names: list[str] | None = None) -> dict[str, Any]:
    ok = _ok(run, names)
    if not ok:
        return {"n": 0}
    steps = np.array([r["dsc"] for _, r in ok], dtype=float)
    mean_steps = steps.mean(axis=0)
    drops = [min(click_deltas(r)[1:] if r["box_source"] == "none" else click_deltas(r)) for _, r in ok]
    return {
        "n": len(ok),
        "dsc_steps": [float(v) for v in mean_steps],
        "DSC_AUC": float(np.mean([r["DSC_AUC"] for _, r in ok])),
        "NSD_AUC": float(np.mean([r["NSD_AUC"] for _, r in ok])),
        "DSC_Final": float(np.mean([r["DSC_Final"] for _, r in ok])),
        "NSD_Final": float(np.mean([r["NSD_Final"] for _, r in ok])),
        "sec_per_step": float(np.mean([r["sec_per_step"] for _, r in ok])),
        "max_step_s": float(np.max([r["max_step_s"] for _, r in ok])),
        "mean_step_gain_min": float(np.min(np.diff(mean_steps[1:]))) if len(mean_steps) > 2 else float("nan"),
        "worst_click_drop": float(min(drops)),
        "cases_with_drop": int(sum(1 for v in drops if v < -DROP_LIMIT)),
    }


def hidden_names(run: dict[str, Any]) -> list[str]:
    return [n for n, r in run["cases"].items()
            if str(r.get("kind", "")).replace(" (box-less)", "") not in HIDDEN_KINDS_EXCLUDE]


# ----------------------------------------------------------------------- rendering
def _f(v: Any, nd: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def _ratio(results: dict[str, Any], label: str, key: str = "sec_per_step") -> str:
    run = results["runs"][label]
    ref_label = run.get("reference")
    if not ref_label or ref_label not in results["runs"]:
        return "-"
    a = summarize(run)[key]
    b = summarize(results["runs"][ref_label])[key]
    return f"{a / b:.1f}x" if b > 0 else "-"


def render_markdown(results: dict[str, Any], title: str) -> str:
    runs = results["runs"]
    lines = [f"# {title}", "",
             "Generated by `benchmarks/accuracy_bench.py` (CVPR 2025 protocol: box step, then 5 simulated clicks; "
             "DSC_AUC/NSD_AUC over the 5 click steps; NSD at 2 mm in the official scorer's spacing order). "
             "`max drop` is the largest fall of the case's DSC at one click step (issue 17 asks for none "
             f"beyond {DROP_LIMIT}); s/step is the mean over the steps that ran, `x boxfill` the ratio to boxfill's "
             "s/step in the same invocation and mode (the 2-core machine is shared: absolute seconds are noisy). "
             "`hidden kinds` = every case but microscopy.", ""]
    lines += ["## Summary", "",
              "| run | mode | cases | DSC0 | DSC1 | DSC2 | DSC3 | DSC4 | DSC5 (final) | DSC_AUC | NSD_AUC | "
              "final DSC, hidden kinds | DSC_AUC, hidden kinds | worst click drop | cases with a drop > 0.01 | "
              "min gain of the mean per click | s/step | max s/step | x boxfill |",
              "|---|---|---:|" + "---:|" * 16]
    for label, run in runs.items():
        s = summarize(run)
        h = summarize(run, hidden_names(run))
        if not s["n"]:
            continue
        lines.append(f"| {label} | {run['mode']} | {s['n']} | " + " | ".join(_f(v) for v in s["dsc_steps"])
                     + f" | {_f(s['DSC_AUC'])} | {_f(s['NSD_AUC'])} | {_f(h.get('DSC_Final'))} | "
                       f"{_f(h.get('DSC_AUC'))} | {_f(s['worst_click_drop'])} | {s['cases_with_drop']} | "
                       f"{_f(s['mean_step_gain_min'])} | {_f(s['sec_per_step'], 2)} | {_f(s['max_step_s'], 1)} | "
                       f"{_ratio(results, label)} |")
    lines.append("")
    if results.get("plot"):
        lines += [f"![mean DSC per step]({results['plot']})", ""]
    for key in ("sweeps",):
        for sw in results.get(key, []):
            lines += render_sweep(sw)
    # per case, all runs side by side
    names = list(dict.fromkeys(n for run in runs.values() for n in run["cases"]))
    lines += ["## Per case", ""]
    for n in names:
        first = next(run["cases"][n] for run in runs.values() if n in run["cases"])
        lines += [f"### {n} ({first.get('kind')}, half {first.get('split')}, boxes: {first.get('box_source', first.get('boxes'))}, "
                  f"{first.get('n_classes', '?')} classes)", "",
                  "| run | DSC0 | DSC1 | DSC2 | DSC3 | DSC4 | DSC5 | DSC_AUC | NSD_AUC | max drop | s/step | "
                  "final DSC per class |", "|---|" + "---:|" * 10 + "---|"]
        for label, run in runs.items():
            r = run["cases"].get(n)
            if r is None:
                continue
            if r.get("error"):
                lines.append(f"| {label} | error: {r['error'][:80]} |" + " |" * 10)
                continue
            dl = click_deltas(r)
            drop = min(dl[1:] if r["box_source"] == "none" else dl)
            pc = ", ".join(f"{v:.2f}" for v in r["per_class_dsc"][-1]) if r.get("per_class_dsc") else ""
            lines.append(f"| {label} | " + " | ".join(_f(v) for v in r["dsc"])
                         + f" | {_f(r['DSC_AUC'])} | {_f(r['NSD_AUC'])} | {_f(drop)} | {_f(r['sec_per_step'], 2)} | "
                           f"{pc} |")
        lines.append("")
    return "\n".join(lines)


def render_plot(results: dict[str, Any], path: Path, title: str) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[benchmarks]'): no plot", file=sys.stderr)
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, (sub, pick) in zip(axes, (("all cases", None), ("hidden kinds (no microscopy)", "hidden"))):
        for label, run in results["runs"].items():
            if run["mode"] != "in process" and any(r["mode"] == "in process" and r["backend"] == run["backend"]
                                                    for r in results["runs"].values()):
                continue  # the fresh-process run of a backend gives the same masks
            s = summarize(run, hidden_names(run) if pick else None)
            if not s["n"]:
                continue
            ax.plot(range(len(s["dsc_steps"])), s["dsc_steps"], marker="o", label=f"{label} (AUC {s['DSC_AUC']:.2f})")
        ax.axhline(0.80, color="grey", lw=0.8, ls="--")
        ax.set_xticks(range(N_CLICKS + 1), ["box"] + [f"click {k}" for k in range(1, N_CLICKS + 1)])
        ax.set_title(f"{sub}")
        ax.set_ylim(0.0, 1.0)
        ax.grid(alpha=0.3)
        ax.set_xlabel("step (box-less cases score 0 at the box step)")
    axes[0].set_ylabel("mean DSC")
    axes[1].legend(loc="lower right", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------- tuning check
def split_report(runs: dict[str, dict[str, Any]], metric: str = "score") -> dict[str, Any]:
    """Choose a setting on one half, report it on the other; and leave-one-case-out.

    ``runs`` maps a setting's label to its run record (all on the same cases). The
    selection score of a case is ``DSC_AUC / 4 + final DSC`` (both matter to the ranking).
    """
    labels = list(runs)
    names = [n for n in runs[labels[0]]["cases"] if all(not runs[lb]["cases"].get(n, {"error": 1}).get("error")
                                                        for lb in labels)]

    def score(lb: str, ns: list[str]) -> float:
        return float(np.mean([runs[lb]["cases"][n]["DSC_AUC"] / 4 + runs[lb]["cases"][n]["DSC_Final"] for n in ns]))

    def final(lb: str, ns: list[str]) -> float:
        return float(np.mean([runs[lb]["cases"][n]["DSC_Final"] for n in ns]))

    def aucm(lb: str, ns: list[str]) -> float:
        return float(np.mean([runs[lb]["cases"][n]["DSC_AUC"] for n in ns]))

    half = {h: [n for n in names if runs[labels[0]]["cases"][n]["split"] == h] for h in ("A", "B")}
    out: dict[str, Any] = {"settings": labels, "halves": {}}
    for tune, test in (("A", "B"), ("B", "A")):
        best = max(labels, key=lambda lb: score(lb, half[tune]))
        oracle = max(labels, key=lambda lb: score(lb, half[test]))
        out["halves"][f"tune {tune} -> test {test}"] = {
            "chosen": best, "test_final": final(best, half[test]), "test_auc": aucm(best, half[test]),
            "best_on_test": oracle, "best_test_final": final(oracle, half[test]),
            "best_test_auc": aucm(oracle, half[test])}
    loo_final, loo_auc, chosen = [], [], []
    for n in names:
        rest = [m for m in names if m != n]
        best = max(labels, key=lambda lb: score(lb, rest))
        chosen.append(best)
        loo_final.append(runs[best]["cases"][n]["DSC_Final"])
        loo_auc.append(runs[best]["cases"][n]["DSC_AUC"])
    overall = max(labels, key=lambda lb: score(lb, names))
    out["loo"] = {"final": float(np.mean(loo_final)), "auc": float(np.mean(loo_auc)),
                  "chosen_counts": {lb: chosen.count(lb) for lb in labels}}
    out["best_overall"] = {"setting": overall, "final": final(overall, names), "auc": aucm(overall, names)}
    out["per_setting"] = {lb: {"final": final(lb, names), "auc": aucm(lb, names)} for lb in labels}
    return out


def render_sweep(sw: dict[str, Any]) -> list[str]:
    rep = sw["report"]
    lines = [f"## Tuning check: {sw['title']}", "", sw.get("note", ""), "",
             "| setting | mean final DSC (all cases) | mean DSC_AUC |", "|---|---:|---:|"]
    for lb, v in rep["per_setting"].items():
        lines.append(f"| {lb} | {v['final']:.3f} | {v['auc']:.3f} |")
    lines += ["", "| protocol | chosen | final DSC on the held-out part | DSC_AUC on the held-out part | "
                  "best possible there (setting, final, AUC) |", "|---|---|---:|---:|---|"]
    for k, v in rep["halves"].items():
        lines.append(f"| {k} | {v['chosen']} | {v['test_final']:.3f} | {v['test_auc']:.3f} | "
                     f"{v['best_on_test']}, {v['best_test_final']:.3f}, {v['best_test_auc']:.3f} |")
    lo = rep["loo"]
    lines.append(f"| leave one case out | {', '.join(f'{k} x{c}' for k, c in lo['chosen_counts'].items() if c)} | "
                 f"{lo['final']:.3f} | {lo['auc']:.3f} | {rep['best_overall']['setting']}, "
                 f"{rep['best_overall']['final']:.3f}, {rep['best_overall']['auc']:.3f} (chosen on all cases) |")
    lines.append("")
    return lines


# ----------------------------------------------------------------------- main
def _write(path: Path, text: str) -> None:
    from napari_medsegfm.io.atomic import atomic_write_bytes

    atomic_write_bytes(path, text.encode("utf-8"))


def _parse_options(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for it in items:
        k, sep, v = it.partition("=")
        if not sep:
            raise ValueError(f"--set {it!r}: expected KEY=VALUE")
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backends", default="boxfill,classic,litemedsam", help="comma-separated, run in process")
    ap.add_argument("--fresh", default="", help="comma-separated backends also run as a fresh process per step")
    ap.add_argument("--cases", default="", help="comma-separated substrings of case names (default: all)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="constructor option for the in-process backends (the run's label shows it)")
    ap.add_argument("--sweep", default="", metavar="BACKEND:KEY=V1|V2|...",
                    help="run BACKEND once per value of KEY and report the split / leave-one-out check")
    ap.add_argument("--boxless", action="store_true",
                    help="run every file once without boxes (clicks only), not the challenge's case list")
    ap.add_argument("--name", default="accuracy_bench", help="output file stem in benchmarks/results")
    ap.add_argument("--title", default="Accuracy benchmark: every backend on the development set")
    ap.add_argument("--replace", action="store_true", help="start a new results file instead of merging runs into it")
    ap.add_argument("--render", action="store_true", help="only re-render the markdown and plot from the JSON")
    a = ap.parse_args(argv)
    data = _find_data()
    RESULTS.mkdir(parents=True, exist_ok=True)
    jpath = RESULTS / f"{a.name}.json"
    results: dict[str, Any] = {"runs": {}, "sweeps": []}
    if jpath.is_file() and not a.replace:
        results = json.loads(jpath.read_text())
        results.setdefault("runs", {})
        results.setdefault("sweeps", [])
    keys = [k for k in a.cases.split(",") if k]
    all_cases = boxless_cases(CASES) if a.boxless else list(CASES)
    cases = [c for c in all_cases if not keys or any(k in c.name for k in keys)]
    results["cases"] = [c.__dict__ for c in all_cases]
    results["data"] = os.path.relpath(data, REPO)  # where the data was, from the checkout (no machine path)
    opts = _parse_options(a.set)

    def save() -> None:
        png = RESULTS / f"{a.name}.png"
        # a sweep-only invocation (--backends "") has no backend run to plot: no empty figure
        if results.get("runs") and render_plot(results, png, a.title) is not None:
            results["plot"] = png.name
        else:
            results.pop("plot", None)
        _write(jpath, json.dumps(results, indent=1, default=float))
        _write(RESULTS / f"{a.name}.md", render_markdown(results, a.title))

    if not a.render:
        cmdline = "benchmarks/accuracy_bench.py " + " ".join(argv if argv is not None else sys.argv[1:])
        for be in [b for b in a.backends.split(",") if b]:
            label = be + ("" if not opts else "[" + ",".join(f"{k}={v}" for k, v in opts.items()) + "]")
            print(f"[accuracy_bench] {label}, in process", flush=True)
            run = run_backend(be, cases, data, options=opts)
            run["command"] = cmdline
            run["reference"] = "boxfill" if be != "boxfill" else None
            results["runs"][label] = run
            save()
        for be in [b for b in a.fresh.split(",") if b]:
            print(f"[accuracy_bench] {be}, fresh process per step", flush=True)
            run = run_backend(be, cases, data, fresh=True)
            run["command"] = cmdline
            run["reference"] = "boxfill (fresh)" if be != "boxfill" else None
            results["runs"][f"{be} (fresh)"] = run
            save()
        if a.sweep:
            be, _, kv = a.sweep.partition(":")
            key, _, vals = kv.partition("=")
            runs = {}
            for v in vals.split("|"):
                o = dict(opts)
                o[key] = json.loads(v) if v[:1] in "0123456789-[{tf" else v
                lb = f"{be}[{key}={v}]"
                print(f"[accuracy_bench] sweep {lb}", flush=True)
                runs[lb] = run_backend(be, cases, data, options=o)
            rep = split_report(runs)
            results["sweeps"] = [s for s in results["sweeps"] if s["title"] != f"{be} {key}"]
            results["sweeps"].append({"title": f"{be} {key}", "report": rep, "command": cmdline,
                                      "note": f"`{key}` of `{be}` over {vals.split('|')}: chosen by the mean of "
                                              "DSC_AUC/4 + final DSC on the tuning part."})
            save()
    save()
    print(f"[accuracy_bench] wrote {jpath} and {jpath.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
