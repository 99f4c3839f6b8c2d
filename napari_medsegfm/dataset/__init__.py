"""Dataset correction workflow, Qt-free: walk a whole dataset case by case.

* :mod:`.catalog` — find the cases of a dataset folder in any supported layout
  (:func:`discover` -> :class:`Catalog` of :class:`CaseEntry`).
* :mod:`.status` — per-dataset SQLite status database (status, comment, history,
  metrics, edit locks with leases) (:class:`StatusStore`).
* :mod:`.autosave` — corrections autosaved to the sidecar folder, crash recovery
  (:class:`CorrectionStore`, :class:`Autosaver`).
* :mod:`.workspace` — a dataset opened by one viewer: table rows, review queue,
  open/close cases (:class:`DatasetWorkspace`).
* :mod:`.export` — export corrected cases with a manifest (:func:`export_corrections`).
* :mod:`.batch` — batch pre-segmentation on Dask distributed (:func:`run_batch`).
"""

from __future__ import annotations

from .autosave import Autosaver, CorrectionStore, sidecar_dir
from .catalog import CaseEntry, Catalog, discover
from .status import STATUSES, CaseLockedError, StatusStore
from .workspace import DatasetWorkspace

__all__ = [
    "Autosaver",
    "CorrectionStore",
    "sidecar_dir",
    "CaseEntry",
    "Catalog",
    "discover",
    "STATUSES",
    "CaseLockedError",
    "StatusStore",
    "DatasetWorkspace",
    "run_batch",
    "export_corrections",
]


def __getattr__(name: str):  # heavier entry points load on first use
    if name == "run_batch":
        from .batch import run_batch

        return run_batch
    if name == "export_corrections":
        from .export import export_corrections

        return export_corrections
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
