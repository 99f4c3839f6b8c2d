"""The prompt log: one JSON object per line, everything needed to replay a session.

Every record has ``"type"``, ``"seq"`` (0, 1, 2, ... within the log) and ``"t"``
(seconds since the session started). Record types written by
:class:`~napari_medsegfm.engine.session.AnnotationSession`:

===================  ======================================================================
``session``          header: ``version``, ``shape``, ``dtype``, ``labels_sha256`` (initial
                     labels), ``backend``, ``backend_params``, ``objects`` (initial ones)
``backend``          backend switched: ``name``, ``params``
``prompt``           a prompt was submitted: ``generation``, ``label_id``, ``prompt``
                     (:func:`~napari_medsegfm.types.prompt_to_dict`), ``mode`` (sync|async),
                     ``replace: true`` when it starts (or follows) a replacing request
``result``           an inference ended: ``generation``, ``label_id``, ``status``
                     (applied|stale|cancelled|error), ``prompts`` (the prompts this result
                     added to the object, oldest first), ``backend``, ``elapsed_s``,
                     ``queued_s``, ``apply_s``, ``bbox``, ``mask_voxels``, ``prev_changed``,
                     ``error``; ``replace: true`` when the prompts *replaced* the object's
                     prompts and mask (``submit(..., replace=True)``)
``edit``             a manual edit: ``bbox``, ``dtype``, ``data`` (base64 of zlib of the new
                     region content, C order), ``description``
``object_add`` ...   ``object_add``, ``object_delete``, ``object_rename``, ``object_color``,
                     ``object_overwrite``, ``object_reset``, ``object_accept``: ``label_id``
                     and the new values
``undo``, ``redo``   one step back / forward
``close``            session closed
===================  ======================================================================

Only ``applied`` results, edits, object operations and undo/redo change the labels;
the other records are there for timing and auditing.

The file is append-only and flushed after every record, so a crash loses at most
the record being written; :func:`read_log` skips (and logs) a truncated last line.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

import numpy as np

__all__ = ["PromptLog", "read_log", "encode_array", "decode_array", "LOG_VERSION"]

log = logging.getLogger(__name__)

LOG_VERSION = 1


def encode_array(arr: np.ndarray) -> dict[str, Any]:
    """``{"dtype", "shape", "data"}`` with ``data`` = base64(zlib(C-order bytes))."""
    a = np.ascontiguousarray(arr)
    return {
        "dtype": a.dtype.str,
        "shape": list(a.shape),
        "data": base64.b64encode(zlib.compress(a.tobytes(), 1)).decode("ascii"),
    }


def decode_array(d: dict[str, Any]) -> np.ndarray:
    """Inverse of :func:`encode_array`; ``ValueError`` naming the key when malformed."""
    try:
        raw = zlib.decompress(base64.b64decode(d["data"]))
        return np.frombuffer(raw, dtype=np.dtype(d["dtype"])).reshape(d["shape"]).copy()
    except KeyError as exc:
        raise ValueError(f"encoded array lacks key {exc.args[0]!r}; expected dtype, shape, data") from None
    except (zlib.error, ValueError, TypeError) as exc:
        raise ValueError(f"encoded array is corrupt: {exc}") from None


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.bool_):
        return bool(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    return repr(o)


class PromptLog:
    """Records in memory (:attr:`records`) and, when ``path`` is given, appended to a JSONL file.

    Parameters
    ----------
    path : str or Path, optional
        JSON-lines file; created (with parent folders) or appended to.
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self.records: list[dict[str, Any]] = []
        self._t0 = time.perf_counter()
        self._lock = threading.Lock()
        self._fh: IO[str] | None = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def write(self, rtype: str, **fields: Any) -> dict[str, Any]:
        """Append a record of type ``rtype``; returns it (JSON-ready)."""
        with self._lock:
            rec = {"type": rtype, "seq": len(self.records), "t": round(time.perf_counter() - self._t0, 6)}
            rec.update(fields)
            # round-trip through JSON so the in-memory record equals what a reader gets back
            line = json.dumps(rec, default=_json_default, separators=(",", ":"))
            rec = json.loads(line)
            self.records.append(rec)
            if self._fh is not None:
                self._fh.write(line + "\n")
                self._fh.flush()
            return rec

    def close(self) -> None:
        """Close the log file (records stay in :attr:`records`)."""
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self):
        return iter(list(self.records))


def read_log(source: str | Path | Iterable[dict[str, Any]] | PromptLog) -> list[dict[str, Any]]:
    """Records from a JSONL file, a :class:`PromptLog`, or an iterable of dicts.

    A truncated last line (crash while writing) is skipped with a warning; any
    other malformed line raises ``ValueError`` naming the file and line number.
    """
    if isinstance(source, PromptLog):
        return list(source.records)
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"prompt log {path} does not exist")
        lines = path.read_text(encoding="utf-8").splitlines()
        out = []
        for i, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                if i == len(lines):
                    log.warning("prompt log %s: skipping truncated last line %d (%s)", path, i, exc)
                    continue
                raise ValueError(f"prompt log {path}, line {i}: not JSON ({exc})") from None
            if not isinstance(rec, dict) or "type" not in rec:
                raise ValueError(f"prompt log {path}, line {i}: expected an object with a 'type' key")
            out.append(rec)
        return out
    out = []
    for i, rec in enumerate(source):
        if not isinstance(rec, dict) or "type" not in rec:
            raise ValueError(f"prompt log record {i}: expected a dict with a 'type' key; got {rec!r}")
        out.append(rec)
    return out
