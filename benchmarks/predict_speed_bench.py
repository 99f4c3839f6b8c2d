"""Challenge-step speed: one fresh ``medsegfm predict`` process per step, allocator tuning on and off.

Run::

    nice -n 5 .venv/bin/python benchmarks/predict_speed_bench.py [--repeats 3]

The CVPR 2025 protocol runs one process per step, so every volume-sized temporary of a step is
memory the process has never touched. ``medsegfm predict`` calls
:func:`napari_medsegfm.utils.keep_freed_memory`, which lets glibc reuse freed blocks instead of
mapping them afresh from the kernel; ``MEDSEGFM_MALLOC_TUNING=0`` turns that off. For the box
step and the first click step of three development files (the 15-organ CT_AMOS volume, a
4-object BraTS volume and a small CT lesion), the step's input npz is written as the challenge
writes it (the click step from the default backend's box step and one simulated click per
class), then ``medsegfm predict --backend classic`` runs on it ``--repeats`` times with the
tuning on and off, alternating. Reported: median wall and system time, peak memory of the
process (measured from a small wrapper interpreter, not inherited from this one), the ratio
off / on, and whether both wrote the same ``segs``.

Writes ``benchmarks/results/predict_speed.json`` and ``predict_speed.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from accuracy_bench import CASES, PY, RESULTS, _eval_case, _find_data, _write, _write_step_npz  # noqa: E402

FILES = ("CT_AMOS_amos_0018", "MR_BraTS2013_pat0006_Flair", "CT_Lesion_000002_03_01_035-047")


def step_inputs(data: Path) -> list[tuple[str, dict[str, Any]]]:
    """(label, npz members) of the box step and the first click step of each file in FILES."""
    from napari_medsegfm.backends.registry import get_backend
    from napari_medsegfm.tasks.evaluation import run_case
    from napari_medsegfm.tasks.predict import predict_case

    out: list[tuple[str, dict[str, Any]]] = []
    for c in CASES:
        if c.name not in FILES:
            continue
        be = get_backend("classic", device="cpu")
        seen: list[dict[str, Any]] = []

        def capture(inp: dict[str, Any], _be: Any = be, _seen: list = seen) -> np.ndarray:
            _seen.append(dict(inp))
            return predict_case(inp, _be)

        run_case(_eval_case(c, data), be, n_clicks=1, boxes=c.boxes, predict_fn=capture)
        out += [(f"{c.name} box step", seen[0]), (f"{c.name} click 1", seen[1])]
    return out


# Runs the command from a small interpreter and prints its resource use as JSON. On Linux a
# child's peak memory starts at its parent's size when the parent forks it, so the command
# must not be forked from this (large) benchmark process.
_WRAP = """
import json, os, sys, time
t0 = time.perf_counter()
pid = os.fork()
if pid == 0:
    fd = os.open(os.devnull, os.O_WRONLY)
    os.dup2(fd, 1)
    os.execv(sys.argv[1], sys.argv[1:])
_, status, ru = os.wait4(pid, 0)
print(json.dumps({"rc": os.waitstatus_to_exitcode(status), "wall_s": time.perf_counter() - t0,
                  "sys_s": ru.ru_stime, "user_s": ru.ru_utime, "maxrss_mb": ru.ru_maxrss / 1024.0}))
"""


def _one(src: Path, dst: Path, tuning: bool) -> dict[str, float]:
    exe = str(Path(PY).with_name("medsegfm"))
    env = {**os.environ, "MEDSEGFM_MALLOC_TUNING": "1" if tuning else "0"}
    cmd = [exe, "predict", "-i", str(src), "-o", str(dst), "--backend", "classic", "--device", "cpu", "--no-progress"]
    p = subprocess.run([PY, "-c", _WRAP, *cmd], env=env, capture_output=True, text=True, timeout=1800)
    if p.returncode != 0 or not p.stdout.strip():
        raise RuntimeError(f"{' '.join(cmd)}: the wrapper failed ({p.returncode}): {p.stderr[-2000:]}")
    res = json.loads(p.stdout.strip().splitlines()[-1])
    if res.pop("rc") != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {p.stderr[-2000:]}")
    return res


def measure(repeats: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="predict-speed-") as tmp:
        for label, members in step_inputs(_find_data()):
            src = Path(tmp) / "step.npz"
            _write_step_npz(src, members)
            runs: dict[str, list[dict[str, float]]] = {"on": [], "off": []}
            segs: dict[str, np.ndarray] = {}
            for _ in range(repeats):
                for mode in ("off", "on"):
                    dst = Path(tmp) / f"segs_{mode}.npz"
                    runs[mode].append(_one(src, dst, mode == "on"))
                    with np.load(dst) as z:
                        segs[mode] = np.asarray(z["segs"])
            row: dict[str, Any] = {"step": label, "voxels": int(np.asarray(members["imgs"]).size),
                                   "same_segs": bool(np.array_equal(segs["on"], segs["off"]))}
            for mode, rs in runs.items():
                for k in ("wall_s", "sys_s", "user_s", "maxrss_mb"):
                    row[f"{k}_{mode}"] = float(np.median([r[k] for r in rs]))
            row["ratio"] = row["wall_s_off"] / row["wall_s_on"]
            rows.append(row)
            print(f"  {label:<48} off {row['wall_s_off']:.2f} s (sys {row['sys_s_off']:.2f}) | on "
                  f"{row['wall_s_on']:.2f} s (sys {row['sys_s_on']:.2f}) | x{row['ratio']:.2f} "
                  f"same={row['same_segs']}", flush=True)
    return rows


def render(rows: list[dict[str, Any]], repeats: int) -> str:
    lines = ["# Challenge-step speed: a fresh `medsegfm predict` per step, allocator tuning on / off", "",
             f"Generated by `benchmarks/predict_speed_bench.py` (`--backend classic`, median of {repeats} runs "
             "each, alternating; `off` = `MEDSEGFM_MALLOC_TUNING=0`). Wall time includes process start, "
             "reading the step's npz and writing `segs`. The 2-core machine is shared: compare the columns "
             "of one row, not rows of different runs.", "",
             "| step | voxels | wall off (s) | wall on (s) | off / on | sys off (s) | sys on (s) | peak MB off | "
             "peak MB on | same segs |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['step']} | {r['voxels']} | {r['wall_s_off']:.2f} | {r['wall_s_on']:.2f} | "
                     f"{r['ratio']:.2f} | {r['sys_s_off']:.2f} | {r['sys_s_on']:.2f} | {r['maxrss_mb_off']:.0f} | "
                     f"{r['maxrss_mb_on']:.0f} | {'yes' if r['same_segs'] else 'NO'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3, help="runs per setting and step (default: 3)")
    ap.add_argument("--name", default="predict_speed", help="results file stem (default: predict_speed)")
    a = ap.parse_args(argv)
    rows = measure(max(a.repeats, 1))
    RESULTS.mkdir(parents=True, exist_ok=True)
    _write(RESULTS / f"{a.name}.json", json.dumps({"repeats": a.repeats, "rows": rows}, indent=1, default=float))
    _write(RESULTS / f"{a.name}.md", render(rows, a.repeats))
    print(f"[predict_speed_bench] wrote {RESULTS / (a.name + '.json')} and .md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
