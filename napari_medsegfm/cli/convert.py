"""``medsegfm convert IN OUT``: convert a case between the supported file formats.

The output format follows OUT's extension (``.npz`` CVPR25-style, ``.nii``/``.nii.gz``,
``.h5`` medsegpy 3D, ``.nrrd``/``.mha``, ``.seg.nrrd`` Slicer segmentation, ``.dcm``
DICOM-SEG) or ``--to`` (``samed2d``, ``medsegpy_slices`` write a folder).

Labels
    ``--labels-file LABELS`` takes the labels from LABELS (any supported label file on
    IN's grid: NIfTI, NRRD, MHA, ``.seg.nrrd``, DICOM-SEG, a CVPR ``gts`` npz) and writes
    them *for IN* in OUT's format: ``OUT.dcm`` a DICOM-SEG referencing IN's DICOM series,
    ``OUT.seg.nrrd`` a Slicer segmentation, ``.nrrd``/``.mha``/``.nii.gz`` a label map in
    IN's geometry; a case format (``.npz``, ``.h5``, folders) gets the image with those
    labels. Without ``--labels-file``, an image file with a label file beside it
    (``<stem>_seg.nii.gz``, ``_label``, ``_mask``, ``.seg.nrrd``, ...) uses that one (and
    says so), so ``case.npz -> case.nii.gz (+ case_seg.nii.gz) -> case.npz`` round-trips.
    Image outputs (``.nii.gz``, ``.nrrd``, ``.mha``) write the image to OUT and the labels
    beside it (``<stem>_seg.<ext>``, or ``--labels-out``). ``--labels-only`` writes just
    the label image with :func:`napari_medsegfm.io.save_labels`.

Nothing is written when reading IN or the labels fails.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from . import CLIError

logger = logging.getLogger(__name__)

_OUT_FORMATS = ("npz", "nifti", "medsegpy_h5", "medsegpy_slices", "samed2d", "nrrd", "metaimage", "slicer_seg",
                "dicom_seg")
#: outputs that hold only labels
_LABEL_FORMATS = ("slicer_seg", "dicom_seg")
#: outputs that hold an image or a label map
_IMAGE_FORMATS = ("nifti", "nrrd", "metaimage")
_EXT = {"nifti": ".nii.gz", "nrrd": ".nrrd", "metaimage": ".mha"}


def register(sub: Any) -> None:
    """Add the ``convert`` sub-command (its options and help) to the ``medsegfm`` parser.

    Parameters
    ----------
    sub : argparse._SubParsersAction
        The top-level parser's sub-parsers (``add_subparsers()``).
    """
    p = sub.add_parser(
        "convert",
        help="convert a case between formats (CVPR npz, NIfTI, DICOM, NRRD, MHA, Slicer seg, DICOM-SEG, medsegpy, "
             "SA-Med2D, IVDM3Seg input)",
        description="Read IN (any supported case: CVPR25/24 npz, NIfTI, DICOM series folder or file, NRRD, MHA, "
                    "medsegpy .h5 or slice folder, SA-Med2D-20M PNGs, IVDM3Seg case) and write it as OUT. "
                    "With --labels-file, write those labels for IN in OUT's format (OUT.dcm: DICOM-SEG, "
                    "OUT.seg.nrrd: Slicer segmentation, .nrrd/.mha/.nii.gz: label map).",
    )
    p.add_argument("input", metavar="IN", help="case file or folder")
    p.add_argument("output", metavar="OUT", help="output file (.npz, .nii.gz, .h5, .nrrd, .mha, .seg.nrrd, .dcm) or "
                   "folder (with --to)")
    p.add_argument("--to", choices=_OUT_FORMATS, default=None, help="output format (default: from OUT's extension)")
    p.add_argument("--case-id", default=None, help="case inside a dataset folder (medsegpy scan, SA-Med2D case, "
                   "IVDM3Seg NN, DICOM SeriesInstanceUID or series number)")
    p.add_argument("--labels-file", default=None, metavar="LABELS",
                   help="labels for IN from this file (NIfTI, NRRD, MHA, .seg.nrrd, DICOM-SEG, npz gts on IN's grid); "
                        "OUT then receives these labels (default: a <stem>_seg.* file beside IN, if any)")
    p.add_argument("--algorithm-type", default="SEMIAUTOMATIC", choices=("SEMIAUTOMATIC", "MANUAL", "AUTOMATIC"),
                   help="DICOM-SEG output: how the labels were made (default SEMIAUTOMATIC)")
    p.add_argument("--labels", default=None, metavar="KEY",
                   help="which labels of IN to convert: gts, segs or prev_pred (default: gts, else segs)")
    p.add_argument("--labels-only", action="store_true", help="write only the label image")
    p.add_argument("--labels-out", default=None, help="image output (.nii.gz, .nrrd, .mha): where to write the labels "
                   "(default <OUT stem>_seg.<ext>)")
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
    if n.endswith(".seg.nrrd"):
        return "slicer_seg"
    if n.endswith(".nrrd"):
        return "nrrd"
    if n.endswith(".mha"):
        return "metaimage"
    if n.endswith(".dcm"):
        return "dicom_seg"
    raise CLIError(f"cannot tell the output format of {out}; use .npz, .nii.gz, .h5, .nrrd, .mha, .seg.nrrd, .dcm "
                   "or --to")


def _labels_key(case: Any, requested: str | None) -> str | None:
    if requested:
        if requested not in case.labels:
            raise CLIError(f"{case.source}: no labels {requested!r} (has: {', '.join(case.labels) or 'none'})")
        return requested
    return "gts" if "gts" in case.labels else "segs" if "segs" in case.labels else None


def _labels_path(out: Path, explicit: str | None, fmt: str) -> Path:
    if explicit:
        return Path(explicit)
    n = out.name
    ext = _EXT[fmt]
    for e in (".nii.gz", ".nii", ".nrrd", ".mha"):
        if n.lower().endswith(e):
            return out.with_name(f"{n[: -len(e)]}_seg{ext if fmt != 'nifti' else '.nii.gz'}")
    return out.with_name(f"{n}_seg{ext}")


def _load(args: argparse.Namespace, src: Path) -> tuple[Any, bool]:
    """The case, and whether its labels came from a labels file (explicit or the sibling)."""
    from .. import io as medio
    from ..io.clinical import attach_labels_file, sibling_labels_file

    case = medio.load_case(src, case_id=args.case_id)
    labels_file = Path(args.labels_file) if args.labels_file else None
    explicit = labels_file is not None
    if labels_file is None and not case.meta.get("labels_only") and not args.labels:
        labels_file = sibling_labels_file(src)
        if labels_file is not None:
            print(f"medsegfm convert: using labels from {labels_file} (beside {src.name}; pass --labels-file to "
                  "choose another)", file=sys.stderr)
    if labels_file is not None:
        attach_labels_file(case, labels_file, key="gts")
    return case, explicit


def run(args: argparse.Namespace) -> int:
    """``medsegfm convert``: convert a case (image and labels) to another format.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed options of the sub-command.

    Returns
    -------
    int
        Exit code: 0.

    Raises
    ------
    CLIError
        Bad input or options; :func:`~napari_medsegfm.cli.main` prints it as one line on stderr and exits with its code.
    """
    from .. import io as medio
    from ..io.cvpr import write_cvpr_npz
    from ..io.itkimage import write_itk_volume
    from ..io.medsegpy import write_medsegpy_h5
    from ..io.medsegpy_slices import write_medsegpy_slices
    from ..io.nifti import save_nifti_labels, write_nifti_volume
    from ..io.samed2d_write import write_samed2d_case

    src, out = Path(args.input), Path(args.output)
    fmt = _out_format(out, args.to)
    if out.exists() and not args.overwrite and not (out.is_dir() and not any(out.iterdir())):
        raise CLIError(f"{out} exists; pass --overwrite to replace it")
    case, explicit_labels = _load(args, src)
    key = "gts" if explicit_labels else _labels_key(case, args.labels)
    labels_only = args.labels_only or fmt in _LABEL_FORMATS or (explicit_labels and fmt in _IMAGE_FORMATS)
    written: list[Path] = []
    if labels_only or (fmt in _IMAGE_FORMATS and case.meta.get("labels_only")):
        if key is None:
            raise CLIError(f"{src}: the case has no labels to write to {out} (pass --labels-file LABELS)")
        written.append(medio.save_labels(case.labels[key], out, case=case, key=args.key,
                                         fmt=None if fmt in ("nifti", "dicom_seg") else fmt,
                                         overwrite_gt=args.overwrite, algorithm_type=args.algorithm_type))
    elif fmt == "npz":
        written.append(write_cvpr_npz(case, out, labels_key=key))
    elif fmt in _IMAGE_FORMATS:
        lab_out = _labels_path(out, args.labels_out, fmt) if key is not None else None
        if lab_out is not None and lab_out.exists() and not args.overwrite:
            raise CLIError(f"{lab_out} exists; pass --overwrite to replace it")
        if fmt == "nifti":
            written.append(write_nifti_volume(case.image, out))
            if lab_out is not None:
                written.append(save_nifti_labels(case.labels[key], lab_out, case=case, gt_path=None))
        else:
            written.append(write_itk_volume(case.image, out, case))
            if lab_out is not None:
                written.append(medio.save_labels(case.labels[key], lab_out, case=case))
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
