"""The navigator's case table: a Qt item model over the workspace's case rows, filtered and sorted in Python."""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import QAbstractTableModel, QModelIndex, Qt
from qtpy.QtGui import QBrush, QColor
from qtpy.QtWidgets import QWidget

from ..dataset.status import STATUSES
from ..dataset.workspace import COLUMNS, CaseRow, DatasetWorkspace

__all__ = ["CaseTableModel", "STATUS_FILTERS"]

_STATUS_COLORS = {"todo": None, "in progress": "#3b6fb6", "done": "#2e8b57", "flagged": "#c0392b"}
STATUS_FILTERS = ("all", "todo", "in progress", "done", "flagged", "not done")


class CaseTableModel(QAbstractTableModel):
    """The rows of the navigator table (filtered and sorted in Python)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._all: list[CaseRow] = []
        self.rows: list[CaseRow] = []
        self.status_filter = "all"
        self.text_filter = ""
        self.sort_column: str | None = None
        self.sort_descending = False
        self.review = False
        self.current_id: str | None = None

    # --------------------------------------------------------- Qt model API
    def rowCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: B008, N802
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: B008, N802
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:  # noqa: N802
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return COLUMNS[section][1]
        return None

    def data(self, index: QModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        row = self.rows[index.row()]
        attr = COLUMNS[index.column()][0]
        if role == Qt.ItemDataRole.DisplayRole:
            v = getattr(row, attr)
            if attr == "dice":
                return "" if v is None else f"{v:.3f}"
            if attr == "n_labels":
                return "" if v is None else str(v)
            if attr == "status" and row.locked_by:
                return f"{v} (open by {row.locked_by})"
            if attr == "name" and row.has_correction:
                return f"{v} ✎"
            return "" if v is None else str(v)
        if role == Qt.ItemDataRole.ToolTipRole:
            tip = [row.case_id]
            if row.has_correction:
                tip.append("has an autosaved correction")
            if row.comment:
                tip.append(row.comment)
            if row.locked_by:
                tip.append(f"being edited by {row.locked_by}")
            return "\n".join(tip)
        if role == Qt.ItemDataRole.ForegroundRole and attr == "status":
            c = _STATUS_COLORS.get(row.status)
            return QBrush(QColor(c)) if c else None
        if role == Qt.ItemDataRole.FontRole and row.case_id == self.current_id:
            from qtpy.QtGui import QFont

            f = QFont()
            f.setBold(True)
            return f
        return None

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        if column < 0 or column >= len(COLUMNS):  # the sort indicator was cleared (review queue)
            self.sort_column = None
            self._apply()
            return
        self.sort_column = COLUMNS[column][0]
        self.sort_descending = order == Qt.SortOrder.DescendingOrder
        self.review = False
        self._apply()

    # --------------------------------------------------------- content
    def set_rows(self, rows: list[CaseRow]) -> None:
        self._all = list(rows)
        self._apply()

    def set_filter(self, status: str | None = None, text: str | None = None) -> None:
        if status is not None:
            self.status_filter = status
        if text is not None:
            self.text_filter = text
        self._apply()

    def set_review(self, on: bool) -> None:
        self.review = bool(on)
        self._apply()

    def _apply(self) -> None:
        self.beginResetModel()
        if self.status_filter == "all":
            statuses = None
        elif self.status_filter == "not done":
            statuses = [s for s in STATUSES if s != "done"]
        else:
            statuses = [self.status_filter]
        rows = DatasetWorkspace.filter(self._all, statuses, self.text_filter)
        if self.review:
            rows = DatasetWorkspace.review_queue(rows)
        elif self.sort_column:
            rows = DatasetWorkspace.sort(rows, self.sort_column, self.sort_descending)
        self.rows = rows
        self.endResetModel()

    def order(self) -> list[str]:
        """Case ids in display order."""
        return [r.case_id for r in self.rows]

    def row_of(self, case_id: str) -> int:
        for i, r in enumerate(self.rows):
            if r.case_id == case_id:
                return i
        return -1
