"""Layout pieces shared by the docks: collapsible sections and a vertically scrolling body.

A dock must fit a laptop screen next to napari's own docks: its content scrolls
vertically instead of growing the main window, it is never wider than its widest row
of controls (so nothing is cut off at the right edge), and its sections (Backend,
Objects, Prompts, Session) fold away with one click on their header.
"""

from __future__ import annotations

from qtpy.QtCore import QEvent, QObject, QSize, Qt
from qtpy.QtWidgets import (
    QFrame,
    QLayout,
    QScrollArea,
    QSizePolicy,
    QStyle,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

__all__ = ["CollapsibleSection", "ScrollingBody"]


class CollapsibleSection(QWidget):
    """A titled section whose body shows or hides when its header is clicked.

    ``body_layout`` is the layout to fill; ``set_expanded`` / ``expanded`` control it.
    """

    def __init__(self, title: str, layout: QLayout, *, expanded: bool = True, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.title = title
        self.header = QToolButton(self)
        self.header.setText(title)
        self.header.setCheckable(True)
        self.header.setChecked(expanded)
        self.header.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.header.setAutoRaise(True)
        self.header.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.header.setToolTip(f"Show or hide {title}")
        font = self.header.font()
        font.setBold(True)
        self.header.setFont(font)
        self.body = QFrame(self)
        self.body.setFrameShape(QFrame.Shape.NoFrame)
        self.body_layout = layout
        layout.setContentsMargins(4, 0, 2, 2)
        self.body.setLayout(layout)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.setSpacing(1)
        outer.addWidget(self.header)
        outer.addWidget(self.body)
        self.header.toggled.connect(self.set_expanded)
        self.set_expanded(expanded)

    @property
    def expanded(self) -> bool:
        return self.header.isChecked()

    def set_expanded(self, on: bool) -> None:
        if self.header.isChecked() != bool(on):
            self.header.setChecked(bool(on))  # emits toggled -> here again
            return
        self.header.setArrowType(Qt.ArrowType.DownArrow if on else Qt.ArrowType.RightArrow)
        self.body.setVisible(bool(on))
        # a folded section takes no more height than its header
        self.setSizePolicy(QSizePolicy.Policy.Preferred,
                           QSizePolicy.Policy.Preferred if on else QSizePolicy.Policy.Fixed)


class ScrollingBody(QScrollArea):
    """A frameless scroll area for a dock's content: scrolls vertically, never horizontally.

    Its minimum width is the content's minimum width plus the scroll bar, so the dock
    cannot be made so narrow that controls are cut off; its minimum height is small, so
    a dock never forces napari's window to grow.
    """

    MIN_HEIGHT = 120
    #: the tallest height hint (the dock asks for no more when napari places it)
    max_hint_height = 900

    def __init__(self, content: QWidget, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setWidgetResizable(True)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        self.setWidget(content)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Expanding)

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt API)
        # the content's minimum width changed (text, fonts, styles): the layouts above cache the
        # size hints of this area, tell them
        if obj is self.widget() and event.type() == QEvent.Type.LayoutRequest:
            self.updateGeometry()
        return super().eventFilter(obj, event)

    def _bar(self) -> int:
        return int(self.style().pixelMetric(QStyle.PixelMetric.PM_ScrollBarExtent)) + 2

    def content_min_width(self) -> int:
        w = self.widget()
        return 0 if w is None else int(w.minimumSizeHint().width())

    def minimumSizeHint(self) -> QSize:  # noqa: N802 (Qt API)
        return QSize(self.content_min_width() + self._bar(), self.MIN_HEIGHT)

    def sizeHint(self) -> QSize:  # noqa: N802 (Qt API)
        w = self.widget()
        h = 600 if w is None else min(int(w.sizeHint().height()), self.max_hint_height)
        return QSize(self.content_min_width() + self._bar(), h)
