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

Clinical formats (``--sections clinical``; target 1.3x)
    A 300-slice 512x512 CT series (``--dicom-slices``) is written with pydicom into the
    temporary folder: the real dcmqi CT slice (``shared/data/dicom``) as the header
    template, pixel data from the real CT_AMOS volume resampled along z by nearest
    neighbour (HU = 8 x value - 1024, stored int16 with RescaleIntercept -1024),
    1 mm apart, file names in random order. Rows:

    * open: plugin ``load_case(folder)`` (header scan, sort by position, checks, decode,
      rescale to HU, closest-canonical view) and the napari reader vs. SimpleITK's own
      series read (``ImageSeriesReader.GetGDCMSeriesFileNames`` + ``Execute`` +
      ``GetArrayFromImage``);
    * save the 15 organ labels as a DICOM-SEG: plugin ``save_labels(.dcm)`` (source
      headers as parsed at open, unless the files changed; label listing and remapping,
      segment coding, atomic write) vs. highdicom's ``Segmentation`` + ``save_as`` on
      headers read beforehand and labels already in frame order; as ``.seg.nrrd`` vs.
      ``slicerio.write_segmentation``; as a ``.nrrd`` label map vs. SimpleITK
      (``GetImageFromArray`` + geometry + ``WriteImage``);
    * every clinical row is also given against SimpleITK's series read (the issue's
      baseline) in a note under the table;
    * open the series as one NRRD volume: plugin ``load_case(.nrrd)`` vs.
      ``SimpleITK.ReadImage`` + ``GetArrayFromImage``.
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
TARGET_CLINICAL = 1.3


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


def write_ct_series(folder: Path, n: int) -> tuple[list[Path], np.ndarray]:
    """A real-data CT series of ``n`` 512x512 slices (see the module docstring); returns files and
    the labels ``(n, 512, 512)`` in slice order (top file = lowest z)."""
    import copy
    import random

    import pydicom
    from pydicom.uid import generate_uid

    data = _find_data()
    tmpl = pydicom.dcmread(str(data / "dicom/dcmqi_ct-3slice/01.dcm"))
    src = make_case((n, 512, 512))
    folder.mkdir(parents=True, exist_ok=True)
    uid = generate_uid()
    rng = random.Random(0)
    files = []
    order = list(range(n))
    rng.shuffle(order)
    for rank, k in enumerate(order):
        ds = copy.deepcopy(tmpl)
        ds.SeriesInstanceUID = uid
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = rank + 1
        ds.ImagePositionPatient = [tmpl.ImagePositionPatient[0], tmpl.ImagePositionPatient[1], -300.0 + k]
        ds.PixelData = (src["imgs"][k].astype(np.int16) * 8).tobytes()  # HU = 8 v - 1024
        f = folder / f"{rng.randrange(10**8):08d}.dcm"
        ds.save_as(str(f), enforce_file_format=True)
        files.append(f)
    return files, src["gts"]


def run_clinical(n_slices: int, repeats: int, tmp: Path) -> list[dict[str, Any]]:
    import highdicom as hd
    import pydicom
    import SimpleITK as sitk
    import slicerio

    from napari_medsegfm.io.dicomseg import segment_codes
    from napari_medsegfm.io.geometry import LPS_TO_RAS, to_source_order

    rows: list[dict[str, Any]] = []
    work = Path(tempfile.mkdtemp(prefix="io_bench_dicom_", dir=tmp))
    try:
        folder = work / "series"
        files, gts_slices = write_ct_series(folder, n_slices)
        size = sum(f.stat().st_size for f in files)

        def raw_open():
            r = sitk.ImageSeriesReader()
            r.SetFileNames(r.GetGDCMSeriesFileNames(str(folder)))
            return sitk.GetArrayFromImage(r.Execute())

        def plugin_open():
            return load_case(folder)

        def reader_open():
            return napari_get_reader(str(folder))(str(folder))

        t = best_of({"raw": raw_open, "plugin": plugin_open, "reader": reader_open}, repeats)
        case = load_case(folder)
        ref = raw_open()  # SimpleITK: (z, y, x) in LPS index order, HU
        assert np.array_equal(case.image.array, ref[:, ::-1, ::-1]), "plugin and SimpleITK disagree"
        rows.append({"op": "open", "format": f"DICOM series ({n_slices} files)",
                     "raw_call": "SimpleITK ImageSeriesReader (GDCM file names + Execute + array)", "raw_s": t["raw"],
                     "plugin_call": "load_case(folder)", "plugin_s": t["plugin"], "ratio": t["plugin"] / t["raw"],
                     "reader_s": t["reader"], "reader_ratio": t["reader"] / t["raw"], "file_bytes": size,
                     "target": TARGET_CLINICAL})

        # labels in display order: the series is LPS-aligned, so canonical = flip rows and columns
        labels = np.ascontiguousarray(gts_slices[:, ::-1, ::-1])
        names = {i: f"organ {i}" for i in range(1, int(labels.max()) + 1)}
        names.update({1: "spleen", 2: "right kidney", 3: "left kidney", 6: "liver", 7: "stomach", 8: "aorta"})
        grid = case.meta["grid"]
        frames = to_source_order(labels, grid).transpose(2, 1, 0)
        headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in case.meta["dicom"]["files"]]
        ids = [int(v) for v in np.unique(frames) if v]
        lut = np.zeros(max(ids) + 1, np.uint8)
        lut[ids] = np.arange(1, len(ids) + 1)
        from pydicom.sr.codedict import codes

        alg = hd.AlgorithmIdentificationSequence(name="bench", family=codes.CID7162.ArtificialIntelligence,
                                                 version="1")
        descs = []
        for num, lid in enumerate(ids, start=1):
            cat, typ, _mod, _how = segment_codes(names[lid])
            descs.append(hd.seg.SegmentDescription(num, names[lid], cat, typ, "SEMIAUTOMATIC", alg))
        pixel = lut[frames]
        seg_raw, seg_plugin = work / "raw_seg.dcm", work / "plugin_seg.dcm"

        def raw_seg():
            seg = hd.seg.Segmentation(headers, pixel, "BINARY", descs, hd.UID(), 1000, hd.UID(), 1, "bench",
                                      "bench", "1", "1", specific_character_set="ISO_IR 192")
            seg.save_as(str(seg_raw))

        def plugin_seg():
            save_labels(labels, seg_plugin, case=case, label_names=names)

        t = best_of({"raw": raw_seg, "plugin": plugin_seg}, repeats)
        back = load_case(folder, labels_file=seg_plugin).labels["gts"]
        assert np.array_equal(back, lut[labels]), "DICOM-SEG read-back differs"
        rows.append({"op": "save labels", "format": f"DICOM-SEG ({len(ids)} segments)",
                     "raw_call": "highdicom Segmentation + save_as (headers read beforehand)", "raw_s": t["raw"],
                     "plugin_call": "save_labels(.dcm) (codes, colours, atomic)", "plugin_s": t["plugin"],
                     "ratio": t["plugin"] / t["raw"], "file_bytes": seg_plugin.stat().st_size,
                     "target": TARGET_CLINICAL})

        ijk = to_source_order(labels, grid)  # the same (Fortran-order) view the plugin hands to pynrrd
        segd = {"voxels": ijk, "ijkToLPS": LPS_TO_RAS @ grid["affine_ras"], "encoding": "gzip",
                "segments": [{"id": f"Segment_{i}", "name": names[i], "labelValue": i, "layer": 0,
                              "color": [0.5, 0.5, 0.5]} for i in ids]}
        sn_raw, sn_plugin = work / "raw.seg.nrrd", work / "plugin.seg.nrrd"

        def raw_segnrrd():
            slicerio.write_segmentation(str(sn_raw), segd)

        def plugin_segnrrd():
            save_labels(labels, sn_plugin, case=case, label_names=names)

        t = best_of({"raw": raw_segnrrd, "plugin": plugin_segnrrd}, repeats)
        rows.append({"op": "save labels", "format": "Slicer .seg.nrrd", "raw_call": "slicerio.write_segmentation",
                     "raw_s": t["raw"], "plugin_call": "save_labels(.seg.nrrd) (atomic, terminology)",
                     "plugin_s": t["plugin"], "ratio": t["plugin"] / t["raw"],
                     "file_bytes": sn_plugin.stat().st_size, "target": TARGET_CLINICAL})

        lps = LPS_TO_RAS @ grid["affine_ras"]
        sp = np.sqrt((lps[:3, :3] ** 2).sum(axis=0))
        nr_raw, nr_plugin = work / "raw_lab.nrrd", work / "plugin_lab.nrrd"

        def raw_nrrd():  # what a script does with a (z, y, x) label array in the series' index order
            lab_img = sitk.GetImageFromArray(frames)
            lab_img.SetSpacing(tuple(sp))
            lab_img.SetDirection(tuple((lps[:3, :3] / sp).reshape(-1)))
            lab_img.SetOrigin(tuple(lps[:3, 3]))
            sitk.WriteImage(lab_img, str(nr_raw), True)

        def plugin_nrrd():
            save_labels(labels, nr_plugin, case=case)

        t = best_of({"raw": raw_nrrd, "plugin": plugin_nrrd}, repeats)
        rows.append({"op": "save labels", "format": "NRRD label map (gzip)",
                     "raw_call": "SimpleITK GetImageFromArray + geometry + WriteImage",
                     "raw_s": t["raw"], "plugin_call": "save_labels(.nrrd) (source grid, atomic)",
                     "plugin_s": t["plugin"], "ratio": t["plugin"] / t["raw"],
                     "file_bytes": nr_plugin.stat().st_size, "target": TARGET_CLINICAL})

        vol_nrrd = work / "ct.nrrd"
        sitk.WriteImage(sitk.GetImageFromArray(ref), str(vol_nrrd), True)

        def raw_nrrd_open():
            return sitk.GetArrayFromImage(sitk.ReadImage(str(vol_nrrd)))

        def plugin_nrrd_open():
            return load_case(vol_nrrd)

        t = best_of({"raw": raw_nrrd_open, "plugin": plugin_nrrd_open}, repeats)
        rows.append({"op": "open", "format": "NRRD volume (gzip)", "raw_call": "SimpleITK.ReadImage + array",
                     "raw_s": t["raw"], "plugin_call": "load_case(.nrrd)", "plugin_s": t["plugin"],
                     "ratio": t["plugin"] / t["raw"], "file_bytes": vol_nrrd.stat().st_size,
                     "target": TARGET_CLINICAL})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    series_read = rows[0]["raw_s"]
    for r in rows:
        r["vs_series_read"] = r["plugin_s"] / series_read
    return rows


def run(shape: tuple[int, int, int], repeats: int, tmp: Path, sections: tuple[str, ...] = ("npz", "clinical"),
        dicom_slices: int = 300) -> dict[str, Any]:
    import nibabel as nib

    rows: list[dict[str, Any]] = []
    if "clinical" in sections:
        rows.extend(run_clinical(dicom_slices, repeats, tmp))
    if "npz" not in sections:
        return _result(shape, repeats, rows, dicom_slices)
    case = make_case(shape)
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
    return _result(shape, repeats, rows, dicom_slices)


def _result(shape: tuple[int, int, int], repeats: int, rows: list[dict[str, Any]], dicom_slices: int
            ) -> dict[str, Any]:
    return {
        "benchmark": "io_bench",
        "dicom_slices": dicom_slices,
        "target_ratio_clinical": TARGET_CLINICAL,
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
        f"{res['target_ratio']} (clinical formats, {res.get('dicom_slices', 300)}-slice 512x512 CT series: <= "
        f"{res.get('target_ratio_clinical', TARGET_CLINICAL)}). {res['note']}.",
        "",
        "| operation | format | raw call | raw s | plugin call | plugin s | plugin / raw | napari reader s (/ raw) |"
        " file MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        reader = f"{r['reader_s']:.3f} ({r['reader_ratio']:.2f})" if "reader_s" in r else ""
        ok = "" if r["ratio"] <= r.get("target", res["target_ratio"]) else " ⚠"
        lines.append(f"| {r['op']} | {r['format']} | {r['raw_call']} | {r['raw_s']:.3f} | {r['plugin_call']} | "
                     f"{r['plugin_s']:.3f} | {r['ratio']:.2f}{ok} | {reader} | {r['file_bytes'] / 1e6:.1f} |")
    clin = [r for r in res["rows"] if "vs_series_read" in r]
    if clin:
        lines += ["", f"Each clinical row against SimpleITK's own read of the same {res.get('dicom_slices', 300)}-slice "
                  f"series ({clin[0]['raw_s']:.3f} s): "
                  + ", ".join(f"{r['op']} {r['format']} {r['vs_series_read']:.2f}x" for r in clin) + "."]
    extra = [r for r in res["rows"] if "labels_only_raw_s" in r]
    if extra:
        lines += ["", "For reference, writing only the label image with numpy (a different, smaller file): "
                  + ", ".join(f"{r['format']}: {r['labels_only_raw_s']:.3f} s" for r in extra) + "."]
    lines += ["", "The plugin's save includes what the raw call does not do: fsync of the file and of its folder, "
              "and the atomic rename. It copies the untouched members (imgs, gts, spacing) as raw zip entries "
              "instead of compressing them again."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    import warnings

    warnings.filterwarnings("ignore", module="highdicom")  # the template's PatientName style
    warnings.filterwarnings("ignore", module="pydicom")
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", default="200,512,512", help="D,H,W (default 200,512,512)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--tmp", default=str(REPO / "benchmarks" / "results"),
                    help="folder for the temporary files (default: benchmarks/results, same disk as the repo)")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--sections", default="npz,clinical", help="npz,clinical (default both)")
    ap.add_argument("--dicom-slices", type=int, default=300, help="slices of the DICOM series (default 300)")
    args = ap.parse_args(argv)
    shape = tuple(int(s) for s in args.shape.split(","))
    if len(shape) != 3:
        ap.error("--shape needs D,H,W")
    Path(args.tmp).mkdir(parents=True, exist_ok=True)
    sections = tuple(x.strip() for x in args.sections.split(",") if x.strip())
    res = run(shape, args.repeats, Path(args.tmp), sections, args.dicom_slices)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "io_bench.json").write_text(json.dumps(res, indent=1))
    md = to_markdown(res)
    (out / "io_bench.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
