"""Engine benchmark: undo memory, worker overhead (engine helper) and backend latency (eval helper).

Run::

    .venv/bin/python benchmarks/engine_bench.py                 # every section, 200x512x512
    .venv/bin/python benchmarks/engine_bench.py --sections undo_memory --shape 40,256,256

Each section is one function ``bench_<name>(ctx: BenchContext) -> dict`` listed in
:data:`SECTIONS`; it returns ``{"title": str, "rows": [{"metric", "value", "unit",
"note"}], "data": {...}}``. Results of the sections run are merged into
``benchmarks/results/engine_bench.json`` (sections not run keep their previous
figures) and the whole file is rendered to ``benchmarks/results/engine_bench.md``.

To add a section (e.g. the eval helper's backend latency): write
``def bench_backend_latency(ctx): ...`` in this file and add it to :data:`SECTIONS`.

The case: the real CVPR25 CT_AMOS_amos_0018 volume (63x512x512, with 15 organ
labels) resampled along z by nearest-neighbour indexing to the requested shape
(default 200x512x512), so masks have realistic organ shapes and sizes.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import os
import platform
import queue
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from napari_medsegfm.engine.session import AnnotationSession, InferenceResult  # noqa: E402
from napari_medsegfm.types import Box3D, CancelToken, Capability, Point, Volume  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
JSON_NAME = "engine_bench.json"
MD_NAME = "engine_bench.md"


# ---------------------------------------------------------------------- context
def _find_data() -> Path:
    # benchmarks/_data.py: $MEDSEGFM_TEST_DATA, else <repo>/../shared/data
    if str(Path(__file__).resolve().parent) not in sys.path:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _data import shared_data

    return shared_data()


@dataclass
class BenchContext:
    """The case every section uses, loaded once."""

    shape: tuple[int, int, int]
    volume: Volume
    gts: np.ndarray  # (Z, Y, X) uint8 organ labels
    source: str
    seed: int = 0
    cache: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, shape: tuple[int, int, int] = (200, 512, 512), seed: int = 0) -> BenchContext:
        data = _find_data()
        name = "CT_AMOS_amos_0018.npz"
        img = np.load(data / "cvpr25" / "imgs" / name)["imgs"]
        g = np.load(data / "cvpr25" / "gts" / name)
        gts, sp_xyz = g["gts"], g["spacing"]
        idx = [np.clip(np.round(np.linspace(0, n - 1, m)).astype(int), 0, n - 1)
               for n, m in zip(gts.shape, shape)]
        sel = np.ix_(*idx)
        img_r = np.ascontiguousarray(img[sel])
        gts_r = np.ascontiguousarray(gts[sel])
        sp = tuple(float(v) for v in sp_xyz[::-1])  # CVPR spacing is (x, y, z)
        sp = (sp[0] * gts.shape[0] / shape[0], sp[1] * gts.shape[1] / shape[1], sp[2] * gts.shape[2] / shape[2])
        vol = Volume(img_r, spacing=sp, meta={"source": str(data / "cvpr25" / "imgs" / name)})
        return cls(shape=tuple(shape), volume=vol, gts=gts_r, source=f"{name} resampled to {shape}", seed=seed)

    def organ_voxels(self, lid: int, n: int, rng: np.random.Generator) -> np.ndarray:
        """``(n, 3)`` random voxel indices inside organ ``lid``."""
        key = f"coords{lid}"
        if key not in self.cache:
            self.cache[key] = np.argwhere(self.gts == lid)
        c = self.cache[key]
        return c[rng.integers(0, len(c), n)]

    def organ_ids(self) -> list[int]:
        counts = np.bincount(self.gts.ravel())
        return [int(i) for i in np.flatnonzero(counts) if i]

    def gt_box(self, lid: int) -> Box3D:
        from napari_medsegfm.engine.postprocess import bbox_of

        bb = bbox_of(self.gts == lid)
        assert bb is not None
        return Box3D(bb[0].start, bb[0].stop - 1, bb[1].start, bb[2].start, bb[1].stop - 1, bb[2].stop - 1,
                     object_id=lid)


def _row(metric: str, value: float | int | str, unit: str = "", note: str = "") -> dict[str, Any]:
    if isinstance(value, float):
        value = round(value, 3)
    return {"metric": metric, "value": value, "unit": unit, "note": note}


def _ms(xs: list[float]) -> dict[str, float]:
    xs = sorted(xs)
    return {
        "median_ms": statistics.median(xs) * 1e3,
        "mean_ms": statistics.fmean(xs) * 1e3,
        "p90_ms": xs[min(len(xs) - 1, int(0.9 * len(xs)))] * 1e3,
        "max_ms": xs[-1] * 1e3,
        "n": len(xs),
    }


def _rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _boxfill():
    from napari_medsegfm.backends.boxfill import BoxFillBackend

    return BoxFillBackend()


# ------------------------------------------------------------------ undo memory
def bench_undo_memory(ctx: BenchContext, steps: int = 100) -> dict[str, Any]:
    """Memory of ``steps`` undo levels of a realistic mix: objects, GT boxes, clicks, brush, object ops."""
    rng = np.random.default_rng(ctx.seed)
    shape = ctx.shape
    organs = ctx.organ_ids()
    for lid in organs:  # fill the coordinate cache now, so tracemalloc sees only the session
        ctx.organ_voxels(lid, 1, np.random.default_rng(0))
    gc.collect()
    rss0 = _rss_mb()
    tracemalloc.start()
    s = AnnotationSession(ctx.volume, _boxfill(), use_worker=False, undo_levels=max(200, steps))
    base_traced = tracemalloc.get_traced_memory()[0]  # session incl. labels + shadow
    kinds: dict[str, list[float]] = {}

    def timed(kind: str, fn: Callable[..., Any], *args: Any, **kw: Any) -> None:
        t0 = time.perf_counter()
        fn(*args, **kw)
        kinds.setdefault(kind, []).append(time.perf_counter() - t0)

    plan: list[tuple[str, Any]] = []
    for lid in organs:
        plan += [("object_add", lid), ("box", lid)]
    i = 0
    while len(plan) < steps + 20:
        lid = organs[i % len(organs)]
        plan += [("click", lid), ("brush", lid), ("click", lid), ("erase", lid)]
        if i % 3 == 0:
            plan.append(("rename", lid))
        if i % 5 == 0:
            plan.append(("overwrite", lid))
        i += 1
    deleted: set[int] = set()
    for kind, lid in plan:
        if len(s.undo_stack) >= steps:
            break
        if lid in deleted:
            continue
        if kind == "object_add":
            timed(kind, s.add_object, f"organ {lid}", label_id=lid)
        elif kind == "box":
            timed(kind, s.add_prompt, ctx.gt_box(lid))
        elif kind == "click":
            p = tuple(int(v) for v in ctx.organ_voxels(lid, 1, rng)[0])
            timed(kind, s.add_prompt, Point(p, positive=bool(rng.random() < 0.6), object_id=lid))
        elif kind in ("brush", "erase"):
            # a napari brush stroke: discs of radius 6 px along a short path on 1-3 slices, in place
            z = int(rng.integers(shape[0]))
            y, x = (int(v) for v in rng.integers(6, [max(shape[1] - 30, 7), max(shape[2] - 30, 7)]))
            nz = int(rng.integers(1, 4))
            val = lid if kind == "brush" else 0
            yy_, xx_ = np.ogrid[-6:7, -6:7]
            disc = yy_ ** 2 + xx_ ** 2 <= 36
            z0, z1 = z, min(z + nz, shape[0])
            for t in range(8):
                cy, cx = y + 2 * t, x + 3 * t
                reg = s.labels[z0:z1, cy - 6:cy + 7, cx - 6:cx + 7]
                reg[:, disc] = val
            bb = (slice(z0, z1), slice(y - 6, y + 14 + 7), slice(x - 6, x + 21 + 7))
            timed(kind, s.apply_edit, bbox=bb)
        elif kind == "rename":
            timed(kind, s.rename_object, lid, f"organ {lid} (checked)")
        elif kind == "overwrite":
            timed(kind, s.set_overwrite, lid, not s.objects[lid].overwrite)
    # a delete of the largest organ: one big diff
    big = max(organs, key=lambda k: int((ctx.gts == k).sum()))
    if len(s.undo_stack) < steps:
        timed("object_delete", s.delete_object, big)
    n_steps = len(s.undo_stack)
    gc.collect()
    traced_now, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    undo_bytes = s.undo_memory_bytes()
    final = s.labels.copy()
    diffs = [e.diff for e in s.undo_stack.undo_entries if e.diff is not None]
    payload = sum(len(d.payload) for d in diffs)
    raw_region = sum(int(np.prod(d.shape)) * d.dtype.itemsize for d in diffs)
    # exactness + undo/redo timing
    t_undo, t_redo = [], []
    while True:
        t0 = time.perf_counter()
        if s.undo() is None:
            break
        t_undo.append(time.perf_counter() - t0)
    ok_empty = int(s.labels.max()) == 0 and not s.objects
    while True:
        t0 = time.perf_counter()
        if s.redo() is None:
            break
        t_redo.append(time.perf_counter() - t0)
    ok_final = bool(np.array_equal(s.labels, final))
    rss1 = _rss_mb()
    vol_mb = np.prod(shape) * s.labels.dtype.itemsize / 1e6
    s.close()
    data = {
        "shape": list(shape), "steps": n_steps, "undo_memory_bytes": undo_bytes,
        "diff_payload_bytes": payload, "diff_raw_region_bytes": raw_region,
        "traced_growth_bytes": traced_now - base_traced, "traced_session_base_bytes": base_traced,
        "traced_peak_bytes": traced_peak, "rss_before_mb": rss0, "rss_after_mb": rss1,
        "labels_volume_mb": vol_mb, "step_kinds": {k: len(v) for k, v in kinds.items()},
        "step_times": {k: _ms(v) for k, v in kinds.items()}, "undo_times": _ms(t_undo), "redo_times": _ms(t_redo),
        "undo_all_empty": ok_empty, "redo_all_exact": ok_final,
    }
    naive_mb = n_steps * vol_mb
    rows = [
        _row("undo steps held", n_steps, "", ", ".join(f"{k} x{len(v)}" for k, v in kinds.items())),
        _row("undo history memory (session.undo_memory_bytes)", undo_bytes / 1e6, "MB", "target < 200 MB"),
        _row("retained memory growth over the steps (tracemalloc)", (traced_now - base_traced) / 1e6, "MB",
             "history + object states + log records"),
        _row("compressed diff payload / raw changed-box bytes", payload / max(raw_region, 1), "",
             f"{payload / 1e6:.2f} MB of {raw_region / 1e6:.1f} MB"),
        _row("whole-volume snapshots for the same steps", naive_mb, "MB", "what diffs avoid"),
        _row("fixed cost: labels + private shadow copy", 2 * vol_mb, "MB", "independent of history length"),
        _row("undo, median / max", f"{data['undo_times']['median_ms']:.1f} / {data['undo_times']['max_ms']:.1f}",
             "ms"),
        _row("redo, median / max", f"{data['redo_times']['median_ms']:.1f} / {data['redo_times']['max_ms']:.1f}",
             "ms"),
        _row("undo all -> empty, redo all -> identical labels", "yes" if ok_empty and ok_final else "NO"),
    ]
    for k, v in data["step_times"].items():
        rows.append(_row(f"step '{k}' (engine side, sync), median", v["median_ms"], "ms", f"n={v['n']}"))
    return {"title": f"Undo memory: {n_steps} steps on {'x'.join(map(str, shape))}", "rows": rows, "data": data}


# --------------------------------------------------------------- worker overhead
class _CachedMask:
    """Returns a precomputed mask instantly: isolates the engine's own overhead."""

    name = "cached-mask"
    capabilities = Capability.BOX3D | Capability.POINTS

    def __init__(self, mask: np.ndarray) -> None:
        self.mask = mask

    def set_image(self, volume: Volume) -> None:
        pass

    def reset(self) -> None:
        pass

    def predict(self, prompts, prev_mask, cancel) -> np.ndarray:
        return self.mask


def _overhead_runs(ctx: BenchContext, backend: Any, lid: int, n: int, rng: np.random.Generator) -> dict[str, Any]:
    """Interleaved trials of direct predict, sync add_prompt and worker round trip for one backend."""
    box = ctx.gt_box(lid)
    clicks = [Point(tuple(int(v) for v in c), positive=bool(k % 2), object_id=lid)
              for k, c in enumerate(ctx.organ_voxels(lid, n, rng))]
    backend.set_image(ctx.volume)
    s_sync = AnnotationSession(ctx.volume, backend, use_worker=False)
    s_async = AnnotationSession(ctx.volume, backend, use_worker=True)
    for s in (s_sync, s_async):
        s.add_object(label_id=lid)
        s.add_prompt(box)
    prev = s_sync.labels == lid
    q: queue.Queue[tuple[float, InferenceResult]] = queue.Queue()

    def cb(res: InferenceResult) -> None:
        q.put((time.perf_counter(), res))

    t_direct, t_sync, t_submit, t_cb, t_applied, t_apply, t_backend_in_worker = [], [], [], [], [], [], []
    token = CancelToken()
    for i, c in enumerate(clicks):
        order = [0, 1, 2] if i % 2 == 0 else [2, 1, 0]
        for which in order:
            if which == 0:
                t0 = time.perf_counter()
                backend.predict([box, c], prev, token)
                t_direct.append(time.perf_counter() - t0)
            elif which == 1:
                t0 = time.perf_counter()
                r = s_sync.add_prompt(c)
                t_sync.append(time.perf_counter() - t0)
                assert r.applied or r.error is None, r.error_message
                s_sync.undo()  # back to [box]: every trial sends the same two prompts
            else:
                # backend ensured warm on the worker thread (image already set for this session)
                t0 = time.perf_counter()
                s_async.submit(c, cb)
                t1 = time.perf_counter()
                t_back, res = q.get(timeout=60)
                t2 = time.perf_counter()
                s_async.apply_result(res)
                t3 = time.perf_counter()
                t_submit.append(t1 - t0)
                t_cb.append(t_back - t0)
                t_apply.append(t3 - t2)
                t_applied.append(t3 - t0)
                t_backend_in_worker.append(res.elapsed_s)
                s_async.undo()
    s_sync.close()
    s_async.close()
    d = {
        "direct_predict": _ms(t_direct), "sync_add_prompt": _ms(t_sync), "submit_call": _ms(t_submit),
        "submit_to_callback": _ms(t_cb), "apply_result": _ms(t_apply), "submit_to_applied": _ms(t_applied),
        "worker_infer_elapsed": _ms(t_backend_in_worker),
    }
    # total engine cost of a click beyond the model itself, and the part due to the worker thread
    d["overhead_ms"] = d["submit_to_applied"]["median_ms"] - d["direct_predict"]["median_ms"]
    d["worker_only_ms"] = d["submit_to_applied"]["median_ms"] - d["sync_add_prompt"]["median_ms"]
    d["ratio"] = d["submit_to_applied"]["median_ms"] / max(d["sync_add_prompt"]["median_ms"], 1e-6)
    return d


def bench_worker_overhead(ctx: BenchContext, n: int = 20) -> dict[str, Any]:
    """Latency of a click through the worker vs a direct backend call, same run, interleaved."""
    rng = np.random.default_rng(ctx.seed + 1)
    organs = ctx.organ_ids()
    lid = max(organs, key=lambda k: int((ctx.gts == k).sum()))  # the largest organ: the worst case
    be = _boxfill()
    res_boxfill = _overhead_runs(ctx, be, lid, n, rng)
    cached = np.zeros(ctx.shape, bool)
    cached[ctx.gt_box(lid).z_min:ctx.gt_box(lid).z_max + 1] = ctx.gts[ctx.gt_box(lid).z_min:ctx.gt_box(lid).z_max + 1] == lid
    res_null = _overhead_runs(ctx, _CachedMask(cached), lid, n, rng)
    rows = []
    for label, d in (("boxfill", res_boxfill), ("instant backend", res_null)):
        rows += [
            _row(f"{label}: direct backend.predict, median", d["direct_predict"]["median_ms"], "ms", f"n={n}"),
            _row(f"{label}: add_prompt (sync, predict + apply), median", d["sync_add_prompt"]["median_ms"], "ms"),
            _row(f"{label}: submit() call on the GUI thread, median", d["submit_call"]["median_ms"], "ms"),
            _row(f"{label}: submit -> callback (worker), median", d["submit_to_callback"]["median_ms"], "ms"),
            _row(f"{label}: apply_result on the GUI thread, median / max",
                 f"{d['apply_result']['median_ms']:.1f} / {d['apply_result']['max_ms']:.1f}", "ms"),
            _row(f"{label}: submit -> applied, median", d["submit_to_applied"]["median_ms"], "ms"),
            _row(f"{label}: engine overhead (submit->applied minus direct predict)", d["overhead_ms"], "ms",
                 "session work: prev-mask ROI, mask bbox, merge, diff, log"),
            _row(f"{label}: worker-thread overhead (submit->applied minus sync add_prompt)", d["worker_only_ms"],
                 "ms", f"through worker / sync = {d['ratio']:.2f}x"),
        ]
    return {
        "title": f"Worker overhead: one click on organ {lid} of {'x'.join(map(str, ctx.shape))}",
        "rows": rows,
        "data": {"organ": lid, "boxfill": res_boxfill, "instant": res_null},
    }


# -------------------------------------------------------------------- registry
#: name -> section function; the eval helper adds "backend_latency" here.
SECTIONS: dict[str, Callable[[BenchContext], dict[str, Any]]] = {
    "undo_memory": bench_undo_memory,
    "worker_overhead": bench_worker_overhead,
}

# [eval helper] backend latency section, kept in its own file
sys.path.insert(0, str(Path(__file__).resolve().parent))
from classic_bench import bench_backend_latency  # noqa: E402

SECTIONS["backend_latency"] = bench_backend_latency


# ---------------------------------------------------------------------- output
def _machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(), "numpy": np.__version__, "platform": platform.platform(),
        "cpus": os.cpu_count(), "load_avg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def render_markdown(results: dict[str, Any]) -> str:
    lines = ["# Engine benchmark", "",
             "Generated by `benchmarks/engine_bench.py`; one table per section (each records when and where it ran).",
             ""]
    for name, sec in results.get("sections", {}).items():
        lines += [f"## {sec.get('title', name)}", ""]
        meta = sec.get("meta", {})
        if meta:
            m = meta.get("machine", {})
            la = m.get("load_avg")
            la_s = "/".join(f"{v:.1f}" for v in la) if la else "n/a"
            lines += [f"Section `{name}`, run {meta.get('when', '?')} in {meta.get('seconds', 0):.0f} s on "
                      f"{m.get('cpus')} CPUs (load {la_s}), case: {meta.get('case', '')}."
                      + (f" Note: {meta['note']}" if meta.get("note") else ""), ""]
        lines += ["| metric | value | unit | note |", "|---|---:|---|---|"]
        for r in sec.get("rows", []):
            lines.append(f"| {r['metric']} | {r['value']} | {r['unit']} | {r['note']} |")
        lines.append("")
    return "\n".join(lines)


def _write(path: Path, text: str) -> None:
    try:
        from napari_medsegfm.io.atomic import atomic_write_bytes
    except ImportError:  # pragma: no cover - io helper not installed yet
        path.write_text(text, encoding="utf-8")
        return
    atomic_write_bytes(path, text.encode("utf-8"))


def run(sections: list[str], shape: tuple[int, int, int], out: Path, note: str = "") -> dict[str, Any]:
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        raise ValueError(f"unknown section(s) {unknown}; known: {', '.join(SECTIONS)}")
    out.mkdir(parents=True, exist_ok=True)
    jpath = out / JSON_NAME
    results: dict[str, Any] = {"sections": {}}
    if jpath.is_file():
        try:
            results = json.loads(jpath.read_text())
            results.setdefault("sections", {})
        except json.JSONDecodeError:
            results = {"sections": {}}
    ctx = BenchContext.load(shape)
    for name in sections:
        print(f"[engine_bench] {name} on {shape} ...", flush=True)
        t0 = time.perf_counter()
        sec = SECTIONS[name](ctx)
        sec["meta"] = {"when": _dt.datetime.now().isoformat(timespec="seconds"), "machine": _machine(),
                       "seconds": time.perf_counter() - t0, "case": ctx.source, "note": note}
        results["sections"][name] = sec
        for r in sec["rows"]:
            print(f"  {r['metric']}: {r['value']} {r['unit']}  {r['note']}", flush=True)
        _write(jpath, json.dumps(results, indent=1, default=float))
        _write(out / MD_NAME, render_markdown(results))
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sections", default=",".join(SECTIONS),
                    help=f"comma-separated subset of: {', '.join(SECTIONS)}")
    ap.add_argument("--shape", default="200,512,512", help="Z,Y,X of the resampled case")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--note", default="", help="free text stored with the figures (e.g. machine busy)")
    a = ap.parse_args(argv)
    shape = tuple(int(v) for v in a.shape.split(","))
    if len(shape) != 3:
        ap.error(f"--shape needs Z,Y,X; got {a.shape!r}")
    run([s.strip() for s in a.sections.split(",") if s.strip()], shape, a.out, a.note)  # type: ignore[arg-type]
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
