"""The dataset layouts :func:`~napari_medsegfm.dataset.catalog.discover` recognises, one finder each.

A finder takes the dataset root and returns a :class:`~napari_medsegfm.dataset.catalog.Catalog`,
or ``None`` when the folder is not in its layout. :data:`FINDERS` maps each layout name of
:data:`~napari_medsegfm.dataset.catalog.LAYOUTS` to its finder. The clinical formats (DICOM
series, NRRD/MHA) live in :mod:`~napari_medsegfm.dataset.clinical`.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..io.atomic import is_temp_name
from .catalog import (
    _LABEL_DIRS,
    _MODALITIES,
    CaseEntry,
    Catalog,
    _io,
    _is_nifti,
    _rel_id,
    _strip_ext,
    _walk,
    modality_from_name,
)

logger = logging.getLogger("napari_medsegfm.dataset.catalog")  # one logger for discovery

_IMAGE_DIRS = ("images", "imagestr", "imgs", "image", "img", "volumes", "volume", "data", "scans", "ct", "mr")
_LABEL_SUFFIXES = ("_gt", "_seg", "_segmentation", "_label", "_labels", "_mask", "_msk", "-seg", "-label", "-mask",
                   "_Labels", "_GT")
_MEDSEGPY_SLICE = re.compile(r"^(\d{7}_V\d{2}-Aug\d{2})_(\d{3})$")
_NNUNET_CH = re.compile(r"^(.*)_(\d{4})$")


# ---- nnU-Net
def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        logger.warning("cannot read %s: %s", path, exc)
        return {}


def _nnunet_label_names(ds: dict[str, Any]) -> dict[int, str]:
    labels = ds.get("labels") or {}
    out: dict[int, str] = {}
    for k, v in labels.items():
        # v2: {"background": 0, "liver": 1}; v1: {"0": "background", "1": "liver"}
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[int(v)] = str(k)
        elif isinstance(v, (list, tuple)) and v and isinstance(v[0], int):  # region-based: skip
            continue
        else:
            try:
                out[int(k)] = str(v)
            except ValueError:
                continue
    out.pop(0, None)
    return out


def _find_nnunet(root: Path) -> Catalog | None:
    img_dirs = [d for d in ("imagesTr", "imagesTs", "imagesVal") if (root / d).is_dir()]
    if not img_dirs:
        return None
    ds = _read_json(root / "dataset.json") if (root / "dataset.json").is_file() else {}
    chans = ds.get("channel_names") or ds.get("modality") or {}
    modality = str(chans.get("0", "")) if isinstance(chans, dict) else ""
    modality = _MODALITIES.get(modality.lower(), modality)
    ending = ds.get("file_ending", ".nii.gz")
    entries = []
    for d in img_dirs:
        lab_dir = root / d.replace("images", "labels")
        groups: dict[str, dict[int, Path]] = {}
        for f in sorted((root / d).iterdir()):
            if not f.is_file() or not f.name.endswith(ending) or is_temp_name(f.name):
                continue
            m = _NNUNET_CH.match(f.name[: -len(ending)])
            if not m:
                continue
            groups.setdefault(m.group(1), {})[int(m.group(2))] = f
        for case, ch in sorted(groups.items()):
            if 0 not in ch:
                logger.warning("nnU-Net case %s in %s has no channel _0000; skipped", case, d)
                continue
            lab = lab_dir / f"{case}{ending}"
            entries.append(CaseEntry(
                case_id=f"{d}/{case}", name=case, path=ch[0], fmt="nifti",
                label_path=lab if lab.is_file() else None, label_fmt="nifti",
                channels=[ch[k] for k in sorted(ch) if k != 0], modality=modality, layout="nnunet",
            ))
    return Catalog(root, entries, "nnunet", _nnunet_label_names(ds), modality)


# ---- IVDM3Seg (listing by the io module)
def _find_ivdm3seg(root: Path) -> Catalog | None:
    from ..io.ivdm3seg import find_case_files, is_ivdm3seg_root, list_ivdm3seg_cases

    if not is_ivdm3seg_root(root):
        return None
    entries = []
    for ref in list_ivdm3seg_cases(root):
        found = find_case_files(ref.path, ref.case_id)
        files = [] if found is None else [*found[1].values()] + ([found[2]] if found[2] else [])
        cid = ref.case_id or ref.name
        entries.append(CaseEntry(cid, ref.name, Path(ref.path), "ivdm3seg", io_case_id=ref.case_id,
                                 modality="MR", layout="ivdm3seg", meta={"files": [str(f) for f in files]}))
    if not entries:
        return None
    return Catalog(root, entries, "ivdm3seg", {}, "MR")


# ---- SA-Med2D-20M (listing by the io module)
def _find_samed2d(root: Path) -> Catalog | None:
    from ..io.samed2d import is_samed2d_root, list_samed2d_cases, parse_image_stem, parse_mask_stem

    if not is_samed2d_root(root):
        return None
    by_case: dict[str, list[str]] = {}
    stem_case: dict[str, str] = {}
    for f in sorted((root / "images").iterdir()):
        info = parse_image_stem(f.stem) if f.suffix.lower() == ".png" else None
        if info is not None:
            by_case.setdefault(info["case"], []).append(str(f))
            stem_case[f.stem] = info["case"]
    if (root / "masks").is_dir():
        for m in sorted((root / "masks").iterdir()):
            parsed = parse_mask_stem(m.stem) if m.suffix.lower() == ".png" else None
            if parsed is not None and parsed[0] in stem_case:
                by_case[stem_case[parsed[0]]].append(str(m))
    entries = []
    for ref in list_samed2d_cases(root):
        cid = ref.case_id or ref.name
        first = parse_image_stem(Path(by_case[cid][0]).stem) if by_case.get(cid) else None
        mod = str(first["modality"]).split("_")[0].lower() if first else ""
        entries.append(CaseEntry(cid, ref.name, Path(ref.path), "samed2d", io_case_id=ref.case_id,
                                 modality=_MODALITIES.get(mod, mod.upper()), layout="samed2d",
                                 meta={"files": by_case.get(cid, []), "n_slices": sum(
                                     1 for f in by_case.get(cid, []) if "/images/" in f.replace(os.sep, "/"))}))
    if not entries:
        return None
    return Catalog(root, entries, "samed2d")


# ---- CVPR npz
def _npz_keys(p: Path) -> list[str]:
    from ..io.npzfile import npz_keys

    return npz_keys(p) or []


def _gt_dirs_for(img_dir: Path, root: Path) -> list[Path]:
    """Candidate ground-truth folders for a folder of image npz files, best first."""
    cands: list[Path] = []
    parent = img_dir.parent
    names = [f"{img_dir.name}_gt", f"{img_dir.name}_gts", "gts", "gt", "labels"]
    if img_dir.name.endswith("_npz"):
        names.insert(1, img_dir.name[:-4] + "_gt")
    if img_dir.name == "imgs":
        names.insert(0, "gts")
    for base in (parent, img_dir):
        for n in names:
            d = base / n
            if d.is_dir() and d != img_dir:
                cands.append(d)
                cands.extend(sorted(s for s in d.iterdir() if s.is_dir() and not s.name.startswith(".")))
    # any sibling whose name ends with _gt (e.g. 3D_val_npz + 3D_val_gt)
    for s in sorted(parent.iterdir()) if parent.is_dir() else []:
        if s.is_dir() and s != img_dir and re.search(r"_gts?$", s.name) and s not in cands:
            cands.append(s)
            cands.extend(sorted(t for t in s.iterdir() if t.is_dir() and not t.name.startswith(".")))
    return cands


def _find_cvpr(root: Path) -> Catalog | None:
    medio = _io()
    files = [f for f in _walk(root) if f.suffix == ".npz"]
    if not files:
        return None
    # gt folders found for image folders are not cases themselves
    img_files: list[Path] = []
    fmts: dict[Path, str] = {}
    for f in files:
        fmt = medio.detect_format(f)
        if fmt in ("cvpr25_npz", "cvpr24_npz"):
            keys = _npz_keys(f)
            if "imgs" in keys:
                img_files.append(f)
                fmts[f] = fmt
    if not img_files:
        return None
    gt_cache: dict[Path, list[Path]] = {}
    entries = []
    img_set = set(img_files)
    for f in img_files:
        d = f.parent
        if d not in gt_cache:
            gt_cache[d] = _gt_dirs_for(d, root)
        label_path = None
        for g in gt_cache[d]:
            for cand in (g / f.name, g / f"{f.stem}_gt.npz", g / f"{f.stem}_seg.npz"):
                if cand.is_file() and cand not in img_set:
                    label_path = cand
                    break
            if label_path is not None:
                break
        entries.append(CaseEntry(
            case_id=_rel_id(root, f), name=f.stem, path=f, fmt=fmts[f], label_path=label_path,
            label_fmt="cvpr_gts_npz" if label_path else "", modality=modality_from_name(f.stem), layout="cvpr_npz",
        ))
    return Catalog(root, entries, "cvpr_npz")


# ---- medsegpy
def _find_medsegpy_h5(root: Path) -> Catalog | None:
    medio = _io()
    entries = []
    for f in _walk(root):
        if f.suffix.lower() in (".h5", ".hdf5") and medio.detect_format(f) == "medsegpy_h5":
            entries.append(CaseEntry(_rel_id(root, f), _strip_ext(f.name), f, "medsegpy_h5", layout="medsegpy_h5"))
    return Catalog(root, entries, "medsegpy_h5") if entries else None


def _find_medsegpy_slices(root: Path) -> Catalog | None:
    from ..io.medsegpy import list_scans

    folders = sorted({f.parent for f in _walk(root) if f.suffix == ".im" and _MEDSEGPY_SLICE.match(f.stem)})
    entries = []
    for d in folders:
        for scan, slices in list_scans(d).items():
            files = [str(v) for k in sorted(slices) for v in slices[k].values()]
            rel = d.relative_to(root)
            cid = "/".join([*rel.parts, scan])
            entries.append(CaseEntry(cid, scan, d, "medsegpy_slices", io_case_id=scan, layout="medsegpy_slices",
                                     meta={"files": files, "n_slices": len(slices)}))
    return Catalog(root, entries, "medsegpy_slices") if entries else None


# ---- generic NIfTI
def _label_match(stem: str, label_stems: dict[str, Path]) -> Path | None:
    if stem in label_stems:
        return label_stems[stem]
    for suf in _LABEL_SUFFIXES:
        if stem + suf in label_stems:
            return label_stems[stem + suf]
    # image stem with a channel/modality suffix: case_0000 -> case
    m = _NNUNET_CH.match(stem)
    if m and m.group(1) in label_stems:
        return label_stems[m.group(1)]
    return None


def _is_label_name(stem: str) -> bool:
    low = stem.lower()
    return any(low.endswith(s.lower()) for s in _LABEL_SUFFIXES)


def _find_nifti(root: Path) -> Catalog | None:
    niis = [f for f in _walk(root) if _is_nifti(f)]
    if not niis:
        return None
    by_dir: dict[Path, list[Path]] = {}
    for f in niis:
        by_dir.setdefault(f.parent, []).append(f)
    label_dirs = {d for d in by_dir if d.name.lower() in _LABEL_DIRS}
    entries = []
    used_labels: set[Path] = set()
    for d, files in sorted(by_dir.items()):
        if d in label_dirs:
            continue
        # sibling label folder(s)
        sib = [d.parent / n for n in os.listdir(d.parent) if n.lower() in _LABEL_DIRS and (d.parent / n).is_dir()]
        sib = [s for s in sib if s in by_dir]
        if d.name.lower() not in _IMAGE_DIRS and d != root and not sib:
            sib = []
        label_stems: dict[str, Path] = {}
        for s in sorted(sib):
            for lf in by_dir[s]:
                label_stems.setdefault(_strip_ext(lf.name), lf)
        # labels beside the images: X.nii.gz + X_seg.nii.gz
        local_labels = {_strip_ext(f.name): f for f in files if _is_label_name(_strip_ext(f.name))}
        for f in sorted(files):
            stem = _strip_ext(f.name)
            if f in local_labels.values():
                continue
            lab = _label_match(stem, label_stems) or _label_match(stem, local_labels)
            if lab is not None:
                used_labels.add(lab)
            entries.append(CaseEntry(
                case_id=_rel_id(root, f), name=stem, path=f, fmt="nifti", label_path=lab, label_fmt="nifti",
                modality=modality_from_name(stem), layout="nifti",
            ))
    return Catalog(root, entries, "nifti") if entries else None


#: layout name -> finder (the clinical layouts come from dataset/clinical.py)
FINDERS: dict[str, Callable[[Path], Catalog | None]] = {
    "nnunet": _find_nnunet,
    "ivdm3seg": _find_ivdm3seg,
    "samed2d": _find_samed2d,
    "cvpr_npz": _find_cvpr,
    "medsegpy_h5": _find_medsegpy_h5,
    "medsegpy_slices": _find_medsegpy_slices,
    "nifti": _find_nifti,
    "single": lambda root: None,
}


def _clinical_finder(name: str) -> Any:
    def find(root: Path) -> Catalog | None:
        from . import clinical  # dataset/clinical.py: DICOM series folders, NRRD/MHA images

        return clinical.find_dicom(root) if name == "dicom" else clinical.find_itk(root)

    return find


FINDERS.update(dicom=_clinical_finder("dicom"), itk=_clinical_finder("itk"))
