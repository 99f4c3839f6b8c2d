"""Loading a catalog entry with the io readers: the case, its separate label file, header facts.

:meth:`~napari_medsegfm.dataset.catalog.Catalog.load` and
:meth:`~napari_medsegfm.dataset.catalog.Catalog.header` call into this module.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..types import Case
from ..utils import label_dtype_for
from .catalog import _NII, CaseEntry, _io, _is_nifti, existing_labels

if TYPE_CHECKING:
    from .catalog import Catalog

__all__ = ["load_entry"]

logger = logging.getLogger("napari_medsegfm.dataset.catalog")


# ----------------------------------------------------------------------------- io glue
def load_entry(entry: CaseEntry, catalog: Catalog | None = None) -> Case:
    """Load a catalog entry as :meth:`Catalog.load <napari_medsegfm.dataset.catalog.Catalog.load>` does.

    Parameters
    ----------
    entry : CaseEntry
        The case.
    catalog : Catalog, optional
        Its catalog (sets ``meta["catalog_root"]``).

    Returns
    -------
    Case
        With ``meta["case_id"]`` set and labels from a separate label file attached.

    Raises
    ------
    FileNotFoundError
        The case's file is gone (the dataset moved).
    ValueError, OSError
        The files cannot be read (naming them).
    """
    medio = _io()
    if not entry.path.exists():
        raise FileNotFoundError(f"case {entry.case_id!r}: {entry.path} does not exist (was the dataset moved?)")
    if entry.io_case_id is not None:
        case = medio.load_case(entry.path, entry.fmt or None, case_id=entry.io_case_id)
    else:
        case = medio.load_case(entry.path, entry.fmt or None)
    if entry.label_path is not None and "gts" not in case.labels:
        gts, names = _load_label_file(entry, case)
        if gts is not None:
            case.labels["gts"] = gts
            for k, v in names.items():
                case.label_names.setdefault(k, v)
    for i, ch in enumerate(entry.channels, start=1):
        try:
            extra = medio.load_case(ch, "nifti")
        except (ValueError, FileNotFoundError) as exc:
            logger.warning("case %s: channel %s unreadable: %s", entry.case_id, ch, exc)
            continue
        case.images.setdefault(f"channel {i}", extra.image)
    if catalog is not None:
        for k, v in catalog.label_names.items():
            case.label_names.setdefault(int(k), v)
    if not case.image.meta.get("modality") and entry.modality:
        case.image.meta["modality"] = entry.modality
    case.meta["case_id"] = entry.case_id
    if catalog is not None:
        case.meta["catalog_root"] = str(catalog.root)
    if not case.name:
        case.name = entry.name
    return case


def _load_label_file(entry: CaseEntry, case: Case) -> tuple[np.ndarray | None, dict[int, str]]:
    medio = _io()
    lp = entry.label_path
    assert lp is not None
    shape = tuple(case.image.spatial_shape)
    if entry.label_fmt == "dicom_seg":
        from .clinical import load_dicom_seg_labels

        return load_dicom_seg_labels(entry, case)
    if lp.suffix == ".npz":
        # a CVPR gts file holds only gts (+ spacing/boxes): no image, so read the member directly
        from ..io.npzfile import NpzReader

        with NpzReader(lp) as r:
            key = next((k for k in ("gts", "segs", "labels") if k in r), None)
            if key is None:
                raise ValueError(f"case {entry.case_id!r}: label file {lp} has none of the keys gts/segs/labels "
                                 f"(it has {', '.join(r.keys())})")
            declared = tuple(r.header(key).shape)
            if declared != shape:  # refused from the header, before the member is decompressed
                raise ValueError(f"case {entry.case_id!r}: labels {lp} ('{key}') have shape {declared}, image "
                                 f"{entry.path} has {shape} (not read)")
            gts = r.read(key, allow_object=False)
    else:
        lab_case = medio.load_case(lp, entry.label_fmt or None)
        role_arr = existing_labels(lab_case)
        if role_arr is not None:
            gts = role_arr[1]
        else:  # a label volume read as an image
            gts = np.asarray(lab_case.image.array)
        names = dict(lab_case.label_names)
        if gts.shape != shape:
            raise ValueError(f"case {entry.case_id!r}: labels {lp} have shape {gts.shape}, image {entry.path} has {shape}")
        return _as_labels(gts, lp, "labels"), names
    if gts.shape != shape:
        raise ValueError(f"case {entry.case_id!r}: labels {lp} have shape {gts.shape}, image {entry.path} has {shape}")
    return _as_labels(gts, lp, key), {}


def _as_labels(arr: np.ndarray, src: Any, key: str) -> np.ndarray:
    """A label file's array with the readers' rule (:func:`~napari_medsegfm.io._common.integer_labels`:
    whole-number floats accepted, fractional ones refused naming ``src``), in the smallest
    unsigned dtype."""
    from ..io._common import integer_labels

    a = integer_labels(np.asarray(arr), src, key)
    if a.dtype.kind in "iu" and a.dtype not in (np.uint8, np.uint16, np.uint32):
        mx = int(a.max()) if a.size else 0
        a = a.astype(label_dtype_for(mx))
    return a


def _header(entry: CaseEntry) -> dict[str, Any]:
    p = entry.path
    if entry.fmt in ("cvpr25_npz", "cvpr24_npz") or p.suffix == ".npz":
        from ..io.npzfile import NpzReader

        with NpzReader(p) as r:
            h = r.header("imgs")
        shape = h.shape
        return {"shape": list(shape), "dtype": str(h.dtype)}
    if p.name.lower().endswith(_NII):
        import nibabel as nib

        img = nib.load(str(p))
        shp = tuple(int(s) for s in img.shape)
        while len(shp) > 3 and shp[-1] == 1:
            shp = shp[:-1]
        if len(shp) == 2:
            return {"shape": [shp[1], shp[0]], "dtype": str(img.get_data_dtype())}
        ornt = nib.orientations.io_orientation(img.affine)
        canon = [0, 0, 0]
        for ax, (out_ax, _flip) in enumerate(ornt[:3]):
            canon[int(out_ax)] = shp[ax]
        # io returns (Z, Y, X) = the closest-canonical (X, Y, Z) reversed
        return {"shape": list(reversed(canon)), "dtype": str(img.get_data_dtype())}
    if entry.layout == "ivdm3seg":
        files = [Path(f) for f in entry.meta.get("files", []) if _is_nifti(Path(f))]
        if files:
            return _header(CaseEntry(entry.case_id, entry.name, files[0], "nifti"))
    if p.suffix in (".h5", ".hdf5"):
        import h5py

        with h5py.File(p, "r") as f:
            if "volume" in f:
                h, w, d = f["volume"].shape[:3]
                return {"shape": [d, h, w], "dtype": str(f["volume"].dtype)}
    return {}
