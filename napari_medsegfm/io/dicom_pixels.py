"""DICOM slice geometry checks, decoder checks, pixel decoding and rescaling.

Part of :mod:`~napari_medsegfm.io.dicom` (steps 3 to 5 of its reading order): a series is
checked for one grid, its slices sorted along the slice normal, the transfer syntax checked
against the installed decoders, and the stored values rescaled (RescaleSlope/Intercept).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .dicom_series import DicomError, SeriesInfo, _pydicom


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

