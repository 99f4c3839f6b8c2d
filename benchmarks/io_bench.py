"""IO benchmark: open and save a 200x512x512 uint8 case through the plugin vs. the raw library call.

Run::

    .venv/bin/python benchmarks/io_bench.py                   # 200x512x512, 5 repeats
    .venv/bin/python benchmarks/io_bench.py --shape 64,256,256 --repeats 3

The case is the real CVPR25 CT_AMOS_amos_0018 (63x512x512 image + 15 organ labels)
resampled along z by nearest-neighbour indexing to the requested shape, so the data
compresses like real data. It is written three ways in a temporary folder (on the same
file system as the checkout unless ``--tmp`` says otherwise): a compressed npz
(``np.savez_compressed``), an uncompressed npz (``np.savez``) and NIfTI (``.nii.gz``
image + labels).

Each row compares, on the same file and in the same run (min of ``--repeats``
alternating runs):

open
    plugin ``load_case`` (and the napari reader: ``napari_get_reader(path)(path)``, which
    adds the layer tuples) vs. ``np.load`` of every member (npz) / ``nibabel.load`` +
    ``np.asanyarray(dataobj)`` of image and labels (NIfTI).
save
    plugin ``save_labels`` of a ``segs`` label image into the case file (every other member
    copied raw; atomic: temp file + fsync + rename + directory fsync) vs.
    ``np.savez_compressed``/``np.savez`` writing the same members (what a script would do
    to produce the same file, no fsync); NIfTI: plugin ``save_labels`` back into the source
    geometry vs. ``nibabel.save`` of the same array and affine.

Target: the plugin within 1.2x of the raw call. Results go to
``benchmarks/results/io_bench.json`` and ``io_bench.md``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from napari_medsegfm.io import load_case, save_labels  # noqa: E402
from napari_medsegfm.io.reader import napari_get_reader  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
TARGET = 1.2


def _find_data() -> Path:
    # benchmarks/_data.py: $MEDSEGFM_TEST_DATA, else <repo>/../shared/data
    if str(Path(__file__).resolve().parent) not in sys.path:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _data import shared_data

    return shared_data()


def make_case(shape: tuple[int, int, int]) -> dict[str, np.ndarray]:
    data = _find_data()
    src = np.load(data / "cvpr25/imgs/CT_AMOS_amos_0018.npz", allow_pickle=True)  # trusted shared file
    gts = np.load(data / "cvpr25/gts/CT_AMOS_amos_0018.npz")["gts"]
    d, h, w = shape
    zi = np.minimum((np.arange(d) * src["imgs"].shape[0]) // d, src["imgs"].shape[0] - 1)
    yi = np.minimum((np.arange(h) * 512) // h, 511)
    xi = np.minimum((np.arange(w) * 512) // w, 511)
    imgs = np.ascontiguousarray(src["imgs"][zi][:, yi][:, :, xi])
    lab = np.ascontiguousarray(gts[zi][:, yi][:, :, xi])
    segs = lab.copy()
    segs[segs == 6] = 0  # a "corrected" label image that differs from gts
    return {"imgs": imgs, "gts": lab, "segs": segs, "spacing": src["spacing"]}


def best_of(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """Min wall time of each function, runs interleaved so drift hits all alike."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            gc.collect()
            t = time.perf_counter()
            out = fn()
            times[k].append(time.perf_counter() - t)
            del out
    return {k: min(v) for k, v in times.items()}


def run(shape: tuple[int, int, int], repeats: int, tmp: Path) -> dict[str, Any]:
    import nibabel as nib

    case = make_case(shape)
    rows: list[dict[str, Any]] = []
    work = Path(tempfile.mkdtemp(prefix="io_bench_", dir=tmp))
    try:
        for kind, saver in (("npz compressed", np.savez_compressed), ("npz uncompressed", np.savez)):
            p = work / f"case_{kind.split()[1]}.npz"
            saver(p, imgs=case["imgs"], gts=case["gts"], spacing=case["spacing"])
            size = p.stat().st_size

            def raw_load(p=p):
                with np.load(p) as z:
                    return {k: z[k] for k in z.files}

            def plugin_load(p=p):
                return load_case(p)

            def reader_load(p=p):
                return napari_get_reader(str(p))(str(p))

            t = best_of({"raw": raw_load, "plugin": plugin_load, "reader": reader_load}, repeats)
            rows.append({"op": "open", "format": kind, "raw_call": "np.load (all members)", "raw_s": t["raw"],
                         "plugin_call": "load_case", "plugin_s": t["plugin"], "ratio": t["plugin"] / t["raw"],
                         "reader_s": t["reader"], "reader_ratio": t["reader"] / t["raw"], "file_bytes": size})

            raw_out = work / f"raw_{kind.split()[1]}.npz"
            full = {"imgs": case["imgs"], "gts": case["gts"], "spacing": case["spacing"], "segs": case["segs"]}

            def raw_save(raw_out=raw_out, saver=saver, full=full):
                saver(raw_out, **full)

            def raw_labels_only(saver=saver):
                saver(work / "labels_only.npz", segs=case["segs"])

            def plugin_save(p=p):
                save_labels(case["segs"], p)

            t = best_of({"raw": raw_save, "plugin": plugin_save, "labels_only": raw_labels_only}, repeats)
            assert np.array_equal(np.load(p)["segs"], case["segs"])
            rows.append({"op": "save segs", "format": kind,
                         "raw_call": f"np.{saver.__name__} (imgs, gts, spacing, segs)", "raw_s": t["raw"],
                         "plugin_call": "save_labels (atomic, raw member copy)", "plugin_s": t["plugin"],
                         "ratio": t["plugin"] / t["raw"], "labels_only_raw_s": t["labels_only"],
                         "file_bytes": p.stat().st_size})

        # NIfTI: image and labels as .nii.gz (RAS, array (z, y, x) -> file (x, y, z))
        aff = np.diag([float(case["spacing"][0]), float(case["spacing"][1]), float(case["spacing"][2]), 1.0])
        img_p, lab_p = work / "case.nii.gz", work / "case_seg.nii.gz"
        nib.save(nib.Nifti1Image(case["imgs"].transpose(2, 1, 0), aff), str(img_p))
        nib.save(nib.Nifti1Image(case["gts"].transpose(2, 1, 0), aff), str(lab_p))

        def raw_nii_load():
            return (np.asanyarray(nib.load(str(img_p)).dataobj), np.asanyarray(nib.load(str(lab_p)).dataobj))

        def plugin_nii_load():
            return load_case(img_p), load_case(lab_p)

        def reader_nii_load():
            return napari_get_reader([str(img_p), str(lab_p)])([str(img_p), str(lab_p)])

        t = best_of({"raw": raw_nii_load, "plugin": plugin_nii_load, "reader": reader_nii_load}, repeats)
        rows.append({"op": "open", "format": "NIfTI .nii.gz (image + labels)",
                     "raw_call": "nibabel.load + asanyarray(dataobj)", "raw_s": t["raw"],
                     "plugin_call": "load_case x2", "plugin_s": t["plugin"], "ratio": t["plugin"] / t["raw"],
                     "reader_s": t["reader"], "reader_ratio": t["reader"] / t["raw"],
                     "file_bytes": img_p.stat().st_size + lab_p.stat().st_size})

        lab_case = load_case(lab_p)
        out_plugin, out_raw = work / "out_plugin.nii.gz", work / "out_raw.nii.gz"
        segs_file_order = case["segs"].transpose(2, 1, 0)

        def raw_nii_save():
            nib.save(nib.Nifti1Image(segs_file_order, aff), str(out_raw))

        def plugin_nii_save():
            save_labels(case["segs"], out_plugin, case=lab_case)

        t = best_of({"raw": raw_nii_save, "plugin": plugin_nii_save}, repeats)
        assert np.array_equal(np.asanyarray(nib.load(str(out_plugin)).dataobj), segs_file_order)
        rows.append({"op": "save labels", "format": "NIfTI .nii.gz", "raw_call": "nibabel.save", "raw_s": t["raw"],
                     "plugin_call": "save_labels (atomic, source geometry)", "plugin_s": t["plugin"],
                     "ratio": t["plugin"] / t["raw"], "file_bytes": out_plugin.stat().st_size})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {
        "benchmark": "io_bench",
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "shape": list(shape),
        "repeats": repeats,
        "target_ratio": TARGET,
        "machine": {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count(),
                    "numpy": np.__version__},
        "note": "min of interleaved runs; other processes may have been running (noisy figures)",
        "rows": rows,
    }


def to_markdown(res: dict[str, Any]) -> str:
    d, h, w = res["shape"]
    lines = [
        f"# IO benchmark ({d}x{h}x{w} uint8 case)",
        "",
        f"{res['date']}, {res['machine']['platform']}, {res['machine']['cpus']} CPUs, numpy "
        f"{res['machine']['numpy']}; min of {res['repeats']} interleaved runs. Target: plugin / raw <= "
        f"{res['target_ratio']}. {res['note']}.",
        "",
        "| operation | format | raw call | raw s | plugin call | plugin s | plugin / raw | napari reader s (/ raw) |"
        " file MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        reader = f"{r['reader_s']:.3f} ({r['reader_ratio']:.2f})" if "reader_s" in r else ""
        ok = "" if r["ratio"] <= res["target_ratio"] else " ⚠"
        lines.append(f"| {r['op']} | {r['format']} | {r['raw_call']} | {r['raw_s']:.3f} | {r['plugin_call']} | "
                     f"{r['plugin_s']:.3f} | {r['ratio']:.2f}{ok} | {reader} | {r['file_bytes'] / 1e6:.1f} |")
    extra = [r for r in res["rows"] if "labels_only_raw_s" in r]
    if extra:
        lines += ["", "For reference, writing only the label image with numpy (a different, smaller file): "
                  + ", ".join(f"{r['format']}: {r['labels_only_raw_s']:.3f} s" for r in extra) + "."]
    lines += ["", "The plugin's save includes what the raw call does not do: fsync of the file and of its folder, "
              "and the atomic rename. It copies the untouched members (imgs, gts, spacing) as raw zip entries "
              "instead of compressing them again."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", default="200,512,512", help="D,H,W (default 200,512,512)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--tmp", default=str(REPO / "benchmarks" / "results"),
                    help="folder for the temporary files (default: benchmarks/results, same disk as the repo)")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    shape = tuple(int(s) for s in args.shape.split(","))
    if len(shape) != 3:
        ap.error("--shape needs D,H,W")
    Path(args.tmp).mkdir(parents=True, exist_ok=True)
    res = run(shape, args.repeats, Path(args.tmp))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "io_bench.json").write_text(json.dumps(res, indent=1))
    md = to_markdown(res)
    (out / "io_bench.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
