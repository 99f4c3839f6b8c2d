"""Objects of the annotation controller: creating, selecting, renaming, recolouring, accepting,
resetting and deleting them, and the rows of the dock's object list.

Qt-free. Every change goes through the session (one undo step each); the controller's
change handler redraws the layers. :class:`ObjectList` is a mixin of
:class:`~napari_medsegfm.widgets.controller.AnnotationController`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .layer_sync import _set_defaults
from .objects import ObjectRow, rgba_to_hex

__all__ = ["ObjectList"]


class ObjectList:
    """The controller's objects (mixin; see module docstring)."""

    # ================================================================ objects
    @property
    def objects(self) -> dict[int, Any]:
        return self.session.objects if self.session is not None else {}

    def object_rows(self) -> list[ObjectRow]:
        """One row per object for the list view."""
        if self.session is None:
            return []
        busy = {f.label_id for f in self._inflight.values()}
        ml = self.volume.voxel_volume_ml
        unit = self.size_unit
        ranges = self.object_z_ranges()
        rows = []
        for lid, info in sorted(self.session.objects.items()):
            vox = self._voxels.get(lid, 0)
            status = getattr(info.status, "value", str(info.status))
            zr = ranges.get(lid)
            rows.append(ObjectRow(lid, info.name or f"object {lid}", rgba_to_hex(info.color),
                                  "running" if lid in busy else status, vox,
                                  vox * ml, lid in busy, size_unit=unit,
                                  z_range="" if zr is None else f"{zr[0]}–{zr[1]}"))
        return rows

    @property
    def size_unit(self) -> str:
        """How object sizes are given: ``""`` (a volume in mL: a 3D image with a physical voxel
        spacing), ``"px"`` (a 2D image: pixels are counted, a slice has no volume) or ``"vox"``
        (a 3D image without spacing: its voxels have no size)."""
        if self.volume is None or self.volume.ndim != 3:
            return "px"
        return "" if self.physical_spacing else "vox"

    @property
    def physical_spacing(self) -> bool:
        """Whether the image's voxel spacing is known: read by the plugin (a file format that
        stores it) or set by the user as the layer's scale."""
        im = self.image_layer
        if im is None:
            return False
        meta = im.metadata or {}
        if meta.get("medsegfm_spacing") is not None or meta.get("medsegfm_format"):
            return True
        nsp = len(self.volume.spatial_shape) if self.volume is not None else 0
        return bool(nsp) and not np.allclose(np.asarray(im.scale)[-nsp:], 1.0)

    def add_object(self, name: str = "", color: Any = None, *, label_id: int | None = None,
                   select: bool = True) -> int:
        """Create an object (undoable) and make it current; returns its label id."""
        self._require_session()
        if label_id is None:
            # ids named by the file's boxes (CVPR: box i -> label i+1) stay theirs
            reserved = set(self.session.objects) | set(self.label_names)
            if self.box_layer is not None and len(self.box_layer.data):
                reserved |= {int(i) for i in np.asarray(self.box_layer.features["object_id"])}
            label_id = max(reserved, default=0) + 1
        if not name and label_id in self.label_names:
            name = self.label_names[label_id]
        info = self.session.add_object(name, color=color, label_id=label_id)
        if select:
            self.select_object(info.label_id)
        return info.label_id

    def ensure_object(self) -> int:
        """The current object, created first when there is none."""
        self._require_session()
        if self.current_id is None or self.current_id not in self.session.objects:
            return self.add_object()
        return self.current_id

    def select_object(self, label_id: int | None) -> None:
        """Make ``label_id`` the object new prompts and brush strokes go to."""
        if label_id is not None and (self.session is None or label_id not in self.session.objects):
            raise ValueError(f"no object with label id {label_id}; objects: {sorted(self.objects)}")
        changed = label_id != self.current_id
        self.current_id = label_id
        self._select_current_in_layers()
        if changed:
            self._shown_points = self._shown_scribbles = None
            self._sync_prompt_layers()
            self.events.current.emit(label_id)

    def step_object(self, delta: int) -> None:
        """Select the next (``+1``) or previous (``-1``) object."""
        ids = sorted(self.objects)
        if not ids:
            return
        if self.current_id not in ids:
            self.select_object(ids[0])
            return
        i = (ids.index(self.current_id) + delta) % len(ids)
        self.select_object(ids[i])

    def _select_current_in_layers(self) -> None:
        lid = self.current_id
        if self.seg_layer is not None and lid is not None:
            self.seg_layer.selected_label = lid
        if self.box_layer is not None:
            d = {"object_id": lid or 0}
            if self.volume is not None and self.volume.ndim == 3:
                z = self.current_z() or 0
                d.update(z_min=z, z_max=z)
            self._syncing += 1
            try:
                _set_defaults(self.box_layer, **d)
                color = self.objects[lid].color if lid in self.objects else (1, 1, 0, 1)
                if not self.box_layer.selected_data:
                    self.box_layer.current_edge_color = tuple(color)
            finally:
                self._syncing -= 1

    def rename_object(self, label_id: int | None, name: str) -> None:
        lid = label_id if label_id is not None else self.current_id
        if lid is None or not name.strip():
            return
        if self.session.objects[lid].name != name.strip():
            self.session.rename_object(lid, name.strip())

    def set_object_color(self, label_id: int, rgba: Any) -> None:
        self._require_session()
        self.session.set_object_color(label_id, rgba)

    def delete_object(self, label_id: int | None = None) -> None:
        lid = label_id if label_id is not None else self.current_id
        if lid is None or self.session is None or lid not in self.session.objects:
            return
        name = self.session.objects[lid].name
        self.session.delete_object(lid)
        self._message(f"deleted {name!r} (Ctrl+Z brings it back)")

    def accept_object(self, label_id: int | None = None) -> None:
        lid = label_id if label_id is not None else self.current_id
        if lid is None or self.session is None or lid not in self.session.objects:
            return
        self.session.accept_object(lid)
        self._message(f"accepted {self.session.objects[lid].name!r}")

    def reset_object(self, label_id: int | None = None) -> None:
        lid = label_id if label_id is not None else self.current_id
        if lid is None or self.session is None or lid not in self.session.objects:
            return
        self.session.reset_object(lid)
        self._message(f"reset {self.session.objects[lid].name!r}")
