"""The ``corrections/`` folder of a dataset's sidecar: one atomically written ``.npz`` per case.

The file format (``labels`` + ``meta`` JSON, no pickles) is described in
:mod:`~napari_medsegfm.dataset.autosave`, whose :class:`~napari_medsegfm.dataset.autosave.Autosaver`
decides when a correction is written.
"""

from __future__ import annotations

import hashlib
import io as _io
import json
import logging
import os
import re
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..io.atomic import atomic_write_bytes, fsync_dir, is_temp_name, remove_stale_temps
from ..io.npzfile import NpzReader
from ._util import json_default
from .status import ID_SCHEME

__all__ = ["FORMAT_VERSION", "safe_case_filename", "Correction", "CorrectionStore", "encode_correction"]

logger = logging.getLogger("napari_medsegfm.dataset.autosave")

#: version of the correction file's ``meta``
FORMAT_VERSION = 1

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_case_filename(case_id: str) -> str:
    """A file-name-safe, collision-free stem for a case id.

    Parameters
    ----------
    case_id : str
        The catalog's case id (may hold ``/`` and other characters).

    Returns
    -------
    str
        The id itself when it is safe (and at most 120 characters), else a cleaned name
        plus 10 hex digits of the id's SHA-1.
    """
    s = _SAFE.sub("_", str(case_id)).strip("._") or "case"
    if s != case_id or len(s) > 120:
        s = f"{s[:100]}-{hashlib.sha1(str(case_id).encode()).hexdigest()[:10]}"
    return s


@dataclass
class Correction:
    """A saved correction: the label image and its metadata.

    Parameters
    ----------
    labels : np.ndarray
        Integer labels in the case's spatial shape ``(Z, Y, X)`` / ``(Y, X)`` (empty when
        read with ``labels=False``).
    meta : dict
        ``case_id``, ``saved_at``, ``saved_by``, ``label_names``, ``reason``, ``shape``, ...
    path : Path, optional
        The file it was read from.
    """

    labels: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def saved_at(self) -> float | None:
        """When it was saved (epoch seconds), if recorded."""
        return self.meta.get("saved_at")

    @property
    def label_names(self) -> dict[int, str]:
        """Label id -> class name from ``meta["label_names"]``."""
        return {int(k): str(v) for k, v in (self.meta.get("label_names") or {}).items()}


def encode_correction(labels: np.ndarray, meta: dict[str, Any], compresslevel: int = 1) -> bytes:
    """The bytes of a correction ``.npz`` (``labels`` + ``meta`` JSON).

    Parameters
    ----------
    labels : np.ndarray
        Unsigned or signed integer labels, at most 32-bit.
    meta : dict
        JSON-able metadata (numpy values, sets and paths are converted).
    compresslevel : int
        Deflate level (1: fast; autosaves favour speed).

    Returns
    -------
    bytes

    Raises
    ------
    ValueError
        Labels that are not an integer image.
    """
    arr = np.ascontiguousarray(labels)
    if arr.dtype.kind not in "ui" or arr.dtype.itemsize > 4:
        raise ValueError(f"labels must be an integer label image; got dtype {arr.dtype}")
    buf = _io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=compresslevel) as zf:
        with zf.open("labels.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array(f, arr, allow_pickle=False)
        with zf.open("meta.npy", "w") as f:
            np.lib.format.write_array(f, np.array(json.dumps(meta, default=json_default)), allow_pickle=False)
    return buf.getvalue()


class CorrectionStore:
    """The ``corrections/`` folder of a sidecar: one ``.npz`` per corrected case.

    Temp files of interrupted saves are removed when the store is opened.

    Parameters
    ----------
    sidecar : path-like
        The dataset's sidecar folder (``corrections/`` is created in it).
    """

    def __init__(self, sidecar: str | os.PathLike[str]) -> None:
        self.sidecar = Path(sidecar)
        self.folder = self.sidecar / "corrections"
        self.folder.mkdir(parents=True, exist_ok=True)
        for p in remove_stale_temps(self.folder):
            logger.info("removed the temp file %s left by an interrupted autosave", p)

    def path_for(self, case_id: str) -> Path:
        """The correction file of ``case_id`` (whether it exists or not).

        Parameters
        ----------
        case_id : str
            Case id.

        Returns
        -------
        Path
        """
        return self.folder / f"{safe_case_filename(case_id)}.npz"

    def exists(self, case_id: str) -> bool:
        """True when ``case_id`` has a correction file.

        Parameters
        ----------
        case_id : str
            Case id.
        """
        return self.path_for(case_id).is_file()

    def save(self, case_id: str, labels: np.ndarray, meta: dict[str, Any] | None = None) -> Path:
        """Write the correction of ``case_id`` atomically.

        Parameters
        ----------
        case_id : str
            Case id.
        labels : np.ndarray
            Integer labels ``(Z, Y, X)`` / ``(Y, X)``.
        meta : dict, optional
            Extra metadata; ``case_id``, ``shape``, ``dtype``, ``format_version`` (and
            ``saved_at`` when missing) are added.

        Returns
        -------
        Path

        Raises
        ------
        ValueError
            Labels that are not an integer image.
        OSError
            The folder is not writable.
        """
        m = dict(meta or {})
        m.setdefault("saved_at", time.time())
        m["case_id"] = str(case_id)
        m["id_scheme"] = ID_SCHEME
        m["shape"] = list(np.shape(labels))
        m["dtype"] = str(np.asarray(labels).dtype)
        m["format_version"] = FORMAT_VERSION
        data = encode_correction(labels, m)
        path = self.path_for(case_id)
        atomic_write_bytes(path, data)
        return path

    @staticmethod
    def _read_meta(r: NpzReader, path: Path) -> dict[str, Any]:
        if "meta" not in r:
            raise ValueError(f"correction file {path} has no 'meta' member; expected an npz with 'labels' and 'meta'")
        hdr = r.header("meta")
        if hdr.dtype.kind != "U" or hdr.shape != () or hdr.nbytes > 64 << 20:
            raise ValueError(f"correction file {path}: 'meta' is {hdr.shape} {hdr.dtype}; expected a JSON string")
        try:
            meta = json.loads(str(r.read("meta", allow_object=False)[()]))
        except (json.JSONDecodeError, RecursionError) as exc:
            raise ValueError(f"correction file {path} has no valid 'meta' member ({type(exc).__name__})") from None
        if not isinstance(meta, dict):
            raise ValueError(f"correction file {path}: 'meta' holds a {type(meta).__name__}; expected an object")
        return meta

    @staticmethod
    def read_file(path: str | os.PathLike[str], *, labels: bool = True) -> Correction:
        """Read one correction file (bounded: a hostile file cannot make it allocate what it declares).

        Parameters
        ----------
        path : path-like
            The ``.npz``.
        labels : bool
            Also read the labels (False: metadata only, nothing decompressed).

        Returns
        -------
        Correction

        Raises
        ------
        ValueError
            Naming the file: not an npz with ``labels`` and a JSON ``meta``, or labels that are
            not integer.
        PermissionError, FileNotFoundError
            The file cannot be read.
        """
        p = Path(path)
        try:
            with NpzReader(p) as r:
                meta = CorrectionStore._read_meta(r, p)
                arr = np.zeros((0,), np.uint8)
                if labels:
                    if "labels" not in r:
                        raise ValueError(f"correction file {p} has no 'labels' member")
                    hdr = r.header("labels")
                    if hdr.dtype.kind not in "ui" or hdr.dtype.itemsize > 4:
                        raise ValueError(f"correction file {p}: 'labels' has dtype {hdr.dtype}; expected integer labels")
                    arr = r.read("labels", allow_object=False)
        except (FileNotFoundError, PermissionError):
            raise
        except (OSError, ValueError, zipfile.BadZipFile, KeyError, EOFError) as exc:
            if str(exc).startswith(f"correction file {p}"):
                raise
            raise ValueError(f"correction file {p} is unreadable ({exc}); expected an npz with 'labels' and "
                             "'meta'") from None
        return Correction(labels=arr, meta=meta, path=p)

    def load(self, case_id: str) -> Correction | None:
        """The saved correction of ``case_id``.

        Parameters
        ----------
        case_id : str
            Case id.

        Returns
        -------
        Correction or None
            ``None`` when it has none.

        Raises
        ------
        ValueError
            The file is unreadable, or its metadata names another case.
        """
        path = self.path_for(case_id)
        if not path.is_file():
            return None
        corr = self.read_file(path)
        meta = corr.meta
        if meta.get("case_id") not in (None, str(case_id)):
            raise ValueError(f"correction file {path} belongs to case {meta.get('case_id')!r}, not {case_id!r}")
        return corr

    def meta(self, case_id: str) -> dict[str, Any] | None:
        """Only the metadata of a saved correction (does not decompress the labels).

        Parameters
        ----------
        case_id : str
            Case id.

        Returns
        -------
        dict or None
            ``None`` when it has none.

        Raises
        ------
        ValueError
            The file is unreadable.
        """
        path = self.path_for(case_id)
        if not path.is_file():
            return None
        return self.read_file(path, labels=False).meta

    def files(self) -> dict[str, Path]:
        """``{case id: correction file}`` from the files' metadata (unreadable files are skipped, logged)."""
        out: dict[str, Path] = {}
        for p in sorted(self.folder.glob("*.npz")):
            if is_temp_name(p.name):
                continue
            try:
                out[str(self.read_file(p, labels=False).meta["case_id"])] = p
            except (OSError, ValueError, KeyError) as exc:
                logger.warning("skipping unreadable correction file %s: %s", p, exc)
        return out

    def case_ids(self) -> list[str]:
        """Ids of every case with a saved correction (read from the files' metadata)."""
        return list(self.files())

    def rename(self, old: str, new: str) -> Path | None:
        """Move the correction of case id ``old`` to ``new``.

        The file is rewritten with the new id (``migrated_from`` recorded); the old file is
        removed only once the new one is on disk.

        Parameters
        ----------
        old, new : str
            Case ids.

        Returns
        -------
        Path or None
            The new file; ``None`` when ``old`` has none or ``new`` already has one (nothing changed).
        """
        src = self.path_for(old)
        if not src.is_file() or self.path_for(new).is_file():
            return None
        corr = self.read_file(src)
        if corr.meta.get("case_id") not in (None, str(old)):
            return None
        meta = dict(corr.meta)
        meta["migrated_from"] = str(old)
        dst = self.save(new, corr.labels, meta)
        os.unlink(src)
        fsync_dir(self.folder)
        return dst

    def discard(self, case_id: str) -> Path | None:
        """Set a correction aside: renamed to ``<stem>.discarded-<time>.npz.bak``, not deleted.

        Parameters
        ----------
        case_id : str
            Case id.

        Returns
        -------
        Path or None
            The new name; ``None`` when the case has no correction.
        """
        path = self.path_for(case_id)
        if not path.is_file():
            return None
        dst = path.with_name(f"{path.stem}.discarded-{time.strftime('%Y%m%dT%H%M%S')}.npz.bak")
        os.replace(path, dst)
        return dst
