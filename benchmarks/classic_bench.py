"""Backend latency section of ``engine_bench.py`` (eval helper): the weight-free backend per interaction.

On the engine benchmark's case (CT_AMOS_amos_0018 resampled to 200x512x512 by
default), for a few organs of different sizes: one CVPR-style box (tight z range,
the median slice's xy box grown by 4 px), then five clicks simulated by the
challenge's rule (:mod:`napari_medsegfm.tasks.clicks`), each a ``predict`` call with
the object's current mask, timed one by one; the same sequence with the ``boxfill``
baseline in the same run gives the ratio. Also one whole challenge step
(:func:`~napari_medsegfm.tasks.predict.predict_case` with all 15 boxes).

Run alone::

    .venv/bin/python benchmarks/classic_bench.py [--shape 200,512,512]

which is ``engine_bench.py --sections backend_latency``.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from napari_medsegfm.types import Box3D, CancelToken, Point  # noqa: E402

#: organs timed (CT_AMOS labels): spleen, liver, aorta, pancreas, left adrenal gland
ORGANS = {1: "spleen", 6: "liver", 8: "aorta", 10: "pancreas", 12: "left adrenal"}


def _cvpr_box(gts: np.ndarray, lid: int, grow: int = 4) -> Box3D:
    m = gts == lid
    zs = np.flatnonzero(m.any(axis=(1, 2)))
    zm = int(zs[len(zs) // 2])
    ys, xs = np.nonzero(m[zm])
    h, w = gts.shape[1:]
    return Box3D(int(zs[0]), int(zs[-1]), max(int(ys.min()) - grow, 0), max(int(xs.min()) - grow, 0),
                 min(int(ys.max()) + grow, h - 1), min(int(xs.max()) + grow, w - 1), object_id=lid, z_mid=zm)


def _sequence(backend: Any, ctx: Any, lid: int, n_clicks: int = 5) -> dict[str, Any]:
    from napari_medsegfm.tasks.clicks import simulate_click
    from napari_medsegfm.tasks.metrics import dsc

    gt = ctx.gts == lid
    gt8 = gt.astype(np.uint8)
    box = _cvpr_box(ctx.gts, lid)
    tok = CancelToken()
    t0 = time.perf_counter()
    mask = backend.predict([box], None, tok)
    times = [time.perf_counter() - t0]
    dscs = [dsc(gt, mask)]
    prompts: list[Any] = [box]
    for _ in range(n_clicks):
        c = simulate_click(gt8, mask.astype(np.uint8), 1)
        if c is None:
            break
        prompts.append(Point(c.position, c.kind == "fg", object_id=lid))
        t0 = time.perf_counter()
        mask = backend.predict(prompts, mask, tok)
        times.append(time.perf_counter() - t0)
        dscs.append(dsc(gt, mask))
    return {"times": times, "dsc": dscs, "voxels": int(gt.sum())}


def bench_backend_latency(ctx: Any) -> dict[str, Any]:
    """Per-interaction latency of ``classic`` vs ``boxfill``: box, then each of 5 clicks."""
    from napari_medsegfm.backends.registry import get_backend
    from napari_medsegfm.tasks.predict import predict_case

    rows: list[dict[str, Any]] = []
    data: dict[str, Any] = {"organs": {}}

    def row(metric: str, value: Any, unit: str = "", note: str = "") -> None:
        rows.append({"metric": metric, "value": round(value, 3) if isinstance(value, float) else value,
                     "unit": unit, "note": note})

    organs = [lid for lid in ORGANS if np.any(ctx.gts == lid)]
    per_backend: dict[str, dict[str, list[float]]] = {}
    for name in ("classic", "boxfill"):
        b = get_backend(name, device="cpu")
        b.set_image(ctx.volume)
        _sequence(b, ctx, organs[0], n_clicks=1)  # warm-up (imports, caches)
        box_t: list[float] = []
        click_t: list[float] = []
        for lid in organs:
            r = _sequence(b, ctx, lid)
            data["organs"].setdefault(ORGANS[lid], {})[name] = r
            box_t.append(r["times"][0])
            click_t += r["times"][1:]
        per_backend[name] = {"box": box_t, "click": click_t}
    for name, t in per_backend.items():
        row(f"{name}: box, median over {len(t['box'])} organs", statistics.median(t["box"]) * 1e3, "ms")
        row(f"{name}: box, max", max(t["box"]) * 1e3, "ms")
        row(f"{name}: click, median over {len(t['click'])} clicks", statistics.median(t["click"]) * 1e3, "ms")
        row(f"{name}: click, max", max(t["click"]) * 1e3, "ms")
    c, f = per_backend["classic"], per_backend["boxfill"]
    row("classic / boxfill latency, box (median)", statistics.median(c["box"]) / max(statistics.median(f["box"]), 1e-9),
        "x", "same run")
    row("classic / boxfill latency, click (median)",
        statistics.median(c["click"]) / max(statistics.median(f["click"]), 1e-9), "x", "same run")
    for lid in organs:
        o = data["organs"][ORGANS[lid]]
        rc, rf = o["classic"], o["boxfill"]
        row(f"{ORGANS[lid]} ({rc['voxels']} vox): box then clicks",
            " / ".join(f"{t * 1e3:.0f}" for t in rc["times"]), "ms",
            f"DSC classic {rc['dsc'][0]:.3f}->{rc['dsc'][-1]:.3f}, boxfill {rf['dsc'][0]:.3f}->{rf['dsc'][-1]:.3f}")
    # one whole challenge step: every organ's box, merged
    labels = [int(v) for v in np.unique(ctx.gts) if v]
    boxes = np.empty(len(labels), dtype=object)
    for i, lid in enumerate(labels):
        bx = _cvpr_box(ctx.gts, lid)
        boxes[i] = {"z_min": bx.z_min, "z_max": bx.z_max, "z_mid": bx.z_mid, "z_mid_x_min": bx.x_min,
                    "z_mid_y_min": bx.y_min, "z_mid_x_max": bx.x_max, "z_mid_y_max": bx.y_max}
    sp = ctx.volume.spacing
    inputs = {"imgs": ctx.volume.array, "spacing": np.array([sp[2], sp[1], sp[0]]), "boxes": boxes}
    for name in ("classic", "boxfill"):
        b = get_backend(name, device="cpu")
        t0 = time.perf_counter()
        predict_case(inputs, b)
        row(f"{name}: whole box step, {len(labels)} objects (predict_case)", time.perf_counter() - t0, "s")
    return {"title": "Backend latency (classic vs boxfill; box, then 5 simulated clicks)", "rows": rows,
            "data": data}


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import engine_bench

    args = sys.argv[1:]
    if "--sections" not in args:
        args = ["--sections", "backend_latency"] + args
    sys.exit(engine_bench.main(args))
