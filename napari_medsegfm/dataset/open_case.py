"""What a :class:`~napari_medsegfm.dataset.workspace.DatasetWorkspace` hands out: table rows and opened cases.

:class:`CaseRow` is one line of the navigator table (:data:`COLUMNS` names the shown
attributes); :class:`OpenCase` is a case opened for editing, with its labels, lock and
autosaver. Both are importable from :mod:`~napari_medsegfm.dataset.workspace` too.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..types import Case
from .autosave import Autosaver, Correction
from .catalog import CaseEntry
from .status import STATUSES, LockInfo

if TYPE_CHECKING:
    from .workspace import DatasetWorkspace

__all__ = ["CaseRow", "OpenCase", "COLUMNS", "DICE_METRIC"]

#: Name of the per-case metric holding the Dice between a model prediction and the existing labels.
DICE_METRIC = "dice_pred"

#: Table columns: (attribute, header).
COLUMNS: tuple[tuple[str, str], ...] = (
    ("name", "Case"),
    ("status", "Status"),
    ("dice", "Dice"),
    ("n_labels", "Labels"),
    ("modality", "Modality"),
    ("shape_text", "Shape"),
    ("last_edited_text", "Last edited"),
    ("last_by", "By"),
    ("comment", "Comment"),
)


@dataclass
class CaseRow:
    """One line of the navigator table.

    Parameters
    ----------
    case_id : str
        The catalog's case id.
    name : str
        Display name.
    modality : str
        ``"CT"``, ``"MR"``, ... (``""`` when unknown).
    shape : tuple of int, optional
        Spatial shape, array axis order ``(Z, Y, X)`` / ``(Y, X)``, once scanned.
    n_labels : int, optional
        Labels in the existing (or corrected) label image, once scanned.
    status : str
        One of :data:`~napari_medsegfm.dataset.status.STATUSES`.
    comment : str
        Free text.
    last_edited : float, optional
        Epoch seconds of the last label edit or status change.
    last_by : str
        Who made it.
    dice : float, optional
        :data:`DICE_METRIC` (pre-segmentation vs labels).
    has_correction : bool
        An autosaved correction exists.
    locked_by : str
        Who holds the edit lock (``""``: nobody).
    """

    case_id: str
    name: str
    modality: str = ""
    shape: tuple[int, ...] | None = None
    n_labels: int | None = None
    status: str = "todo"
    comment: str = ""
    last_edited: float | None = None
    last_by: str = ""
    dice: float | None = None
    has_correction: bool = False
    locked_by: str = ""

    @property
    def shape_text(self) -> str:
        """``"64×256×256"`` (empty when not scanned)."""
        return "×".join(str(s) for s in self.shape) if self.shape else ""

    @property
    def last_edited_text(self) -> str:
        """Local ``YYYY-MM-DD HH:MM`` of :attr:`last_edited` (empty without one)."""
        if self.last_edited is None:
            return ""
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(self.last_edited))

    @property
    def disagreement(self) -> float | None:
        """``1 - Dice`` (``None`` without a Dice)."""
        return None if self.dice is None else 1.0 - self.dice

    def sort_key(self, column: str) -> tuple[int, Any]:
        """Key for sorting by a column attribute; empty values sort last.

        Parameters
        ----------
        column : str
            A :data:`COLUMNS` attribute, ``case_id``, ``disagreement`` or ``last_edited``.

        Returns
        -------
        (int, object)
            ``(1, 0)`` for an empty value, ``(0, value)`` otherwise (strings lower-cased,
            statuses in :data:`STATUSES` order, shapes by voxel count).
        """
        if column == "shape_text":
            v: Any = int(np.prod(self.shape)) if self.shape else None
        elif column == "status":
            v = STATUSES.index(self.status) if self.status in STATUSES else len(STATUSES)
        elif column == "last_edited_text":
            v = self.last_edited
        else:
            v = getattr(self, column)
        if v is None or v == "":
            return (1, 0)
        if isinstance(v, str):
            return (0, v.lower())
        return (0, v)


@dataclass
class OpenCase:
    """A case opened for editing (or read-only viewing), from :meth:`DatasetWorkspace.open`.

    Parameters
    ----------
    entry : CaseEntry
        The catalog entry.
    case : Case
        The loaded case.
    labels : np.ndarray
        The labels being edited, unsigned integer, the image's spatial shape ``(Z, Y, X)`` / ``(Y, X)``.
    labels_source : str
        Where they came from: ``"correction"``, ``"gts"``, ``"segs"``, ... or ``"empty"``.
    read_only : bool
        Opened without the lock (no autosave).
    correction : Correction, optional
        The autosaved correction the labels were restored from.
    lock : LockInfo, optional
        This viewer's lease.
    locked_by : LockInfo, optional
        Read-only: the other viewer's lease.
    autosaver : Autosaver, optional
        Set by :meth:`start_autosave`.
    label_names : dict of int to str
        Label id -> class name.
    opened_at : float
        Epoch seconds.
    _workspace : DatasetWorkspace, optional
        The workspace that opened it (set by :meth:`DatasetWorkspace.open`).
    """

    entry: CaseEntry
    case: Case
    labels: np.ndarray
    labels_source: str  # "correction" | "gts" | "segs" | ... | "empty"
    read_only: bool = False
    correction: Correction | None = None
    lock: LockInfo | None = None
    locked_by: LockInfo | None = None
    autosaver: Autosaver | None = None
    label_names: dict[int, str] = field(default_factory=dict)
    opened_at: float = field(default_factory=time.time)
    _workspace: DatasetWorkspace | None = None

    @property
    def case_id(self) -> str:
        """The catalog's case id."""
        return self.entry.case_id

    @property
    def restored(self) -> bool:
        """True when the labels come from an autosaved correction."""
        return self.correction is not None

    def message(self) -> str:
        """One line for the status bar: where the labels came from, or who holds the lock."""
        if self.locked_by is not None:
            return f"read-only: being edited elsewhere by {self.locked_by.describe()}"
        if self.correction is not None:
            t = self.correction.saved_at
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "?"
            return f"restored the correction autosaved {when} by {self.correction.meta.get('saved_by', '?')}"
        if self.labels_source == "empty":
            return "no existing labels: starting from an empty segmentation"
        return f"labels from the case's '{self.labels_source}'"

    def start_autosave(self, get_labels: Callable[[], np.ndarray] | None = None, *,
                       get_meta: Callable[[], dict[str, Any]] | None = None,
                       interval_s: float | None = None, **kw: Any) -> Autosaver:
        """Create (once) the case's :class:`~napari_medsegfm.dataset.autosave.Autosaver`.

        Parameters
        ----------
        get_labels : callable, optional
            Returns the current labels (default ``self.labels``).
        get_meta : callable, optional
            Extra metadata for each correction.
        interval_s : float, optional
            Autosave interval in seconds (at most 30).
        **kw
            Other :class:`~napari_medsegfm.dataset.autosave.Autosaver` options (``on_saved``,
            ``on_error``, ``clock``, ...).

        Returns
        -------
        Autosaver
            The existing one when called again.

        Raises
        ------
        ValueError
            The case was opened read-only.
        """
        if self.read_only:
            raise ValueError(f"case {self.case_id!r} is open read-only ({self.message()}); nothing to autosave")
        if self.autosaver is not None:
            return self.autosaver
        ws = self._workspace
        assert ws is not None

        def meta() -> dict[str, Any]:
            m = {"source": str(self.entry.path), "format": self.entry.fmt, "label_names": {
                str(k): v for k, v in self.label_names.items()}}
            if get_meta is not None:
                m.update(get_meta() or {})
            return m

        self.autosaver = Autosaver(
            ws.corrections, self.case_id, get_labels or (lambda: self.labels), get_meta=meta,
            interval_s=interval_s if interval_s is not None else ws.autosave_s, status=ws.store, **kw,
        )
        return self.autosaver
