"""``medsegfm convert IN OUT``: convert a case between the supported file formats.

The output format follows OUT's extension (``.npz`` CVPR25-style, ``.nii``/``.nii.gz``,
``.h5`` medsegpy 3D) or ``--to`` (``samed2d``, ``medsegpy_slices`` write a folder).
NIfTI output writes the image to OUT and the labels beside it (``<stem>_seg.nii.gz``,
or ``--labels-out``). ``--labels-only`` writes just the label image with
:func:`napari_medsegfm.io.save_labels` (e.g. a CVPR ``segs`` into a NIfTI in the
source's geometry).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from . import CLIError

logger = logging.getLogger(__name__)

_OUT_FORMATS = ("npz", "nifti", "medsegpy_h5", "medsegpy_slices", "samed2d")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "convert",
        help="convert a case between formats (CVPR npz, NIfTI, medsegpy, SA-Med2D, IVDM3Seg input)",
        description="Read IN (any supported case: CVPR25/24 npz, NIfTI, medsegpy .h5 or slice folder, "
                    "SA-Med2D-20M PNGs, IVDM3Seg case) and write it as OUT.",
    )
    p.add_argument("input", metavar="IN", help="case file or folder")
    p.add_argument("output", metavar="OUT", help="output file (.npz, .nii.gz, .h5) or folder (with --to)")
    p.add_argument("--to", choices=_OUT_FORMATS, default=None, help="output format (default: from OUT's extension)")
    p.add_argument("--case-id", default=None, help="case inside a dataset folder (medsegpy scan, SA-Med2D case, IVDM3Seg NN)")
    p.add_argument("--labels", default=None, metavar="KEY",
                   help="which labels of IN to convert: gts, segs or prev_pred (default: gts, else segs)")
    p.add_argument("--labels-only", action="store_true", help="write only the label image")
    p.add_argument("--labels-out", default=None, help="NIfTI output: where to write the labels (default <OUT stem>_seg.nii.gz)")
    p.add_argument("--key", default="segs", help="npz member name for --labels-only output (default segs)")
    p.add_argument("--scan-id", default=None, help="medsegpy slices output: scan id %%07d_V%%02d-Aug%%02d")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(func=run)


def _out_format(out: Path, to: str | None) -> str:
    if to:
        return to
    n = out.name.lower()
    if n.endswith(".npz"):
        return "npz"
    if n.endswith((".nii", ".nii.gz")):
        return "nifti"
    if n.endswith((".h5", ".hdf5")):
        return "medsegpy_h5"
    raise CLIError(f"cannot tell the output format of {out}; use .npz, .nii.gz, .h5 or --to")


def _labels_key(case: Any, requested: str | None) -> str | None:
    if requested:
        if requested not in case.labels:
            raise CLIError(f"{case.source}: no labels {requested!r} (has: {', '.join(case.labels) or 'none'})")
        return requested
    return "gts" if "gts" in case.labels else "segs" if "segs" in case.labels else None


def _nifti_labels_path(out: Path, explicit: str | None) -> Path:
    if explicit:
        return Path(explicit)
    n = out.name
    stem = n[:-7] if n.lower().endswith(".nii.gz") else n[:-4]
    return out.with_name(f"{stem}_seg.nii.gz")


def run(args: argparse.Namespace) -> int:
    from .. import io as medio
    from ..io.cvpr import write_cvpr_npz
    from ..io.medsegpy import write_medsegpy_h5, write_medsegpy_slices
    from ..io.nifti import save_nifti_labels, write_nifti_volume
    from ..io.samed2d import write_samed2d_case

    src, out = Path(args.input), Path(args.output)
    case = medio.load_case(src, case_id=args.case_id)
    fmt = _out_format(out, args.to)
    key = _labels_key(case, args.labels)
    if out.exists() and not args.overwrite and not (out.is_dir() and not any(out.iterdir())):
        raise CLIError(f"{out} exists; pass --overwrite to replace it")
    written: list[Path] = []
    if args.labels_only:
        if key is None:
            raise CLIError(f"{src}: the case has no labels to convert")
        written.append(medio.save_labels(case.labels[key], out, case=case, key=args.key,
                                         fmt=None if fmt == "nifti" else fmt, overwrite_gt=args.overwrite))
    elif fmt == "npz":
        written.append(write_cvpr_npz(case, out, labels_key=key))
    elif fmt == "nifti":
        if case.meta.get("labels_only"):
            written.append(save_nifti_labels(case.labels["gts"], out, case=case, overwrite_gt=args.overwrite))
        else:
            written.append(write_nifti_volume(case.image, out))
            if key is not None:
                lab_out = _nifti_labels_path(out, args.labels_out)
                if lab_out.exists() and not args.overwrite:
                    raise CLIError(f"{lab_out} exists; pass --overwrite to replace it")
                written.append(save_nifti_labels(case.labels[key], lab_out, case=case, gt_path=None))
    elif fmt == "medsegpy_h5":
        written.append(write_medsegpy_h5(case, out, labels_key=key))
    elif fmt == "medsegpy_slices":
        write_medsegpy_slices(case, out, scan_id=args.scan_id, labels_key=key)
        written.append(out)
    elif fmt == "samed2d":
        written.append(write_samed2d_case(case, out, labels_key=key))
    else:  # pragma: no cover - argparse restricts --to
        raise CLIError(f"unknown output format {fmt!r}")
    for w in written:
        print(w)
    logger.info("converted %s (%s) -> %s (%s)", src, case.format, out, fmt)
    return 0
