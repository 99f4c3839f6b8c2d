"""The files of a batch run: where a case's output goes, its deterministic npz, and label-derived boxes.

Part of :mod:`~napari_medsegfm.dataset.batch` (whose names these stay importable as).
Outputs are byte-for-byte deterministic (fixed zip timestamps), so a result computed on
two workers is identical to the single-process one, checksum included.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..types import Box2D, Box3D
from ._util import label_ids

__all__ = ["output_path", "encode_segs", "read_segs", "boxes_from_labels"]

_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


# ----------------------------------------------------------------------------- outputs
def output_path(out_dir: str | os.PathLike[str], case_id: str) -> Path:
    """Where the output of ``case_id`` goes: ``<out>/<case_id>.npz`` (sub-folders kept).

    Parameters
    ----------
    out_dir : path-like
        The batch output folder.
    case_id : str
        Case id (``/`` makes sub-folders; ``.``/``..`` parts are dropped, so the file stays
        inside ``out_dir``).

    Returns
    -------
    Path

    Raises
    ------
    ValueError
        A case id with no usable part (``""``, ``.`` and ``..`` parts are dropped).
    """
    parts = [p for p in str(case_id).split("/") if p not in ("", ".", "..")]
    if not parts:
        raise ValueError(f"case id {case_id!r} cannot name an output file")
    return Path(out_dir).joinpath(*parts[:-1], parts[-1] + ".npz")


def encode_segs(segs: np.ndarray) -> bytes:
    """Deterministic npz bytes holding ``segs`` (fixed timestamp, deflate level 6).

    Parameters
    ----------
    segs : np.ndarray
        Integer labels ``(Z, Y, X)`` / ``(Y, X)``.

    Returns
    -------
    bytes
        The same bytes for the same array on every machine.
    """
    import io as _io

    arr = np.ascontiguousarray(segs)
    npy = _io.BytesIO()
    np.lib.format.write_array(npy, arr, allow_pickle=False)
    buf = _io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        info = zipfile.ZipInfo("segs.npy", date_time=_ZIP_TIME)
        info.compress_type = zipfile.ZIP_DEFLATED
        info.external_attr = 0o644 << 16
        zf.writestr(info, npy.getvalue(), compress_type=zipfile.ZIP_DEFLATED, compresslevel=6)
    return buf.getvalue()


def read_segs(path: str | os.PathLike[str]) -> np.ndarray:
    """The ``segs`` of a batch output file.

    Parameters
    ----------
    path : path-like
        A batch output ``.npz``.

    Returns
    -------
    np.ndarray
        Integer labels ``(Z, Y, X)`` / ``(Y, X)``.

    Raises
    ------
    ValueError
        A file without ``segs``.
    """
    with np.load(path, allow_pickle=False) as z:
        if "segs" not in z.files:
            raise ValueError(f"{path} has no 'segs' member (members: {', '.join(z.files)})")
        return z["segs"]


# ----------------------------------------------------------------------------- prompts
def boxes_from_labels(labels: np.ndarray, ids: Sequence[int] | None = None) -> list[Box3D | Box2D]:
    """One tight box per label id (prompting that id).

    3D ``(Z, Y, X)``: a :class:`Box3D` spanning the label's z range with the xy box of its
    median labelled slice (``z_mid``), the CVPR 2025 box without the random margin. 2D:
    a :class:`Box2D`. Deterministic.

    Parameters
    ----------
    labels : np.ndarray
        Integer labels ``(Z, Y, X)`` or ``(Y, X)``.
    ids : sequence of int, optional
        The labels to box (default every non-zero label present); empty ones are skipped.

    Returns
    -------
    list of Box3D or Box2D
    """
    from ..engine.postprocess import bbox_of

    labels = np.asarray(labels)
    ids = label_ids(labels) if ids is None else list(ids)
    out: list[Box3D | Box2D] = []
    for lab in ids:
        m = labels == lab
        bb = bbox_of(m)
        if bb is None:
            continue
        if labels.ndim == 3:
            zs = np.flatnonzero(m[bb[0]].any(axis=(1, 2))) + bb[0].start
            zmid = int(zs[len(zs) // 2])
            sl = m[zmid]
            bb2 = bbox_of(sl)
            assert bb2 is not None
            out.append(Box3D(bb[0].start, bb[0].stop - 1, bb2[0].start, bb2[1].start, bb2[0].stop - 1,
                             bb2[1].stop - 1, object_id=int(lab), z_mid=zmid))
        else:
            out.append(Box2D(bb[0].start, bb[1].start, bb[0].stop - 1, bb[1].stop - 1, object_id=int(lab)))
    return out
