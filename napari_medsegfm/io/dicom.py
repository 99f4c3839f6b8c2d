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
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..types import Case, Volume
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

logger = logging.getLogger(__name__)

SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
#: SOP classes that are not images to display (SEG, RT structures/plans/doses, SR, KO, PR, ...)
_NON_IMAGE_PREFIXES = ("1.2.840.10008.5.1.4.1.1.66", "1.2.840.10008.5.1.4.1.1.481", "1.2.840.10008.5.1.4.1.1.88",
                       "1.2.840.10008.5.1.4.1.1.11", "1.2.840.10008.5.1.4.1.1.104", "1.2.840.10008.1.3.10")
_MAX_LISTED = 8


class DicomError(ValueError):
    """A DICOM input that cannot be opened (the message names the file(s) and why)."""


def is_dicom_file(path: str | os.PathLike[str]) -> bool:
    """True for a file with the DICOM Part 10 signature (``DICM`` at byte 128). Never raises."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
        return len(head) == 132 and head[128:132] == b"DICM"
    except OSError:
        return False


def _candidates(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    except OSError:
        return []


def has_dicom_files(folder: str | os.PathLike[str], probe: int = 64) -> bool:
    """Cheap claim test for a folder: one of its first ``probe`` files is DICOM (not DICOMDIR)."""
    for p in _candidates(Path(folder))[:probe]:
        if p.name.upper() != "DICOMDIR" and is_dicom_file(p):
            return True
    return False


def _pydicom() -> Any:
    import pydicom

    return pydicom


def _read_header(p: Path) -> Any:
    pydicom = _pydicom()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pydicom.dcmread(str(p), stop_before_pixels=True)
    except (pydicom.errors.InvalidDicomError, OSError, EOFError, ValueError, KeyError, TypeError,
            AttributeError, IndexError, OverflowError) as exc:
        raise DicomError(f"{p}: not a readable DICOM file ({type(exc).__name__}: {exc}); the file may be "
                         "truncated or corrupt") from None


def read_head(path: str | os.PathLike[str], last_group: int = 0x0008) -> Any:
    """The file meta and the elements up to group ``last_group`` only (SOP class, modality,
    manufacturer...): cheap even for a DICOM-SEG whose per-frame sequences are megabytes."""
    pydicom = _pydicom()
    from pydicom.filereader import read_partial

    p = Path(path)
    try:
        with open(p, "rb") as fh, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return read_partial(fh, stop_when=lambda tag, _vr, _length: tag.group > last_group)
    except (pydicom.errors.InvalidDicomError, OSError, EOFError, ValueError, KeyError, TypeError) as exc:
        raise DicomError(f"{p}: not a readable DICOM file ({type(exc).__name__}: {exc})") from None


#: headers of the last few series read, so that writing a DICOM-SEG does not parse them again
_HEADERS: OrderedDict[tuple[str, ...], tuple[tuple[tuple[int, int], ...], list[Any]]] = OrderedDict()
_HEADERS_KEPT = 4


def _stamps(files: list[Path] | tuple[str, ...]) -> tuple[tuple[int, int], ...]:
    out = []
    for f in files:
        st = os.stat(f)
        out.append((st.st_mtime_ns, st.st_size))
    return tuple(out)


def remember_headers(files: list[Path], headers: list[Any]) -> None:
    key = tuple(str(f) for f in files)
    try:
        _HEADERS[key] = (_stamps(files), headers)
    except OSError:
        return
    _HEADERS.move_to_end(key)
    while len(_HEADERS) > _HEADERS_KEPT:
        _HEADERS.popitem(last=False)


def source_headers(files: list[str]) -> list[Any]:
    """Headers (no pixel data) of ``files``: the ones read when the series was opened if the
    files are unchanged (same mtime and size), else read again."""
    key = tuple(str(f) for f in files)
    hit = _HEADERS.get(key)
    if hit is not None:
        try:
            if _stamps(key) == hit[0]:
                return hit[1]
        except OSError:
            pass
    headers = [_read_header(Path(f)) for f in files]
    remember_headers([Path(f) for f in files], headers)
    return headers


# --------------------------------------------------------------------- series scanning
@dataclass
class SeriesInfo:
    """One image series of a folder (headers only, in file-name order until loaded).

    ``number`` is the 1-based position in :func:`list_series`' listing.
    """

    uid: str
    files: list[Path]
    headers: list[Any] = field(repr=False)
    number: int = 0

    @property
    def first(self) -> Any:
        return self.headers[0]

    @property
    def modality(self) -> str:
        return str(self.first.get("Modality", "") or "")

    @property
    def description(self) -> str:
        return str(self.first.get("SeriesDescription", "") or "")

    @property
    def n_frames(self) -> int:
        return sum(int(h.get("NumberOfFrames", 1) or 1) for h in self.headers)

    def label(self) -> str:
        """``"CT 'Abdomen 1.25mm' (#3, 300 images, 1.2.3...)"``: for listings and layer names."""
        num = self.first.get("SeriesNumber", "")
        desc = f" '{self.description}'" if self.description else ""
        return (f"{self.modality or '?'}{desc} (series number {num}, {len(self.files)} files, "
                f"{self.n_frames} frames, UID {self.uid})")


@dataclass
class DicomScan:
    """What :func:`scan_dicom` found: image series, SEG objects, and skipped files."""

    folder: Path
    series: list[SeriesInfo]
    segs: list[tuple[Path, Any]]
    skipped: list[Path]


def read_headers(files: Iterable[Path]) -> list[tuple[Path, Any]]:
    """``(path, header)`` for every DICOM file of ``files`` (non-DICOM ones left out)."""
    out = []
    for p in files:
        if p.name.upper() == "DICOMDIR" or not is_dicom_file(p):
            continue
        out.append((p, _read_header(p)))
    return out


def scan_dicom(path: str | os.PathLike[str]) -> DicomScan:
    """Group the DICOM files of a folder (or of the folder of a file) into series.

    Raises
    ------
    DicomError
        No DICOM file at all (the message names some of the files looked at), or a
        file with the DICOM signature that cannot be parsed.
    """
    p = Path(path)
    folder = p if p.is_dir() else p.parent
    files = _candidates(folder)
    headers = read_headers(files)
    skipped = [f for f in files if f not in {h[0] for h in headers}]
    if not headers:
        shown = ", ".join(f.name for f in files[:_MAX_LISTED]) + (" ..." if len(files) > _MAX_LISTED else "")
        raise DicomError(f"{folder}: no DICOM files (looked at {len(files)} file(s){': ' + shown if shown else ''}; "
                         "expected DICOM Part 10 files with the 'DICM' signature)")
    by_uid: dict[str, list[tuple[Path, Any]]] = {}
    segs: list[tuple[Path, Any]] = []
    for f, h in headers:
        sop = str(h.get("SOPClassUID", ""))
        if sop == SEG_SOP_CLASS:
            segs.append((f, h))
            continue
        if sop.startswith(_NON_IMAGE_PREFIXES):
            skipped.append(f)
            continue
        if "Rows" not in h or "Columns" not in h:
            raise DicomError(f"{f}: DICOM image ({sop or 'no SOP class'}) without Rows/Columns; the file is "
                             "truncated or corrupt")
        uid = str(h.get("SeriesInstanceUID", "") or "")
        if not uid:
            raise DicomError(f"{f}: DICOM image without SeriesInstanceUID; cannot tell which series it belongs to")
        by_uid.setdefault(uid, []).append((f, h))
    series = []
    for uid, items in by_uid.items():
        series.append(SeriesInfo(uid, [f for f, _ in items], [h for _, h in items]))
    series.sort(key=lambda s: (_int(s.first.get("SeriesNumber")), s.uid))
    for i, s in enumerate(series, start=1):
        s.number = i
    return DicomScan(folder, series, segs, skipped)


def _int(v: Any, default: int = 10**9) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        return default


def list_series(path: str | os.PathLike[str]) -> list[SeriesInfo]:
    """The image series of a DICOM folder, in series-number order."""
    return scan_dicom(path).series


def pick_series(scan: DicomScan, series: str | int | None, src: Path) -> SeriesInfo:
    """The series named by ``series`` (UID, unique UID prefix, listing number), or the only one."""
    if not scan.series:
        what = f"{len(scan.segs)} DICOM-SEG object(s)" if scan.segs else "no image series"
        raise DicomError(f"{scan.folder}: {what} and no images to open "
                         "(open a DICOM-SEG together with the series it references)")
    if series is None:
        if len(scan.series) == 1:
            return scan.series[0]
        listing = "; ".join(f"[{s.number}] {s.label()}" for s in scan.series)
        raise DicomError(f"{src}: the folder holds {len(scan.series)} image series: {listing}. "
                         "Pick one with series=<UID or number> (CLI: --case-id)")
    key = str(series).strip()
    for s in scan.series:
        if s.uid == key:
            return s
    if key.isdigit():
        n = int(key)
        for s in scan.series:
            if s.number == n:
                return s
    hits = [s for s in scan.series if s.uid.startswith(key)]
    if len(hits) == 1:
        return hits[0]
    listing = "; ".join(f"[{s.number}] {s.uid}" for s in scan.series)
    raise DicomError(f"{src}: no series {key!r} in {scan.folder} (has: {listing})")


# --------------------------------------------------------------------- geometry checks
def _floats(v: Any, n: int, f: Path, name: str) -> np.ndarray:
    try:
        a = np.asarray([float(x) for x in v], dtype=float)
    except (TypeError, ValueError):
        a = np.zeros(0)
    if a.size != n or not np.all(np.isfinite(a)):
        raise DicomError(f"{f}: {name} = {v!r}; expected {n} finite numbers")
    return a


def _pixel_spacing(h: Any, f: Path) -> tuple[float, float]:
    """(row spacing, column spacing) in mm: PixelSpacing, else ImagerPixelSpacing, else 1."""
    for key in ("PixelSpacing", "ImagerPixelSpacing"):
        if h.get(key) is not None:
            sp = _floats(h.get(key), 2, f, key)
            if np.any(sp <= 0):
                raise DicomError(f"{f}: {key} = {list(sp)}; expected positive spacings in mm")
            return float(sp[0]), float(sp[1])
    return 1.0, 1.0


def _check_consistent(s: SeriesInfo) -> None:
    """Refuse a mixed series: files of one UID that are not slices of one grid."""
    def sig(h: Any, f: Path) -> tuple[Any, ...]:
        iop = h.get("ImageOrientationPatient")
        iop_r = tuple(np.round(_floats(iop, 6, f, "ImageOrientationPatient"), 3)) if iop is not None else None
        sp = tuple(round(x, 4) for x in _pixel_spacing(h, f))
        return (int(h.get("Rows", 0)), int(h.get("Columns", 0)), iop_r, sp, int(h.get("SamplesPerPixel", 1) or 1),
                str(h.get("Modality", "")))
    groups: dict[tuple[Any, ...], list[Path]] = {}
    for f, h in zip(s.files, s.headers):
        groups.setdefault(sig(h, f), []).append(f)
    if len(groups) > 1:
        parts = []
        for g, fs in groups.items():
            rows, cols, iop, sp, spp, mod = g
            parts.append(f"{len(fs)} file(s) of {mod} {rows}x{cols}, orientation {list(iop) if iop else None}, "
                         f"pixel spacing {list(sp)}, {spp} sample(s)/pixel (e.g. {fs[0].name})")
        raise DicomError(f"{s.files[0].parent}: series {s.uid} is mixed: " + "; ".join(parts)
                         + ". Its files are not slices of one volume; separate them into their own series")


def _sort_slices(s: SeriesInfo) -> tuple[list[int], np.ndarray, float]:
    """File order along the slice normal, the positions (LPS) in that order, the slice step (mm)."""
    f0, h0 = s.files[0], s.first
    if h0.get("ImageOrientationPatient") is None or any(h.get("ImagePositionPatient") is None for h in s.headers):
        missing = next(f for f, h in zip(s.files, s.headers) if h.get("ImagePositionPatient") is None
                       or h.get("ImageOrientationPatient") is None)
        raise DicomError(f"{missing}: no ImagePositionPatient/ImageOrientationPatient; the slices of series "
                         f"{s.uid} cannot be placed in space (sorting by file name or InstanceNumber is not safe)")
    iop = _floats(h0.get("ImageOrientationPatient"), 6, f0, "ImageOrientationPatient")
    normal = np.cross(iop[:3], iop[3:])
    if np.linalg.norm(normal) < 1e-6:
        raise DicomError(f"{f0}: ImageOrientationPatient {list(iop)} has parallel row and column directions")
    normal /= np.linalg.norm(normal)
    pos = np.array([_floats(h.get("ImagePositionPatient"), 3, f, "ImagePositionPatient")
                    for f, h in zip(s.files, s.headers)])
    d = pos @ normal
    order = [int(i) for i in np.argsort(d, kind="stable")]
    d_sorted = d[order]
    if len(order) == 1:
        thick = h0.get("SpacingBetweenSlices") or h0.get("SliceThickness") or 1.0
        try:
            step = float(thick)
        except (TypeError, ValueError):
            step = 1.0
        return order, pos[order], step if step > 0 else 1.0
    diffs = np.diff(d_sorted)
    files = [s.files[i] for i in order]
    tol_abs = 0.01  # mm: position values are decimal strings
    dup = np.nonzero(diffs < tol_abs)[0]
    if dup.size:
        i = int(dup[0])
        raise DicomError(f"{files[i].parent}: series {s.uid} has {dup.size + 1} or more files at the same slice "
                         f"position {d_sorted[i]:.3f} mm ({files[i].name}, {files[i + 1].name}): duplicates or a "
                         "multi-phase / 4D acquisition; keep one file per position")
    step = float(np.median(diffs))
    tol = max(tol_abs, 0.01 * step)
    bad = np.nonzero(np.abs(diffs - step) > tol)[0]
    if bad.size:
        i = int(bad[0])
        ratio = diffs[i] / step
        if abs(ratio - round(ratio)) * step <= tol and round(ratio) >= 2:
            n_missing = int(round(ratio)) - 1
            raise DicomError(
                f"{files[i].parent}: series {s.uid} is missing {n_missing} slice(s) between {files[i].name} "
                f"(position {d_sorted[i]:.3f} mm) and {files[i + 1].name} (position {d_sorted[i + 1]:.3f} mm): a "
                f"gap of {diffs[i]:.3f} mm where the slices are {step:.3f} mm apart")
        raise DicomError(
            f"{files[i].parent}: series {s.uid} has non-uniform slice spacing: {diffs[i]:.3f} mm between "
            f"{files[i].name} and {files[i + 1].name}, {step:.3f} mm elsewhere (range {diffs.min():.3f}.."
            f"{diffs.max():.3f} mm). Resampling is not supported; resample it in your DICOM tool or open the "
            "uniform part as its own series")
    return order, pos[order], step


# ----------------------------------------------------------------------------- decoding
def _check_decoder(f: Path, ts: str) -> None:
    """Refuse a transfer syntax that no installed pydicom pixel plugin decodes, naming the codec and
    the packages that provide it (before anything is allocated)."""
    from pydicom.pixels import get_decoder
    from pydicom.uid import UID

    uid = UID(ts)
    try:
        dec = get_decoder(uid)
    except NotImplementedError:
        dec = None
    if dec is not None and dec.is_available:
        return
    name = uid.name if uid.is_transfer_syntax else ts
    needs = "; ".join(dec.missing_dependencies) if dec is not None else "no decoder known to pydicom"
    raise DicomError(f"{f}: pixel data is compressed as {name} ({ts}) and no installed decoder handles it "
                     f"(pydicom plugins: {needs}). Install one of those packages (e.g. pip install pylibjpeg "
                     "pylibjpeg-openjpeg pylibjpeg-libjpeg), or decompress the series (e.g. gdcmconv --raw)")


def _decode_pydicom(f: Path) -> tuple[np.ndarray, Any]:
    pydicom = _pydicom()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(str(f))
            arr = ds.pixel_array
    except (pydicom.errors.InvalidDicomError, OSError, EOFError, ValueError, KeyError, TypeError, AttributeError,
            IndexError, RuntimeError, NotImplementedError) as exc:
        raise DicomError(f"{f}: pixel data cannot be decoded ({type(exc).__name__}: {exc}); the file may be "
                         "truncated or corrupt") from None
    return arr, ds


def _rescale_params(h: Any, f: Path) -> tuple[float, float]:
    try:
        slope = float(h.get("RescaleSlope", 1.0) if h.get("RescaleSlope") is not None else 1.0)
        inter = float(h.get("RescaleIntercept", 0.0) if h.get("RescaleIntercept") is not None else 0.0)
    except (TypeError, ValueError):
        raise DicomError(f"{f}: RescaleSlope/RescaleIntercept {h.get('RescaleSlope')!r}/"
                         f"{h.get('RescaleIntercept')!r} are not numbers") from None
    if not (np.isfinite(slope) and np.isfinite(inter)) or slope == 0:
        raise DicomError(f"{f}: RescaleSlope {slope} / RescaleIntercept {inter}; expected finite values, slope != 0")
    return slope, inter


def _stored_dtype(h: Any) -> np.dtype:
    bits = int(h.get("BitsAllocated", 16) or 16)
    signed = int(h.get("PixelRepresentation", 0) or 0) == 1
    if bits <= 8:
        return np.dtype(np.int8 if signed else np.uint8)
    if bits <= 16:
        return np.dtype(np.int16 if signed else np.uint16)
    return np.dtype(np.int32 if signed else np.uint32)


def _rescaled(vol: np.ndarray, params: list[tuple[float, float]]) -> np.ndarray:
    """Apply per-slice RescaleSlope/Intercept to stored values ``(slices, rows, columns[, c])``.

    Integer result (in place when it fits the stored type, else int32) when every slope is
    1 and every intercept an integer; float32 otherwise.
    """
    if all(s == 1.0 and i == 0.0 for s, i in params):
        return vol
    if all(s == 1.0 and float(i).is_integer() for s, i in params):
        inters = {int(i) for _, i in params}
        lo, hi = int(vol.min()) + min(inters), int(vol.max()) + max(inters)
        dt = next((np.dtype(d) for d in (vol.dtype, np.int16, np.int32)
                   if np.iinfo(d).min <= lo and hi <= np.iinfo(d).max), np.dtype(np.int64))
        out = vol if dt == vol.dtype else vol.astype(dt)
        if len(inters) == 1:
            out += inters.pop()
        else:
            for k, (_s, i) in enumerate(params):
                out[k] += int(i)
        return out
    out = vol.astype(np.float32)
    for k, (s, i) in enumerate(params):
        out[k] *= np.float32(s)
        out[k] += np.float32(i)
    return out


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
