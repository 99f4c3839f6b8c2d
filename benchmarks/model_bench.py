"""LiteMedSAM benchmark: load, encoder precision/speed, 2D/3D latency, caches, memory, evaluation.

Run::

    .venv/bin/python benchmarks/model_bench.py                       # every section
    .venv/bin/python benchmarks/model_bench.py --sections box3d,clicks --note "machine idle"

Sections (each ``bench_<name>() -> {"title", "rows", "data"}``, merged into
``benchmarks/results/model_bench.json`` and rendered to ``model_bench.md``):

``load``       status() cost; cold model load (fresh process: import torch, SHA-256, strict load)
``encoder``    seconds per slice (plain / optimised float32 / mixed / bf16 autocast) and the
               agreement of their masks with plain float32 on 17 real objects (15 AMOS organs at
               their box slice, 2 DeepLesion lesions); float16-stored embeddings too
``box2d``      a 2D box on a new image (encode + decode): 512x512 CT slice, 1024x1024 RGB
``box3d``      fresh process: model load + a 3D box on a 15-slice object at 512x512 (AMOS pancreas),
               then 5 simulated clicks; the box with the float32 encoder (mask agreement) and with
               bf16; the same with naive per-slice re-encoding (no caches)
``cli_steps``  the challenge's process-per-step: a click step in a fresh process with a cold
               and with a warm on-disk embedding cache
``multi``      all 15 AMOS boxes: slices encoded with shared embeddings vs per object
``memory``     peak RSS (fresh process) of a 3D box + click on a 200x512x512 volume
``eval``       ``medsegfm evaluate`` (box + 5 clicks) for litemedsam, classic and boxfill on the
               CVPR-style cases of ../shared/data (CT_AMOS, BraTS, 2 DeepLesion, cvpr24 3D lesion)

Timings on the 2-core development machine are noisy while other jobs run: every
section records the load average; compare figures measured in the same run.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
JSON_NAME = "model_bench.json"
MD_NAME = "model_bench.md"
PY = sys.executable


def _find_data() -> Path:
    # benchmarks/_data.py: $MEDSEGFM_TEST_DATA, else <repo>/../shared/data
    if str(Path(__file__).resolve().parent) not in sys.path:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _data import shared_data

    return shared_data()


DATA = _find_data()
AMOS_IMG = DATA / "cvpr25" / "imgs" / "CT_AMOS_amos_0018.npz"
AMOS_GT = DATA / "cvpr25" / "gts" / "CT_AMOS_amos_0018.npz"


def _row(metric: str, value: Any, unit: str = "", note: str = "") -> dict[str, Any]:
    if isinstance(value, float):
        value = round(value, 4)
    return {"metric": metric, "value": value, "unit": unit, "note": note}


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    s = int(a.sum()) + int(b.sum())
    return 1.0 if s == 0 else 2.0 * int((a & b).sum()) / s


def _amos() -> tuple[np.ndarray, np.ndarray, Any]:
    from napari_medsegfm.io import safe_load_npz

    d = safe_load_npz(AMOS_IMG)
    g = safe_load_npz(AMOS_GT)
    return d["imgs"], g["gts"], d["boxes"]


def _amos_boxes():
    from napari_medsegfm.io.cvpr import parse_boxes

    imgs, gts, boxes = _amos()
    return imgs, gts, parse_boxes(boxes, imgs.shape)


def _child(task: str, *args: str, env: dict[str, str] | None = None, timeout: float = 3600) -> dict[str, Any]:
    """Run ``model_bench.py --child task args`` in a fresh process; its last stdout line is JSON."""
    e = dict(os.environ)
    e.update(env or {})
    t0 = time.perf_counter()
    p = subprocess.run([PY, str(Path(__file__).resolve()), "--child", task, *args], capture_output=True, text=True,
                       env=e, timeout=timeout, cwd=str(REPO))
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"child {task} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    out = json.loads(p.stdout.strip().splitlines()[-1])
    out["process_wall_s"] = wall
    return out


# ------------------------------------------------------------------------ children
def child_load() -> dict[str, Any]:
    t0 = time.perf_counter()
    import torch  # noqa: F401

    t_torch = time.perf_counter() - t0
    from napari_medsegfm.backends.litemedsam import LiteMedSAMBackend

    b = LiteMedSAMBackend(device="cpu", cache_dir=False)
    b._ensure_model()
    return {"import_torch_s": t_torch, "load_s": b.stats["load_s"], "total_s": time.perf_counter() - t0}


def _click_loop(b: Any, gts: np.ndarray, lab: int, prompts: list, m: np.ndarray, n: int) -> tuple[list, list, list]:
    from napari_medsegfm.tasks.clicks import simulate_click
    from napari_medsegfm.types import Point

    times, dices, enc = [], [_dice(m, gts == lab)], []
    for _ in range(n):
        c = simulate_click(gts, m.astype(np.uint8) * lab, lab)
        if c is None:
            break
        prompts = prompts + [Point(c.position, c.kind == "fg", object_id=lab)]
        e0 = b.stats["encoded"]
        t0 = time.perf_counter()
        m = b.predict(prompts, m)
        times.append(time.perf_counter() - t0)
        enc.append(b.stats["encoded"] - e0)
        dices.append(_dice(m, gts == lab))
    return times, dices, enc


def child_box3d(mode: str, lab: str = "10", clicks: str = "5", save: str = "") -> dict[str, Any]:
    """Model load + 3D box (+ clicks) in this fresh process. mode: cached | naive; ``save``: .npy for the box mask."""
    t0 = time.perf_counter()
    from napari_medsegfm.backends.litemedsam import LiteMedSAMBackend
    from napari_medsegfm.types import Volume

    imgs, gts, boxes = _amos_boxes()
    lab_i = int(lab)
    box = next(b for b in boxes if b.object_id == lab_i)
    t_data = time.perf_counter() - t0
    kw = {"cache_dir": False}
    if mode == "naive":
        kw["memory_cache_mb"] = 0.0
    b = LiteMedSAMBackend(device="cpu", **kw)
    b.set_image(Volume(imgs))
    t1 = time.perf_counter()
    m = b.predict([box], None)
    t_box = time.perf_counter() - t1
    box_total = time.perf_counter() - t0
    enc_box = b.stats["encoded"]
    box_stats = {"box_encode_s": b.stats["encode_s"], "box_decoded": b.stats["decoded"],
                 "box_decode_s": b.stats["decode_s"]}
    if save:
        np.save(save, m)
    times, dices, enc = _click_loop(b, gts, lab_i, [box], m, int(clicks))
    return {"mode": mode, "label": lab_i, "slices": box.z_max - box.z_min + 1, "data_s": t_data,
            "load_s": b.stats["load_s"], "box_predict_s": t_box, "box_total_incl_load_s": box_total,
            "box_encoded": enc_box, "click_s": times, "click_encoded": enc, "dice": dices,
            "encode_s_total": b.stats["encode_s"], "decoded": b.stats["decoded"], "decode_s": b.stats["decode_s"],
            "precision": b.precision, **box_stats}


def child_step(cache_dir: str, lab: str, step: str) -> dict[str, Any]:
    """One challenge step in a fresh process: step 0 = box, step k = box + k clicks on prev."""
    t0 = time.perf_counter()
    from napari_medsegfm.backends.litemedsam import LiteMedSAMBackend
    from napari_medsegfm.tasks.clicks import simulate_click
    from napari_medsegfm.types import Point, Volume

    imgs, gts, boxes = _amos_boxes()
    lab_i, k = int(lab), int(step)
    box = next(b for b in boxes if b.object_id == lab_i)
    state = Path(cache_dir) / f"state_{lab_i}.npz"
    b = LiteMedSAMBackend(device="cpu", cache_dir=Path(cache_dir) / "emb")
    b.set_image(Volume(imgs))
    if k == 0:
        m = b.predict([box], None)
        pts: list = []
    else:
        st = np.load(state)
        prev = st["mask"]
        pts = [tuple(int(v) for v in r) for r in st["points"]]
        c = simulate_click(gts, prev.astype(np.uint8) * lab_i, lab_i)
        pts.append((*c.position, int(c.kind == "fg")))
        prompts = [box] + [Point(p[:3], bool(p[3]), object_id=lab_i) for p in pts]
        m = b.predict(prompts, prev)
    np.savez(state, mask=m, points=np.asarray(pts, dtype=np.int64).reshape(-1, 4))
    return {"step": k, "wall_s": time.perf_counter() - t0, "encoded": b.stats["encoded"],
            "disk_hits": b.cache.disk.hits if b.cache.disk else 0, "dice": _dice(m, gts == lab_i)}


def _hwm_mb() -> float:
    """Peak resident memory of this process (VmHWM; ru_maxrss survives exec and would count the parent)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_memory(z: str = "200") -> dict[str, Any]:
    from napari_medsegfm.backends.litemedsam import LiteMedSAMBackend
    from napari_medsegfm.tasks.clicks import simulate_click
    from napari_medsegfm.types import Box3D, Point, Volume

    imgs, gts, _ = _amos()
    nz = int(z)
    # linear interpolation along z: every slice distinct (nearest-neighbour copies would share embeddings)
    pos = np.arange(nz) * (imgs.shape[0] - 1) / (nz - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, imgs.shape[0] - 1)
    w = (pos - lo)[:, None, None]
    vol = np.empty((nz, *imgs.shape[1:]), np.uint8)
    for i in range(nz):
        vol[i] = np.clip((1 - w[i]) * imgs[lo[i]] + w[i] * imgs[hi[i]] + 0.5, 0, 255).astype(np.uint8)
    gt = np.ascontiguousarray(gts[np.round(pos).astype(int)])
    rss0 = _hwm_mb()
    lab = 4  # gallbladder: ~29 slices at 200 slices
    mk = gt == lab
    zs = np.flatnonzero(mk.any((1, 2)))
    zm = int(zs[len(zs) // 2])
    ys, xs = np.nonzero(mk[zm])
    box = Box3D(int(zs[0]), int(zs[-1]), int(ys.min()) - 4, int(xs.min()) - 4, int(ys.max()) + 4, int(xs.max()) + 4,
                object_id=lab, z_mid=zm)
    b = LiteMedSAMBackend(device="cpu", cache_dir=False)
    b.set_image(Volume(vol))
    t0 = time.perf_counter()
    m = b.predict([box], None)
    t_box = time.perf_counter() - t0
    c = simulate_click(gt, m.astype(np.uint8) * lab, lab)
    t1 = time.perf_counter()
    m2 = b.predict([box, Point(c.position, c.kind == "fg", object_id=lab)], m)
    t_click = time.perf_counter() - t1
    rss = _hwm_mb()
    return {"shape": list(vol.shape), "slices_in_box": int(zs[-1] - zs[0] + 1), "encoded": b.stats["encoded"],
            "rss_before_model_mb": rss0, "peak_rss_mb": rss, "box_s": t_box, "click_s": t_click,
            "dice_box": _dice(m, mk), "dice_click": _dice(m2, mk), "cache_mb": b.cache.memory.nbytes / 2**20}


def child_flow(mode: str, lab: str = "10", step_s: str = "0.15") -> dict[str, Any]:
    """The GUI's 3D-box flow on the session (what the controller does), in this fresh process.

    Draw the rectangle on the object's middle slice (auto-run: that slice alone), step one
    slice every ``step_s`` seconds down to the first slice of the object and press ``,``
    (the box re-runs over z_min..z_mid), then up to the last slice and press ``.`` (re-run
    over the whole extent). ``mode`` warm: each step calls ``session.warm`` with the
    controller's slice list; ``plain``: no warm-up. Latencies are key press -> mask.
    """
    import dataclasses
    import threading

    from napari_medsegfm.backends.litemedsam import LiteMedSAMBackend
    from napari_medsegfm.engine.session import AnnotationSession
    from napari_medsegfm.types import Volume
    from napari_medsegfm.widgets.controller import slices_to_warm

    imgs, gts, boxes = _amos_boxes()
    lab_i = int(lab)
    full = next(b for b in boxes if b.object_id == lab_i)
    zmid = full.z_mid if full.z_mid is not None else (full.z_min + full.z_max) // 2
    s = AnnotationSession(Volume(imgs), backend=LiteMedSAMBackend(device="cpu", cache_dir=False))
    s.prepare(wait=True)
    s.backend._ensure_model()
    lid = s.add_object("pancreas").label_id

    def run(z0: int, z1: int, replace: bool) -> float:
        done = threading.Event()
        got: list[Any] = []
        box = dataclasses.replace(full, z_min=z0, z_max=z1, z_mid=zmid, object_id=lid)
        t0 = time.perf_counter()
        s.submit(box, lambda r: (got.append(r), done.set()), replace=replace)
        done.wait(600)
        dt = time.perf_counter() - t0
        s.apply_result(got[0])
        return dt

    def step_to(z: int, target: int, lo: int, hi: int) -> None:
        direction = -1 if target < z else 1
        while z != target:
            z += direction
            time.sleep(float(step_s))
            if mode == "warm" and not lo <= z <= hi:
                s.warm(slices_to_warm(z, lo, hi))  # what the controller asks for at each slice step

    t_start = time.perf_counter()
    first = run(zmid, zmid, replace=False)
    step_to(zmid, full.z_min, zmid, zmid)
    e0 = s.backend.stats["encoded"]
    down = run(full.z_min, zmid, replace=True)
    enc_down = s.backend.stats["encoded"] - e0
    step_to(full.z_min, full.z_max, full.z_min, zmid)
    e1 = s.backend.stats["encoded"]
    up = run(full.z_min, full.z_max, replace=True)
    enc_up = s.backend.stats["encoded"] - e1
    total = time.perf_counter() - t_start
    dice = _dice(s.labels == lid, gts == lab_i)
    s.close()
    return {"mode": mode, "first_s": first, "down_s": down, "up_s": up, "total_s": total,
            "encoded_at_keys": [enc_down, enc_up], "encoded_total": s.backend.stats["encoded"],
            "steps": (zmid - full.z_min) + (full.z_max - full.z_min), "step_s": float(step_s), "dice": dice}


CHILDREN = {"load": child_load, "box3d": child_box3d, "flow": child_flow, "step": child_step, "memory": child_memory}


# ------------------------------------------------------------------------ sections
def bench_load() -> dict[str, Any]:
    from napari_medsegfm.backends.litemedsam import LiteMedSAMBackend

    t0 = time.perf_counter()
    st = LiteMedSAMBackend.status()
    t_status = time.perf_counter() - t0
    runs = [_child("load") for _ in range(2)]
    best = min(runs, key=lambda r: r["total_s"])
    rows = [
        _row("status() (file lookup + size check, no torch import)", t_status * 1000, "ms", st.state),
        _row("import torch (fresh process)", best["import_torch_s"], "s"),
        _row("model load: SHA-256 + strict load + fuse (fresh process)", best["load_s"], "s"),
        _row("total, fresh process", best["total_s"], "s", "best of 2"),
    ]
    return {"title": "Model load", "rows": rows, "data": {"runs": runs}}


def _encoder_variants():
    import contextlib

    import torch

    from napari_medsegfm.backends.litemedsam.model import load_litemedsam

    plain = load_litemedsam(reuse=False)
    opt = load_litemedsam(reuse=False, optimize=True)

    def cl(x):
        return x.contiguous(memory_format=torch.channels_last)

    def bf16():
        return torch.autocast("cpu", dtype=torch.bfloat16)

    from napari_medsegfm.backends.litemedsam.tinyvit import mixed_precision

    return plain, {
        "float32 (plain)": (plain.image_encoder, lambda x: x, contextlib.nullcontext),
        FP32_OPT: (opt.image_encoder, cl, contextlib.nullcontext),
        MIXED: (opt.image_encoder, cl, mixed_precision),
        "bf16 autocast (opt-in)": (plain.image_encoder, lambda x: x, bf16),
        "bf16 autocast, fused + channels-last (opt-in)": (opt.image_encoder, cl, bf16),
    }


FP32_OPT = "float32 optimised: BN folded, channels-last, oneDNN conv/linear+GELU, banded stage 0 (PRECISION=fp32)"
MIXED = "mixed: bf16 only in stage-2/3 attention + stage-3 MLPs, rest as above (default on bf16 CPUs)"


def bench_encoder() -> dict[str, Any]:
    import torch

    from napari_medsegfm.backends.litemedsam.backend import _set_threads
    from napari_medsegfm.backends.litemedsam.predictor import (
        LiteMedSAMPredictor,
        SliceGeometry,
        preprocess_slices,
    )
    from napari_medsegfm.backends.litemedsam.tinyvit import mixed_precision

    threads = _set_threads(None)
    imgs, gts, boxes = _amos()
    items = [(imgs[int(b["z_mid"])], (int(b["z_mid_y_min"]), int(b["z_mid_x_min"]), int(b["z_mid_y_max"]),
                                      int(b["z_mid_x_max"])), f"AMOS label {i}") for i, b in enumerate(boxes, 1)]
    for f in sorted((DATA / "medsam2_recist").glob("*.npz")):
        d = np.load(f)
        g = d["gts"]
        z = int(np.argmax(g.sum((1, 2))))
        ys, xs = np.nonzero(g[z])
        items.append((d["imgs"][z], (int(ys.min()) - 3, int(xs.min()) - 3, int(ys.max()) + 3, int(xs.max()) + 3),
                      f.stem[:16]))
    plain, variants = _encoder_variants()
    pred = LiteMedSAMPredictor(plain)
    geo = SliceGeometry(512, 512)
    X = preprocess_slices(np.stack([it[0] for it in items]))
    rows, data = [], {"objects": [it[2] for it in items], "threads": threads}
    ref = None
    with torch.inference_mode():
        for name, (enc, fmt, ctx) in variants.items():
            embs = []
            for i in range(len(X)):
                with ctx():
                    embs.append(enc(fmt(X[i:i + 1])).float())
            E = torch.cat(embs)
            masks = [(pred.decode(E[i:i + 1], geo, box=b)[0][0] > 0).numpy() for i, (_, b, _) in enumerate(items)]
            if ref is None:
                ref = masks
            ds = [_dice(a, b) for a, b in zip(ref, masks)]
            ts = []
            for _ in range(3):
                t0 = time.perf_counter()
                with ctx():
                    enc(fmt(X[:1]))
                ts.append(time.perf_counter() - t0)
            rows.append(_row(f"encoder, {name}", min(ts), "s/slice", "min of 3, batch 1"))
            rows.append(_row("  mask Dice vs float32: min / mean / #objects < 0.99", f"{min(ds):.4f} / "
                             f"{np.mean(ds):.4f} / {sum(d < 0.99 for d in ds)} of {len(ds)}", "",
                             "17 real objects"))
            data[name] = {"s_per_slice": min(ts), "dice_vs_fp32": ds}
        # float16-stored embeddings (the caches)
        E32 = torch.cat([variants[FP32_OPT][0](
            X[i:i + 1].contiguous(memory_format=torch.channels_last)).float() for i in range(len(X))])
        ds16 = [_dice((pred.decode(E32[i:i + 1], geo, box=b)[0][0] > 0).numpy(),
                      (pred.decode(E32[i:i + 1].half().float(), geo, box=b)[0][0] > 0).numpy())
                for i, (_, b, _) in enumerate(items)]
        rows.append(_row("float16-stored embeddings (caches): mask Dice vs float32, min", min(ds16), "", ""))
        data["fp16_storage_dice"] = ds16
        # batch size
        from napari_medsegfm.backends.litemedsam.model import load_litemedsam

        opt = load_litemedsam(optimize=True)
        for bs in (1, 2, 4):
            x = X[:bs].contiguous(memory_format=torch.channels_last)
            ts = []
            for _ in range(2):
                t0 = time.perf_counter()
                with mixed_precision():
                    opt.image_encoder(x)
                ts.append((time.perf_counter() - t0) / bs)
            rows.append(_row(f"encoder batch {bs} (mixed precision)", min(ts), "s/slice", ""))
            data[f"batch_{bs}"] = min(ts)
        # decoder
        e = E32[:1]
        ts = []
        for _ in range(10):
            t0 = time.perf_counter()
            pred.decode(e, geo, box=items[0][1])
            ts.append(time.perf_counter() - t0)
        rows.append(_row("prompt encoder + mask decoder + upsampling to 512x512, one box", 1000 * float(np.median(ts)),
                         "ms", "median of 10"))
    return {"title": "Image encoder: precision, speed, agreement", "rows": rows, "data": data}


def bench_box2d() -> dict[str, Any]:
    from napari_medsegfm.backends.litemedsam import LiteMedSAMBackend
    from napari_medsegfm.types import Box2D, Volume

    imgs, gts, boxes = _amos()
    b = LiteMedSAMBackend(device="cpu", cache_dir=False)
    b._ensure_model()
    rows, data = [], {}
    cases = []
    z = int(boxes[0]["z_mid"])
    bx = boxes[0]
    cases.append(("512x512 CT slice (grey), spleen", Volume(imgs[z].copy()),
                  Box2D(int(bx["z_mid_y_min"]), int(bx["z_mid_x_min"]), int(bx["z_mid_y_max"]), int(bx["z_mid_x_max"])),
                  gts[z] == 1))
    pol = np.load(DATA / "cvpr24" / "imgs" / "2DBox_Endoscopy_BiomedParse24_polyp.npz")
    pgt = np.load(DATA / "cvpr24" / "gts" / "2DBox_Endoscopy_BiomedParse24_polyp.npz")["gts"] == 1
    x0, y0, x1, y1 = (int(v) for v in pol["boxes"][0])
    cases.append(("1024x1024 RGB endoscopy, polyp", Volume.rgb(pol["imgs"]), Box2D(y0, x0, y1, x1), pgt))
    for name, vol, box, gt in cases:
        ts = []
        for rep in range(3):
            b.cache.memory.clear()
            t0 = time.perf_counter()
            b.set_image(Volume(vol.array.copy(), meta=dict(vol.meta)) if rep else vol)
            m = b.predict([box], None)
            ts.append(time.perf_counter() - t0)
        fill = np.zeros_like(gt)
        fill[box.y_min:box.y_max + 1, box.x_min:box.x_max + 1] = True
        rows.append(_row(f"2D box, new image: {name}", min(ts), "s", "encode + decode, model loaded; target < 1.5 s"))
        rows.append(_row("  Dice (box filling)", f"{_dice(m, gt):.3f} ({_dice(fill, gt):.3f})", "", ""))
        data[name] = {"s": ts, "dice": _dice(m, gt), "dice_boxfill": _dice(fill, gt)}
    return {"title": "2D box latency", "rows": rows, "data": data}


def bench_box3d() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as td:
        cached = _child("box3d", "cached", "10", "5", str(Path(td) / "default.npy"))
        fp32 = _child("box3d", "cached", "10", "0", str(Path(td) / "fp32.npy"),
                      env={"MEDSEGFM_LITEMEDSAM_PRECISION": "fp32"})
        agree = _dice(np.load(Path(td) / "default.npy"), np.load(Path(td) / "fp32.npy"))
    bf16 = _child("box3d", "cached", "10", "0", env={"MEDSEGFM_LITEMEDSAM_PRECISION": "bf16"})
    naive = _child("box3d", "naive", "10", "5")
    rows = [
        _row("3D box, 15-slice object at 512x512, incl. model load (fresh process)", cached["box_total_incl_load_s"],
             "s", f"AMOS pancreas; {cached['box_encoded']} slices encoded; precision {cached.get('precision')}; "
                  "target < 8 s"),
        _row("  of which reading the case (npz)", cached["data_s"], "s", ""),
        _row("  of which model load (incl. import torch)", cached["load_s"], "s", ""),
        _row("  of which box predict (encode + propagate; includes the model load)", cached["box_predict_s"], "s",
             f"encode {cached['box_encode_s']:.2f} s ({cached['box_encode_s'] / cached['box_encoded']:.2f} s/slice)"
             f", {cached['box_decoded']} decodes {cached['box_decode_s']:.2f} s"),
        _row("  fresh process wall time (with python/torch start-up)", cached["process_wall_s"], "s", ""),
        _row("  same with the float32 encoder (MEDSEGFM_LITEMEDSAM_PRECISION=fp32)", fp32["box_total_incl_load_s"],
             "s", f"encode {fp32['box_encode_s']:.2f} s ({fp32['box_encode_s'] / fp32['box_encoded']:.2f} s/slice)"),
        _row("  3D box mask Dice, default vs float32 encoder", agree, "", "agreement rule: >= 0.99"),
        _row("  same with the opt-in bf16 encoder (MEDSEGFM_LITEMEDSAM_PRECISION=bf16)", bf16["box_total_incl_load_s"],
             "s", f"box predict {bf16['box_predict_s']:.1f} s; Dice {bf16['dice'][0]:.3f} vs {cached['dice'][0]:.3f}"),
        _row("later clicks, cached embeddings: median / max", f"{np.median(cached['click_s']):.2f} / "
             f"{max(cached['click_s']):.2f}", "s", f"{len(cached['click_s'])} clicks; slices encoded per click: "
             f"{cached['click_encoded']}; target < 2 s"),
        _row("  Dice box -> after each click", " -> ".join(f"{d:.3f}" for d in cached["dice"]), "", ""),
        _row("naive per-slice re-encoding: 3D box predict", naive["box_predict_s"], "s",
             f"every decode re-encodes its slice ({naive['box_encoded']} encodes)"),
        _row("naive per-slice re-encoding: clicks median / max", f"{np.median(naive['click_s']):.2f} / "
             f"{max(naive['click_s']):.2f}", "s", f"encodes per click {naive['click_encoded']}"),
        _row("speed-up of caching: box / clicks (median)",
             f"{naive['box_predict_s'] / cached['box_predict_s']:.1f}x / "
             f"{np.median(naive['click_s']) / np.median(cached['click_s']):.1f}x", "", "same run"),
        _row("  masks identical, cached vs naive", str(np.allclose(cached["dice"], naive["dice"])), "", ""),
    ]
    return {"title": "3D box and clicks (15-slice object, 512x512)", "rows": rows,
            "data": {"cached": cached, "naive": naive, "bf16": bf16, "fp32": fp32, "dice_default_vs_fp32": agree}}


def bench_cli_steps() -> dict[str, Any]:
    rows, data = [], {}
    with tempfile.TemporaryDirectory() as td:
        steps = [_child("step", td, "10", str(k)) for k in range(3)]
    with tempfile.TemporaryDirectory() as td:  # same steps, but the cache is wiped before each
        cold = []
        for k in range(3):
            import shutil

            shutil.rmtree(Path(td) / "emb", ignore_errors=True)
            cold.append(_child("step", td, "10", str(k)))
    for k, (w, c) in enumerate(zip(steps, cold)):
        rows.append(_row(f"step {k} ({'box' if k == 0 else f'click {k}'}) in a fresh process: warm / cold disk cache",
                         f"{w['process_wall_s']:.1f} / {c['process_wall_s']:.1f}", "s",
                         f"slices encoded {w['encoded']} / {c['encoded']}, disk hits {w['disk_hits']}"))
    data = {"warm": steps, "cold": cold}
    return {"title": "Challenge steps as fresh processes (on-disk embedding cache)", "rows": rows, "data": data}


def bench_multi() -> dict[str, Any]:
    from napari_medsegfm.backends.litemedsam import LiteMedSAMBackend
    from napari_medsegfm.types import Volume

    imgs, gts, boxes = _amos_boxes()
    b = LiteMedSAMBackend(device="cpu", cache_dir=False)
    b.set_image(Volume(imgs))
    b._ensure_model()
    t0 = time.perf_counter()
    ds = []
    for box in boxes:
        m = b.predict([box], None)
        ds.append(_dice(m, gts == box.object_id))
    t = time.perf_counter() - t0
    spans = sum(bx.z_max - bx.z_min + 1 for bx in boxes)
    rows = [
        _row("15 AMOS boxes: slices encoded (shared embeddings)", b.stats["encoded"], "",
             f"vs {spans} slice encodes when each object encodes its own span"),
        _row("15 AMOS boxes: total time", t, "s", f"encode {b.stats['encode_s']:.1f} s, {b.stats['decoded']} decodes "
             f"{b.stats['decode_s']:.1f} s"),
        _row("mean Dice of the box step (per object, unmerged)", float(np.mean(ds)), "", ""),
    ]
    return {"title": "Multi-object case: shared slice embeddings", "rows": rows, "data": {"dice": ds}}


def bench_memory() -> dict[str, Any]:
    r = _child("memory", "200")
    rows = [
        _row("peak RSS, 3D box + 1 click on a 200x512x512 volume (fresh process)", r["peak_rss_mb"], "MB",
             f"target < 2048 MB; {r['slices_in_box']}-slice object, {r['encoded']} slices encoded"),
        _row("  peak RSS after building the case, before the model", r["rss_before_model_mb"], "MB", ""),
        _row("  in-memory embedding cache", r["cache_mb"], "MB", "float16, LRU bound 512 MB"),
        _row("  box / click time", f"{r['box_s']:.1f} / {r['click_s']:.1f}", "s", ""),
        _row("  Dice box / after click", f"{r['dice_box']:.3f} / {r['dice_click']:.3f}", "", ""),
    ]
    return {"title": "Memory: 200x512x512", "rows": rows, "data": r}


EVAL_SETS = [  # (cases folder, extra CLI args)
    (DATA / "cvpr25", ["--exclude", "Microscopy"]),
    (DATA / "medsam2_recist", []),
    (DATA / "cvpr24", ["--include", "3DBox"]),
]


def bench_eval(backends: tuple[str, ...] = ("litemedsam", "classic", "boxfill")) -> dict[str, Any]:
    exe = str(Path(PY).with_name("medsegfm"))
    per: dict[str, list[dict[str, Any]]] = {}
    secs: dict[str, float] = {}
    for be in backends:
        per[be] = []
        t0 = time.perf_counter()
        for folder, extra in EVAL_SETS:
            cmd = [exe, "evaluate", "--cases", str(folder), "--backend", be, "--device", "cpu", "--json",
                   "--no-progress", *extra]
            p = subprocess.run(cmd, capture_output=True, text=True, cwd=str(REPO), timeout=7200)
            if p.returncode != 0:
                raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr[-2000:]}")
            per[be] += json.loads(p.stdout)["cases"]
        secs[be] = time.perf_counter() - t0
    # transparency: LiteMedSAM itself on the click-only case (the default hands it to classic)
    cmd = [exe, "evaluate", "--cases", str(DATA / "cvpr25"), "--include", "BraTS", "--backend", "litemedsam",
           "--device", "cpu", "--json", "--no-progress"]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=str(REPO), timeout=7200,
                       env={**os.environ, "MEDSEGFM_LITEMEDSAM_BOXLESS": "model"})
    model_boxless = json.loads(p.stdout)["cases"] if p.returncode == 0 else []
    rows = []
    keys = ("DSC_AUC", "NSD_AUC", "DSC_Final", "NSD_Final")
    for be in backends:
        for c in per[be]:
            rows.append(_row(f"{be}: {c['case']}", f"DSC_AUC {c['DSC_AUC']:.3f}, NSD_AUC {c['NSD_AUC']:.3f}, "
                             f"final DSC {c['DSC_Final']:.3f}", "",
                             f"box step DSC {c['DSC_1']:.3f} ({c['boxes']}), {c['sec_per_step']:.1f} s/step"))
        m = {k: float(np.mean([c[k] for c in per[be]])) for k in keys}
        rows.append(_row(f"**{be}: mean over {len(per[be])} cases**", f"DSC_AUC {m['DSC_AUC']:.3f}, NSD_AUC "
                         f"{m['NSD_AUC']:.3f}, final DSC {m['DSC_Final']:.3f}", "", f"{secs[be]:.0f} s in all"))
    for c in model_boxless:
        rows.append(_row(f"litemedsam with MEDSEGFM_LITEMEDSAM_BOXLESS=model: {c['case']}",
                         f"DSC_AUC {c['DSC_AUC']:.3f}, NSD_AUC {c['NSD_AUC']:.3f}, final DSC {c['DSC_Final']:.3f}", "",
                         "click-only objects segmented by LiteMedSAM itself (not the default)"))
    return {"title": "medsegfm evaluate: box + 5 clicks (CVPR 2025 protocol)", "rows": rows,
            "data": {"cases": per, "seconds": secs, "litemedsam_boxless_model": model_boxless,
                     "commands": [f"medsegfm evaluate --cases {os.path.relpath(f, REPO)} --backend <name> --device cpu --json "
                                  + " ".join(e) for f, e in EVAL_SETS]}}


def bench_flow() -> dict[str, Any]:
    plain = _child("flow", "plain", "10", "0.15")
    runs = {pace: _child("flow", "warm", "10", pace) for pace in ("0.15", "0.4")}
    rows = [_row("GUI flow, 15-slice box: draw on the middle slice, step to z_min, ',' then to z_max, '.'", "", "",
                 f"{plain['steps']} slice steps; model loaded; no warm-up vs warm-up while stepping")]
    for pace, warm in runs.items():
        rows += [
            _row(f"  step every {pace} s: ',' -> mask (z_min..z_mid), no warm-up / warm-up",
                 f"{plain['down_s']:.2f} / {warm['down_s']:.2f}", "s",
                 f"slices encoded after the key: {plain['encoded_at_keys'][0]} / {warm['encoded_at_keys'][0]}"),
            _row(f"  step every {pace} s: '.' -> final mask (whole extent), no warm-up / warm-up",
                 f"{plain['up_s']:.2f} / {warm['up_s']:.2f}", "s",
                 f"slices encoded after the key: {plain['encoded_at_keys'][1]} / {warm['encoded_at_keys'][1]}"),
            _row(f"  step every {pace} s: final Dice, no warm-up / warm-up", f"{plain['dice']:.3f} / {warm['dice']:.3f}",
                 "", "same masks expected"),
        ]
    return {"title": "3D box in the GUI flow: slices encoded while the user sets the z extent", "rows": rows,
            "data": {"plain": plain, "warm": runs}}


SECTIONS = {"load": bench_load, "encoder": bench_encoder, "box2d": bench_box2d, "box3d": bench_box3d,
            "flow": bench_flow, "cli_steps": bench_cli_steps, "multi": bench_multi, "memory": bench_memory, "eval": bench_eval}


# ------------------------------------------------------------------------ output
def _machine() -> dict[str, Any]:
    return {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "load_avg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}


def render_markdown(results: dict[str, Any]) -> str:
    lines = ["# LiteMedSAM benchmark", "",
             "Generated by `benchmarks/model_bench.py`; one table per section (each records when it ran and the "
             "machine load: figures taken while other jobs ran on the same 2 cores are noisy).", ""]
    for name, sec in results.get("sections", {}).items():
        lines += [f"## {sec.get('title', name)}", ""]
        meta = sec.get("meta", {})
        m = meta.get("machine", {})
        la = m.get("load_avg")
        la_s = "/".join(f"{v:.1f}" for v in la) if la else "n/a"
        lines += [f"Section `{name}`, run {meta.get('when', '?')} in {meta.get('seconds', 0):.0f} s on "
                  f"{m.get('cpus')} CPUs (load at start {la_s})." + (f" Note: {meta['note']}" if meta.get("note")
                                                                    else ""), ""]
        lines += ["| metric | value | unit | note |", "|---|---:|---|---|"]
        for r in sec.get("rows", []):
            lines.append(f"| {r['metric']} | {r['value']} | {r['unit']} | {r['note']} |")
        lines.append("")
    return "\n".join(lines)


def _write(path: Path, text: str) -> None:
    from napari_medsegfm.io.atomic import atomic_write_bytes

    atomic_write_bytes(path, text.encode("utf-8"))


def run(sections: list[str], out: Path, note: str = "") -> dict[str, Any]:
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
            pass
    for name in sections:
        print(f"[model_bench] {name} ...", flush=True)
        machine = _machine()
        t0 = time.perf_counter()
        sec = SECTIONS[name]()
        sec["meta"] = {"when": _dt.datetime.now().isoformat(timespec="seconds"), "machine": machine,
                       "load_avg_end": list(os.getloadavg()), "seconds": time.perf_counter() - t0, "note": note}
        results["sections"][name] = sec
        for r in sec["rows"]:
            print(f"  {r['metric']}: {r['value']} {r['unit']}  {r['note']}", flush=True)
        ordered = {k: results["sections"][k] for k in SECTIONS if k in results["sections"]}
        results["sections"] = ordered
        _write(jpath, json.dumps(results, indent=1, default=float))
        _write(out / MD_NAME, render_markdown(results))
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of: {', '.join(SECTIONS)}")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--note", default="", help="free text stored with the figures (e.g. machine busy)")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        res = CHILDREN[a.child[0]](*a.child[1:])
        print(json.dumps(res, default=float))
        return 0
    run([s.strip() for s in a.sections.split(",") if s.strip()], a.out, a.note)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
