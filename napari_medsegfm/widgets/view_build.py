"""The annotation dock's widgets: the Backend, Objects, Prompts and Session sections, the status
line and the shortcut help, laid out in a scrolling body (see :mod:`._layout`).

:class:`AnnotationLayout` is a mixin of :class:`~napari_medsegfm.widgets.view.AnnotationWidget`;
it only creates widgets (the view wires them to the controller).
"""

from __future__ import annotations

import logging

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QCompleter,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QTableWidget,
    QTextBrowser,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ._layout import CollapsibleSection, ScrollingBody
from .shortcuts import help_html, keys_text

__all__ = ["AnnotationLayout"]

log = logging.getLogger(__name__)


class AnnotationLayout:
    """Builds the annotation dock's widgets (mixin; see module docstring)."""

    def _button(self, text: str, action: str | None = None, tip: str = "", checkable: bool = False) -> QPushButton:
        b = QPushButton(text)
        b.setCheckable(checkable)
        if action:
            tip = f"{tip} ({keys_text(action)})" if tip else f"({keys_text(action)})"
        b._base_tip = tip  # type: ignore[attr-defined]
        b.setToolTip(tip)
        b.setSizePolicy(QSizePolicy.Policy.Minimum, QSizePolicy.Policy.Fixed)
        return b

    def _build(self) -> None:
        # everything scrolls inside the dock: on a small screen the dock never grows napari's
        # window and no control is squeezed onto another (see _layout.ScrollingBody)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        self.content = QWidget()
        self.scroll = ScrollingBody(self.content, self)
        outer.addWidget(self.scroll)
        lay = QVBoxLayout(self.content)
        lay.setContentsMargins(4, 2, 4, 4)
        lay.setSpacing(2)

        # --- image + backend
        f = QFormLayout()
        f.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        row = QHBoxLayout()
        self.image_combo = QComboBox()
        self.image_combo.setToolTip("Image layer to annotate")
        self.image_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.image_combo.setMinimumContentsLength(5)
        self.attach_btn = self._button("Start", tip="Annotate the selected image")
        row.addWidget(self.image_combo, 1)
        row.addWidget(self.attach_btn)
        f.addRow("Image", row)
        self.backend_combo = QComboBox()
        self.backend_combo.setToolTip("Segmentation backend; unavailable ones say why")
        self.backend_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.backend_combo.setMinimumContentsLength(5)
        f.addRow("Backend", self.backend_combo)
        self.backend_info = QLabel("—")
        self.backend_info.setWordWrap(True)
        self.backend_info.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        f.addRow(self.backend_info)
        self.backend_section = CollapsibleSection("Backend", f)
        lay.addWidget(self.backend_section)

        # --- objects
        ol = QVBoxLayout()
        self.table = QTableWidget(0, 5)
        self.table.setHorizontalHeaderLabels(["", "Name", "", "Volume", "z"])
        head = self.table.horizontalHeaderItem(2)
        if head is not None:
            head.setToolTip("status: ○ empty, ● prompted, ✎ edited, ✓ accepted, … running")
        self.table.verticalHeader().setVisible(False)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.DoubleClicked)
        self.table.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.table.setWordWrap(False)
        hh = self.table.horizontalHeader()
        hh.setSectionResizeMode(0, QHeaderView.ResizeMode.Fixed)
        hh.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        for col in (2, 3, 4):
            hh.setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)
        hh.setMinimumSectionSize(18)
        self.table.setColumnWidth(0, 20)
        vh = self.table.verticalHeader()
        vh.setDefaultSectionSize(max(self.fontMetrics().height() + 6, 20))
        vh.setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        # room for at least TABLE_MIN_ROWS rows (and a bit of the next, so it reads as a list)
        self.table.setMinimumHeight(int(hh.sizeHint().height() + (self.TABLE_MIN_ROWS + 0.4) *
                                        vh.defaultSectionSize() + 2 * self.table.frameWidth()))
        self.table.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.table.setToolTip("Objects: label colour (double-click to change), name (double-click to rename), "
                              "status, z range of its boxes, volume (mL where the image has a voxel spacing; "
                              "voxels or pixels otherwise). Right-click for more.")
        ol.addWidget(self.table, 1)
        row = QHBoxLayout()
        row.setSpacing(3)
        self.new_btn = self._button("New", "new_object", "New object")
        self.accept_btn = self._button("Accept", "accept_object", "Accept the current object")
        self.reset_btn = self._button("Reset", "reset_object", "Clear the current object's mask and prompts")
        self.delete_btn = self._button("Delete", "delete_object", "Delete the current object")
        for b in (self.new_btn, self.accept_btn, self.reset_btn, self.delete_btn):
            row.addWidget(b)
        ol.addLayout(row)
        row = QHBoxLayout()
        row.setSpacing(3)
        self.name_edit = QLineEdit()
        self.name_edit.setPlaceholderText("name / text prompt, e.g. liver")
        self._name_tip = (f"Names the current object; sent as a text prompt where the backend reads text "
                          f"({keys_text('focus_name')}, Enter)")
        self.name_edit.setToolTip(self._name_tip)
        self.text_btn = self._button("Name / segment", tip="Name the object; segment it from the text if the "
                                                           "backend can")
        row.addWidget(self.name_edit, 1)
        row.addWidget(self.text_btn)
        ol.addLayout(row)
        self.objects_section = CollapsibleSection("Objects", ol)
        lay.addWidget(self.objects_section, 1)

        # --- prompt tools
        g = QGridLayout()
        g.setHorizontalSpacing(3)
        g.setVerticalSpacing(3)
        self.box_btn = self._button("Box", "tool_box", "Draw a rectangle on the current slice", checkable=True)
        self.click_btn = self._button("Click", "tool_click", "Click on the object; Shift+click = background",
                                      checkable=True)
        self.scribble_btn = self._button("Scribble", "tool_scribble", "Paint strokes on the object "
                                                                      "(negative: background)", checkable=True)
        self.brush_btn = self._button("Brush", "tool_brush", "Correct with napari's brush (E: eraser)",
                                      checkable=True)
        self.negative_btn = self._button("Negative", "toggle_negative", "Clicks and scribbles mark background",
                                         checkable=True)
        self.tool_buttons = {"box": self.box_btn, "click": self.click_btn, "scribble": self.scribble_btn,
                             "brush": self.brush_btn}
        g.addWidget(self.box_btn, 0, 0)
        g.addWidget(self.click_btn, 0, 1)
        g.addWidget(self.scribble_btn, 0, 2)
        g.addWidget(self.brush_btn, 1, 0)
        g.addWidget(self.negative_btn, 1, 1)
        self.autorun_check = QCheckBox("Auto-run")
        self.autorun_check.setChecked(True)
        self.autorun_check.setToolTip("Segment as soon as a prompt is drawn")
        g.addWidget(self.autorun_check, 1, 2)
        self.zmin_spin = QSpinBox()
        self.zmax_spin = QSpinBox()
        for sp, which in ((self.zmin_spin, "min"), (self.zmax_spin, "max")):
            sp.setRange(0, 0)
            sp.setKeyboardTracking(False)
            sp.setMinimumWidth(56)  # (a slice number has at most 4 digits; the style asks for more)
            sp.setToolTip(f"z {which} of the selected box (inclusive)")
        self.zmin_btn = self._button("⤓ here", "set_z_min", "Bottom of the z extent = current slice")
        self.zmax_btn = self._button("⤒ here", "set_z_max", "Top of the z extent = current slice")
        self.z_label = QLabel("z from")
        g.addWidget(self.z_label, 2, 0)
        g.addWidget(self.zmin_spin, 2, 1)
        g.addWidget(self.zmin_btn, 2, 2)
        g.addWidget(QLabel("z to"), 3, 0)
        g.addWidget(self.zmax_spin, 3, 1)
        g.addWidget(self.zmax_btn, 3, 2)
        self.run_box_btn = self._button("Run box", "run_box", "Segment the selected box")
        self.run_all_btn = self._button("Run all boxes", "run_all_boxes", "Segment every box (e.g. the file's)")
        g.addWidget(self.run_box_btn, 4, 0)
        g.addWidget(self.run_all_btn, 4, 1, 1, 2)
        self.prompts_section = CollapsibleSection("Prompts", g)
        lay.addWidget(self.prompts_section)

        # --- session: undo/redo/save + busy
        sl = QVBoxLayout()
        row = QHBoxLayout()
        row.setSpacing(3)
        self.undo_btn = self._button("Undo", "undo", "Undo")
        self.redo_btn = self._button("Redo", "redo", "Redo")
        self.save_btn = self._button("Save", "save", "Save into the case's own file")
        self.saveas_btn = self._button("Save as…", tip="Save into another file/format")
        for b in (self.undo_btn, self.redo_btn, self.save_btn, self.saveas_btn):
            row.addWidget(b)
        sl.addLayout(row)
        row = QHBoxLayout()
        # A static bar, not Qt's animated "busy" bar: every animation frame re-composes the whole
        # window including the OpenGL canvas, which under software OpenGL (no GPU, remote
        # desktops, Xvfb) took ~0.8 of a CPU core away from inference (measured: llvmpipe
        # threads at 79 % CPU while the 15 CT_AMOS boxes ran). The running time in the label
        # next to it is updated four times a second instead.
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(1)
        self.progress.setMaximumHeight(14)
        self.progress.setMaximumWidth(60)
        self.progress.setTextVisible(False)
        self.progress.setVisible(False)
        self.busy_label = QLabel("idle")
        self.busy_label.setWordWrap(True)
        self.busy_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.cancel_btn = self._button("Cancel", "cancel", "Cancel the running segmentation")
        self.cancel_btn.setEnabled(False)
        row.addWidget(self.progress)
        row.addWidget(self.busy_label, 1)
        row.addWidget(self.cancel_btn)
        sl.addLayout(row)
        self.latency_label = QLabel("last: —")
        self.latency_label.setWordWrap(True)  # labels whose text grows must not widen the dock
        self.latency_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.latency_label.setToolTip("Last result: model time (split into warm-up — encoding slices — and "
                                      "decoding where the backend reports it), time queued behind other "
                                      "prompts, and prompt-to-mask time")
        sl.addWidget(self.latency_label)
        self.session_section = CollapsibleSection("Session", sl)
        lay.addWidget(self.session_section)
        self.sections = {"backend": self.backend_section, "objects": self.objects_section,
                         "prompts": self.prompts_section, "session": self.session_section}

        # --- status + help
        row = QHBoxLayout()
        self.status_label = QLabel("")
        self.status_label.setWordWrap(True)
        self.status_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.help_btn = QToolButton()
        self.help_btn.setText("?")
        self.help_btn.setCheckable(True)
        self.help_btn.setToolTip("<b>Keyboard shortcuts</b> (F1 toggles the list)" + help_html())
        row.addWidget(self.status_label, 1)
        row.addWidget(self.help_btn, 0, Qt.AlignmentFlag.AlignTop)
        lay.addLayout(row)
        self.help_panel = QTextBrowser()
        self.help_panel.setHtml(help_html())
        self.help_panel.setMaximumHeight(230)
        self.help_panel.setToolTip("Keyboard shortcuts (F1)")
        self.help_panel.setVisible(False)
        lay.addWidget(self.help_panel)

        self._completer_names: list[str] = []
        self._set_completer([])

    def _set_completer(self, extra: list[str]) -> None:
        names: list[str] = list(extra)
        try:
            from ..engine.vocab import default_vocabulary

            names += [n for n in default_vocabulary().names() if n not in names]
        except (ImportError, OSError, ValueError) as exc:  # vocabulary is a convenience
            log.debug("no vocabulary for completion: %s", exc)
        if names == self._completer_names:
            return
        self._completer_names = names
        comp = QCompleter(names, self)
        comp.setCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        comp.setFilterMode(Qt.MatchFlag.MatchContains)
        self.name_edit.setCompleter(comp)
