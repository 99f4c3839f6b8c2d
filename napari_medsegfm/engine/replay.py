"""Replay of a prompt log on a session, through the session's public API only.

A log (:mod:`~napari_medsegfm.engine.promptlog`) records every submit, applied result
(with the prompts it reflected), edit (with its content), object operation and
undo/redo. :func:`replay` runs those records again, in order, on a session built on the
same volume and initial labels; with a deterministic backend the labels end up
identical. Exactness assumes no object was edited by hand while its own inference was
in flight (such results are logged with ``prev_changed: true`` and replay warns).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from ..types import Volume, prompt_from_dict
from .promptlog import decode_array, read_log
from .undo import bbox_from_list

if TYPE_CHECKING:
    from .session import AnnotationSession

__all__ = ["replay", "replay_log"]

log = logging.getLogger(__name__)


def replay(session: AnnotationSession, source: Any, *, strict: bool = True) -> int:
    """Re-run a prompt log on ``session``; returns the number of records applied.

    Parameters
    ----------
    session : AnnotationSession
        The target (same volume shape and, with ``strict``, the same initial labels).
    source : path, PromptLog or iterable of dict
        The log. With several ``session`` headers (a file appended to by several
        sessions), the last session's records are used.
    strict : bool
        Raise ``ValueError`` when the header's shape or initial-labels checksum
        differ from the session's current labels.

    Prompts re-run through the backend synchronously.
    """
    records = read_log(source)
    starts = [i for i, r in enumerate(records) if r.get("type") == "session"]
    if starts:
        header = records[starts[-1]]
        records = records[starts[-1] + 1:]
        if strict:
            shape = [int(n) for n in session.volume.spatial_shape]
            if list(header.get("shape", [])) != shape:
                raise ValueError(f"log was recorded on shape {header.get('shape')}; this session has {shape}")
            if header.get("labels_sha256") not in (None, session.labels_sha256()):
                raise ValueError("log was recorded on different initial labels (labels_sha256 differs); "
                                 "replay on a session built with the same initial labels")
    return sum(_replay_one(session, rec) for rec in records)


def _replay_result(s: AnnotationSession, rec: dict[str, Any]) -> int:
    if rec.get("status") != "applied":
        return 0
    seq = rec.get("seq")
    prompts = [prompt_from_dict(d) for d in rec.get("prompts") or []]
    if not prompts:
        raise ValueError(f"log record seq {seq}: applied result without prompts")
    if rec.get("prev_changed"):
        log.warning("log record seq %s: the object was edited while its inference ran; "
                    "replay may differ for backends that use prev_mask", seq)
    res = s.add_prompts(prompts, replace=bool(rec.get("replace")), mode="replay")
    if res.error is not None or res.cancelled:
        raise ValueError(f"log record seq {seq}: replaying the prompt failed: "
                         f"{res.error_message or 'cancelled'}")
    return 1


def _replay_edit(s: AnnotationSession, rec: dict[str, Any]) -> int:
    s.apply_edit(decode_array(rec["region"]), bbox=bbox_from_list(rec["bbox"]),
                 description=rec.get("description", "edit"))
    return 1


def _replay_add(s: AnnotationSession, rec: dict[str, Any]) -> int:
    s.add_object(rec.get("name", ""), color=rec.get("color") or None, label_id=rec["label_id"],
                 overwrite=bool(rec.get("overwrite", False)), instance=bool(rec.get("instance", False)))
    return 1


def _one(fn: Callable[[AnnotationSession, dict[str, Any]], Any]) -> Callable[[AnnotationSession, dict[str, Any]], int]:
    def run(s: AnnotationSession, rec: dict[str, Any]) -> int:
        fn(s, rec)
        return 1
    return run


_HANDLERS: dict[str, Callable[[AnnotationSession, dict[str, Any]], int]] = {
    "result": _replay_result,
    "edit": _replay_edit,
    "object_add": _replay_add,
    "object_delete": _one(lambda s, r: s.delete_object(r["label_id"])),
    "object_rename": _one(lambda s, r: s.rename_object(r["label_id"], r["name"])),
    "object_color": _one(lambda s, r: s.set_object_color(r["label_id"], r["color"])),
    "object_overwrite": _one(lambda s, r: s.set_overwrite(r["label_id"], r["overwrite"])),
    "object_reset": _one(lambda s, r: s.reset_object(r["label_id"])),
    "object_accept": _one(lambda s, r: s.accept_object(r["label_id"])),
    "undo": _one(lambda s, r: s.undo()),
    "redo": _one(lambda s, r: s.redo()),
}


def _replay_one(s: AnnotationSession, rec: dict[str, Any]) -> int:
    handler = _HANDLERS.get(str(rec.get("type")))
    return 0 if handler is None else handler(s, rec)


def replay_log(volume: Volume, backend: Any, source: Any, *, labels: np.ndarray | None = None) -> AnnotationSession:
    """Build a worker-less session on ``volume``/``labels`` and replay ``source`` into it."""
    from .session import AnnotationSession

    s = AnnotationSession(volume, backend, labels=labels, use_worker=False)
    s.replay(source)
    return s
