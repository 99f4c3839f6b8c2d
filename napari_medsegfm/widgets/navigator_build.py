"""The dataset navigator's widgets: a fixed case bar (Previous / Next / Jump and the open case
with its place in the list) above a scrolling body with the dataset folder, filters, the case
table, the case's status and comment, and the dataset actions.

:class:`NavigatorLayout` is a mixin of :class:`~napari_medsegfm.widgets.navigator.DatasetNavigator`;
it creates the widgets and connects them to the navigator's methods.
"""

from __future__ import annotations

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QSizePolicy,
    QStyle,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from ..dataset.status import STATUSES
from ._layout import ScrollingBody
from .case_table import STATUS_FILTERS, CaseTableModel

__all__ = ["NavigatorLayout", "NAVIGATOR_SHORTCUTS"]

#: action -> (keys, description)
NAVIGATOR_SHORTCUTS: dict[str, tuple[str, str]] = {
    "next_case": ("Ctrl+PgDown", "Next case (autosaves the current one)"),
    "previous_case": ("Ctrl+PgUp", "Previous case"),
    "jump": ("Ctrl+J", "Jump to a case by name"),
    "done_and_next": ("Ctrl+Shift+D", "Mark the case done and go to the next"),
}


class NavigatorLayout:
    """Builds the navigator's widgets (mixin; see module docstring)."""

    def _build(self) -> None:
        # the content scrolls inside the dock: docking the annotation widget beside it on a laptop
        # screen never grows napari's window (see _layout.ScrollingBody)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.setSpacing(0)
        self.content = QWidget()
        self.scroll = ScrollingBody(self.content, self)
        # no taller than its controls with a few table rows (the case bar above it included): the
        # annotation dock below gets the rest
        self.scroll.max_hint_height = 290
        outer.addWidget(self.scroll)
        lay = QVBoxLayout(self.content)
        lay.setContentsMargins(4, 2, 4, 4)
        lay.setSpacing(3)
        top = QHBoxLayout()
        self.path_edit = QLineEdit()
        self.path_edit.setPlaceholderText("dataset folder")
        self.path_edit.returnPressed.connect(lambda: self.open_dataset(self.path_edit.text()))
        self.browse_btn = QPushButton("Open dataset…")
        self.browse_btn.clicked.connect(self._browse)
        top.addWidget(self.path_edit, 1)
        top.addWidget(self.browse_btn)
        lay.addLayout(top)

        flt = QHBoxLayout()
        self.status_filter = QComboBox()
        self.status_filter.addItems(STATUS_FILTERS)
        self.status_filter.currentTextChanged.connect(lambda s: self.model.set_filter(status=s))
        self.search_edit = QLineEdit()
        self.search_edit.setPlaceholderText("filter by name / comment")
        self.search_edit.textChanged.connect(lambda t: self.model.set_filter(text=t))
        self.search_edit.returnPressed.connect(self._open_first_match)
        self.review_check = QCheckBox("Review queue")
        self.review_check.setToolTip("Sort by disagreement (1 - Dice) between the pre-segmentation and the labels, worst first")
        self.review_check.toggled.connect(self._set_review)
        flt.addWidget(self.status_filter)
        flt.addWidget(self.search_edit, 1)
        self.status_filter.setToolTip("Show the cases of one status")
        lay.addLayout(flt)
        lay.addWidget(self.review_check)

        self.model = CaseTableModel(self)
        self.table = QTableView()
        self.table.setModel(self.model)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setSortIndicator(0, Qt.SortOrder.AscendingOrder)
        self.table.setSortingEnabled(True)
        self.table.horizontalHeader().setSortIndicatorShown(True)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.verticalHeader().setVisible(False)
        self.table.setWordWrap(False)
        vh = self.table.verticalHeader()
        vh.setDefaultSectionSize(max(self.fontMetrics().height() + 6, 20))
        self.table.setMinimumHeight(int(self.table.horizontalHeader().sizeHint().height()
                                        + 4.4 * vh.defaultSectionSize() + 2 * self.table.frameWidth()
                                        + self.style().pixelMetric(QStyle.PixelMetric.PM_ScrollBarExtent)))
        self.table.horizontalHeader().sortIndicatorChanged.connect(self._header_sorted)
        # one double-click emits doubleClicked and activated: both take the case id now and open it
        # after the click is handled (opening refreshes the table, so a later index is stale)
        self.table.doubleClicked.connect(self._open_index)
        self.table.activated.connect(self._open_index)
        lay.addWidget(self.table, 1)

        cur = QHBoxLayout()
        self.status_combo = QComboBox()
        self.status_combo.addItems(STATUSES)
        self.status_combo.activated.connect(lambda i: self.set_status(STATUSES[i]))
        cur.addWidget(self.status_combo)
        self.done_btn = QPushButton("Done ✓ → next")
        self.done_btn.setToolTip(f"{NAVIGATOR_SHORTCUTS['done_and_next'][1]} ({NAVIGATOR_SHORTCUTS['done_and_next'][0]})")
        self.done_btn.clicked.connect(self.done_and_next)
        cur.addWidget(self.done_btn)
        lay.addLayout(cur)
        # case navigation in a fixed bar above the scrolling body: always in view, whatever the
        # dock's height and however far the body is scrolled
        self.nav_bar = QWidget()
        bar = QVBoxLayout(self.nav_bar)
        bar.setContentsMargins(4, 3, 4, 3)
        bar.setSpacing(2)
        nav = QHBoxLayout()
        nav.setSpacing(3)
        self.prev_btn = QPushButton("◀ Previous")
        self.prev_btn.clicked.connect(self.previous_case)
        self.next_btn = QPushButton("Next ▶")
        self.next_btn.clicked.connect(self.next_case)
        self.jump_btn = QPushButton("Jump…")
        self.jump_btn.clicked.connect(lambda: self.jump())
        for b, act in ((self.prev_btn, "previous_case"), (self.next_btn, "next_case"), (self.jump_btn, "jump")):
            b.setToolTip(f"{NAVIGATOR_SHORTCUTS[act][1]} ({NAVIGATOR_SHORTCUTS[act][0]})")
            nav.addWidget(b)
        bar.addLayout(nav)
        # one line (no word wrap: a height-for-width label would make the dock's own layout
        # height-for-width); a name longer than the dock is clipped, the tooltip has it whole
        self.case_label = QLabel("no case open")
        self.case_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        bar.addWidget(self.case_label)
        outer.insertWidget(0, self.nav_bar)

        self.comment_edit = QLineEdit()
        self.comment_edit.setPlaceholderText("comment on this case (Enter to save)")
        self.comment_edit.editingFinished.connect(self._comment_changed)
        lay.addWidget(self.comment_edit)

        bottom = QGridLayout()
        bottom.setHorizontalSpacing(3)
        self.scan_btn = QPushButton("Count labels")
        self.scan_btn.setToolTip("Load every case once to count its labels and compute Dice of stored predictions")
        self.scan_btn.clicked.connect(lambda: self.scan_in_background())
        self.save_btn = QPushButton("Save now")
        self.save_btn.clicked.connect(lambda: self.save_now())
        self.export_btn = QPushButton("Export…")
        self.export_btn.clicked.connect(self._export_dialog)
        self.annotate_btn = QPushButton("Segment…")
        self.annotate_btn.setToolTip("Dock the interactive segmentation widget and edit cases with prompts")
        self.annotate_btn.clicked.connect(lambda: self.dock_annotation_widget())
        bottom.addWidget(self.annotate_btn, 0, 0)
        bottom.addWidget(self.scan_btn, 0, 1)
        bottom.addWidget(self.save_btn, 1, 0)
        bottom.addWidget(self.export_btn, 1, 1)
        lay.addLayout(bottom)
        self.message = QLabel("")
        self.message.setWordWrap(True)
        self.message.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        lay.addWidget(self.message)
        self._update_enabled()
