"""The clinical formats behind :func:`~napari_medsegfm.io.load_case` / :func:`~napari_medsegfm.io.save_labels`.

================ ==================================================================
``dicom``        DICOM series folder (one or several series), a file of a series,
                 an enhanced or other multi-frame file (:mod:`.dicom`)
``dicom_seg``    a DICOM-SEG file opened on its own (:mod:`.dicomseg`)
``nrrd``         ``.nrrd`` / ``.nhdr`` image or label map (:mod:`.itkimage`)
``metaimage``    ``.mha`` / ``.mhd`` image or label map (:mod:`.itkimage`)
``slicer_seg``   3D Slicer ``.seg.nrrd`` segmentation (:mod:`.slicerseg`)
================ ==================================================================

Writing labels by output extension: ``.dcm`` → DICOM-SEG (on a DICOM case),
``.seg.nrrd`` → Slicer segmentation, ``.nrrd``/``.mha`` → label map; all on the
case's source grid.

:func:`attach_labels_file` puts the labels of any supported label file onto a loaded
case (``load_case(IMAGE, labels_file=LABELS)``, ``medsegfm convert --labels-file``):
a DICOM-SEG by the SOP instances it references, every other label file (NIfTI, NRRD,
MHA, ``.seg.nrrd``, CVPR ``gts`` npz) when it lies on the image's grid (same shape
and, where both have one, the same affine within 1e-3 mm).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..types import Case

__all__ = [
    "CLINICAL_FORMATS",
    "detect_clinical",
    "load_clinical",
    "clinical_output_format",
    "save_clinical_labels",
    "attach_labels_file",
    "sibling_labels_file",
    "default_labels_path",
    "LABEL_SUFFIXES",
]

logger = logging.getLogger(__name__)

CLINICAL_FORMATS = ("dicom", "dicom_seg", "nrrd", "metaimage", "slicer_seg")
#: label-file suffixes tried beside an image (``case.nii.gz`` -> ``case_seg.nii.gz``)
LABEL_SUFFIXES = ("_seg", "_segs", "_label", "_labels", "_mask", "_gt")


def detect_clinical(p: Path) -> str | None:
    """The clinical format of ``p`` or ``None`` (cheap: names, signatures, folder listing).

    Parameters
    ----------
    p : Path
        A file or folder.

    Returns
    -------
    str or None
        ``"dicom"``, ``"dicom_seg"``, ``"nrrd"``, ``"metaimage"`` or ``"slicer_seg"``.
    """
    from .dicom import has_dicom_files, is_dicom_file
    from .itkimage import is_itk_path, itk_format
    from .slicerseg import is_slicer_seg_path

    if p.is_dir():
        return "dicom" if has_dicom_files(p) else None
    name = p.name.lower()
    if is_slicer_seg_path(p):
        return "slicer_seg"
    if is_itk_path(p):
        return itk_format(p)
    if name.endswith(".dcm") or (not p.suffix and is_dicom_file(p)):
        if not is_dicom_file(p):
            return "dicom" if name.endswith(".dcm") else None  # claimed: the reader says what is wrong
        return "dicom_seg" if _is_seg(p) else "dicom"
    return None


def _is_seg(p: Path) -> bool:
    from .dicom import SEG_SOP_CLASS, read_head

    try:
        return str(read_head(p).get("SOPClassUID", "")) == SEG_SOP_CLASS
    except (OSError, ValueError, EOFError, KeyError, TypeError, AttributeError):
        return False


def load_clinical(p: Path, fmt: str, *, case_id: str | None = None, **options: Any) -> Case:
    """Dispatch to the reader of a clinical format.

    Parameters
    ----------
    p : Path
        The file or folder.
    fmt : str
        As :func:`detect_clinical` names it.
    case_id : str, optional
        A DICOM series (UID, prefix or listing number; ``series=`` in ``options`` too).
    **options
        ``as_labels`` for NRRD/MetaImage; ``series`` for DICOM.

    Returns
    -------
    Case

    Raises
    ------
    ValueError, DicomError, FileNotFoundError
        From the reader, naming the file.
    """
    if fmt == "dicom":
        from .dicom import load_dicom

        return load_dicom(p, series=options.get("series", case_id))
    if fmt == "dicom_seg":
        from .dicomseg import load_dicom_seg

        return load_dicom_seg(p)
    if fmt in ("nrrd", "metaimage"):
        from .itkimage import load_itk

        return load_itk(p, as_labels=options.get("as_labels"))
    if fmt == "slicer_seg":
        from .slicerseg import load_slicer_seg

        return load_slicer_seg(p)
    raise ValueError(f"unknown clinical format {fmt!r}; expected one of {', '.join(CLINICAL_FORMATS)}")


def list_dicom_cases(p: Path) -> list[Any]:
    """One :class:`~napari_medsegfm.io.CaseRef` per image series of a DICOM folder."""
    from ._common import CaseRef
    from .dicom import _case_name as case_name
    from .dicom import list_series

    return [CaseRef(name=case_name(s.first, s), path=p, format="dicom", case_id=s.uid) for s in list_series(p)]


def clinical_output_format(path: Path, case: Case | None) -> str | None:
    """Output format for ``path`` by its extension.

    Parameters
    ----------
    path : Path
        The file to write (``.seg.nrrd``, ``.nrrd``/``.nhdr``, ``.mha``/``.mhd``, ``.dcm``), or
        a DICOM case's folder.
    case : Case or None
        The case the labels belong to (a folder means a DICOM-SEG only for a DICOM case).

    Returns
    -------
    str or None
        ``"slicer_seg"``, ``"nrrd"``, ``"metaimage"`` or ``"dicom_seg"``; ``None``: not a
        clinical format.
    """
    name = path.name.lower()
    if name.endswith(".seg.nrrd"):
        return "slicer_seg"
    if name.endswith((".nrrd", ".nhdr")):
        return "nrrd"
    if name.endswith((".mha", ".mhd")):
        return "metaimage"
    if name.endswith(".dcm"):
        return "dicom_seg"
    if case is not None and case.format == "dicom" and path.is_dir():
        return "dicom_seg"
    return None


def default_seg_path(case_path: Path) -> Path:
    """Where labels of a DICOM case go by default: ``<series folder>_seg.dcm`` beside the folder
    (``<file stem>_seg.dcm`` for a single file); the original files are never touched."""
    p = Path(case_path)
    if p.is_dir():
        return p.with_name(f"{p.name}_seg.dcm")
    stem = p.name[:-4] if p.name.lower().endswith(".dcm") else p.name
    return p.with_name(f"{stem}_seg.dcm")


def default_labels_path(src: Path, fmt: str) -> Path | None:
    """Where Save writes the labels of a case in a clinical format, beside the source (never over it).

    DICOM -> :func:`default_seg_path`; NRRD/MHA -> ``<stem>_segs.nrrd``/``.mha``; a
    ``.seg.nrrd`` or a DICOM-SEG opened alone -> ``<stem>_segs.seg.nrrd``.

    Parameters
    ----------
    src : Path
        The case's source.
    fmt : str
        Its format.

    Returns
    -------
    Path or None
        ``None`` for other formats.
    """
    from .itkimage import itk_stem

    p = Path(src)
    if fmt == "dicom":
        return default_seg_path(p)
    if fmt in ("nrrd", "metaimage"):
        return p.with_name(f"{itk_stem(p)}_segs{'.nrrd' if fmt == 'nrrd' else '.mha'}")
    if fmt in ("slicer_seg", "dicom_seg"):
        stem = itk_stem(p) if fmt == "slicer_seg" else (p.name[:-4] if p.name.lower().endswith(".dcm") else p.name)
        return p.with_name(f"{stem}_segs.seg.nrrd")
    return None


def save_clinical_labels(labels: np.ndarray, target: Path, out_fmt: str, *, case: Case | None,
                         overwrite_gt: bool = False, label_names: dict[int, str] | None = None,
                         colors: dict[int, Any] | None = None, algorithm_type: str | None = None) -> Path:
    """Write labels in a clinical format (see the module docstring).

    Parameters
    ----------
    labels : np.ndarray
        Integer labels ``(Z, Y, X)`` on the case's grid.
    target : Path
        The output file (a folder: the default DICOM-SEG name in it).
    out_fmt : str
        ``"dicom_seg"``, ``"slicer_seg"``, ``"nrrd"`` or ``"metaimage"``.
    case : Case or None
        The case the labels were drawn on (required for a DICOM-SEG: the referenced series).
    overwrite_gt : bool
        Allow replacing a file that holds ground truth.
    label_names : dict of int to str, optional
        Segment names.
    colors : dict of int to colour, optional
        Segment colours.
    algorithm_type : str, optional
        DICOM-SEG SegmentAlgorithmType (default the case's, else ``"SEMIAUTOMATIC"``).

    Returns
    -------
    Path
        The file written.

    Raises
    ------
    ValueError
        An unknown format, a DICOM-SEG without ``case``, or what the writer refuses.
    GroundTruthProtected
        ``target`` holds ground truth and ``overwrite_gt`` is False.
    """
    if out_fmt == "dicom_seg":
        from .dicomseg import save_dicom_seg

        if case is None:
            raise ValueError(f"{target}: a DICOM-SEG needs case= (the DICOM series the labels were drawn on)")
        if target.is_dir():
            target = default_seg_path(target)
        alg = algorithm_type or str(case.meta.get("algorithm_type") or "SEMIAUTOMATIC")
        return save_dicom_seg(labels, target, case=case, label_names=label_names, colors=colors,
                              algorithm_type=alg, overwrite_gt=overwrite_gt)
    if out_fmt == "slicer_seg":
        from .slicerseg import save_slicer_seg

        return save_slicer_seg(labels, target, case=case, label_names=label_names, colors=colors,
                               overwrite_gt=overwrite_gt)
    if out_fmt in ("nrrd", "metaimage"):
        from .itkimage import save_itk_labels

        return save_itk_labels(labels, target, case=case, overwrite_gt=overwrite_gt)
    raise ValueError(f"unknown clinical output format {out_fmt!r}")


# ------------------------------------------------------------------------ labels files
def sibling_labels_file(image: Path) -> Path | None:
    """A labels file beside an image file, if present.

    Parameters
    ----------
    image : Path
        An image file (NIfTI, NRRD, MetaImage).

    Returns
    -------
    Path or None
        ``<stem>_seg.nii.gz`` (or ``_label``, ``_mask``, ``.seg.nrrd`` ...) when it exists.
    """
    from .itkimage import itk_stem
    from .nifti import is_nifti_path, nifti_stem

    p = Path(image)
    if not p.is_file():
        return None
    if is_nifti_path(p):
        stem, exts = nifti_stem(p), [".nii.gz", ".nii"]
    elif p.name.lower().endswith((".nrrd", ".nhdr", ".mha", ".mhd")) and not p.name.lower().endswith(".seg.nrrd"):
        stem, exts = itk_stem(p), [p.name[len(itk_stem(p)):], ".nii.gz"]
    else:
        return None
    for suf in LABEL_SUFFIXES:
        for ext in exts:
            c = p.with_name(f"{stem}{suf}{ext}")
            if c.is_file() and c != p:
                return c
    c = p.with_name(f"{stem}.seg.nrrd")
    return c if c.is_file() else None


def attach_labels_file(case: Case, labels_path: str | os.PathLike[str], key: str = "gts") -> Case:
    """Put the labels of ``labels_path`` onto ``case`` (as ``case.labels[key]``).

    Parameters
    ----------
    case : Case
        The image's case.
    labels_path : path-like
        A label file in any readable format, on the case's grid.
    key : str
        The role (``"gts"``, ``"segs"``).

    Returns
    -------
    Case
        ``case`` itself.

    Raises
    ------
    FileNotFoundError
        ``labels_path`` does not exist.
    ValueError
        Not a label file, or its labels lie on another grid (the message names both files).
    """
    from . import detect_format, load_case

    lp = Path(labels_path)
    if not lp.exists():
        raise FileNotFoundError(f"{lp}: no such labels file")
    fmt = detect_format(lp)
    if fmt is None:
        raise ValueError(f"{lp}: not a supported label file (NIfTI, NRRD, MHA, .seg.nrrd, DICOM-SEG, npz gts)")
    if fmt == "dicom_seg" and case.format == "dicom":
        from .dicomseg import read_seg_onto_case

        labels, names, colors = read_seg_onto_case(lp, case)
    else:
        opts = {"as_labels": True} if fmt in ("nifti", "nrrd", "metaimage") else {}
        lab_case = load_case(lp, fmt, **opts)
        role = "gts" if "gts" in lab_case.labels else "segs" if "segs" in lab_case.labels else None
        if role is None:
            raise ValueError(f"{lp}: holds no labels (has: {', '.join(lab_case.labels) or 'none'})")
        labels = lab_case.labels[role]
        _check_same_grid(case, lab_case, lp)
        names, colors = dict(lab_case.label_names), dict(lab_case.meta.get("label_colors") or {})
    case.labels[key] = labels
    for k, v in names.items():
        case.label_names.setdefault(k, v)
    if colors:
        case.meta.setdefault("label_colors", {})
        for k, v in colors.items():
            case.meta["label_colors"].setdefault(k, v)
    case.meta["labels_file"] = str(lp)
    if key == "gts":
        case.meta["gts_source"] = str(lp)
    logger.info("%s: labels %r from %s", case.source, key, lp)
    return case


def _check_same_grid(case: Case, lab_case: Case, lp: Path) -> None:
    img_shape, lab_shape = tuple(case.image.spatial_shape), tuple(lab_case.image.spatial_shape)
    if img_shape != lab_shape:
        raise ValueError(f"{lp}: labels of shape {lab_shape} do not lie on the grid of {case.source} "
                         f"{img_shape} (array order)")
    a, b = case.image.affine, lab_case.image.affine
    if a is not None and b is not None and not np.allclose(np.asarray(a), np.asarray(b), atol=1e-3):
        raise ValueError(f"{lp}: the labels' grid (affine {np.round(np.asarray(b), 3).tolist()}) differs from the "
                         f"image's {case.source} ({np.round(np.asarray(a), 3).tolist()}); resample one onto the other")
