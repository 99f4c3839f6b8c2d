"""The box tool of the annotation controller: rectangles in the boxes layer, their z extent, runs.

Qt-free (an import-linter contract keeps it so). A boxes layer is a napari ``Shapes``
layer whose rectangles carry the features ``object_id``, ``z_min`` and ``z_max``: the
rectangle is drawn on one slice, its z extent says which slices the 3D box covers.
The layer is the truth for box prompts: editing, moving or deleting a rectangle
re-segments its object. :class:`BoxTool` is a mixin of
:class:`~napari_medsegfm.widgets.controller.AnnotationController` and uses its session,
layers and :meth:`submit`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..types import Box2D, Box3D
from .layer_sync import _set_defaults
from .prompts import rectangle_to_prompt

__all__ = ["BoxTool", "slices_to_warm"]

def slices_to_warm(z: int, z_min: int, z_max: int) -> list[int]:
    """Slices to encode ahead while the user stands on slice ``z`` outside a box's ``[z_min, z_max]``:
    ``z`` itself, the slices between it and the box, then two beyond (empty inside the box)."""
    if z < z_min:
        return [z, *range(z + 1, z_min), z - 1, z - 2]
    if z > z_max:
        return [z, *range(z - 1, z_max, -1), z + 1, z + 2]
    return []


class BoxTool:
    """Box prompts of the controller (mixin; see module docstring)."""

    def _prepare_box_features(self, layer: Any) -> None:
        """Make sure a boxes layer has ``object_id``, ``z_min``, ``z_max`` features."""
        import pandas as pd

        n = len(layer.data)
        feats = pd.DataFrame(layer.features).copy() if len(getattr(layer, "features", [])) == n else pd.DataFrame(
            index=range(n))
        if "object_id" not in feats:
            for cand in ("label_id", "label", "object"):
                if cand in feats:
                    feats["object_id"] = np.asarray(feats[cand], dtype=int)
                    break
            else:
                feats["object_id"] = np.arange(1, n + 1, dtype=int) if layer.metadata.get("medsegfm_role") == "boxes" \
                    or "z_min" in feats else np.zeros(n, int)
        nd = layer.ndim
        for col, fn in (("z_min", np.min), ("z_max", np.max)):
            if col not in feats:
                feats[col] = [int(round(float(fn(np.asarray(v)[:, 0])))) if nd == 3 else 0 for v in layer.data]
        feats = feats.astype({"object_id": int, "z_min": int, "z_max": int})
        self._syncing += 1
        try:
            layer.features = feats
            _set_defaults(layer, object_id=0, z_min=0, z_max=0)
        finally:
            self._syncing -= 1

    def _warm_towards_current_slice(self) -> None:
        """While the user steps slices away from the current object's box (to set its z extent
        with , / .), let the backend encode those slices ahead: the slice shown, the ones
        between it and the box, and two beyond. The box then runs on mostly cached slices."""
        s = self.session
        if s is None or self.volume is None or self.volume.ndim != 3 or self.box_layer is None:
            return
        if not callable(getattr(s.backend, "warm", None)):
            return
        idx = self._target_box()
        z = self.current_z()
        if idx is None or z is None or "z_min" not in self.box_layer.features:
            return
        f = self.box_layer.features.iloc[idx]
        zs = slices_to_warm(z, int(f["z_min"]), int(f["z_max"]))
        if zs:
            s.warm(zs)

    def _box_prompt(self, index: int) -> Box3D | Box2D:
        layer = self.box_layer
        verts = np.asarray(layer.data[index])
        feats = layer.features.iloc[index]
        lid = int(feats.get("object_id", 0))
        if lid <= 0 or lid not in self.session.objects:
            raise ValueError(f"box {index} belongs to no object")
        zmin = zmax = None
        if self.volume.ndim == 3 and "z_min" in layer.features:
            zmin, zmax = int(feats["z_min"]), int(feats["z_max"])
        return rectangle_to_prompt(verts, self.volume.spatial_shape, lid, z_min=zmin, z_max=zmax,
                                   capabilities=self.capabilities)

    def _on_boxes_data(self, event: Any) -> None:
        if self._syncing or self.session is None:
            return
        action = str(getattr(event, "action", ""))
        layer = self.box_layer
        if action == "added":
            n = len(layer.data)
            idx = [i % n for i in (event.data_indices or (-1,))] if n else []
            for i in idx:
                self._on_box_added(i)
        elif action == "changed" and self.auto_run:
            ids = set()
            for i in event.data_indices or ():
                if 0 <= i < len(layer.data):
                    ids.add(int(layer.features["object_id"].iloc[i]))
            for lid in sorted(ids):
                self.rerun_object_boxes(lid, why="box edited")
        elif action == "removing":
            self._removing_box_ids = {int(layer.features["object_id"].iloc[i])
                                      for i in (event.data_indices or ()) if 0 <= i < len(layer.data)}
        elif action == "removed" and self.auto_run:
            for lid in sorted(getattr(self, "_removing_box_ids", set())):
                self.rerun_object_boxes(lid, why="box deleted")
            self._removing_box_ids = set()
        if action in ("added", "changed", "removed"):
            self._sync_box_extents()

    def _object_box_indices(self, label_id: int) -> list[int]:
        layer = self.box_layer
        if layer is None or len(layer.data) == 0:
            return []
        ids = np.asarray(layer.features["object_id"])
        return [int(i) for i in np.flatnonzero(ids == label_id) if layer.shape_type[i] == "rectangle"]

    def rerun_object_boxes(self, label_id: int, why: str = "boxes changed", *, force: bool = False) -> list[int]:
        """Re-segment an object from the boxes the box layer now holds for it (plus its clicks
        and scribbles): the box layer is the truth for box prompts, so an edited, moved or
        deleted rectangle replaces the old box instead of adding to it.

        One undo step: the new prompts *replace* the object's prompts and mask
        (``session.submit(..., replace=True)``); undo brings back the old box's mask and
        prompts. With no prompt left the object is reset (also one step).
        """
        s = self.session
        if s is None or label_id not in s.objects:
            return []
        old = s.prompts_in_effect(label_id)
        boxes = []
        for i in self._object_box_indices(label_id):
            try:
                boxes.append(self._box_prompt(i))
            except ValueError as exc:
                self._message(f"box {i + 1}: {exc}", "error")
        old_boxes = [p for p in old if isinstance(p, (Box3D, Box2D))]
        if boxes == old_boxes and not force:
            return []
        others = [p for p in old if not isinstance(p, (Box3D, Box2D))]
        name = s.objects[label_id].name
        gens: list[int] = []
        first = True
        for p in boxes + others:
            # the first accepted prompt starts the object anew; the others build on it
            n_deferred = len(self._deferred)
            g = self.submit(p, replace=first)
            if g is not None:
                gens.append(g)
            if g is not None or len(self._deferred) > n_deferred:
                first = False
        if not boxes + others:
            s.reset_object(label_id)
        self._message(f"{why}: re-segmenting {name!r} from {len(boxes)} box(es)"
                      + (f" and {len(others)} other prompt(s)" if others else ""))
        return gens

    def _on_box_added(self, index: int) -> None:
        layer = self.box_layer
        if layer.shape_type[index] != "rectangle":
            self._message("only rectangles are box prompts; other shapes are ignored", "warning")
            return
        lid = self.ensure_object()
        feats = layer.features
        verts = np.asarray(layer.data[index])
        self._syncing += 1
        try:
            feats.loc[index, "object_id"] = lid
            if self.volume.ndim == 3:
                z = int(round(float(np.median(verts[:, 0]))))
                lo, hi = self.pending_z
                lo = z if lo is None else min(lo, z)
                hi = z if hi is None else max(hi, z)
                feats.loc[index, "z_min"] = lo
                feats.loc[index, "z_max"] = hi
            layer.features = feats
            self._color_box(index, lid)
        finally:
            self._syncing -= 1
        self.pending_z = [None, None]
        ext = self._box_extent_text(index)
        if self.auto_run:
            self.run_box(index)
        self._message(f"box for {self.objects[lid].name!r}{ext}"
                      + ("" if self.volume.ndim == 2 else " — step slices and press , / . to set the z extent"))

    def _color_box(self, index: int, lid: int) -> None:
        info = self.objects.get(lid)
        if info is None or info.color is None:
            return
        ec = np.array(self.box_layer.edge_color, dtype=float)
        if len(ec) > index:
            ec[index] = info.color
            self.box_layer.edge_color = ec

    def _box_extent_text(self, index: int) -> str:
        if self.volume.ndim != 3:
            return ""
        f = self.box_layer.features.iloc[index]
        return f", z {int(f['z_min'])}–{int(f['z_max'])}"

    def _target_box(self) -> int | None:
        layer = self.box_layer
        if layer is None or len(layer.data) == 0:
            return None
        sel = sorted(layer.selected_data)
        if len(sel) == 1:
            return sel[0]
        if self.current_id is not None:
            ids = np.asarray(layer.features["object_id"])
            mine = np.flatnonzero(ids == self.current_id)
            if len(mine):
                return int(mine[-1])
        return None

    def _on_box_selection(self, event: Any = None) -> None:
        """Selecting a box makes its object current."""
        if self._syncing or self.box_layer is None or self.session is None:
            return
        sel = sorted(self.box_layer.selected_data)
        if len(sel) == 1 and sel[0] < len(self.box_layer.features):
            lid = int(self.box_layer.features["object_id"].iloc[sel[0]])
            if lid in self.objects and lid != self.current_id:
                self.select_object(lid)
            elif lid > 0 and lid not in self.objects:  # a file box not run yet: its object starts here
                self.add_object(label_id=lid)

    def set_z_bound(self, which: str, z: int | None = None) -> None:
        """Set ``z_min`` (``which="min"``) or ``z_max`` of the target box to slice ``z``.

        ``z`` defaults to the current slice. The target is the selected box, else the
        current object's newest box; with no box yet, the extent is remembered for
        the next rectangle drawn.
        """
        self._require_session()
        if self.volume.ndim != 3:
            self._message("a 2D image has no z extent", "warning")
            return
        if which not in ("min", "max"):
            raise ValueError(f"which must be 'min' or 'max'; got {which!r}")
        z = self.current_z() if z is None else int(z)
        z = min(max(int(z), 0), self.volume.spatial_shape[0] - 1)
        idx = self._target_box()
        if idx is None:
            self.pending_z[0 if which == "min" else 1] = z
            lo, hi = self.pending_z
            self._message(f"next box z extent: {'?' if lo is None else lo}–{'?' if hi is None else hi}")
            self.events.tools.emit()
            return
        self.set_box_extent(idx, **({"z_min": z} if which == "min" else {"z_max": z}))

    def set_box_extent(self, index: int, *, z_min: int | None = None, z_max: int | None = None) -> None:
        """Change the z extent of box ``index`` (kept ordered and containing its drawn slice); re-runs it."""
        layer = self.box_layer
        feats = layer.features
        lo = int(feats["z_min"].iloc[index]) if z_min is None else int(z_min)
        hi = int(feats["z_max"].iloc[index]) if z_max is None else int(z_max)
        if lo > hi:
            if z_min is not None:
                hi = lo
            else:
                lo = hi
        zdraw = int(round(float(np.median(np.asarray(layer.data[index])[:, 0]))))
        lo, hi = min(lo, zdraw), max(hi, zdraw)
        self._syncing += 1
        try:
            feats.loc[index, "z_min"] = lo
            feats.loc[index, "z_max"] = hi
            layer.features = feats
        finally:
            self._syncing -= 1
        self._sync_box_extents()
        self.events.tools.emit()
        self.events.objects.emit()  # the object list shows the z range
        self._message(f"box {index + 1}: z {lo}–{hi}")
        if self.auto_run:
            lid = int(feats["object_id"].iloc[index])
            if lid in self.objects and any(isinstance(p, (Box3D, Box2D)) for p in
                                           self.session.prompts_in_effect(lid)):
                self.rerun_object_boxes(lid, why=f"box {index + 1} now spans z {lo}–{hi}")
            else:
                self.run_box(index)

    def box_extent_outlines(self, z: int | None = None) -> list[tuple[np.ndarray, int]]:
        """The rectangles to outline faintly on slice ``z`` (default: the current one): every box
        whose z extent holds ``z`` but that was drawn on another slice, moved onto ``z``, with
        its object's label id."""
        layer = self.box_layer
        z = self.current_z() if z is None else int(z)
        if z is None or layer is None or len(layer.data) == 0 or "z_min" not in layer.features:
            return []
        f = layer.features
        out = []
        for i, (lid, lo, hi) in enumerate(zip(np.asarray(f["object_id"], int), np.asarray(f["z_min"], int),
                                              np.asarray(f["z_max"], int))):
            if layer.shape_type[i] != "rectangle" or not lo <= z <= hi:
                continue
            verts = np.array(layer.data[i], dtype=float)
            if int(round(float(np.median(verts[:, 0])))) == z:
                continue  # drawn on this slice: the boxes layer shows it
            verts[:, 0] = z
            out.append((verts, int(lid)))
        return out

    def _sync_box_extents(self) -> None:
        """Show :meth:`box_extent_outlines` of the current slice in the extents layer."""
        ext = getattr(self, "extent_layer", None)
        if ext is None or self.session is None:
            return
        outlines = self.box_extent_outlines()
        colors = [tuple(self.objects[lid].color) if lid in self.objects and self.objects[lid].color is not None
                  else (1.0, 1.0, 0.0, 1.0) for _, lid in outlines]
        key = tuple((tuple(np.round(v, 3).ravel()), c) for (v, _), c in zip(outlines, colors))
        if key == self._shown_extents:
            return
        self._syncing += 1
        try:
            # (Shapes.remove, not a selection of all: napari 0.6.5 fails selecting several shapes
            # of which none is on the displayed slice)
            ext.remove(list(range(len(ext.data))))
            if outlines:
                ext.add_rectangles([v for v, _ in outlines], edge_color=np.array(colors, dtype=float),
                                   face_color="transparent", edge_width=1.5)
        finally:
            self._syncing -= 1
        self._shown_extents = key

    def object_z_ranges(self) -> dict[int, tuple[int, int]]:
        """``label_id -> (z_min, z_max)`` over each object's rectangles (3D images; else empty)."""
        layer = self.box_layer
        if self.volume is None or self.volume.ndim != 3 or layer is None or len(layer.data) == 0 \
                or "z_min" not in layer.features:
            return {}
        f = layer.features
        out: dict[int, tuple[int, int]] = {}
        for lid, lo, hi in zip(np.asarray(f["object_id"], int), np.asarray(f["z_min"], int),
                               np.asarray(f["z_max"], int)):
            if lid <= 0:
                continue
            a, b = out.get(int(lid), (int(lo), int(hi)))
            out[int(lid)] = (min(a, int(lo)), max(b, int(hi)))
        return out

    def box_extent(self, index: int | None = None) -> tuple[int, int] | None:
        """``(z_min, z_max)`` of a box (default: the target box)."""
        idx = self._target_box() if index is None else index
        if idx is None or self.box_layer is None or "z_min" not in self.box_layer.features:
            return None
        f = self.box_layer.features.iloc[idx]
        return int(f["z_min"]), int(f["z_max"])

    def run_box(self, index: int | None = None) -> int | None:
        """Send box ``index`` (default: the target box) to the backend; returns the generation."""
        self._require_session()
        idx = self._target_box() if index is None else index
        if idx is None:
            self._message("no box to run: draw a rectangle first (B)", "warning")
            return None
        try:
            prompt = self._box_prompt(idx)
        except ValueError as exc:
            self._message(f"box {idx + 1}: {exc}", "error")
            return None
        return self.submit(prompt)

    def run_all_boxes(self) -> list[int]:
        """Run every rectangle of the boxes layer, creating the objects they name.

        Boxes read from a CVPR file belong to labels ``1..N`` (their ``object_id``
        feature); objects are created with the file's class names when missing.
        """
        self._require_session()
        layer = self.box_layer
        if layer is None or len(layer.data) == 0:
            self._message("no boxes to run", "warning")
            return []
        feats = layer.features
        gens: list[int] = []
        done: set[int] = set()
        for i in range(len(layer.data)):
            if layer.shape_type[i] != "rectangle":
                continue
            lid = int(feats["object_id"].iloc[i])
            if lid <= 0:
                lid = self.add_object(select=False)
                feats.loc[i, "object_id"] = lid
            elif lid not in self.session.objects:
                self.add_object(self.label_names.get(lid, ""), label_id=lid, select=False)
            self._syncing += 1
            try:
                self._color_box(i, lid)
            finally:
                self._syncing -= 1
            if lid in done:
                continue
            done.add(lid)
            s = self.session
            if any(isinstance(p, (Box3D, Box2D)) for p in s.prompts_in_effect(lid)) \
                    or len(self._object_box_indices(lid)) > 1:
                gens += self.rerun_object_boxes(lid, why="run all boxes", force=True)
            else:
                g = self.run_box(i)
                if g is not None:
                    gens.append(g)
        self._syncing += 1
        try:
            layer.features = feats
        finally:
            self._syncing -= 1
        if self.current_id is None and self.objects:
            self.select_object(min(self.objects))
        self.events.objects.emit()
        self._message(f"running {len(gens)} box(es)…")
        return gens

    def _boxes_follow_objects(self, now: set[int]) -> None:
        """An object's rectangles live as long as the object: deleting it (Shift+Del, undoing its
        creation) takes them out of the boxes layer, undoing that puts them back. (A file box
        whose object was never created stays: "Run all boxes" creates its object.)"""
        gone, back = self._known_objects - now, now - self._known_objects
        self._known_objects = set(now)
        layer = self.box_layer
        if layer is None or not (gone or back):
            return
        self._syncing += 1
        try:
            for lid in sorted(gone):
                idx = [int(i) for i in np.flatnonzero(np.asarray(layer.features["object_id"]) == lid)] \
                    if len(layer.data) else []
                if not idx:
                    continue
                feats = layer.features
                self._removed_boxes[lid] = [
                    (np.asarray(layer.data[i]).copy(), str(layer.shape_type[i]),
                     {k: feats[k].iloc[i] for k in feats.columns}) for i in idx]
                layer.selected_data = set(idx)
                layer.remove_selected()
            for lid in sorted(back):
                for verts, kind, row in self._removed_boxes.pop(lid, []):
                    _set_defaults(layer, **row)
                    layer.add([verts], shape_type=kind)
                    self._color_box(len(layer.data) - 1, lid)
            _set_defaults(layer, object_id=self.current_id or 0)
        finally:
            self._syncing -= 1
        self._sync_box_extents()
