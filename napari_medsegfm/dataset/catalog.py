"""Case discovery: turn a dataset folder in any supported layout into a list of cases.

Supported layouts (checked in this order; :func:`discover` reports which one matched):

``nnunet``
    nnU-Net raw data: ``imagesTr/`` (+ ``labelsTr/``), ``imagesTs/`` (+ ``labelsTs/``);
    images ``<case>_0000.nii.gz``, ``<case>_0001.nii.gz`` ... (one file per channel),
    labels ``<case>.nii.gz``; ``dataset.json`` gives channel and label names.
``ivdm3seg``
    IVDM3Seg: one folder per case ``NN/`` with ``NN_fat.nii``, ``NN_inn.nii``, ``NN_opp.nii``,
    ``NN_wat.nii`` and ``NN_Labels.nii``, or the flat ``dataset/`` + ``label/`` folders.
``samed2d``
    SA-Med2D-20M: ``images/{modality}--{dataset}--{case}--{axis_slice}.png`` and
    ``masks/<image stem>--{class}_{instance}.png``; one case per image.
``cvpr_npz``
    CVPR 2025 / 2024 npz files (``imgs`` [+ ``gts``]), flat or in sub-folders, with or
    without a separate ground-truth folder holding files of the same name: ``imgs/`` +
    ``gts/``, or ``X/`` + ``X_gt/`` (also ``X_gt/<sub>/``), or ``gts``/``*_gt`` beside the folder.
``medsegpy_h5``
    medsegpy 3D ``.h5`` files (``volume`` + ``seg``), one case per file.
``medsegpy_slices``
    medsegpy 2D slices ``%07d_V%02d-Aug%02d_%03d.im`` (+ ``.seg``): the slices of one
    scan (same subject, time point, augmentation) form one case.
``nifti``
    NIfTI images with labels in a sibling folder (``images``/``imagesTr``/``imgs``/``image``
    + ``labels``/``masks``/``gts``/``segs``...) or beside them (``X.nii.gz`` + ``X_seg.nii.gz``,
    ``_label``, ``_mask``, ``_gt``...).

A case id is the case's path relative to the dataset root, without extension, with ``/``
separators (``imgs/CT_AMOS_amos_0018``, ``imagesTr/liver_001``, ``03``); it depends only on
where the case's file is, so adding files or folders never renames a case. It is the key of
the status database, the autosave store and the batch manifest. (Before, ids had the
folders shared by every case stripped, ``CT_AMOS_amos_0018``; :class:`DatasetWorkspace
<napari_medsegfm.dataset.workspace.DatasetWorkspace>` migrates sidecars written that way.)

Symbolic links are followed, but a case is identified by the file it resolves to: a file
reachable under several names (a symlinked folder, a symlinked file, a loop back to an
ancestor) is listed once, under the name that needs no link where there is one; folder
loops are detected, not walked.

Loading goes through :func:`napari_medsegfm.io.load_case` (the io helpers own every
file format); the catalog only adds labels that live in a separate file.
Cheap per-case facts (shape, modality) come from file headers, never from decompressing
the image.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..io.atomic import is_temp_name
from ..types import Case
from ._util import label_ids

__all__ = ["CaseEntry", "Catalog", "discover", "LAYOUTS", "existing_labels", "modality_from_name"]

logger = logging.getLogger(__name__)

LAYOUTS = ("nnunet", "ivdm3seg", "samed2d", "cvpr_npz", "medsegpy_h5", "medsegpy_slices", "dicom", "nifti", "itk",
           "single")

_NII = (".nii.gz", ".nii")
_LABEL_DIRS = ("labels", "labelstr", "label", "gts", "gt", "masks", "mask", "segs", "seg", "segmentations",
               "segmentation", "annotations", "ground_truth", "groundtruth")
_SKIP_DIRS = {".medsegfm", ".git", "__pycache__", ".ipynb_checkpoints"}

_MODALITIES = {
    "ct": "CT", "mr": "MR", "mri": "MR", "pet": "PET", "us": "US", "ultrasound": "US", "xray": "X-ray",
    "x-ray": "X-ray", "x_ray": "X-ray", "cxr": "X-ray", "microscopy": "Microscopy", "endoscopy": "Endoscopy",
    "mammography": "Mammography", "mammo": "Mammography", "oct": "OCT", "fundus": "Fundus",
    "dermoscopy": "Dermoscopy", "derm": "Dermoscopy", "pathology": "Pathology", "histopathology": "Pathology",
}


def _strip_ext(name: str) -> str:
    for ext in (".nii.gz", ".nii", ".npz", ".h5", ".hdf5", ".png", ".im", ".seg", ".mha", ".nrrd"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return Path(name).stem


def _is_nifti(p: Path) -> bool:
    return p.is_file() and p.name.lower().endswith(_NII)


def modality_from_name(name: str) -> str:
    """Modality from a CVPR-style case name (``CT_AMOS_...`` -> ``CT``, ``2DBox_MR_...`` -> ``MR``).

    Parameters
    ----------
    name : str
        Case or file name; the first tokens (after a ``2DBox``/``3DBox`` prefix) are looked at.

    Returns
    -------
    str
        ``""`` when none is known.
    """
    tokens = [t for t in re.split(r"[_\-\s]+", Path(name).name) if t]
    for t in tokens[:3]:
        low = t.lower()
        if low in ("2dbox", "3dbox", "2d", "3d"):
            continue
        if low in _MODALITIES:
            return _MODALITIES[low]
        break
    return ""


# ----------------------------------------------------------------------------- entries
@dataclass
class CaseEntry:
    """One case of a dataset, before loading.

    Attributes
    ----------
    case_id : str
        Stable id (relative path without extension, ``/``-separated).
    name : str
        Display name (file stem / case folder name).
    path : Path
        What :func:`napari_medsegfm.io.load_case` receives (file or case folder).
    fmt : str
        The io format name of ``path``.
    label_path : Path or None
        A separate label file (ground truth); ``None`` when labels live in ``path``.
    label_fmt : str
        Format of ``label_path`` ("cvpr_gts_npz" for a gts-only npz, "nifti", ...).
    io_case_id : str or None
        The case inside ``path`` when ``path`` holds several (an IVDM3Seg/SA-Med2D root,
        a folder of medsegpy slices): passed to ``load_case(..., case_id=)``.
    channels : list of Path
        Further image files of the case (nnU-Net channels ``_0001``...), loaded as extra images.
    modality : str
        "CT", "MR", ... when the layout tells ('' if unknown).
    layout : str
        The layout that found the case (see :data:`LAYOUTS`).
    """

    case_id: str
    name: str
    path: Path
    fmt: str
    label_path: Path | None = None
    label_fmt: str = ""
    io_case_id: str | None = None
    channels: list[Path] = field(default_factory=list)
    modality: str = ""
    layout: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def files(self) -> list[Path]:
        """Every file that makes up the case (for checksums and change detection)."""
        if self.meta.get("files"):
            out = [Path(p) for p in self.meta["files"]]
        else:
            out = []
            for p in [self.path, *self.channels] + ([self.label_path] if self.label_path else []):
                if p.is_dir():
                    out.extend(sorted(q for q in p.rglob("*") if q.is_file() and ".medsegfm" not in q.parts))
                else:
                    out.append(p)
        seen: dict[Path, None] = {}
        for p in out:
            seen.setdefault(p, None)
        return list(seen)

    def signature(self) -> str:
        """Cheap change token: sizes and mtimes of the case's files."""
        parts = []
        for p in self.files():
            try:
                st = p.stat()
                parts.append(f"{p.name}:{st.st_size}:{st.st_mtime_ns}")
            except OSError:
                parts.append(f"{p.name}:missing")
        return "|".join(parts)


# ----------------------------------------------------------------------------- catalog
class Catalog:
    """The cases of one dataset folder.

    Parameters
    ----------
    root : Path
        The dataset folder.
    entries : list of CaseEntry
        Sorted by case id.
    layout : str
        Which layout matched.
    label_names : dict
        Dataset-wide label names (``dataset.json``, class mappings), id -> name.
    """

    def __init__(self, root: Path, entries: list[CaseEntry], layout: str,
                 label_names: dict[int, str] | None = None, modality: str = "") -> None:
        self.root = Path(root)
        self.entries = sorted(entries, key=lambda e: e.case_id)
        self.layout = layout
        self.label_names = dict(label_names or {})
        self.modality = modality
        self._by_id = {e.case_id: e for e in self.entries}
        if len(self._by_id) != len(self.entries):
            dup = sorted({e.case_id for e in self.entries if sum(x.case_id == e.case_id for x in self.entries) > 1})
            raise ValueError(f"dataset {root}: duplicate case ids {dup[:5]}")

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[CaseEntry]:
        return iter(self.entries)

    def __contains__(self, case_id: object) -> bool:
        return case_id in self._by_id

    def __getitem__(self, key: int | str) -> CaseEntry:
        if isinstance(key, (int, np.integer)):
            return self.entries[int(key)]
        try:
            return self._by_id[key]
        except KeyError:
            raise KeyError(f"no case {key!r} in dataset {self.root} ({len(self)} cases)") from None

    def ids(self) -> list[str]:
        """Case ids in catalog order."""
        return [e.case_id for e in self.entries]

    def find(self, text: str) -> CaseEntry | None:
        """A case by id, by name, or the first whose id contains ``text`` (case-insensitive).

        Parameters
        ----------
        text : str
            An id, a name or part of an id.

        Returns
        -------
        CaseEntry or None
        """
        if text in self._by_id:
            return self._by_id[text]
        low = text.strip().lower()
        for e in self.entries:
            if e.name.lower() == low:
                return e
        for e in self.entries:
            if low and low in e.case_id.lower():
                return e
        return None

    # -------------------------------------------------------------- loading
    def load(self, key: int | str | CaseEntry) -> Case:
        """Load a case with the io readers and attach labels from a separate label file.

        The returned case has ``meta["case_id"]`` and ``meta["catalog_root"]`` set, and its
        modality filled from the catalog where the reader left it empty.

        Parameters
        ----------
        key : int, str or CaseEntry
            Index, case id, or the entry.

        Returns
        -------
        Case

        Raises
        ------
        KeyError, IndexError
            No such case.
        ValueError, OSError
            The files cannot be read (naming them).
        """
        entry = key if isinstance(key, CaseEntry) else self[key]
        from .case_loading import load_entry

        return load_entry(entry, self)

    def header(self, key: int | str | CaseEntry) -> dict[str, Any]:
        """Cheap facts from file headers: ``shape`` (array axis order, as loaded) and ``dtype``.

        Parameters
        ----------
        key : int, str or CaseEntry
            Index, case id, or the entry.

        Returns
        -------
        dict
            Empty when the headers cannot be read (logged).
        """
        entry = key if isinstance(key, CaseEntry) else self[key]
        try:
            from .case_loading import _header

            return _header(entry)
        except (OSError, ValueError, KeyError) as exc:
            logger.debug("header of %s unreadable: %s", entry.path, exc)
            return {}

    def describe(self) -> str:
        """``"ROOT (LAYOUT, N cases)"``, for messages."""
        return f"{self.root} ({self.layout}, {len(self)} cases)"


def existing_labels(case: Case) -> tuple[str, np.ndarray] | None:
    """The case's existing labels, by preference ground truth (``gts``), then ``segs``, ``prev_pred``, then any.

    Parameters
    ----------
    case : Case
        A loaded case.

    Returns
    -------
    (role, labels) or None
        ``None`` when the case has no labels.
    """
    for role in ("gts", "segs", "prev_pred"):
        arr = case.labels.get(role)
        if arr is not None:
            return role, arr
    for role, arr in case.labels.items():
        return role, arr
    return None


def _io():
    from .. import io as medio

    return medio


# ----------------------------------------------------------------------------- discovery
def discover(root: str | os.PathLike[str], *, layout: str | None = None) -> Catalog:
    """Find every case under ``root``.

    Parameters
    ----------
    root : path-like
        The dataset folder (a single case file gives a one-case catalog).
    layout : str, optional
        Force one of :data:`LAYOUTS` instead of detecting it.

    Raises
    ------
    FileNotFoundError
        ``root`` does not exist.
    ValueError
        No case found (the message lists the layouts tried), or an unknown ``layout``.
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"dataset folder {root} does not exist")
    root = root.resolve()
    if layout is not None and layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
    if root.is_file():
        return _single(root)
    order = [layout] if layout else ["nnunet", "ivdm3seg", "samed2d", "cvpr_npz", "medsegpy_h5", "medsegpy_slices",
                                     "dicom", "nifti", "itk"]
    from .layouts import FINDERS  # the finders use this module's entries and catalog

    for name in order:
        fn = FINDERS[name]
        cat = fn(root)
        if cat is not None and len(cat):
            cat = _dedupe_by_identity(cat)
            logger.info("dataset %s: layout %s, %d cases", root, name, len(cat))
            return cat
    raise ValueError(
        f"no cases found in {root}: expected one of the layouts {', '.join(LAYOUTS[:-1])} "
        "(CVPR npz files, NIfTI images with label folders, nnU-Net imagesTr/labelsTr, medsegpy .h5/.im, "
        "SA-Med2D images/ + masks/, IVDM3Seg case folders)"
    )


def _file_identity(p: Path) -> tuple[int, int] | None:
    try:
        st = p.stat()  # follows symlinks: the file itself
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _through_link(root: Path, p: Path) -> bool:
    """True when ``p`` (under ``root``) is reached through a symbolic link."""
    try:
        rel = p.relative_to(root)
    except ValueError:
        return True
    q = root
    for part in rel.parts:
        q = q / part
        if q.is_symlink():
            return True
    return False


def _dedupe_by_identity(cat: Catalog) -> Catalog:
    """One entry per resolved file (+ case inside it): aliases through symlinks are dropped,
    keeping the name reached without a link (else the first id in order)."""
    groups: dict[Any, list[CaseEntry]] = {}
    for e in cat.entries:
        ident = _file_identity(e.path)
        key = (ident, e.io_case_id) if ident is not None else ("path", str(e.path), e.io_case_id)
        groups.setdefault(key, []).append(e)
    if all(len(g) == 1 for g in groups.values()):
        return cat
    keep: list[CaseEntry] = []
    for g in groups.values():
        g.sort(key=lambda e: (_through_link(cat.root, e.path), e.case_id))
        keep.append(g[0])
        if len(g) > 1:
            logger.warning("dataset %s: case %s is also reachable as %s (symbolic links); listed once", cat.root,
                           g[0].case_id, ", ".join(e.case_id for e in g[1:]))
    return Catalog(cat.root, keep, cat.layout, cat.label_names, cat.modality)


def _single(path: Path) -> Catalog:
    medio = _io()
    fmt = medio.detect_format(path)
    if fmt is None:
        raise ValueError(f"{path} is not a case file of a supported format (npz, NIfTI, medsegpy h5, PNG)")
    name = _strip_ext(path.name)
    e = CaseEntry(name, name, path, fmt, modality=modality_from_name(name), layout="single")
    return Catalog(path.parent, [e], "single")


def _walk(root: Path, max_depth: int = 4) -> Iterator[Path]:
    """Files under ``root`` (sorted per folder, skipping the sidecar, hidden files/folders and temp
    files of interrupted saves).

    The real folder tree is walked first, then the folders reached through symbolic links; each
    folder is entered once (by device and inode), so a link loop ends and a linked alias of a folder
    already walked adds nothing.
    """
    seen: set[tuple[int, int]] = set()
    root_id = _file_identity(root)
    if root_id is not None:
        seen.add(root_id)
    links: list[tuple[Path, int]] = []

    def scan(start: Path, depth0: int, follow: bool) -> Iterator[Path]:
        stack = [(start, depth0)]
        while stack:
            d, depth = stack.pop()
            try:
                children = sorted(d.iterdir())
            except OSError:
                continue
            subdirs = []
            for c in children:
                if c.name.startswith(".") or c.name in _SKIP_DIRS or is_temp_name(c.name):
                    continue
                if not c.is_dir():
                    yield c
                    continue
                if depth >= max_depth:
                    continue
                if c.is_symlink() and not follow:
                    links.append((c, depth + 1))
                    continue
                ident = _file_identity(c)
                if ident is not None:
                    if ident in seen:
                        logger.info("not entering %s again (a symbolic link to a folder already listed)", c)
                        continue
                    seen.add(ident)
                subdirs.append((c, depth + 1))
            stack.extend(reversed(subdirs))

    yield from scan(root, 0, follow=False)
    while links:
        c, depth = links.pop(0)
        ident = _file_identity(c)
        if ident is None or ident in seen:
            if ident is not None:
                logger.info("not entering %s (a symbolic link to a folder already listed)", c)
            continue
        seen.add(ident)
        yield from scan(c, depth, follow=True)


def _rel_id(root: Path, path: Path) -> str:
    rel = path.relative_to(root)
    return "/".join([*rel.parts[:-1], _strip_ext(rel.name)])


def scan_entry(catalog: Catalog, entry: CaseEntry) -> dict[str, Any]:
    """Load a case once and return the facts the navigator caches.

    Parameters
    ----------
    catalog : Catalog
        The dataset's catalog.
    entry : CaseEntry
        The case.

    Returns
    -------
    dict
        ``shape`` (spatial, array axis order), ``modality``, ``n_labels`` and ``label_ids`` of the
        existing labels (0 / [] without labels), ``labels_role``, ``signature``.

    Raises
    ------
    ValueError, OSError
        The case cannot be read.
    """
    case = catalog.load(entry)
    ex = existing_labels(case)
    ids = label_ids(ex[1]) if ex is not None else []
    return {
        "shape": list(case.image.spatial_shape),
        "modality": case.image.meta.get("modality") or entry.modality,
        "n_labels": len(ids),
        "label_ids": ids,
        "labels_role": ex[0] if ex is not None else "",
        "signature": entry.signature(),
    }
