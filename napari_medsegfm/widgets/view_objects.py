"""The annotation dock's object list: the table's rows from the controller's objects, and its
selection, renaming, colour picking and context menu.

:class:`ObjectsTable` is a mixin of :class:`~napari_medsegfm.widgets.view.AnnotationWidget`.
"""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtGui import QColor
from qtpy.QtWidgets import QTableWidgetItem

from .shortcuts import keys_text

__all__ = ["ObjectsTable"]

#: what the Objects table's status column shows for each object status (the word is its tooltip)
STATUS_SIGNS = {"empty": "○", "prompted": "●", "edited": "✎", "accepted": "✓", "running": "…"}


class ObjectsTable:
    """The object table of the annotation dock (mixin; see module docstring)."""

    def _refresh_objects(self) -> None:
        if self._torn_down:
            return
        rows = self.controller.object_rows()
        has = self.controller.current_id is not None
        for b in (self.accept_btn, self.reset_btn, self.delete_btn):
            b.setEnabled(has)
        self.new_btn.setEnabled(self.controller.attached)
        key = (tuple(rows), self.controller.current_id, self.controller.attached)
        if key == self._shown_rows:
            self._refresh_history()
            return
        self._shown_rows = key
        self._updating = True
        vol = self.controller.volume
        self.table.setColumnHidden(4, vol is None or vol.ndim != 3)  # z ranges: 3D images only
        self.table.setRowCount(len(rows))
        cur_row = -1
        for r, row in enumerate(rows):
            sw = QTableWidgetItem("")
            sw.setData(Qt.ItemDataRole.DecorationRole, QColor(row.color_hex))
            sw.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable)
            sw.setData(Qt.ItemDataRole.UserRole, row.label_id)
            sw.setToolTip(f"label {row.label_id}")
            name = QTableWidgetItem(row.name)
            name.setData(Qt.ItemDataRole.UserRole, row.label_id)
            name.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable | Qt.ItemFlag.ItemIsEditable)
            # a narrow dock elides long names ("left …"): the tooltip has the whole name
            name.setToolTip(f"{row.name}\n(double-click to rename)")
            # the status as one sign (its word in the tooltip), so a narrow dock leaves the Name room
            st = QTableWidgetItem(STATUS_SIGNS.get(row.status, row.status))
            st.setTextAlignment(int(Qt.AlignmentFlag.AlignCenter))
            st.setToolTip(row.status)
            st.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable)
            vol = QTableWidgetItem(row.volume_text)
            vol.setTextAlignment(int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter))
            vol.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable)
            vol.setToolTip(f"{row.voxels} {'pixels' if row.size_unit == 'px' else 'voxels'}")
            zr = QTableWidgetItem(row.z_range)
            zr.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable)
            zr.setToolTip(f"slices {row.z_range} (its boxes' z extent)" if row.z_range else "no box")
            for col, it in enumerate((sw, name, st, vol, zr)):
                self.table.setItem(r, col, it)
            if row.label_id == self.controller.current_id:
                cur_row = r
        if cur_row >= 0:
            self.table.selectRow(cur_row)
        else:
            self.table.clearSelection()
        self._updating = False
        self._refresh_history()

    def _on_current(self, label_id: int | None) -> None:
        self._refresh_objects()
        info = self.controller.objects.get(label_id) if label_id is not None else None
        if info is not None and not self.name_edit.hasFocus():
            self.name_edit.setText(info.name)
        self._refresh_z()

    def _on_table_selection(self) -> None:
        if self._updating:
            return
        items = self.table.selectedItems()
        if not items:
            return
        lid = items[0].data(Qt.ItemDataRole.UserRole)
        if lid is not None and lid != self.controller.current_id:
            self._guard(self.controller.select_object, int(lid))

    def _row_label(self, row: int) -> int | None:
        it = self.table.item(row, 0)
        lid = it.data(Qt.ItemDataRole.UserRole) if it is not None else None
        return int(lid) if lid is not None else None

    def _pick_color(self, row: int, color: QColor | None = None) -> None:
        """Choose an object's colour (double-click the swatch); ``color`` skips the dialog."""
        lid = self._row_label(row)
        if lid is None:
            return
        info = self.controller.objects.get(lid)
        if color is None:
            from qtpy.QtWidgets import QColorDialog

            start = QColor.fromRgbF(*info.color) if info is not None and info.color else QColor("white")
            color = QColorDialog.getColor(start, self, f"Colour of {info.name if info else lid}")
        if color.isValid():
            self._guard(self.controller.set_object_color, lid, (color.redF(), color.greenF(), color.blueF(), 1.0))

    def _table_menu(self, pos: Any) -> None:
        from qtpy.QtWidgets import QMenu

        row = self.table.rowAt(pos.y())
        lid = self._row_label(row) if row >= 0 else None
        if lid is None:
            return
        c = self.controller
        info = c.objects[lid]
        menu = QMenu(self)
        menu.addAction("Rename", lambda: self.table.editItem(self.table.item(row, 1)))
        menu.addAction("Change colour…", lambda: self._pick_color(row))
        ow = menu.addAction("Take voxels of other objects (overwrite)")
        ow.setCheckable(True)
        ow.setChecked(bool(info.overwrite))
        ow.toggled.connect(lambda on: self._guard(c.session.set_overwrite, lid, on))
        menu.addSeparator()
        menu.addAction(f"Accept ({keys_text('accept_object')})", lambda: self._guard(c.accept_object, lid))
        menu.addAction(f"Reset ({keys_text('reset_object')})", lambda: self._guard(c.reset_object, lid))
        menu.addAction(f"Delete ({keys_text('delete_object')})", lambda: self._guard(c.delete_object, lid))
        menu.popup(self.table.viewport().mapToGlobal(pos))

    def _on_table_edit(self, item: QTableWidgetItem) -> None:
        if self._updating or item.column() != 1:
            return
        lid = item.data(Qt.ItemDataRole.UserRole)
        if lid is not None:
            self._guard(self.controller.rename_object, int(lid), item.text())
