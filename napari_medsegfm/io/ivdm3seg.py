"""IVDM3Seg: four co-registered Dixon MR sequences per case plus a disc label map.

Layouts (``NN`` = two-digit case id, files ``.nii`` or ``.nii.gz``)::

    NN/NN_fat.nii NN/NN_inn.nii NN/NN_opp.nii NN/NN_wat.nii NN/NN_Labels.nii    case folders
    dataset/NN_fat.nii ... dataset/NN_wat.nii   label/NN_Labels.nii              flat layout

Each sequence is read like any NIfTI (closest canonical, array ``(Z, Y, X)``), the four
must share shape and geometry. The case's primary image is the water image (discs are
bright there); all four are in ``Case.images`` keyed ``fat``/``inn``/``opp``/``wat``,
the labels are ``labels["gts"]`` (absent for unlabelled cases).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import numpy as np

from ..types import Case
from ._common import CaseRef
from .nifti import read_nifti_volume

__all__ = ["SEQUENCES", "find_case_files", "is_ivdm3seg_root", "is_ivdm3seg_path", "list_ivdm3seg_cases",
           "load_ivdm3seg"]

logger = logging.getLogger(__name__)

SEQUENCES = ("fat", "inn", "opp", "wat")
PRIMARY_ORDER = ("wat", "inn", "opp", "fat")
_FILE_RE = re.compile(r"^(\d+)_(fat|inn|opp|wat|labels)\.nii(?:\.gz)?$", re.IGNORECASE)


def _scan(folder: Path) -> dict[str, dict[str, Path]]:
    """``{case_id: {"fat": path, ..., "labels": path}}`` for the matching files of one folder."""
    out: dict[str, dict[str, Path]] = {}
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return out
    for e in entries:
        m = _FILE_RE.match(e.name)
        if m and e.is_file():
            out.setdefault(m.group(1), {})[m.group(2).lower()] = Path(e.path)
    return out


def find_case_files(path: str | os.PathLike[str], case_id: str | None = None
                    ) -> tuple[str, dict[str, Path], Path | None] | None:
    """The files of one IVDM3Seg case. Never raises.

    Parameters
    ----------
    path : path-like
        A case folder, a case file, or a dataset root (first case, or ``case_id``).
    case_id : str, optional
        The case in a dataset root.

    Returns
    -------
    (case_id, {sequence: path}, labels_path) or None
        ``None`` if nothing matches.
    """
    p = Path(path)
    try:
        if p.is_file():
            m = _FILE_RE.match(p.name)
            if not m:
                return None
            case_id = m.group(1)
            folder = p.parent
            if folder.name == "label":
                folder = folder.parent / "dataset"
            return _assemble(folder, case_id)
        if not p.is_dir():
            return None
        files = _scan(p)
        if files:  # a case folder NN/ (or a dataset/ folder)
            cid = case_id or sorted(files)[0]
            return _assemble(p, cid)
        if (p / "dataset").is_dir():
            cases = _scan(p / "dataset")
            if cases:
                cid = case_id or sorted(cases)[0]
                return _assemble(p / "dataset", cid)
        subs = sorted(d for d in p.iterdir() if d.is_dir() and re.fullmatch(r"\d+", d.name) and _scan(d))
        if subs:
            d = next((s for s in subs if s.name == case_id), subs[0]) if case_id else subs[0]
            return _assemble(d, d.name)
    except OSError:
        return None
    return None


def _assemble(folder: Path, case_id: str) -> tuple[str, dict[str, Path], Path | None] | None:
    files = _scan(folder).get(case_id, {})
    seqs = {s: files[s] for s in SEQUENCES if s in files}
    labels = files.get("labels")
    if labels is None and folder.name == "dataset":
        lab = _scan(folder.parent / "label").get(case_id, {})
        labels = lab.get("labels")
    if len(seqs) < 2:
        return None
    return case_id, seqs, labels


def is_ivdm3seg_path(path: str | os.PathLike[str]) -> bool:
    """True when :func:`find_case_files` finds a case at ``path``.

    Parameters
    ----------
    path : path-like
        A file or folder.
    """
    return find_case_files(path) is not None


def is_ivdm3seg_root(path: str | os.PathLike[str]) -> bool:
    """A root with ``dataset/`` or several ``NN/`` case folders (not a single case folder).

    Parameters
    ----------
    path : path-like
        A folder.
    """
    p = Path(path)
    return p.is_dir() and not _scan(p) and find_case_files(p) is not None


def list_ivdm3seg_cases(root: str | os.PathLike[str]) -> list[CaseRef]:
    """One :class:`CaseRef` per case of a root (or the single case of a case folder).

    Parameters
    ----------
    root : path-like
        A dataset root or case folder.

    Returns
    -------
    list of CaseRef
    """
    p = Path(root)
    refs: list[CaseRef] = []
    direct = _scan(p)
    if direct:
        return [CaseRef(name=c, path=p, format="ivdm3seg", case_id=c) for c in sorted(direct)
                if _assemble(p, c) is not None]
    seen = set()
    for d in sorted(x for x in p.iterdir() if x.is_dir() and re.fullmatch(r"\d+", x.name)):
        if _assemble(d, d.name) is not None:
            refs.append(CaseRef(name=d.name, path=d, format="ivdm3seg", case_id=d.name))
            seen.add(d.name)
    if (p / "dataset").is_dir():
        for c in sorted(_scan(p / "dataset")):
            if c not in seen and _assemble(p / "dataset", c) is not None:
                refs.append(CaseRef(name=c, path=p / "dataset", format="ivdm3seg", case_id=c))
    return refs


def load_ivdm3seg(path: str | os.PathLike[str], case_id: str | None = None) -> Case:
    """Read one IVDM3Seg case: four Dixon sequences (``Case.images``) + labels (``labels["gts"]``).

    Parameters
    ----------
    path : path-like
        A case folder, one of its files, a ``dataset/`` folder or a dataset root.
    case_id : str, optional
        The case in a root (default the first).

    Returns
    -------
    Case
        ``image``: the primary sequence (``wat``, else ``inn``, ``opp``, ``fat``), ``(Z, Y, X)``
        with spacing in mm; ``images``: every sequence found, by name.

    Raises
    ------
    ValueError
        No case found, or the sequences do not share one grid.
    """
    p = Path(path)
    found = find_case_files(p, case_id)
    if found is None:
        raise ValueError(f"{p}: no IVDM3Seg case (NN_fat/inn/opp/wat.nii [+ NN_Labels.nii]) found"
                         + (f" for case {case_id!r}" if case_id else ""))
    cid, seqs, labels_path = found
    if case_id is not None and cid != case_id:
        raise ValueError(f"{p}: no IVDM3Seg case {case_id!r}")
    missing = [s for s in SEQUENCES if s not in seqs]
    if missing:
        logger.warning("IVDM3Seg case %s lacks sequence(s) %s", cid, missing)
    images = {}
    ref = None
    for s in SEQUENCES:
        if s not in seqs:
            continue
        vol, _ = read_nifti_volume(seqs[s])
        vol.meta["sequence"] = s
        vol.meta["modality"] = "MR"
        if ref is None:
            ref = (s, vol)
        else:
            rs, rv = ref
            if vol.array.shape != rv.array.shape or not np.allclose(vol.affine, rv.affine, atol=1e-3):
                raise ValueError(f"{seqs[s]}: shape {vol.array.shape} / affine differ from {seqs[rs]} "
                                 f"({rv.array.shape}); the four sequences must be co-registered")
        images[s] = vol
    primary = next(s for s in PRIMARY_ORDER if s in images)
    meta = {"source": str(seqs[primary].parent), "format": "ivdm3seg", "case_id": cid,
            "sequence_files": {s: str(v) for s, v in seqs.items()}, "primary": primary}
    case = Case(image=images[primary], source=seqs[primary].parent, format="ivdm3seg", name=cid, images=images,
                meta=meta)
    for k in ("nifti_affine", "nifti_header", "nifti_shape", "axcodes"):
        case.meta[k] = images[primary].meta[k]
    if labels_path is not None:
        lab, _ = read_nifti_volume(labels_path, labels=True)
        if lab.array.shape != images[primary].array.shape:
            raise ValueError(f"{labels_path}: labels have shape {lab.array.shape}; the images have "
                             f"{images[primary].array.shape}")
        case.labels["gts"] = lab.array
        case.label_names = {int(v): "intervertebral disc" for v in np.unique(lab.array) if v}
        case.meta["labels_source"] = str(labels_path)
        for k in ("nifti_affine", "nifti_header", "nifti_shape", "axcodes"):
            case.meta[k] = lab.meta[k]
    else:
        case.meta["labels_target"] = str(seqs[primary].parent / f"{cid}_Labels.nii")
    return case
