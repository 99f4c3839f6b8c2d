"""Ceiling benchmark: what the whole protocol reaches if the box step knew every slice's extent.

Run::

    nice -n 5 .venv/bin/python benchmarks/ceiling_bench.py [--cutters classic,litemedsam]

The box step loses most where the box says least: on the slices other than ``z_mid``
(``box_step_bench.py``). This benchmark asks how far the *whole* CVPR 2025 loop (box step +
5 simulated clicks) would get if that loss were gone. On every run of
``accuracy_bench.CASES`` that has boxes, step 0 is replaced by an oracle: a backend (the
*cutter*: ``classic``, the default's own 2D cut, and ``litemedsam``, the learned 2D model the
package ships) cuts every slice of every object from the ground truth's own 2D rectangle on
that slice (grown by 2 pixels, a :class:`Box2D` per slice, each object alone), and the masks
are merged as the box step merges them (larger first, smaller on top). The five click steps
are then the default ``classic`` backend's, unchanged, driven by the same simulated clicks as
``accuracy_bench.py``. The same runs with the real box step are measured beside it, in the
same process, as the reference. Box-less runs have no step 0 and are left out.

The oracle is an upper bound for any better propagation of a box through the slices - no
method without the ground truth has those rectangles - not a method. It is a loose bound
for rings cut alone (the myocardium's rectangle holds the blood pool, which its 2D cut takes).

Writes ``benchmarks/results/ceiling.json`` and ``ceiling.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from accuracy_bench import (  # noqa: E402
    CASES,
    DROP_LIMIT,
    N_CLICKS,
    RESULTS,
    _eval_case,
    _find_data,
    _write,
    click_deltas,
)


def oracle_step0(inputs: dict[str, Any], gts: np.ndarray, backend: Any) -> np.ndarray:
    """Step 0 from per-slice ground-truth rectangles (see the module docstring)."""
    from napari_medsegfm.io.cvpr import read_cvpr_members
    from napari_medsegfm.tasks.predict import merge_masks
    from napari_medsegfm.types import Box2D

    case = read_cvpr_members(inputs, "<oracle step 0>")
    backend.set_image(case.image)
    shape = gts.shape
    h, w = shape[1:]
    masks: dict[int, np.ndarray] = {}
    for b in case.boxes:
        lab = int(b.object_id)
        g = gts == lab
        m = np.zeros(shape, dtype=bool)
        for z in np.flatnonzero(g.any(axis=(1, 2))):
            yy, xx = np.nonzero(g[z])
            rect = Box2D(y_min=max(int(yy.min()) - 2, 0), x_min=max(int(xx.min()) - 2, 0),
                         y_max=min(int(yy.max()) + 2, h - 1), x_max=min(int(xx.max()) + 2, w - 1),
                         z=int(z), object_id=lab)
            m |= np.asarray(backend.predict([rect], None), dtype=bool)
        masks[lab] = m
    return merge_masks(masks, shape)


def run(data: Path, oracle: bool, cutter: str = "classic") -> dict[str, Any]:
    """All box runs, with the real or the oracle step 0 (cut by ``cutter``); returns name -> record."""
    from napari_medsegfm.backends.registry import get_backend
    from napari_medsegfm.tasks.evaluation import load_case_arrays, run_case
    from napari_medsegfm.tasks.predict import predict_case

    out: dict[str, Any] = {}
    for c in CASES:
        if c.boxes == "none":
            continue
        ec = _eval_case(c, data)
        _, gts = load_case_arrays(ec)
        be = get_backend("classic", device="cpu")
        cut = be if cutter == "classic" else get_backend(cutter, device="cpu")

        def step(inp: dict[str, Any], _gts: np.ndarray = gts, _be: Any = be, _cut: Any = cut) -> np.ndarray:
            if oracle and "clicks" not in inp:
                return oracle_step0(inp, _gts, _cut)
            return predict_case(inp, _be)

        t0 = time.perf_counter()
        res, _ = run_case(ec, be, n_clicks=N_CLICKS, boxes=c.boxes, predict_fn=step)
        if res.box_source == "none":  # an "auto" case without boxes in its file
            continue
        out[c.name] = {"kind": c.kind, "split": c.split, "dsc": res.dsc, "DSC_AUC": res.dsc_auc,
                       "DSC_Final": res.dsc_final, "wall_s": time.perf_counter() - t0}
        print(f"  {cutter + ' oracle' if oracle else 'real':>17} {c.name:<40} " + " ".join(f"{v:.3f}" for v in res.dsc)
              + f"  AUC {res.dsc_auc:.3f}", flush=True)
    return out


def render(rows: dict[str, dict[str, Any]]) -> str:
    """Markdown for ``rows``: label -> {run name -> record}; the first row is the reference."""
    recs = list(rows.values())
    names = [n for n in recs[0] if all(n in r for r in recs)]

    def mean(rec: dict[str, Any], key: str, idx: int | None = None) -> float:
        return float(np.mean([rec[n][key][idx] if idx is not None else rec[n][key] for n in names]))

    lines = ["# Ceiling: the protocol with a box step that knows every slice's extent", "",
             "Generated by `benchmarks/ceiling_bench.py`. `real`: the default `classic` backend on the "
             f"{len(names)} runs of the accuracy benchmark that have boxes (box step + {N_CLICKS} clicks). "
             "`oracle step 0, cut by X`: the same, but step 0 is backend X cutting every slice from the "
             "ground truth's own 2D rectangle (+2 px), each object alone - an upper bound for better "
             "propagation of the box through the slices, not a method (and a loose one for a ring cut "
             "alone: the myocardium's rectangle holds the blood pool). The clicks are `classic`'s in every "
             "row.", "",
             "| step 0 | DSC box | DSC click 1..5 | final DSC | DSC_AUC | worst click drop | "
             f"runs with a click drop > {DROP_LIMIT} |", "|---|---:|---|---:|---:|---:|---:|"]
    for lb, rec in rows.items():
        clicks = " / ".join(f"{mean(rec, 'dsc', k):.3f}" for k in range(1, N_CLICKS + 1))
        drops = [min(click_deltas(rec[n])) for n in names]
        lines.append(f"| {lb} | {mean(rec, 'dsc', 0):.3f} | {clicks} | {mean(rec, 'DSC_Final'):.3f} | "
                     f"{mean(rec, 'DSC_AUC'):.3f} | {min(drops):.3f} | {sum(d < -DROP_LIMIT for d in drops)} |")
    lines += ["", "## Per run (box DSC / final DSC / DSC_AUC)", "",
              "| run | kind | " + " | ".join(rows) + " |", "|---|---|" + "---|" * len(rows)]
    for n in names:
        cells = [f"{r[n]['dsc'][0]:.3f} / {r[n]['DSC_Final']:.3f} / {r[n]['DSC_AUC']:.3f}" for r in recs]
        lines.append(f"| {n} | {recs[0][n]['kind']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--name", default="ceiling", help="results file stem (default: ceiling)")
    ap.add_argument("--cutters", default="classic,litemedsam",
                    help="backends that cut the oracle's per-slice rectangles (default: classic,litemedsam)")
    a = ap.parse_args(argv)
    data = _find_data()
    rows = {"real": run(data, oracle=False)}
    for cutter in a.cutters.split(","):
        rows[f"oracle step 0, cut by {cutter}"] = run(data, oracle=True, cutter=cutter)
    RESULTS.mkdir(parents=True, exist_ok=True)
    _write(RESULTS / f"{a.name}.json", json.dumps(rows, indent=1, default=float))
    _write(RESULTS / f"{a.name}.md", render(rows))
    print(f"[ceiling_bench] wrote {RESULTS / (a.name + '.json')} and .md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
