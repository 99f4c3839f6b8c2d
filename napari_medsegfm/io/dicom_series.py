"""DICOM files and series: the signature test, header reading, grouping a folder into series.

Part of :mod:`~napari_medsegfm.io.dicom` (steps 1 and 2 of its reading order): every file
of a folder is parsed up to its pixel data and grouped by SeriesInstanceUID. The pixel
checks and decoding are in :mod:`~napari_medsegfm.io.dicom_pixels`.
"""

from __future__ import annotations

import os
import warnings
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "SEG_SOP_CLASS",
    "DicomError",
    "DicomScan",
    "SeriesInfo",
    "is_dicom_file",
    "has_dicom_files",
    "read_head",
    "read_headers",
    "remember_headers",
    "source_headers",
    "scan_dicom",
    "list_series",
    "pick_series",
]

SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
#: SOP classes that are not images to display (SEG, RT structures/plans/doses, SR, KO, PR, ...)
_NON_IMAGE_PREFIXES = ("1.2.840.10008.5.1.4.1.1.66", "1.2.840.10008.5.1.4.1.1.481", "1.2.840.10008.5.1.4.1.1.88",
                       "1.2.840.10008.5.1.4.1.1.11", "1.2.840.10008.5.1.4.1.1.104", "1.2.840.10008.1.3.10")
_MAX_LISTED = 8


class DicomError(ValueError):
    """A DICOM input that cannot be opened (the message names the file(s) and why)."""


def is_dicom_file(path: str | os.PathLike[str]) -> bool:
    """True for a file with the DICOM Part 10 signature (``DICM`` at byte 128). Never raises.

    Parameters
    ----------
    path : path-like
        Any file.
    """
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
    """Cheap claim test for a folder: one of its first ``probe`` files is DICOM (not DICOMDIR).

    Parameters
    ----------
    folder : path-like
        The folder (not searched recursively; hidden files skipped).
    probe : int
        Files looked at, in name order.
    """
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
    """The file meta and the elements up to group ``last_group`` only.

    Cheap even for a DICOM-SEG whose per-frame sequences are megabytes (SOP class,
    modality, manufacturer... are in group 0x0008).

    Parameters
    ----------
    path : path-like
        A DICOM file.
    last_group : int
        The last element group read.

    Returns
    -------
    pydicom.Dataset

    Raises
    ------
    DicomError
        Not a readable DICOM file.
    """
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
    """Keep the headers of a series just read, so that writing a DICOM-SEG need not parse them again.

    The last few series are kept, keyed by their files and checked against their mtime and size.

    Parameters
    ----------
    files : list of Path
        The series' files, in slice order.
    headers : list of pydicom.Dataset
        Their headers, same order.
    """
    key = tuple(str(f) for f in files)
    try:
        _HEADERS[key] = (_stamps(files), headers)
    except OSError:
        return
    _HEADERS.move_to_end(key)
    while len(_HEADERS) > _HEADERS_KEPT:
        _HEADERS.popitem(last=False)


def source_headers(files: list[str]) -> list[Any]:
    """Headers (no pixel data) of ``files``: the ones kept when the series was opened, else read again.

    Parameters
    ----------
    files : list of str
        The files; kept headers are used only when every file has its mtime and size of then.

    Returns
    -------
    list of pydicom.Dataset
        Same order as ``files``.

    Raises
    ------
    DicomError
        A file that is not readable DICOM.
    """
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

    Parameters
    ----------
    uid : str
        SeriesInstanceUID.
    files : list of Path
        Its files.
    headers : list of pydicom.Dataset
        Their headers (no pixel data), same order.
    number : int
        1-based position in :func:`list_series`' listing (0 until numbered).
    """

    uid: str
    files: list[Path]
    headers: list[Any] = field(repr=False)
    number: int = 0

    @property
    def first(self) -> Any:
        """The first file's header."""
        return self.headers[0]

    @property
    def modality(self) -> str:
        """Modality of the first file (``"CT"``, ``"MR"``, ...; ``""`` if absent)."""
        return str(self.first.get("Modality", "") or "")

    @property
    def description(self) -> str:
        """SeriesDescription of the first file (``""`` if absent)."""
        return str(self.first.get("SeriesDescription", "") or "")

    @property
    def n_frames(self) -> int:
        """Frames in all files (NumberOfFrames, 1 per file without it)."""
        return sum(int(h.get("NumberOfFrames", 1) or 1) for h in self.headers)

    def label(self) -> str:
        """``"CT 'Abdomen 1.25mm' (#3, 300 images, 1.2.3...)"``: for listings and layer names."""
        num = self.first.get("SeriesNumber", "")
        desc = f" '{self.description}'" if self.description else ""
        return (f"{self.modality or '?'}{desc} (series number {num}, {len(self.files)} files, "
                f"{self.n_frames} frames, UID {self.uid})")


@dataclass
class DicomScan:
    """What :func:`scan_dicom` found in a folder.

    Parameters
    ----------
    folder : Path
        The folder scanned.
    series : list of SeriesInfo
        Image series, in series-number order.
    segs : list of (Path, pydicom.Dataset)
        DICOM-SEG objects.
    skipped : list of Path
        Files that are not DICOM, or not images (RT, SR, presentation states...).
    """

    folder: Path
    series: list[SeriesInfo]
    segs: list[tuple[Path, Any]]
    skipped: list[Path]


def read_headers(files: Iterable[Path]) -> list[tuple[Path, Any]]:
    """``(path, header)`` for every DICOM file of ``files`` (non-DICOM ones and DICOMDIR left out).

    Parameters
    ----------
    files : iterable of Path
        Candidate files.

    Returns
    -------
    list of (Path, pydicom.Dataset)

    Raises
    ------
    DicomError
        A file with the DICOM signature that cannot be parsed.
    """
    out = []
    for p in files:
        if p.name.upper() == "DICOMDIR" or not is_dicom_file(p):
            continue
        out.append((p, _read_header(p)))
    return out


def scan_dicom(path: str | os.PathLike[str]) -> DicomScan:
    """Group the DICOM files of a folder (or of the folder of a file) into series.

    Parameters
    ----------
    path : path-like
        A folder, or a file whose folder is scanned (not recursively).

    Returns
    -------
    DicomScan

    Raises
    ------
    DicomError
        No DICOM file at all (the message names some of the files looked at), a file with
        the DICOM signature that cannot be parsed, or an image without Rows/Columns or
        SeriesInstanceUID.
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
    """The image series of a DICOM folder, in series-number order.

    Parameters
    ----------
    path : path-like
        The folder (or a file in it).

    Returns
    -------
    list of SeriesInfo

    Raises
    ------
    DicomError
        As :func:`scan_dicom`.
    """
    return scan_dicom(path).series


def pick_series(scan: DicomScan, series: str | int | None, src: Path) -> SeriesInfo:
    """The series named by ``series``, or the only one.

    Parameters
    ----------
    scan : DicomScan
        The folder's scan.
    series : str, int or None
        SeriesInstanceUID, a unique UID prefix, or the 1-based listing number; ``None``
        when the folder holds one series.
    src : Path
        What the user opened (for messages).

    Returns
    -------
    SeriesInfo

    Raises
    ------
    DicomError
        No image series, several series and ``series`` not given (the message lists them),
        or no series matching ``series``.
    """
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

