"""Export the corrected cases of a dataset, with a manifest.

:func:`export_corrections` writes every case that has an autosaved correction (optionally
only some statuses) to a chosen folder and format through the io writers
(:func:`napari_medsegfm.io.save_labels`), and writes ``export_manifest.json`` and
``export_manifest.csv`` there: case id, name, status, comment, who last edited it and
when, who exported it and when, label ids and names, output file and its SHA-256, and the
source file.

``in_place=True`` writes the corrections **over the dataset's own label files** (the
separate ground-truth file when the layout has one, else the case file's ``gts``). Each
original is first copied to ``<sidecar>/backups/<UTC time>/<path relative to the
dataset>`` (and the io writer may keep its own ``.bak``); the manifest then goes to that
backup folder.
"""

from __future__ import annotations

import csv
import io as _io
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..io.atomic import atomic_write_bytes, fsync_dir
from ..utils import sha256_path
from ._util import json_default, label_ids
from .catalog import CaseEntry
from .status import format_time

__all__ = ["EXPORT_FORMATS", "ExportReport", "export_corrections", "export_path"]

logger = logging.getLogger(__name__)

#: format name -> file extension. "same" keeps each case's own format.
EXPORT_FORMATS: dict[str, str] = {"npz": ".npz", "nifti": ".nii.gz", "same": "", "dicom_seg": ".dcm",
                                  "slicer_seg": ".seg.nrrd", "nrrd": ".nrrd"}
#: a case's own format -> (extension, io format) of its labels when exporting with ``fmt="same"``
_SAME_CLINICAL = {"dicom": (".dcm", "dicom_seg"), "nrrd": (".nrrd", "nrrd"), "metaimage": (".mha", "metaimage"),
                  "slicer_seg": (".seg.nrrd", "slicer_seg"), "dicom_seg": (".seg.nrrd", "slicer_seg")}


@dataclass
class ExportReport:
    """What :func:`export_corrections` wrote.

    Parameters
    ----------
    out_dir : Path
        The output folder (the backup folder for an in-place export).
    manifest_path : Path
        ``export_manifest.json`` in it.
    exported : list of dict
        One row per exported case (``case_id``, ``output``, ``sha256``, ...).
    failed : list of dict
        One row per failed case, with ``error``.
    backup_dir : Path, optional
        In-place export: where the replaced originals were kept.
    """
    out_dir: Path
    manifest_path: Path
    exported: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    backup_dir: Path | None = None


def export_path(out_dir: Path, entry: CaseEntry, fmt: str) -> tuple[Path, str]:
    """Output path of a case and the io format used to write it.

    ``npz``: ``<out>/<case_id>.npz``; ``nifti``: ``<out>/<case_id>.nii.gz``; ``same``: the case's
    own format - npz / ``.nii.gz`` / medsegpy ``.h5`` files, a ``<out>/<case_id>/`` folder of
    ``.seg`` slices (medsegpy slices), ``<out>/<case_id>/masks/`` PNGs (SA-Med2D),
    ``<out>/<case_id>/<case>_Labels.nii.gz`` (IVDM3Seg), a DICOM-SEG ``<out>/<case_id>.dcm``
    referencing the series (DICOM), ``.nrrd``/``.mha`` label maps (NRRD/MetaImage).
    ``dicom_seg``, ``slicer_seg``, ``nrrd``: that format for every case (a DICOM-SEG only for
    DICOM cases).

    Parameters
    ----------
    out_dir : Path
        The export folder.
    entry : CaseEntry
        The case (``/`` in its id makes sub-folders).
    fmt : str
        One of :data:`EXPORT_FORMATS`.

    Returns
    -------
    path : Path
    io_format : str
        The :func:`~napari_medsegfm.io.save_labels` format.

    Raises
    ------
    ValueError
        An unknown format (a DICOM-SEG for a case that is not DICOM fails when it is written).
    """
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"export format {fmt!r}; expected one of {', '.join(EXPORT_FORMATS)}")
    parts = entry.case_id.split("/")
    base = out_dir.joinpath(*parts[:-1], parts[-1])
    if fmt == "npz":
        return base.with_name(base.name + ".npz"), "cvpr25_npz"
    if fmt == "nifti":
        return base.with_name(base.name + ".nii.gz"), "nifti"
    if fmt in ("dicom_seg", "slicer_seg", "nrrd"):
        return base.with_name(base.name + EXPORT_FORMATS[fmt]), fmt
    own = entry.fmt
    if own in _SAME_CLINICAL:
        ext, io_fmt = _SAME_CLINICAL[own]
        return base.with_name(base.name + ext), io_fmt
    if own in ("cvpr25_npz", "cvpr24_npz"):
        return base.with_name(base.name + ".npz"), own
    if own == "nifti":
        return base.with_name(base.name + ".nii.gz"), "nifti"
    if own == "medsegpy_h5":
        return base.with_name(base.name + ".h5"), "medsegpy_h5"
    if own == "medsegpy_slices":
        return base, "medsegpy_slices"
    if own == "samed2d":
        return base / "masks", "samed2d"
    if own == "ivdm3seg":
        return base / f"{entry.name}_Labels.nii.gz", "nifti"
    return base.with_name(base.name + ".npz"), "cvpr25_npz"


def export_corrections(
    workspace: Any,
    out_dir: str | os.PathLike[str] | None = None,
    *,
    fmt: str = "npz",
    statuses: Iterable[str] | None = None,
    cases: Iterable[str] | None = None,
    key: str = "gts",
    in_place: bool = False,
    progress: Callable[[int, int, str], None] | None = None,
) -> ExportReport:
    """Write the corrected cases and a manifest.

    Parameters
    ----------
    workspace : DatasetWorkspace
        The opened dataset (catalog, status store, corrections).
    out_dir : path-like
        Target folder (created). Required unless ``in_place``.
    fmt : {"npz", "nifti", "same", "dicom_seg", "slicer_seg", "nrrd"}
        Output format: CVPR-style npz (member ``key``), NIfTI (``.nii.gz``, in the source
        orientation for NIfTI cases), each case's own format (DICOM cases: DICOM-SEG), or
        one of the clinical label formats for every case.
    statuses : iterable of str, optional
        Only cases with these statuses (default: every corrected case).
    cases : iterable of str, optional
        Only these case ids.
    key : str
        npz member for the labels (``"gts"``: the corrections are the new ground truth).
    in_place : bool
        Write over the dataset's own label files, keeping backups (module docstring).

    Returns
    -------
    ExportReport
    """
    from .. import io as medio

    ws = workspace
    if not in_place and out_dir is None:
        raise ValueError("export needs an output folder (or in_place=True to write over the originals)")
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    backup_dir = ws.sidecar / "backups" / stamp if in_place else None
    out = Path(out_dir).expanduser().resolve() if out_dir is not None else backup_dir
    assert out is not None
    if not in_place and _inside(out, ws.root) and not _inside(out, ws.sidecar):
        # files written there would be listed as cases the next time the dataset is opened (or
        # overwrite originals): refused before anything is written
        raise ValueError(f"export folder {out} is inside the dataset {ws.root}: the exported files would be "
                         "taken for cases of the dataset (or overwrite its originals). Choose a folder outside "
                         "it, or export in place (in_place=True / --in-place, which keeps backups)")
    out.mkdir(parents=True, exist_ok=True)
    wanted_status = None if statuses is None else set(statuses)
    ids = set(cases) if cases is not None else None
    corrected = set(ws.corrections.case_ids())
    recs = ws.store.records()
    todo = [e for e in ws.catalog if e.case_id in corrected and (ids is None or e.case_id in ids)
            and (wanted_status is None or (recs.get(e.case_id) and recs[e.case_id].status in wanted_status))]
    report = ExportReport(out_dir=out, manifest_path=out / "export_manifest.json", backup_dir=backup_dir)
    for i, e in enumerate(todo):
        rec = recs.get(e.case_id)
        row: dict[str, Any] = {
            "case_id": e.case_id, "name": e.name,
            "status": rec.status if rec else "todo", "comment": rec.comment if rec else "",
            "edited_by": (rec.edited_by or "") if rec else "", "edited_at": format_time(rec.edited_at) if rec else "",
            "status_by": (rec.status_by or "") if rec else "", "status_at": format_time(rec.status_at) if rec else "",
            "exported_by": ws.store.user, "exported_at": format_time(time.time()), "source": str(e.path),
        }
        try:
            corr = ws.corrections.load(e.case_id)
            assert corr is not None
            case = ws.catalog.load(e)
            names = {**case.label_names, **corr.label_names}
            ids_ = label_ids(corr.labels)
            row["label_ids"] = ids_
            row["label_names"] = {str(k): names.get(k, "") for k in ids_}
            row["correction_saved_at"] = format_time(corr.saved_at)
            if in_place:
                target, io_fmt, wkey = _original_label_target(e)
                backup = backup_dir / target.relative_to(ws.root) if _inside(target, ws.root) else backup_dir / target.name
                if target.exists():
                    backup.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(target, backup)
                    with open(backup, "rb+") as fh:
                        os.fsync(fh.fileno())
                    fsync_dir(backup.parent)
                    row["backup"] = str(backup)
                save_case = case if io_fmt != "cvpr_gts_npz" else None
                medio.save_labels(corr.labels, target, case=save_case, key=wkey,
                                  fmt="cvpr25_npz" if io_fmt == "cvpr_gts_npz" else io_fmt,
                                  overwrite_gt=True, label_names=names)
                row["output"] = str(target)
            else:
                target, io_fmt = export_path(out, e, fmt)
                target.parent.mkdir(parents=True, exist_ok=True)
                if io_fmt in ("medsegpy_slices", "samed2d"):
                    target.mkdir(parents=True, exist_ok=True)
                written = medio.save_labels(corr.labels, target, case=case, key=key, fmt=io_fmt, overwrite_gt=True,
                                            label_names=names)
                target = Path(written) if written is not None else target
                row["output"] = str(target.relative_to(out))
            row["sha256"] = sha256_path(target)
            report.exported.append(row)
            ws.store.add_history(e.case_id, "export", f"{'over original ' if in_place else ''}{target}")
        except (OSError, ValueError, KeyError, AssertionError) as exc:
            row["error"] = f"{type(exc).__name__}: {exc}"
            logger.error("export of %s failed: %s", e.case_id, exc)
            report.failed.append(row)
        if progress is not None:
            progress(i + 1, len(todo), e.case_id)
    _write_manifest(report, ws, fmt if not in_place else "in place", key)
    return report


def _inside(p: Path, folder: Path) -> bool:
    try:
        Path(p).resolve().relative_to(Path(folder).resolve())
        return True
    except ValueError:
        return False


def _original_label_target(e: CaseEntry) -> tuple[Path, str, str]:
    """(file holding the case's ground truth, io format, npz key) for an in-place export."""
    if e.label_path is not None:
        if e.label_path.suffix == ".npz":
            return e.label_path, "cvpr_gts_npz", "gts"
        return e.label_path, e.label_fmt or "nifti", "gts"
    if e.fmt in ("cvpr25_npz", "cvpr24_npz"):
        return e.path, e.fmt, "gts"
    raise ValueError(f"case {e.case_id!r} ({e.fmt}) has no separate label file to export over; export to a folder")


def _write_manifest(report: ExportReport, ws: Any, fmt: str, key: str) -> None:
    data = {"dataset": str(ws.root), "layout": ws.catalog.layout, "format": fmt, "key": key,
            "exported_at": format_time(time.time()), "exported_by": ws.store.user,
            "n_exported": len(report.exported), "n_failed": len(report.failed),
            "cases": report.exported, "failed": report.failed}
    atomic_write_bytes(report.manifest_path, json.dumps(data, indent=1, default=json_default).encode())
    cols = ["case_id", "name", "status", "comment", "edited_by", "edited_at", "exported_by", "exported_at",
            "label_ids", "label_names", "output", "sha256", "source", "backup", "error"]
    buf = _io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    w.writeheader()
    for r in report.exported + report.failed:
        row = dict(r)
        row["label_ids"] = " ".join(str(i) for i in r.get("label_ids", []))
        row["label_names"] = "; ".join(f"{k}={v}" for k, v in (r.get("label_names") or {}).items())
        w.writerow(row)
    atomic_write_bytes(report.manifest_path.with_suffix(".csv"), buf.getvalue().encode())
