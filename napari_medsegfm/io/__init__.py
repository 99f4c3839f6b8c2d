"""The file layer: read every supported case format into a :class:`~napari_medsegfm.types.Case`
and write label images back, atomically.

Formats (``detect_format`` names)

================== ===============================================================
``cvpr25_npz``     CVPR 2025 SegFM npz (``imgs``, ``gts``, ``spacing`` (x, y, z),
                   pickled ``boxes``/``text_prompts``/``clicks``, ``segs``, ...)
``cvpr24_npz``     CVPR 2024 MedSAM-on-Laptop npz (2D RGB or 3D, int ``boxes``)
``nifti``          ``.nii`` / ``.nii.gz`` image or label map (closest canonical)
``medsegpy_h5``    medsegpy 3D ``.h5`` (``volume`` H×W×D, ``seg`` H×W×D×C)
``medsegpy_slices`` medsegpy 2D slices (``%07d_V%02d-Aug%02d_%03d.im/.seg``)
``samed2d``        SA-Med2D-20M PNG slices + instance mask PNGs
``ivdm3seg``       IVDM3Seg Dixon case (four sequences + labels)
``dicom``          DICOM series folder (one or several series) / file / multi-frame
``dicom_seg``      DICOM-SEG opened on its own
``nrrd``           ``.nrrd`` / ``.nhdr`` image or label map
``metaimage``      ``.mha`` / ``.mhd`` image or label map
``slicer_seg``     3D Slicer ``.seg.nrrd`` segmentation
================== ===============================================================

The clinical formats (the last five) live in :mod:`.clinical` and its modules.

Axis order: every array handed out is in array order ``(Z, Y, X)`` (3D), ``(Y, X)``
or ``(Y, X, 3)`` (2D), with ``Volume.spacing`` in the same order. Conversions from each
file's own order happen once, in the format module.

Saving (:func:`save_labels`)
    * npz: member ``segs`` by default, every other member kept byte-for-byte; ``gts``
      only with ``key="gts"`` — and ``overwrite_gt=True`` when the file already has
      one — keeping ``<file>.bak``.
    * NIfTI / IVDM3Seg: back into the source orientation, affine and header.
    * medsegpy: ``seg`` of a 3D ``.h5`` / one ``.seg`` per slice.
    * SA-Med2D: one mask PNG per object and slice.
    * ``.dcm``: DICOM-SEG referencing the source series; ``.seg.nrrd``: Slicer
      segmentation; ``.nrrd``/``.mha``: label map — all on the case's source grid.
    Writing over the ground truth a case was read from (NIfTI label map, medsegpy
    ``seg``, SA-Med2D ``masks/``) needs ``overwrite_gt=True`` and keeps ``.bak`` copies.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..types import Case, Volume
from ._common import CaseRef, GroundTruthProtected
from .atomic import atomic_path, atomic_write_bytes, atomic_writer, is_temp_name, remove_stale_temps
from .safe_pickle import UnsafePickleError

__all__ = [
    "FORMATS",
    "detect_format",
    "load_case",
    "save_labels",
    "safe_load_npz",
    "list_cases",
    "case_from_layer_metadata",
    "CaseRef",
    "GroundTruthProtected",
    "UnsafePickleError",
    "atomic_write_bytes",
    "atomic_writer",
    "atomic_path",
]

logger = logging.getLogger(__name__)

FORMATS = ("cvpr25_npz", "cvpr24_npz", "nifti", "medsegpy_h5", "medsegpy_slices", "samed2d", "ivdm3seg",
           "dicom", "dicom_seg", "nrrd", "metaimage", "slicer_seg")


def _sniff_h5(p: Path) -> str | None:
    from .medsegpy import is_hdf5_file

    if not is_hdf5_file(p):
        return None
    try:
        import h5py

        with h5py.File(p, "r") as f:
            return "medsegpy_h5" if ("volume" in f or "seg" in f) else None
    except (OSError, ValueError):
        return "medsegpy_h5"  # an HDF5 signature but unreadable: claim it to report why


def detect_format(path: str | os.PathLike[str]) -> str | None:
    """Which format ``path`` is in (one of :data:`FORMATS`), or ``None``. Never raises.

    Cheap: reads zip directories, ``.npy``/NIfTI/HDF5 headers and folder listings only.

    Parameters
    ----------
    path : path-like
        A file or a case/dataset folder.

    Returns
    -------
    str or None
        ``"cvpr_npz"``, ``"nifti"``, ``"dicom"``, ``"ivdm3seg"``, ... (see :data:`FORMATS`);
        ``None`` when no reader claims it or it cannot be read.
    """
    try:
        p = Path(path)
        if p.is_dir():
            from .ivdm3seg import find_case_files
            from .medsegpy import list_scans
            from .samed2d import is_samed2d_root

            if find_case_files(p) is not None:
                return "ivdm3seg"
            if is_samed2d_root(p):
                return "samed2d"
            if list_scans(p):
                return "medsegpy_slices"
            from .clinical import detect_clinical

            return detect_clinical(p)
        if not p.is_file():
            return None
        name = p.name.lower()
        if name.endswith(".npz"):
            from .cvpr import sniff_npz

            return sniff_npz(p)
        if name.endswith((".nii", ".nii.gz")):
            from .ivdm3seg import _FILE_RE, find_case_files

            if _FILE_RE.match(p.name) and find_case_files(p) is not None:
                return "ivdm3seg"
            return "nifti"
        if name.endswith((".h5", ".hdf5")):
            return _sniff_h5(p)
        if name.endswith((".im", ".seg")):
            from .medsegpy import parse_slice_name

            return "medsegpy_slices" if parse_slice_name(p.name.rsplit(".", 1)[0]) else None
        if name.endswith(".png"):
            from .samed2d import is_samed2d_png

            return "samed2d" if is_samed2d_png(p) else None
        from .clinical import detect_clinical

        return detect_clinical(p)
    except (OSError, ValueError, RuntimeError) as exc:  # claim-time must never raise
        logger.debug("detect_format(%s) failed: %s", path, exc)
    return None


def load_case(path: str | os.PathLike[str], fmt: str | None = None, *, case_id: str | None = None,
              **options: Any) -> Case:
    """Read the case at ``path`` (file or folder) into a :class:`Case`.

    Parameters
    ----------
    path : path-like
    fmt : str, optional
        One of :data:`FORMATS`; detected when omitted.
    case_id : str, optional
        For dataset folders holding several cases (medsegpy scan id, SA-Med2D case
        ``modality--dataset--case``, IVDM3Seg ``NN``); default: the first.
    **options
        ``as_labels`` (NIfTI, NRRD, MetaImage), ``category_ids`` (medsegpy), ``fill_gaps``
        (SA-Med2D), ``gts_path`` (CVPR npz), ``series`` (DICOM: SeriesInstanceUID or
        listing number; ``case_id`` works too), ``labels_file`` (any supported label
        file on the image's grid, attached as ``labels["gts"]``, see
        :func:`.clinical.attach_labels_file`).

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        Unsupported or broken input; the message names the file, the key and what was
        expected.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file or folder")
    if not os.access(p, os.R_OK):
        raise PermissionError(f"{p}: permission denied (it exists but may not be read; check its permissions)")
    fmt = fmt or detect_format(p)
    if fmt is None:
        raise ValueError(f"{p}: not a supported case (expected one of: {', '.join(FORMATS)})")
    labels_file = options.pop("labels_file", None)
    if labels_file is not None:
        from .clinical import attach_labels_file

        return attach_labels_file(load_case(p, fmt, case_id=case_id, **options), labels_file)
    from .clinical import CLINICAL_FORMATS

    if fmt in CLINICAL_FORMATS:
        from .clinical import load_clinical

        return load_clinical(p, fmt, case_id=case_id, **options)
    if fmt in ("cvpr25_npz", "cvpr24_npz"):
        from .cvpr import load_cvpr_npz

        return load_cvpr_npz(p, fmt=fmt, **{k: v for k, v in options.items() if k == "gts_path"})
    if fmt == "nifti":
        from .nifti import load_nifti

        return load_nifti(p, as_labels=options.get("as_labels"))
    if fmt == "medsegpy_h5":
        from .medsegpy import load_medsegpy_h5

        return load_medsegpy_h5(p, category_ids=options.get("category_ids"))
    if fmt == "medsegpy_slices":
        from .medsegpy_slices import load_medsegpy_scan

        return load_medsegpy_scan(p, case_id, category_ids=options.get("category_ids"))
    if fmt == "samed2d":
        from .samed2d import find_root, load_samed2d_case, load_samed2d_image

        if p.is_dir() or case_id is not None:
            return load_samed2d_case(find_root(p), case_id, fill_gaps=bool(options.get("fill_gaps", False)))
        return load_samed2d_image(p)
    if fmt == "ivdm3seg":
        from .ivdm3seg import load_ivdm3seg

        return load_ivdm3seg(p, case_id)
    raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")


def list_cases(path: str | os.PathLike[str]) -> list[CaseRef]:
    """The cases of a dataset folder (or the one case of a file).

    A CVPR folder lists its ``*.npz`` (``imgs/`` when given the challenge root); temp
    files of saves in progress are left out.

    Parameters
    ----------
    path : path-like
        A dataset folder or one case file.

    Returns
    -------
    list of CaseRef
        In file-name order; empty for a file no reader claims.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file or folder")
    if p.is_dir():
        fmt = detect_format(p)
        if fmt == "ivdm3seg":
            from .ivdm3seg import list_ivdm3seg_cases

            return list_ivdm3seg_cases(p)
        if fmt == "samed2d":
            from .samed2d import list_samed2d_cases

            return list_samed2d_cases(p)
        if fmt == "dicom":
            from .clinical import list_dicom_cases

            return list_dicom_cases(p)
        refs: list[CaseRef] = []
        if fmt == "medsegpy_slices":
            from .medsegpy import list_medsegpy_cases

            return list_medsegpy_cases(p)
        folder = p / "imgs" if (p / "imgs").is_dir() else p
        for f in sorted(folder.iterdir()):
            if f.is_file() and not is_temp_name(f.name):  # a save in progress (or killed) is not a case
                ff = detect_format(f)
                if ff is not None and ff != "ivdm3seg":
                    refs.append(CaseRef(name=f.name.split(".")[0], path=f, format=ff))
        return refs
    fmt = detect_format(p)
    return [] if fmt is None else [CaseRef(name=p.name.split(".")[0], path=p, format=fmt)]


def safe_load_npz(path: str | os.PathLike[str], keys: list[str] | None = None) -> dict[str, object]:
    """All (or ``keys``) members of an npz, pickled members through the restricted unpickler.

    Nothing from the file is executed; 0-d object arrays are unwrapped with ``.item()``.

    Parameters
    ----------
    path : path-like
        The ``.npz`` file.
    keys : list of str, optional
        Members to read (default all).

    Returns
    -------
    dict of str to object
        Member name -> array (or the unpickled value of a 0-d object member).

    Raises
    ------
    UnsafePickleError
        (a ``ValueError``) a pickle outside the allow-list or the limits.
    KeyError
        A requested member is missing.
    ValueError
        A malformed archive or member, or one larger than the size limits.
    """
    from .npzfile import NpzReader

    out: dict[str, object] = {}
    with NpzReader(path) as r:
        for k in keys if keys is not None else r.keys():
            if k not in r:
                raise KeyError(f"{path}: no member '{k}' (members: {', '.join(r.keys())})")
            v = r.read(k)
            if isinstance(v, np.ndarray) and v.dtype.hasobject and v.ndim == 0:
                v = v.item()
            out[k] = v
    return out


def _output_format(path: Path, case: Case | None, fmt: str | None) -> str:
    if fmt:
        return {"cvpr25_npz": "npz", "cvpr24_npz": "npz", "ivdm3seg": "nifti"}.get(fmt, fmt)
    name = path.name.lower()
    if name.endswith(".npz"):
        return "npz"
    if name.endswith((".nii", ".nii.gz")):
        return "nifti"
    if name.endswith((".h5", ".hdf5")):
        return "medsegpy_h5"
    if name.endswith(".seg"):
        return "medsegpy_slices"
    if name.endswith(".png"):
        return "samed2d"
    if case is not None and case.format in ("medsegpy_slices", "samed2d") and (path.is_dir() or not path.suffix):
        return case.format
    from .clinical import clinical_output_format

    clinical = clinical_output_format(path, case)
    if clinical is not None:
        return clinical
    raise ValueError(f"{path}: cannot tell which format to write; use .npz, .nii(.gz), .h5, .seg, .png, .dcm "
                     "(DICOM-SEG), .seg.nrrd, .nrrd, .mha or pass fmt=")


def save_labels(
    labels: np.ndarray,
    path: str | os.PathLike[str],
    *,
    case: Case | str | os.PathLike[str] | None = None,
    key: str = "segs",
    fmt: str | None = None,
    overwrite_gt: bool = False,
    label_names: dict[int, str] | None = None,
    colors: dict[int, Any] | None = None,
    algorithm_type: str | None = None,
) -> Path:
    """Write a label image to ``path`` atomically, in the format of ``fmt`` or ``path``'s extension.

    Parameters
    ----------
    labels : np.ndarray
        Integer labels in the case's spatial shape, array order ``(Z, Y, X)``/``(Y, X)``.
    path : path-like
        ``.npz`` (member ``key`` of that file; other members kept byte-for-byte),
        ``.nii``/``.nii.gz``, medsegpy ``.h5``, a folder (or ``.seg`` file) for medsegpy
        slices, a masks folder (or ``.png``) for SA-Med2D.
    case : Case or path-like, optional
        The case the labels belong to (geometry, header, label map, ...); a path is read
        with :func:`load_case`. Pass the :class:`Case` you have to avoid re-reading.
    key : str
        npz member: ``"segs"`` (default) or ``"gts"`` (ground truth, see ``overwrite_gt``).
    fmt : str, optional
        Force the output format (a :data:`FORMATS` name or ``"npz"``).
    overwrite_gt : bool
        Allow replacing ground truth; a ``.bak`` copy is kept.
    label_names : dict, optional
        ``{label: name}`` (SA-Med2D: resolves new labels to class ids; DICOM-SEG and
        ``.seg.nrrd``: segment names).
    colors : dict, optional
        ``{label: (r, g, b)}`` 0..255 (DICOM-SEG, ``.seg.nrrd``).
    algorithm_type : str, optional
        DICOM-SEG: ``"SEMIAUTOMATIC"`` (default) or ``"MANUAL"``.

    Returns
    -------
    Path
        The written file (the folder for multi-file formats).
    """
    target = Path(path)
    if case is not None and not isinstance(case, Case):
        case = load_case(case)
    out_fmt = _output_format(target, case, fmt)
    _sweep_temps(target)
    from .clinical import CLINICAL_FORMATS, save_clinical_labels

    if out_fmt in CLINICAL_FORMATS:
        return save_clinical_labels(labels, target, "dicom_seg" if out_fmt == "dicom" else out_fmt, case=case,
                                    overwrite_gt=overwrite_gt, label_names=label_names, colors=colors,
                                    algorithm_type=algorithm_type)
    if out_fmt == "npz":
        from .cvpr import save_npz_labels

        return save_npz_labels(labels, target, case=case, key=key, overwrite_gt=overwrite_gt)
    if out_fmt == "nifti":
        from .nifti import save_nifti_labels

        return save_nifti_labels(labels, target, case=case, overwrite_gt=overwrite_gt)
    if out_fmt == "medsegpy_h5":
        from .medsegpy import save_medsegpy_h5_labels

        return save_medsegpy_h5_labels(labels, target, case=case, overwrite_gt=overwrite_gt,
                                       label_names=label_names)
    if out_fmt == "medsegpy_slices":
        from .medsegpy_slices import save_medsegpy_slices

        files = save_medsegpy_slices(labels, target, case=case, overwrite_gt=overwrite_gt, label_names=label_names)
        return files[0].parent if files else target
    if out_fmt == "samed2d":
        from .samed2d_write import save_samed2d_masks

        if case is None:
            raise ValueError(f"{target}: saving SA-Med2D masks needs case= (the slice(s) they belong to)")
        save_samed2d_masks(labels, target, case=case, overwrite_gt=overwrite_gt, label_names=label_names)
        return target.parent if target.suffix.lower() == ".png" else target
    raise ValueError(f"unknown output format {out_fmt!r}")


def _sweep_temps(target: Path) -> None:
    """Remove what a killed earlier save of ``target`` left (only temps of dead writers; see
    :func:`~napari_medsegfm.io.atomic.remove_stale_temps`)."""
    real = Path(os.path.realpath(target))
    if real.is_dir():
        remove_stale_temps(real)
    elif real.parent.is_dir():
        remove_stale_temps(real.parent, real)


def case_from_layer_metadata(metadata: dict[str, Any], shape: tuple[int, ...],
                             label_names: dict[int, str] | None = None) -> Case | None:
    """A light :class:`Case` (no pixel data) rebuilt from a labels layer's metadata.

    Enough for :func:`save_labels` to write the labels back where the reader found them.

    Parameters
    ----------
    metadata : dict
        The layer's metadata (``medsegfm_case``, ``medsegfm_meta``, ``medsegfm_format``,
        ``medsegfm_spacing`` as the reader stored them).
    shape : tuple of int
        The labels' spatial shape ``(Z, Y, X)`` or ``(Y, X)``.
    label_names : dict of int to str, optional
        Label id -> class name.

    Returns
    -------
    Case or None
        Its image is a zero-strided placeholder of ``shape``; ``None`` if the layer did
        not come from this plugin.
    """
    src = metadata.get("medsegfm_case")
    meta = metadata.get("medsegfm_meta")
    if not src or not isinstance(meta, dict):
        return None
    spacing = tuple(metadata.get("medsegfm_spacing") or (1.0,) * len(shape))
    fake = np.broadcast_to(np.zeros((), dtype=np.uint8), tuple(shape))
    vol = Volume(array=fake, spacing=spacing if len(spacing) == len(shape) else (), meta=dict(meta))
    return Case(image=vol, source=Path(src), format=str(metadata.get("medsegfm_format", "")),
                name=Path(src).name, meta=dict(meta), label_names=dict(label_names or {}))
