"""Dataset layouts of the clinical formats, for :func:`napari_medsegfm.dataset.catalog.discover` (beside dataset/layouts.py).

``dicom``
    Folders of DICOM files anywhere under the root (up to 4 levels): one case per image
    series (case id = the folder's relative path, plus ``/S<series number>`` when the
    folder holds several series). A DICOM-SEG elsewhere in the dataset that references
    the series becomes the case's label file (a SEG in the series' own folder is read
    by the DICOM reader itself, as ``segs``).
``itk``
    NRRD / MetaImage images (``.nrrd``, ``.nhdr``, ``.mha``, ``.mhd``) with their label
    maps beside them (``X.nrrd`` + ``X_seg.nrrd``, ``X-label.nrrd``, ``X.seg.nrrd``, ...)
    or in a sibling label folder (``images/`` + ``labels/``), like the NIfTI layout.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from .catalog import (
    _LABEL_DIRS,
    CaseEntry,
    Catalog,
    _walk,
    modality_from_name,
)
from .layouts import _is_label_name, _label_match

__all__ = ["find_dicom", "find_itk", "CLINICAL_LAYOUTS"]

logger = logging.getLogger(__name__)

CLINICAL_LAYOUTS = ("dicom", "itk")

_ITK_EXT = (".seg.nrrd", ".nrrd", ".nhdr", ".mha", ".mhd")


def _dirs(root: Path, max_depth: int = 4) -> list[Path]:
    out, stack = [], [(root, 0)]
    while stack:
        d, depth = stack.pop()
        out.append(d)
        if depth >= max_depth:
            continue
        try:
            subs = sorted(c for c in d.iterdir() if c.is_dir() and not c.name.startswith(".")
                          and c.name not in {".medsegfm", "__pycache__"})
        except OSError:
            continue
        stack.extend((s, depth + 1) for s in reversed(subs))
    return out


def find_dicom(root: Path) -> Catalog | None:
    """The ``dicom`` layout (see the module docstring): one case per image series, or ``None``.

    Parameters
    ----------
    root : Path
        The dataset folder (searched recursively).

    Returns
    -------
    Catalog or None
    """
    from ..io.dicom import _case_name, has_dicom_files, scan_dicom

    entries: list[CaseEntry] = []
    seg_refs: list[tuple[Path, set[str], str]] = []  # (file, referenced series, sort key)
    for d in _dirs(root):
        if not has_dicom_files(d):
            continue
        try:
            scan = scan_dicom(d)
        except ValueError as exc:
            logger.warning("dataset %s: DICOM folder %s skipped: %s", root, d, exc)
            continue
        for f, h in scan.segs:
            uids = {str(it.get("SeriesInstanceUID", "")) for it in (h.get("ReferencedSeriesSequence") or [])}
            seg_refs.append((f, uids, str(h.get("ContentDate", "")) + str(h.get("ContentTime", ""))))
        rel = d.relative_to(root).as_posix()
        rel = "" if rel == "." else rel
        for s in scan.series:
            cid = rel or d.name
            if len(scan.series) > 1:
                cid = f"{cid}/S{s.first.get('SeriesNumber', s.number)}"
            entries.append(CaseEntry(
                case_id=cid, name=_case_name(s.first, s), path=d, fmt="dicom", io_case_id=s.uid,
                modality=s.modality, layout="dicom",
                meta={"files": [str(f) for f in s.files], "series_uid": s.uid, "n_slices": len(s.files)}))
    if not entries:
        return None
    for e in entries:
        refs = sorted((key, str(f)) for f, uids, key in seg_refs if e.meta["series_uid"] in uids
                      and Path(f).parent != e.path)
        if refs:
            e.label_path, e.label_fmt = Path(refs[-1][1]), "dicom_seg"
            e.meta["files"].append(str(e.label_path))
    ids = [e.case_id for e in entries]
    if len(set(ids)) != len(ids):  # two series with the same number in one folder
        for e in entries:
            if ids.count(e.case_id) > 1:
                e.case_id = f"{e.case_id}-{e.io_case_id[-8:]}"
    return Catalog(root, entries, "dicom")


def _itk_stem(name: str) -> str:
    low = name.lower()
    for ext in _ITK_EXT:
        if low.endswith(ext):
            return name[: -len(ext)]
    return name


def find_itk(root: Path) -> Catalog | None:
    """The ``itk`` layout (see the module docstring): NRRD/MetaImage images with their label maps, or ``None``.

    Parameters
    ----------
    root : Path
        The dataset folder (searched recursively).

    Returns
    -------
    Catalog or None
    """
    files = [f for f in _walk(root) if f.name.lower().endswith(_ITK_EXT)]
    if not files:
        return None
    by_dir: dict[Path, list[Path]] = {}
    for f in files:
        by_dir.setdefault(f.parent, []).append(f)
    label_dirs = {d for d in by_dir if d.name.lower() in _LABEL_DIRS}
    entries = []
    for d, fs in sorted(by_dir.items()):
        if d in label_dirs:
            continue
        label_stems: dict[str, Path] = {}
        for s in sorted(d.parent.iterdir()) if d != root else []:
            if s in label_dirs:
                for lf in by_dir[s]:
                    label_stems.setdefault(_itk_stem(lf.name), lf)
        local = {}
        for f in fs:
            st = _itk_stem(f.name)
            if f.name.lower().endswith(".seg.nrrd"):
                local.setdefault(st + ".seg", f)
            elif _is_label_name(st):
                local.setdefault(st, f)
        for f in sorted(fs):
            st = _itk_stem(f.name)
            if f in local.values():
                continue
            lab = _label_match(st, label_stems) or _label_match(st, local) or local.get(st + ".seg")
            rel = f.relative_to(root)
            entries.append(CaseEntry(
                case_id="/".join([*rel.parts[:-1], st]), name=st, path=f,
                fmt="nrrd" if f.name.lower().endswith((".nrrd", ".nhdr")) else "metaimage",
                label_path=lab, label_fmt=_label_fmt(lab), modality=modality_from_name(st), layout="itk"))
    return Catalog(root, entries, "itk") if entries else None


def _label_fmt(p: Path | None) -> str:
    if p is None:
        return ""
    n = p.name.lower()
    if n.endswith(".seg.nrrd"):
        return "slicer_seg"
    return "nrrd" if n.endswith((".nrrd", ".nhdr")) else "metaimage"


def load_dicom_seg_labels(entry: CaseEntry, case: Any) -> tuple[Any, dict[int, str]]:
    """A DICOM-SEG label file of a ``dicom`` entry, placed on the series by SOP instance UID."""
    from ..io.dicomseg import read_seg_onto_case

    assert entry.label_path is not None
    labels, names, colors = read_seg_onto_case(entry.label_path, case)
    if colors:
        case.meta.setdefault("label_colors", {}).update(colors)
    return labels, names
