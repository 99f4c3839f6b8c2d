"""DICOM images: a series folder (one or several series), a single file, enhanced multi-frame.

Parsing and pixel decoding are pydicom's (and highdicom's for enhanced multi-frame
geometry); this module only groups, sorts and checks what they return.

Reading a classic series (one file per slice)
    1. Every file of the folder (not recursive) is parsed up to its pixel data
       (``stop_before_pixels``). Files without the ``DICM`` signature are skipped (a
       folder of unrelated files is an error naming them); a file with the signature
       that does not parse is an error naming it.
    2. Files are grouped by SeriesInstanceUID. A folder with several image series
       lists them (:func:`list_series`); :func:`load_dicom` takes ``series=`` (a UID,
       a unique UID prefix, or the 1-based series number shown in the listing).
       Files of one series that disagree on rows/columns, orientation, pixel spacing or
       samples per pixel are refused as a *mixed series*.
    3. Slices are sorted by their position along the slice normal
       (``ImagePositionPatient · (row × column direction)``), never by file name or
       InstanceNumber. Equal positions, a missing slice (a step that is a multiple of
       the usual one) and non-uniform spacing are refused with the files and the
       positions involved (no resampling).
    4. The declared size (rows × columns × slices × dtype) is checked against
       :mod:`~napari_medsegfm.io.limits` before anything is allocated, and the
       transfer syntax against the installed decoders (pydicom's plugins: GDCM, Pillow,
       pyjpegls, its own RLE); a syntax that none decodes is refused naming the codec and
       the package that provides it.
    5. Pixels are decoded by pydicom and RescaleSlope/RescaleIntercept applied (CT in
       HU): ``int16``/``int32`` when every slice has slope 1 and an integer intercept,
       else ``float32``.

Display
    The volume ``(slices, rows, columns)`` is handed to
    :func:`~napari_medsegfm.io.geometry.canonical_view` as index order ``(i, j, k)`` =
    (column, row, slice) with its LPS geometry converted to RAS, so it opens with the
    same voxels, scale and orientation as the same image stored as NIfTI. Patient,
    study and series identifiers, the SOP instance UIDs and files in slice order are
    kept in ``meta["dicom"]`` so labels can be written back as a DICOM-SEG that
    references the series (:mod:`~napari_medsegfm.io.dicomseg`).

Multi-frame files
    Enhanced CT/MR/PET (per-frame plane positions) through highdicom's volume
    geometry; frames without geometry (ultrasound cine, ...) as a frame stack with the
    pixel spacing the file gives (``meta["dicom"]["geometry"] = "frames"``). A single
    frame is a 2D image ``(rows, columns)`` (RGB ``(rows, columns, 3)``).
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..types import Case, Volume
from .dicom_pixels import (
    _check_consistent,
    _check_decoder,
    _decode_pydicom,
    _floats,
    _pixel_spacing,
    _rescale_params,
    _rescaled,
    _sort_slices,
    _stored_dtype,
)
from .dicom_series import (
    SEG_SOP_CLASS,
    DicomError,
    DicomScan,
    SeriesInfo,
    _read_header,
    has_dicom_files,
    is_dicom_file,
    list_series,
    pick_series,
    read_head,
    read_headers,
    remember_headers,
    scan_dicom,
)
from .geometry import LPS_TO_RAS, canonical_view
from .limits import check_declared_size

__all__ = [
    "SEG_SOP_CLASS",
    "SeriesInfo",
    "is_dicom_file",
    "has_dicom_files",
    "scan_dicom",
    "list_series",
    "load_dicom",
    "read_headers",
    "DicomError",
]
# read_head, pick_series and DicomScan stay importable from here too (dicom_series holds them)

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- loading
def load_dicom(path: str | os.PathLike[str], *, series: str | int | None = None,
               scan: DicomScan | None = None) -> Case:
    """Read a DICOM series folder, one file of a series, or a multi-frame file as a :class:`Case`.

    Parameters
    ----------
    path : path-like
        A folder of DICOM files, or a ``.dcm``/DICOM file. A file whose folder holds
        more files of its series opens the whole series; a multi-frame file opens alone.
    series : str or int, optional
        Which series of a multi-series folder: SeriesInstanceUID, a unique prefix of
        it, or its 1-based number in :func:`list_series`.
    scan : DicomScan, optional
        The folder's :func:`scan_dicom` result when the caller has it (saves re-reading
        the headers).

    Returns
    -------
    Case
        ``source``: ``path``, or the series' first file when ``path`` is a folder holding
        several series. ``image``: ``(Z, Y, X)`` closest canonical (3D), ``(rows, columns)`` (one 2D
        frame) or ``(rows, columns, 3)`` (RGB); ``spacing`` in mm, same order.
        ``meta["dicom"]``: identifiers, files and SOP instance UIDs in slice order.
        ``labels["segs"]``: the newest DICOM-SEG of the folder that references the series.

    Raises
    ------
    FileNotFoundError, DicomError (a ValueError)
        With the file(s) and what was expected.
    """
    src = Path(path)
    if not src.exists():
        raise FileNotFoundError(f"{src}: no such DICOM file or folder")
    if src.is_file():
        if not is_dicom_file(src):
            raise DicomError(f"{src}: not a DICOM file (no 'DICM' signature at byte 128)")
        if str(read_head(src).get("SOPClassUID", "")) == SEG_SOP_CLASS:
            from .dicomseg import load_dicom_seg

            return load_dicom_seg(src)
        h = _read_header(src)
        if int(h.get("NumberOfFrames", 1) or 1) > 1:
            return _load_multiframe(src, h)
        series = series if series is not None else str(h.get("SeriesInstanceUID", ""))
    scan = scan if scan is not None else scan_dicom(src)
    info = pick_series(scan, series, src)
    if len(info.files) == 1 and int(info.first.get("NumberOfFrames", 1) or 1) > 1:
        case = _load_multiframe(info.files[0], info.first)
    elif any(int(h.get("NumberOfFrames", 1) or 1) > 1 for h in info.headers):
        raise DicomError(f"{scan.folder}: series {info.uid} mixes {len(info.files)} multi-frame files; open each "
                         "file on its own")
    else:
        # a series of a multi-series folder is named by its first file, so that re-reading
        # ``case.source`` (writers, the annotation dock) finds this series again
        case = _load_classic(info, src if len(scan.series) == 1 or src.is_file() else info.files[0])
    _attach_seg(case, scan, info)
    return case


def _identifiers(h: Any) -> dict[str, Any]:
    keys = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyID",
            "StudyDate", "StudyTime", "StudyDescription", "AccessionNumber", "SeriesInstanceUID", "SeriesNumber",
            "SeriesDescription", "Modality", "FrameOfReferenceUID", "Manufacturer", "BodyPartExamined")
    out = {}
    for k in keys:
        v = h.get(k)
        if v is not None and v != "":
            out[k] = str(v)
    return out


def _load_classic(info: SeriesInfo, src: Path) -> Case:
    _check_consistent(info)
    order, pos, step = _sort_slices(info)
    files = [info.files[i] for i in order]
    headers = [info.headers[i] for i in order]
    remember_headers(files, headers)
    h0 = headers[0]
    rows, cols = int(h0.Rows), int(h0.Columns)
    spp = int(h0.get("SamplesPerPixel", 1) or 1)
    n = len(files)
    stored = _stored_dtype(h0)
    params = [_rescale_params(h, f) for f, h in zip(files, headers)]
    shape = (n, rows, cols) if spp == 1 else (n, rows, cols, spp)
    float_out = not all(s == 1.0 and float(i).is_integer() for s, i in params)
    check_declared_size(files[0].parent, shape, np.float32 if float_out else max(stored, np.dtype(np.int16),
                                                                                   key=lambda d: d.itemsize),
                        f"series {info.uid} ({n} slices)")
    ts = str(getattr(getattr(h0, "file_meta", None), "TransferSyntaxUID", "") or "1.2.840.10008.1.2")
    _check_decoder(files[0], ts)
    vol = np.empty(shape, dtype=stored)
    for k, f in enumerate(files):
        raw = _decode_pydicom(f)[0]
        if raw.shape != shape[1:]:
            raise DicomError(f"{f}: decoded pixel data has shape {raw.shape}; expected {shape[1:]} (Rows x Columns)")
        vol[k] = raw
    vol = _rescaled(vol, params)
    row_sp, col_sp = _pixel_spacing(h0, files[0])
    iop = _floats(h0.ImageOrientationPatient, 6, files[0], "ImageOrientationPatient")
    meta_d = _identifiers(h0)
    meta_d.update(files=[str(f) for f in files], sop_instance_uids=[str(h.get("SOPInstanceUID", "")) for h in headers],
                  sop_class_uid=str(h0.get("SOPClassUID", "")), transfer_syntax=ts, geometry="slices",
                  slice_step_mm=step)
    name = _case_name(h0, info)
    if spp != 1:
        if n != 1:
            logger.warning("%s: colour series of %d slices shown as grey (luminance)", src, n)
            vol = vol.astype(np.float32).mean(axis=-1)
        else:
            return _case_2d(vol[0], (row_sp, col_sp), src, meta_d, name, rgb=True)
    if n == 1:
        return _case_2d(vol[0], (row_sp, col_sp), src, meta_d, name)
    aff_lps = np.eye(4)
    aff_lps[:3, 0] = iop[:3] * col_sp
    aff_lps[:3, 1] = iop[3:] * row_sp
    aff_lps[:3, 2] = (pos[-1] - pos[0]) / (n - 1)
    aff_lps[:3, 3] = pos[0]
    return _case_3d(vol, LPS_TO_RAS @ aff_lps, src, meta_d, name)


def _case_name(h: Any, info: SeriesInfo | None) -> str:
    parts = [str(h.get("Modality", "") or ""), str(h.get("SeriesDescription", "") or "").strip()]
    num = h.get("SeriesNumber")
    if num not in (None, ""):
        parts.append(f"S{num}")
    name = "_".join(p.replace(" ", "_") for p in parts if p)
    return name or (info.uid if info is not None else "dicom")


def _case_3d(vol_kji: np.ndarray, affine_ras: np.ndarray, src: Path, meta_d: dict[str, Any], name: str) -> Case:
    arr, spacing, affine_zyx, grid = canonical_view(vol_kji.transpose(2, 1, 0), affine_ras)
    grid["space"] = "LPS"
    meta = {"source": str(src), "format": "dicom", "modality": meta_d.get("Modality", ""), "dicom": meta_d,
            "grid": grid}
    volume = Volume(array=arr, spacing=spacing, affine=affine_zyx, meta=dict(meta))
    return Case(image=volume, source=src, format="dicom", name=name, meta=meta)


def _case_2d(img: np.ndarray, spacing: tuple[float, float], src: Path, meta_d: dict[str, Any], name: str,
             rgb: bool = False) -> Case:
    meta = {"source": str(src), "format": "dicom", "modality": meta_d.get("Modality", ""), "dicom": meta_d}
    if rgb:
        arr = img.astype(np.uint8) if img.dtype != np.uint8 and img.max() <= 255 else img
        volume = Volume.rgb(arr, spacing=spacing, meta=dict(meta))
    else:
        volume = Volume(array=img, spacing=spacing, meta=dict(meta))
    return Case(image=volume, source=src, format="dicom", name=name, meta=meta)


def _load_multiframe(f: Path, h: Any) -> Case:
    """Enhanced multi-frame (highdicom volume geometry) or a geometry-less frame stack."""
    nfr = int(h.get("NumberOfFrames", 1) or 1)
    rows, cols = int(h.get("Rows", 0)), int(h.get("Columns", 0))
    spp = int(h.get("SamplesPerPixel", 1) or 1)
    check_declared_size(f, (nfr, rows, cols, spp), np.float32 if "PerFrameFunctionalGroupsSequence" in h
                        else _stored_dtype(h), f"{nfr} frames")
    ts = str(getattr(getattr(h, "file_meta", None), "TransferSyntaxUID", "") or "1.2.840.10008.1.2")
    _check_decoder(f, ts)
    meta_d = _identifiers(h)
    meta_d.update(files=[str(f)], sop_instance_uids=[str(h.get("SOPInstanceUID", ""))],
                  sop_class_uid=str(h.get("SOPClassUID", "")), transfer_syntax=ts, n_frames=nfr)
    name = _case_name(h, None)
    arr, ds = _decode_pydicom(f)
    if "PerFrameFunctionalGroupsSequence" in ds and spp == 1:
        import highdicom as hd

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                hvol = hd.Image.from_dataset(ds, copy=False).get_volume(dtype=np.float32)
        except (ValueError, RuntimeError, AttributeError, KeyError, TypeError) as exc:
            raise DicomError(f"{f}: the {nfr} frames of this enhanced multi-frame object do not form one regular "
                             f"volume ({type(exc).__name__}: {exc})") from None
        data = np.asarray(hvol.array)
        if data.ndim == 4 and data.shape[-1] == 1:
            data = data[..., 0]
        if np.array_equal(data, np.round(data)) and data.size and -32768 <= data.min() and data.max() <= 32767:
            data = data.astype(np.int16)
        meta_d["geometry"] = "enhanced"
        # highdicom: array (slices, rows, columns), affine of (slice, row, column) -> LPS
        aff = LPS_TO_RAS @ np.asarray(hvol.affine, dtype=float)[:, [2, 1, 0, 3]]
        return _case_3d(data, aff, f, meta_d, name)
    # frames without plane geometry (ultrasound cine, ...)
    meta_d["geometry"] = "frames"
    slope, inter = _rescale_params(h, f)
    if slope != 1.0 or inter != 0.0:
        arr = arr.astype(np.float32) * np.float32(slope) + np.float32(inter)
    row_sp, col_sp = _pixel_spacing(h, f)
    us = h.get("SequenceOfUltrasoundRegions")
    if us and h.get("PixelSpacing") is None:
        try:
            r0 = us[0]
            if int(r0.get("PhysicalUnitsXDirection", 0)) == 3 and int(r0.get("PhysicalUnitsYDirection", 0)) == 3:
                col_sp, row_sp = 10.0 * abs(float(r0.PhysicalDeltaX)), 10.0 * abs(float(r0.PhysicalDeltaY))
        except (AttributeError, ValueError, TypeError, IndexError):
            pass
    if spp != 1 and arr.ndim == 4:
        logger.warning("%s: colour multi-frame shown as grey (luminance)", f)
        arr = arr.astype(np.float32).mean(axis=-1)
    if arr.ndim == 2:
        return _case_2d(arr, (row_sp, col_sp), f, meta_d, name)
    if arr.ndim == 3 and spp != 1:
        return _case_2d(arr, (row_sp, col_sp), f, meta_d, name, rgb=True)
    logger.info("%s: %d frames without plane geometry, shown as a frame stack", f, arr.shape[0])
    meta = {"source": str(f), "format": "dicom", "modality": meta_d.get("Modality", ""), "dicom": meta_d}
    volume = Volume(array=arr, spacing=(1.0, row_sp, col_sp), meta=dict(meta))
    return Case(image=volume, source=f, format="dicom", name=name, meta=meta)


def _attach_seg(case: Case, scan: DicomScan, info: SeriesInfo) -> None:
    """Labels from the newest DICOM-SEG in the folder that references this series."""
    if not scan.segs or case.image.ndim != 3 or "grid" not in case.meta:
        return
    refs = []
    for f, h in scan.segs:
        uids = set()
        for item in h.get("ReferencedSeriesSequence", []) or []:
            uids.add(str(item.get("SeriesInstanceUID", "")))
        if info.uid in uids:
            refs.append((str(h.get("ContentDate", "")) + str(h.get("ContentTime", "")), f.stat().st_mtime, f))
    if not refs:
        return
    refs.sort()
    f = refs[-1][2]
    from .dicomseg import read_seg_onto_case

    try:
        labels, names, colors = read_seg_onto_case(f, case)
    except ValueError as exc:
        logger.warning("%s: DICOM-SEG not attached to %s: %s", f, case.source, exc)
        return
    case.labels["segs"] = labels
    for k, v in names.items():
        case.label_names.setdefault(k, v)
    if colors:
        case.meta.setdefault("label_colors", {}).update(colors)
    case.meta["seg_source"] = str(f)
    logger.info("%s: labels from the DICOM-SEG %s (%d segments)", case.source, f.name, len(names))
