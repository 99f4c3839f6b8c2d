"""Dataset benchmark: batch pre-segmentation scaling on Dask, and case switching in the navigator.

Run::

    .venv/bin/python benchmarks/batch_bench.py                      # both parts
    .venv/bin/python benchmarks/batch_bench.py --cases 8 --backend classic --repeats 2
    .venv/bin/python benchmarks/batch_bench.py --skip-switch        # batch part only

1. **Batch scaling.** The same ``--cases`` real cases (crops of the CVPR25 CT_AMOS and
   MR_BraTS cases, ``--depth`` x ``--size`` x ``--size``, boxes from their labels) are
   pre-segmented with ``--backend`` by :func:`~napari_medsegfm.dataset.batch.run_batch` on a
   Dask LocalCluster of 1 worker and of 2 workers (processes, 1 thread each), in one run,
   alternating ``--repeats`` times (best of each). Clusters are started and warmed up
   (modules imported in the workers) before timing; the time to start a cluster is reported
   separately. Reported: cases per minute for each, and the scaling ratio 2 workers / 1
   worker (ideal 2.0 on this 2-core machine). Outputs of both runs are checked to be
   byte-identical.
2. **Navigator case switch.** ``--switches`` + 1 cases of ``--switch-shape`` (default 200x512x512, the
   CT_AMOS volume resampled along z by nearest neighbour, compressed npz + separate gts
   file, as in the challenge layout) are walked with the dataset navigator in a real napari
   viewer (under ``xvfb-run`` when there is no display). Each switch follows a brush edit
   (so the previous case is autosaved first) and is timed from ``next_case()`` to the
   drawn canvas. *Warm*: the next case was prefetched while the user worked on the current
   one (the normal situation); *cold*: prefetch disabled (jumping to an arbitrary case).
   With and without the interactive segmentation widget attached. Target: < 1 s.

Results: ``benchmarks/results/batch_bench.json`` and ``batch_bench.md``. Figures measured
while other processes run are noisy; the markdown says so.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
for p in (REPO, REPO / "tests"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

RESULTS = REPO / "benchmarks" / "results"
sys.path.insert(0, str(REPO / "benchmarks"))
from _data import shared_data_candidate  # noqa: E402  ($MEDSEGFM_TEST_DATA, else <repo>/../shared/data)

SHARED = shared_data_candidate()


# ----------------------------------------------------------------------------- batch scaling
def _warm(backend: str) -> str:
    """Import the batch machinery and the backend module in a worker (not timed)."""
    import napari_medsegfm.dataset.batch  # noqa: F401
    from napari_medsegfm.backends.registry import get_backend_class

    get_backend_class(backend)
    return "ok"


def bench_batch(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    from _dataset_data import make_small_cvpr
    from distributed import Client, LocalCluster

    from napari_medsegfm.dataset.batch import run_batch
    from napari_medsegfm.dataset.catalog import discover

    root = make_small_cvpr(SHARED, tmp / "batch_ds", args.cases, depth=args.depth, size=args.size)
    cat = discover(root)
    runs: dict[int, list[float]] = {1: [], 2: []}
    starts: dict[int, list[float]] = {1: [], 2: []}
    shas: dict[int, dict[str, str]] = {}
    per_case: dict[int, list[float]] = {1: [], 2: []}
    # reference in this process (also warms the page cache)
    t0 = time.perf_counter()
    ref = run_batch(cat, args.backend, tmp / "out_sync", scheduler="sync", progress=False)
    sync_s = time.perf_counter() - t0
    if ref.failed:
        raise RuntimeError(f"reference run failed on {ref.failed}: {[ref.records[c]['error'] for c in ref.failed]}")
    for rep in range(args.repeats):
        for w in (1, 2):
            t0 = time.perf_counter()
            cluster = LocalCluster(n_workers=w, threads_per_worker=1, processes=True, memory_limit="2GiB",
                                   dashboard_address=None)
            client = Client(cluster)
            client.run(_warm, args.backend)
            starts[w].append(time.perf_counter() - t0)
            out = tmp / f"out_w{w}_r{rep}"
            t0 = time.perf_counter()
            r = run_batch(cat, args.backend, out, client=client, progress=False)
            runs[w].append(time.perf_counter() - t0)
            client.close()
            cluster.close()
            if r.failed:
                raise RuntimeError(f"{w}-worker run failed on {r.failed}")
            shas[w] = {c: r.records[c]["output_sha256"] for c in r.ok}
            per_case[w] = [r.records[c]["seconds"] for c in r.ok]
    identical = shas[1] == shas[2] == {c: ref.records[c]["output_sha256"] for c in ref.ok}
    best = {w: min(v) for w, v in runs.items()}
    cpm = {w: 60.0 * args.cases / best[w] for w in best}
    return {
        "backend": args.backend, "cases": args.cases, "case_shape": [args.depth, args.size, args.size],
        "repeats": args.repeats, "sync_seconds": round(sync_s, 3),
        "sync_cases_per_minute": round(60.0 * args.cases / sync_s, 2),
        "seconds": {str(w): [round(x, 3) for x in v] for w, v in runs.items()},
        "cluster_start_seconds": {str(w): [round(x, 2) for x in v] for w, v in starts.items()},
        "cases_per_minute": {str(w): round(v, 2) for w, v in cpm.items()},
        "scaling_ratio": round(cpm[2] / cpm[1], 3),
        "mean_case_seconds_in_worker": {str(w): round(float(np.mean(v)), 3) for w, v in per_case.items()},
        "outputs_identical": identical,
    }


# ----------------------------------------------------------------------------- navigator switch
def _make_big_cases(tmp: Path, shape: tuple[int, int, int], n: int = 3) -> Path:
    root = tmp / "switch_ds"
    (root / "imgs").mkdir(parents=True, exist_ok=True)
    (root / "gts").mkdir(exist_ok=True)
    with np.load(SHARED / "cvpr25" / "imgs" / "CT_AMOS_amos_0018.npz", allow_pickle=False) as z:
        img, sp = z["imgs"], z["spacing"]
    with np.load(SHARED / "cvpr25" / "gts" / "CT_AMOS_amos_0018.npz") as z:
        gts = z["gts"]
    d, h, w = shape
    zi = np.round(np.linspace(0, img.shape[0] - 1, d)).astype(int)
    yi = np.round(np.linspace(0, img.shape[1] - 1, h)).astype(int)
    xi = np.round(np.linspace(0, img.shape[2] - 1, w)).astype(int)
    big = np.ascontiguousarray(img[zi][:, yi][:, :, xi])
    bgt = np.ascontiguousarray(gts[zi][:, yi][:, :, xi])
    for k in range(n):
        name = f"CT_big{k}"
        np.savez_compressed(root / "imgs" / f"{name}.npz", imgs=np.roll(big, 7 * k, axis=0), spacing=sp)
        np.savez_compressed(root / "gts" / f"{name}.npz", gts=np.roll(bgt, 7 * k, axis=0), spacing=sp)
    return root


def bench_switch(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_medsegfm.widgets.navigator import DatasetNavigator

    shape = tuple(int(v) for v in args.switch_shape.split(","))
    # one case more than switches: every switch goes to a case the navigator could prefetch
    # (with fewer cases the walk wraps around to the first case, which is never prefetched)
    root = _make_big_cases(tmp, shape, n=max(3, args.switches + 1))
    out: dict[str, Any] = {"shape": list(shape), "switches": args.switches}

    def settle() -> None:
        for _ in range(3):
            QApplication.processEvents()

    def walk(nav: DatasetNavigator, *, prefetch: bool, label: str) -> list[float]:
        ws = nav.workspace
        if not prefetch:
            ws.prefetch = lambda case_id: None  # type: ignore[method-assign]
        times = []
        for i in range(args.switches):
            lab = nav.editor.labels_layer
            lab.brush_size = 15
            z = lab.data.shape[0] // 2
            lab.paint((z, 100 + 5 * i, 100), 3)  # an unsaved edit: the switch autosaves it first
            settle()
            if prefetch:
                deadline = time.time() + 10  # the user works; the prefetch completes meanwhile
                while ws._prefetched and not all(f.done() for f in ws._prefetched.values()) and time.time() < deadline:
                    time.sleep(0.05)
            else:
                time.sleep(0.3)
            t0 = time.perf_counter()
            order = nav.visible_order()
            nxt = order[(order.index(nav.current.case_id) + 1) % len(order)]
            assert nav.open_case(nxt), nav.message.text()
            settle()
            times.append(time.perf_counter() - t0)
        out[label] = {"median_s": round(statistics.median(times), 3), "max_s": round(max(times), 3),
                      "all_s": [round(t, 3) for t in times]}
        return times

    viewer = napari.Viewer(show=True)
    nav = DatasetNavigator(viewer, root=root, autosave_s=5, use_annotation_widget=False, auto_scan=False)
    viewer.window.add_dock_widget(nav, name="Dataset correction", area="right")
    settle()
    t0 = time.perf_counter()
    nav.open_case(nav.visible_order()[0])
    settle()
    out["first_open_s"] = round(time.perf_counter() - t0, 3)
    walk(nav, prefetch=True, label="warm_layers")
    walk(nav, prefetch=False, label="cold_layers")
    nav.close_dataset()
    viewer.close()

    if not args.no_annotation_widget:
        from napari_medsegfm.widgets import AnnotationWidget

        viewer = napari.Viewer(show=True)
        aw = AnnotationWidget(viewer, backend="boxfill", auto_attach=False)
        viewer.window.add_dock_widget(aw, name="Interactive segmentation", area="right")
        nav = DatasetNavigator(viewer, root=root, autosave_s=5, auto_scan=False)
        viewer.window.add_dock_widget(nav, name="Dataset correction", area="right", tabify=True)
        settle()
        nav.open_case(nav.visible_order()[0])
        settle()
        walk(nav, prefetch=True, label="warm_annotation_widget")
        nav.close_dataset()
        aw.teardown()
        viewer.close()
    return out


# ----------------------------------------------------------------------------- report
def write_report(res: dict[str, Any]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "batch_bench.json").write_text(json.dumps(res, indent=1))
    lines = ["# Dataset benchmark: batch scaling and navigator case switch", "",
             f"{res['when']}, {res['platform']}, {res['cpus']} CPUs, load average before the run "
             f"{res.get('load_average_before')}. {res['note']}", ""]
    b = res.get("batch")
    if b:
        lines += [
            f"## Batch pre-segmentation ({b['backend']}, {b['cases']} cases of {'x'.join(map(str, b['case_shape']))}, "
            f"best of {b['repeats']}; measured {b.get('measured')})", "",
            "| run | seconds (best) | cases / minute | cluster start s | mean s per case in a worker |",
            "|---|---|---|---|---|",
            f"| in-process (sync, reference) | {b['sync_seconds']} | {b['sync_cases_per_minute']} | – | – |",
        ]
        for w in ("1", "2"):
            lines.append(f"| LocalCluster, {w} worker{'s' if w == '2' else ''} | {min(b['seconds'][w])} | "
                         f"{b['cases_per_minute'][w]} | {min(b['cluster_start_seconds'][w])} | "
                         f"{b['mean_case_seconds_in_worker'][w]} |")
        lines += ["", f"**Scaling ratio 2 workers / 1 worker: {b['scaling_ratio']}** (ideal 2.0 on 2 cores). "
                  f"Outputs byte-identical across runs: {b['outputs_identical']}.", ""]
    s = res.get("switch")
    if s:
        lines += [f"## Navigator: time to switch to the next case ({'x'.join(map(str, s['shape']))}, "
                  f"{s['switches']} switches each; measured {s.get('measured')})", "",
                  "| mode | median s | max s | target |", "|---|---|---|---|"]
        for key, desc in (("warm_layers", "prefetched next case, plain layers"),
                          ("cold_layers", "no prefetch (jump), plain layers"),
                          ("warm_annotation_widget", "prefetched, interactive segmentation widget attached")):
            if key in s:
                ok = "✅" if s[key]["median_s"] < 1.0 else "❌"
                lines.append(f"| {desc} | {s[key]['median_s']} | {s[key]['max_s']} | < 1 s {ok} |")
        lines += ["", f"First open of a case (cold, with layer creation): {s['first_open_s']} s. Each switch includes "
                  "the autosave of the previous case's unsaved edit (snapshot on the GUI thread, compression and "
                  "write in the background), releasing/taking the edit lock, loading (or taking the prefetched "
                  "case), updating the layers and drawing.", ""]
    (RESULTS / "batch_bench.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=8)
    ap.add_argument("--backend", default="classic")
    ap.add_argument("--depth", type=int, default=40)
    ap.add_argument("--size", type=int, default=320)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--switch-shape", default="200,512,512")
    ap.add_argument("--switches", type=int, default=5)
    ap.add_argument("--skip-batch", action="store_true")
    ap.add_argument("--skip-switch", action="store_true")
    ap.add_argument("--no-annotation-widget", action="store_true")
    ap.add_argument("--switch-json", default=None, help=argparse.SUPPRESS)  # child mode under xvfb-run
    args = ap.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="medsegfm-batch-bench-"))
    try:
        if args.switch_json:
            res = bench_switch(args, tmp)
            Path(args.switch_json).write_text(json.dumps(res))
            return 0
        res: dict[str, Any] = {
            "when": _dt.datetime.now().isoformat(timespec="seconds"), "platform": platform.platform(),
            "cpus": os.cpu_count(), "note": "Other processes may have been running (noisy figures).",
        }
        try:  # a part skipped in this run keeps its previous figures (with their own date)
            prev = json.loads((RESULTS / "batch_bench.json").read_text())
        except (OSError, ValueError):
            prev = {}
        for part in ("batch", "switch"):
            if getattr(args, f"skip_{part}") and part in prev:
                res[part] = dict(prev[part], measured=prev[part].get("measured", prev.get("when")))
        try:
            res["load_average_before"] = [round(v, 2) for v in os.getloadavg()]
        except OSError:
            pass
        if not args.skip_batch:
            res["batch"] = bench_batch(args, tmp)
            res["batch"]["measured"] = res["when"]
            print(json.dumps(res["batch"], indent=1), flush=True)
        if not args.skip_switch:
            out_json = tmp / "switch.json"
            cmd = [sys.executable, __file__, "--switch-json", str(out_json), "--switch-shape", args.switch_shape,
                   "--switches", str(args.switches)] + (["--no-annotation-widget"] if args.no_annotation_widget else [])
            if not os.environ.get("DISPLAY"):
                cmd = ["xvfb-run", "-a", "-s", "-screen 0 1600x1000x24"] + cmd
            env = dict(os.environ)
            env.pop("QT_QPA_PLATFORM", None)
            subprocess.run(cmd, check=True, env=env)
            res["switch"] = json.loads(out_json.read_text())
            res["switch"]["measured"] = res["when"]
            print(json.dumps(res["switch"], indent=1), flush=True)
        write_report(res)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
