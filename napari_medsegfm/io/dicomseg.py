"""DICOM-SEG (Segmentation Storage) written and read with highdicom.

Writing (:func:`save_dicom_seg`)
    Labels on a DICOM case (read by :mod:`~napari_medsegfm.io.dicom`) become a BINARY
    segmentation that references the source series (its SOP instances, frame of
    reference, patient and study): one segment per label value present, numbered 1..N
    in label order, with the object's name as SegmentLabel, its colour as
    RecommendedDisplayCIELabValue, and coded category/type:

    * the name is looked up in the shipped class vocabulary
      (``resources/vocabulary/vocabulary.json``: names and synonyms, side, category);
    * the structure is coded with the DICOM standard's own code for it (CID 7151
      *Segmentation Property Types*, as pydicom ships it), category *Anatomical
      Structure* (or *Morphologically Abnormal Structure* for lesions/tumours), with a
      Left/Right type modifier for sided structures;
    * a name the vocabulary and CID 7151 do not know gets the generic
      Tissue / Tissue codes. No code is made up.

    ``algorithm_type`` is ``SEMIAUTOMATIC`` (model-assisted, the default; the algorithm
    is identified as napari-medsegfm, family *Artificial Intelligence*) or ``MANUAL``.
    The file is written atomically; an existing DICOM file that is not a SEG made by
    this plugin is never replaced unless ``overwrite_gt=True`` (a ``.bak`` is kept), and
    a DICOM image is never replaced at all.

Reading
    :func:`read_seg_onto_case` maps the SEG's frames onto a loaded DICOM case by SOP
    instance UID (label value = segment number); :func:`load_dicom_seg` opens a SEG on
    its own geometry (closest canonical, like every 3D reader).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..types import Case, Volume
from ..utils import label_dtype_for
from ._common import as_label_array, present_labels
from .atomic import atomic_path, backup_file
from .dicom_series import SEG_SOP_CLASS, DicomError, is_dicom_file, read_head, source_headers
from .geometry import LPS_TO_RAS, canonical_view, to_source_order
from .limits import check_declared_size

__all__ = ["save_dicom_seg", "read_seg_onto_case", "load_dicom_seg", "segment_codes", "ALGORITHM_TYPES"]

logger = logging.getLogger(__name__)

ALGORITHM_TYPES = ("SEMIAUTOMATIC", "MANUAL", "AUTOMATIC")
_MANUFACTURER = "napari-medsegfm"
_LESION_CATEGORIES = {"lesion", "tumor", "tumour", "cancer", "abnormality", "pathology"}
_SIDE_WORDS = {"left", "right", "l", "r", "lt", "rt"}


def _hd() -> Any:
    import highdicom as hd

    return hd


def _version() -> str:
    from .. import __version__

    return str(__version__)


# ------------------------------------------------------------------------------ coding
def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[_\-,()/]+", " ", str(text).lower())).strip()


@functools.lru_cache(maxsize=1)
def _vocab_index() -> dict[str, dict[str, Any]]:
    """Normalised name/synonym -> vocabulary class entry, from the shipped vocabulary JSON."""
    here = Path(__file__).resolve()
    for cand in (here.parents[1] / "resources" / "vocabulary" / "vocabulary.json",
                 here.parents[2] / "resources" / "vocabulary" / "vocabulary.json"):
        if cand.is_file():
            try:
                data = json.loads(cand.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as exc:
                logger.warning("class vocabulary %s unreadable (%s); DICOM-SEG segments get generic codes", cand, exc)
                return {}
            out: dict[str, dict[str, Any]] = {}
            for c in data.get("classes", []):
                if isinstance(c, dict) and isinstance(c.get("name"), str):
                    for alias in [c["name"], *c.get("synonyms", [])]:
                        out.setdefault(_norm(alias), c)
            return out
    logger.warning("class vocabulary not found; DICOM-SEG segments get generic codes")
    return {}


@functools.lru_cache(maxsize=1)
def _cid7151() -> dict[str, str]:
    from pydicom.sr.codedict import codes

    return {k.lower(): k for k in codes.CID7151.dir()}


def _cid_code(structure: str) -> Any | None:
    from pydicom.sr.codedict import codes

    words = [w for w in _norm(structure).split() if w not in _SIDE_WORDS]
    if not words:
        return None
    key = "".join(w.capitalize() for w in words).lower()
    name = _cid7151().get(key)
    return getattr(codes.CID7151, name) if name else None


def segment_codes(name: str) -> tuple[Any, Any, Any | None, str]:
    """Coded (category, type, type modifier or None, how) for a segment name.

    ``how`` says where the codes came from: ``"vocabulary"`` (the vocabulary knows the
    structure and DICOM CID 7151 has its code), ``"cid7151"`` (not in the vocabulary,
    but CID 7151 names it), ``"generic"`` (Tissue / Tissue).

    Parameters
    ----------
    name : str
        The segment's label name (``"left kidney"``, ``"liver"``, ...).

    Returns
    -------
    category, type : pydicom.sr.coding.Code
        SegmentedPropertyCategory and SegmentedPropertyType codes.
    modifier : pydicom.sr.coding.Code or None
        Laterality (left/right) where the name gives one.
    how : str
    """
    from pydicom.sr.codedict import codes

    entry = _vocab_index().get(_norm(name)) if name else None
    how = "cid7151"
    structure, side, category = name or "", None, ""
    if entry is not None:
        structure, side, category = entry["name"], entry.get("side"), str(entry.get("category", ""))
        how = "vocabulary"
    else:
        toks = _norm(name).split()
        side = "left" if {"left", "lt"} & set(toks) else "right" if {"right", "rt"} & set(toks) else None
    typ = _cid_code(structure)
    if typ is None:
        return codes.SCT.Tissue, codes.SCT.Tissue, None, "generic"
    abnormal = category.lower() in _LESION_CATEGORIES or _norm(structure).split()[-1] in _LESION_CATEGORIES
    cat = codes.SCT.MorphologicallyAbnormalStructure if abnormal else codes.SCT.AnatomicalStructure
    mod = codes.SCT.Left if side == "left" else codes.SCT.Right if side == "right" else None
    return cat, typ, mod, how


def _lab_color(rgb: Any) -> Any | None:
    try:
        vals = [int(round(float(v))) for v in list(rgb)[:3]]
    except (TypeError, ValueError):
        return None
    if len(vals) != 3:
        return None
    vals = [min(255, max(0, v)) for v in vals]
    return _hd().color.CIELabColor.from_rgb(*vals)


# ----------------------------------------------------------------------------- writing
def _source_headers(case: Case) -> tuple[list[Any], dict[str, Any]]:
    d = case.meta.get("dicom") or case.image.meta.get("dicom")
    if not isinstance(d, dict) or not d.get("files"):
        raise ValueError(f"case {case.name!r} ({case.format}) was not read from DICOM images; a DICOM-SEG needs the "
                         "source series (open the DICOM series, or write .seg.nrrd / .nrrd / .nii.gz instead)")
    if d.get("geometry") == "frames":
        raise ValueError(f"{case.source}: the frames of this DICOM object carry no plane geometry; a DICOM-SEG "
                         "cannot be placed on them (write .nrrd or .nii.gz instead)")
    for f in d["files"]:
        p = Path(f)
        if not p.is_file():
            raise FileNotFoundError(f"{p}: source DICOM file of case {case.name!r} is gone; the DICOM-SEG must "
                                    "reference the series it was drawn on")
    return source_headers(list(d["files"])), d


def _frames(labels: np.ndarray, case: Case, n_files: int) -> np.ndarray:
    """Labels in the case's display order -> (frames, rows, columns) in source slice order."""
    if labels.ndim == 2:
        return labels[None]
    grid = case.meta.get("grid") or case.image.meta.get("grid")
    if not isinstance(grid, dict):
        raise ValueError(f"case {case.name!r}: no source grid recorded; cannot place labels on the DICOM frames")
    ijk = to_source_order(labels, grid)  # (columns, rows, slices)
    out = ijk.transpose(2, 1, 0)
    if n_files > 1 and out.shape[0] != n_files:
        raise ValueError(f"labels give {out.shape[0]} slices; the source series has {n_files} files")
    return out


def _enhanced_volume(frames: np.ndarray, case: Case) -> Any:
    """(slices, rows, columns) labels of an enhanced multi-frame source as a highdicom Volume
    (highdicom places them on the source frames by plane position)."""
    grid = case.meta.get("grid") or case.image.meta.get("grid")
    aff = LPS_TO_RAS @ np.asarray(grid["affine_ras"], dtype=float)[:, [2, 1, 0, 3]]
    return _hd().Volume(array=frames, affine=aff, coordinate_system="PATIENT",
                        frame_of_reference_uid=(case.meta.get("dicom") or {}).get("FrameOfReferenceUID"))


def _refuse_foreign_target(target: Path, overwrite_gt: bool) -> None:
    if not target.exists():
        return
    if not is_dicom_file(target):
        raise ValueError(f"{target}: exists and is not a DICOM file; refusing to replace it with a DICOM-SEG")
    h = read_head(target)
    if str(h.get("SOPClassUID", "")) != SEG_SOP_CLASS:
        raise ValueError(f"{target}: is a DICOM image ({h.get('Modality', '?')}); a DICOM-SEG never replaces an "
                         "original image file, choose another file name")
    if str(h.get("Manufacturer", "")) != _MANUFACTURER:
        if not overwrite_gt:
            from ._common import GroundTruthProtected

            raise GroundTruthProtected(f"{target}: a DICOM-SEG made by {h.get('Manufacturer', 'another tool')!r}; "
                                       "refusing to overwrite it (overwrite_gt=True keeps a .bak copy) - choose "
                                       "another file")
        backup_file(target)


def save_dicom_seg(
    labels: np.ndarray,
    path: str | os.PathLike[str],
    *,
    case: Case,
    label_names: dict[int, str] | None = None,
    colors: dict[int, Any] | None = None,
    algorithm_type: str = "SEMIAUTOMATIC",
    algorithm_name: str = "",
    overwrite_gt: bool = False,
    series_description: str = "",
) -> Path:
    """Write labels as a DICOM-SEG referencing ``case``'s source series, atomically.

    Parameters
    ----------
    labels : np.ndarray
        Integer labels in the case's array order (``(Z, Y, X)`` closest canonical for a
        series, ``(rows, columns)`` for one frame).
    path : path-like
        Output file (``.dcm``).
    case : Case
        A case read by :func:`~napari_medsegfm.io.dicom.load_dicom` (or rebuilt from
        its layer metadata): ``meta["dicom"]`` and ``meta["grid"]``.
    label_names, colors : dict, optional
        ``{label: name}``, ``{label: (r, g, b)}`` (0..255); default the
        case's names/colours, else ``"label N"`` and no colour.
    algorithm_type : {"SEMIAUTOMATIC", "MANUAL", "AUTOMATIC"}
    algorithm_name : str
        Recorded in the algorithm identification (e.g. the backend), default
        ``"napari-medsegfm"``.

    Returns
    -------
    Path
    """
    hd = _hd()
    from pydicom.sr.codedict import codes

    target = Path(path)
    if not target.name.lower().endswith(".dcm"):
        raise ValueError(f"{target}: a DICOM-SEG is written to a .dcm file")
    if not target.parent.is_dir():
        raise FileNotFoundError(f"cannot write {target}: folder {target.parent} does not exist")
    alg = str(algorithm_type).upper()
    if alg not in ALGORITHM_TYPES:
        raise ValueError(f"algorithm_type {algorithm_type!r}; expected one of {', '.join(ALGORITHM_TYPES)}")
    arr = as_label_array(labels, f"labels for {target}")
    if tuple(arr.shape) != tuple(case.image.spatial_shape):
        raise ValueError(f"{target}: labels have shape {arr.shape}; case {case.name!r} has {case.image.spatial_shape}")
    headers, dmeta = _source_headers(case)
    frames = _frames(arr, case, len(headers))
    ids = present_labels(arr)  # the same values as ``frames`` (a reordered view), read sequentially
    if not ids:
        raise ValueError(f"{target}: the labels are empty; a DICOM-SEG needs at least one segment")
    names = {**case.label_names, **(label_names or {})}
    cols = {**(case.meta.get("label_colors") or {}), **(colors or {})}
    lut = np.zeros(int(frames.max()) + 1, dtype=label_dtype_for(len(ids)))
    descs = []
    fam = codes.CID7162.ArtificialIntelligence
    ident = None
    if alg != "MANUAL":
        ident = hd.AlgorithmIdentificationSequence(name=algorithm_name or _MANUFACTURER, family=fam,
                                                    version=_version())
    for num, lid in enumerate(ids, start=1):
        lut[lid] = num
        name = str(names.get(lid) or f"label {lid}")[:64]
        cat, typ, mod, how = segment_codes(name)
        color = _lab_color(cols[lid]) if lid in cols else None
        d = hd.seg.SegmentDescription(segment_number=num, segment_label=name, segmented_property_category=cat,
                                      segmented_property_type=typ, algorithm_type=alg, algorithm_identification=ident,
                                      tracking_id=f"label {lid}", tracking_uid=hd.UID(), display_color=color)
        if mod is not None:
            d.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [
                hd.sr.CodedConcept(mod.value, mod.scheme_designator, mod.meaning)]
        logger.debug("segment %d %r: %s / %s (%s)", num, name, cat.meaning, typ.meaning, how)
        descs.append(d)
    pixel = lut[frames]  # one contiguous pass: highdicom reads each frame many times (once per segment)
    enhanced = (dmeta.get("geometry") == "enhanced")
    _refuse_foreign_target(target, overwrite_gt)
    src_num = dmeta.get("SeriesNumber")
    try:
        series_number = int(src_num) + 1000 if src_num not in (None, "") else 1000
    except ValueError:
        series_number = 1000
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seg = hd.seg.Segmentation(
            source_images=headers, pixel_array=_enhanced_volume(pixel, case) if enhanced else pixel,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descs, series_instance_uid=hd.UID(), series_number=series_number % 100000,
            sop_instance_uid=hd.UID(), instance_number=1, manufacturer=_MANUFACTURER,
            manufacturer_model_name=_MANUFACTURER, software_versions=_version(), device_serial_number="none",
            content_description=(series_description or f"{alg.lower()} segmentation")[:64],
            content_label="MEDSEGFM", series_description=series_description or "MedSegFM segmentation",
            specific_character_set="ISO_IR 192",  # UTF-8: any segment name, any patient name of the source
        )
    with atomic_path(target) as tmp:
        seg.save_as(str(tmp), enforce_file_format=True)
    logger.info("saved DICOM-SEG %s: %d segments on %d source frames (series %s)", target, len(ids),
                pixel.shape[0], dmeta.get("SeriesInstanceUID", "?"))
    return target


# ----------------------------------------------------------------------------- reading
def _segread(path: Path) -> Any:
    hd = _hd()
    import pydicom

    if not is_dicom_file(path):
        raise DicomError(f"{path}: not a DICOM file (no 'DICM' signature at byte 128)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            head = pydicom.dcmread(str(path), stop_before_pixels=True)
    except (pydicom.errors.InvalidDicomError, OSError, EOFError, ValueError) as exc:
        raise DicomError(f"{path}: not a readable DICOM file ({type(exc).__name__}: {exc})") from None
    if str(head.get("SOPClassUID", "")) != SEG_SOP_CLASS:
        raise DicomError(f"{path}: SOP class {head.get('SOPClassUID', '?')} is not a DICOM-SEG")
    nfr = int(head.get("NumberOfFrames", 1) or 1)
    check_declared_size(path, (nfr, int(head.get("Rows", 0)), int(head.get("Columns", 0))), np.uint8, "SEG frames")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return hd.seg.segread(str(path))
    except (ValueError, AttributeError, KeyError, TypeError, OSError, EOFError, IndexError) as exc:
        raise DicomError(f"{path}: DICOM-SEG cannot be read ({type(exc).__name__}: {exc})") from None


def _segment_meta(seg: Any) -> tuple[dict[int, str], dict[int, tuple[int, int, int]]]:
    names, colors = {}, {}
    for num in seg.get_segment_numbers():
        d = seg.get_segment_description(num)
        names[int(num)] = str(d.get("SegmentLabel", f"segment {num}"))
        lab = d.get("RecommendedDisplayCIELabValue")
        if lab is not None:
            try:
                rgb = _hd().color.CIELabColor.from_dicom_value(list(lab)).to_rgb()
                colors[int(num)] = tuple(int(c) for c in rgb)
            except (ValueError, TypeError, AttributeError):
                pass
    return names, colors


def read_seg_onto_case(path: str | os.PathLike[str], case: Case
                       ) -> tuple[np.ndarray, dict[int, str], dict[int, tuple[int, int, int]]]:
    """A DICOM-SEG as labels on a DICOM case's grid.

    Frames are matched to the case's images by SOP instance UID (label = segment number).

    Parameters
    ----------
    path : path-like
        The SEG file.
    case : Case
        A case read by :func:`~napari_medsegfm.io.dicom.load_dicom` (its ``meta["dicom"]``
        lists the SOP instance UIDs).

    Returns
    -------
    labels : np.ndarray
        Integer labels in the case's ``(Z, Y, X)`` shape.
    names : dict of int to str
        Segment number -> label.
    colors : dict of int to tuple
        Segment number -> RGB where the SEG recommends a colour.

    Raises
    ------
    ValueError
        The SEG references another series, or its segments overlap.
    """
    p = Path(path)
    seg = _segread(p)
    d = case.meta.get("dicom") or case.image.meta.get("dicom") or {}
    uids = list(d.get("sop_instance_uids") or [])
    if not uids:
        raise ValueError(f"{p}: the case {case.name!r} is not a DICOM series; a DICOM-SEG is placed on its source "
                         "images by SOP instance UID")
    referenced = {str(u[2]) for u in seg.get_source_image_uids()}
    if not referenced & set(uids):
        raise ValueError(f"{p}: this DICOM-SEG references none of the {len(uids)} images of series "
                         f"{d.get('SeriesInstanceUID', '?')} ({case.source}); it belongs to another series")
    names, colors = _segment_meta(seg)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if d.get("geometry") == "enhanced":
                return _seg_by_geometry(p, seg, case, names, colors)
            else:
                present = [u for u in uids if u in referenced]
                px_present = seg.get_pixels_by_source_instance(source_sop_instance_uids=present,
                                                               combine_segments=True,
                                                               ignore_spatial_locations=True)
                px = np.zeros((len(uids), *px_present.shape[1:]), dtype=px_present.dtype)
                index = {u: i for i, u in enumerate(uids)}
                for j, u in enumerate(present):
                    px[index[u]] = px_present[j]
    except (ValueError, RuntimeError, KeyError, IndexError) as exc:
        raise ValueError(f"{p}: DICOM-SEG frames cannot be combined into one label image on {case.source} "
                         f"({type(exc).__name__}: {exc})") from None
    px = np.asarray(px)
    if case.image.ndim == 2:
        lab = px[0]
    else:
        grid = case.meta.get("grid") or case.image.meta.get("grid")
        lab, _sp, _aff, _g = canonical_view(px.transpose(2, 1, 0), np.asarray(grid["affine_ras"]))
    if tuple(lab.shape) != tuple(case.image.spatial_shape):
        raise ValueError(f"{p}: DICOM-SEG gives labels of shape {lab.shape}; the series has "
                         f"{case.image.spatial_shape}")
    mx = int(lab.max()) if lab.size else 0
    return np.ascontiguousarray(lab, dtype=label_dtype_for(mx)), names, colors


def _seg_by_geometry(p: Path, seg: Any, case: Case, names: dict[int, str], colors: dict[int, Any]
                     ) -> tuple[np.ndarray, dict[int, str], dict[int, tuple[int, int, int]]]:
    """A SEG on an enhanced multi-frame case: its volume must lie on the case's grid."""
    other = _seg_case(p, seg, names, colors)
    a, b = np.asarray(other.image.affine), np.asarray(case.image.affine)
    if other.image.spatial_shape != case.image.spatial_shape or not np.allclose(a, b, atol=1e-3):
        raise ValueError(f"{p}: the DICOM-SEG volume {other.image.spatial_shape} does not lie on the grid of "
                         f"{case.source} {case.image.spatial_shape}")
    return other.labels["gts"], names, colors


def load_dicom_seg(path: str | os.PathLike[str]) -> Case:
    """A DICOM-SEG opened on its own: labels (``gts``) on the SEG's geometry, closest canonical.

    Empty frames that the SEG omits inside its extent are background; the volume spans
    the frames the SEG holds. Open it together with its source series (or use
    ``labels_file=``) to place it on the series.

    Parameters
    ----------
    path : path-like
        The SEG file.

    Returns
    -------
    Case
        ``image``: a zero image ``(Z, Y, X)`` with the SEG's spacing in mm; ``labels["gts"]``
        the segments (label = segment number); ``label_names`` from the segment labels.

    Raises
    ------
    DicomError, ValueError
        Not a readable SEG, or frames without plane geometry.
    """
    p = Path(path)
    seg = _segread(p)
    names, colors = _segment_meta(seg)
    return _seg_case(p, seg, names, colors)


def _seg_case(p: Path, seg: Any, names: dict[int, str], colors: dict[int, Any]) -> Case:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            vol = seg.get_volume(combine_segments=True)
    except (ValueError, RuntimeError, KeyError, IndexError, AttributeError) as exc:
        raise DicomError(f"{p}: the DICOM-SEG frames do not form one volume ({type(exc).__name__}: {exc})") from None
    arr = np.asarray(vol.array)
    if arr.ndim == 4:
        arr = arr[..., 0]
    aff_ijk = np.asarray(vol.affine, dtype=float)[:, [2, 1, 0, 3]]
    lab, spacing, affine_zyx, grid = canonical_view(arr.transpose(2, 1, 0), LPS_TO_RAS @ aff_ijk)
    grid["space"] = "LPS"
    lab = np.ascontiguousarray(lab, dtype=label_dtype_for(int(lab.max()) if lab.size else 0))
    ident = {k: str(seg.get(k)) for k in ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "Modality",
                                           "FrameOfReferenceUID") if seg.get(k)}
    meta = {"source": str(p), "format": "dicom_seg", "modality": "SEG", "grid": grid, "dicom_seg": ident,
            "labels_only": True, "labels_source": str(p), "label_colors": colors}
    volume = Volume(array=lab, spacing=spacing, affine=affine_zyx, meta=dict(meta))
    case = Case(image=volume, source=p, format="dicom_seg", name=p.name[:-4] if p.name.lower().endswith(".dcm")
                else p.name, meta=meta, label_names=names)
    case.labels["gts"] = lab
    return case
