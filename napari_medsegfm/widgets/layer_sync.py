"""Layer synchronisation of the annotation controller: the napari layers it makes, adopts and redraws.

Qt-free (napari's layer models only). The segmentation (Labels, shares the session's
labels), boxes (Shapes), clicks (Points) and scribbles (Labels) layers of an image are
created or adopted here, tied to their image by ``metadata["medsegfm_image_id"]``, and
the current object's prompts are mirrored into the clicks and scribbles layers.
:class:`LayerSync` is a mixin of
:class:`~napari_medsegfm.widgets.controller.AnnotationController`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..engine.postprocess import BBox
from ..types import Point, Prompt, Scribble
from .objects import rgba_to_hex, short_class_name
from .prompts import points_of, scribble_voxels_of

__all__ = ["LayerSync", "POSITIVE_RGBA", "NEGATIVE_RGBA", "set_if_changed"]

POSITIVE_RGBA = (0.1, 0.9, 0.2, 1.0)
NEGATIVE_RGBA = (1.0, 0.15, 0.15, 1.0)
def _set_defaults(layer: Any, **values: Any) -> None:
    """Set some feature defaults of a Points/Shapes layer, keeping the other columns' defaults."""
    cur = layer.feature_defaults
    d = {k: cur[k].iloc[0] for k in cur.columns} if len(cur) else {}
    for k in list(layer.features.columns):
        d.setdefault(k, layer.features[k].iloc[-1] if len(layer.features) else 0)
    d.update(values)
    layer.feature_defaults = d


def set_if_changed(layer: Any, **values: Any) -> None:
    """Set layer attributes that differ (napari re-slices and re-transforms on every ``scale``/
    ``translate`` assignment, even an equal one)."""
    for k, v in values.items():
        cur = getattr(layer, k)
        if k in ("scale", "translate", "contrast_limits"):
            a, b = np.asarray(cur, dtype=float), np.asarray(v, dtype=float)
            if a.shape == b.shape and np.allclose(a, b):
                continue
        elif isinstance(cur, (str, bool, int, float, dict)) and cur == v:
            continue
        setattr(layer, k, v)


def _is_layer(obj: Any, kind: str) -> bool:
    return type(obj).__name__ == kind or any(c.__name__ == kind for c in type(obj).__mro__)


class LayerSync:
    """The controller's napari layers (mixin; see module docstring)."""

    def _layer_kwargs(self) -> dict[str, Any]:
        im = self.image_layer
        nsp = len(self.volume.spatial_shape)
        return {"scale": tuple(np.asarray(im.scale)[-nsp:]), "translate": tuple(np.asarray(im.translate)[-nsp:])}

    def _make_layers(self, seg_src: Any) -> None:
        from napari.layers import Labels  # napari's model layers are Qt-free

        assert self.session is not None and self.volume is not None
        meta = {"medsegfm_role": "segmentation", "medsegfm_key": self.save_key, **self._owner_meta()}
        if self.case_path is not None:
            meta.update(medsegfm_case=str(self.case_path), medsegfm_format=self.case_format)
        if seg_src is not None:
            seg = seg_src
            seg.data = self.session.labels
            seg.metadata = {**seg.metadata, **meta}
        else:
            seg = Labels(self.session.labels, name=f"{self.image_layer.name} segmentation", metadata=meta,
                         opacity=0.6, **self._layer_kwargs())
            self.viewer.layers.append(seg)
        self.seg_layer = seg
        self._apply_colormap()
        self._connect(seg.events.paint, self._on_seg_paint)
        self._make_prompt_layers()
        self.viewer.layers.selection.active = self.image_layer

    def _make_prompt_layers(self) -> None:
        """Create (or adopt) the boxes, clicks and scribbles layers that are missing."""
        from napari.layers import Labels, Points, Shapes
        from napari.utils.colormaps import DirectLabelColormap

        base = self.image_layer.name
        kw = self._layer_kwargs()
        nd = len(self.volume.spatial_shape)
        if self.box_layer is None:
            boxes = None
            for ly in self.viewer.layers:
                m = ly.metadata or {}
                if _is_layer(ly, "Shapes") and ly.ndim == nd and (
                    "boxes" in (m.get("medsegfm_role"), m.get("medsegfm_kind")) or "z_min" in ly.features
                ) and self._belongs(ly, self.image_layer, reusable=True):
                    boxes = ly
                    break
            if boxes is None:
                boxes = Shapes(ndim=nd, name=f"{base} boxes", edge_color="yellow", face_color="transparent",
                               edge_width=2, metadata={"medsegfm_role": "boxes", **self._owner_meta()}, **kw)
                self.viewer.layers.append(boxes)
            elif (boxes.metadata or {}).get("medsegfm_image_id") != self._owner_meta()["medsegfm_image_id"]:
                boxes.metadata = {**(boxes.metadata or {}), **self._owner_meta()}
            for k, v in dict((boxes.metadata or {}).get("medsegfm_box_names") or {}).items():
                self.label_names.setdefault(int(k), short_class_name(str(v)))
            self._prepare_box_features(boxes)
            self.box_layer = boxes
            self._connect(boxes.events.data, self._on_boxes_data)
            self._connect(boxes.selected_data.events.items_changed, self._on_box_selection)

        if self.click_layer is None:
            # a clicks layer left by an earlier attach (the next case in the dataset navigator) is
            # reused: adding and removing napari layers is what makes switching images slow
            pts = self._adopt("Points", "clicks", nd)
            if pts is not None:
                self._syncing += 1
                try:
                    pts.selected_data = set()
                    pts.data = np.zeros((0, nd))
                    pts.features = {"object_id": np.zeros(0, int), "positive": np.zeros(0, bool)}
                    set_if_changed(pts, name=f"{base} clicks", scale=kw["scale"], translate=kw["translate"])
                finally:
                    self._syncing -= 1
            else:
                pts = Points(np.zeros((0, nd)), ndim=nd, name=f"{base} clicks", size=7, border_width=0.15,
                             border_color="white", face_color=rgba_to_hex(POSITIVE_RGBA),
                             features={"object_id": np.zeros(0, int), "positive": np.zeros(0, bool)},
                             metadata={"medsegfm_role": "clicks", **self._owner_meta()}, **kw)
                self.viewer.layers.append(pts)
            pts.feature_defaults = {"object_id": 0, "positive": True}
            self.click_layer = pts
            self._connect(pts.events.data, self._on_points_data)
            if self._on_points_press not in pts.mouse_drag_callbacks:
                pts.mouse_drag_callbacks.insert(0, self._on_points_press)
            self._shown_points = None

        if self.scribble_layer is None:
            shape = tuple(self.volume.spatial_shape)
            scr = self._adopt("Labels", "scribbles", nd)
            if scr is not None:
                self._syncing += 1
                try:
                    if tuple(scr.data.shape) != shape:
                        scr.data = np.zeros(shape, dtype=np.uint8)
                    # (its old strokes are cleared by _sync_prompt_layers below)
                    set_if_changed(scr, name=f"{base} scribbles", scale=kw["scale"], translate=kw["translate"])
                finally:
                    self._syncing -= 1
            else:
                scr = Labels(np.zeros(shape, dtype=np.uint8), name=f"{base} scribbles",
                             metadata={"medsegfm_role": "scribbles", **self._owner_meta()}, opacity=0.9, **kw)
                scr.colormap = DirectLabelColormap(color_dict={0: (0, 0, 0, 0), 1: POSITIVE_RGBA, 2: NEGATIVE_RGBA,
                                                               None: (1, 1, 0, 1)})
                scr.brush_size = 6
                self.viewer.layers.append(scr)
            self.scribble_layer = scr
            self._connect(scr.events.paint, self._on_scribble_paint)
            self._shown_scribbles = None

        if self.extent_layer is None and nd == 3:
            # the boxes' outlines on the other slices of their z extent (faint, not editable)
            ext = self._adopt("Shapes", "box_extents", nd)
            if ext is None:
                ext = Shapes(ndim=nd, name=f"{base} box extents", edge_color="yellow", face_color="transparent",
                             edge_width=1.5, opacity=0.45,
                             metadata={"medsegfm_role": "box_extents", **self._owner_meta()}, **kw)
                self.viewer.layers.append(ext)
            else:
                set_if_changed(ext, name=f"{base} box extents", scale=kw["scale"], translate=kw["translate"])
            self.extent_layer = ext
            self._shown_extents = None
        self._sync_prompt_layers()
        self._sync_box_extents()

    def _adopt(self, kind: str, role: str, ndim: int) -> Any:
        """A ``kind`` layer this controller made (``metadata["medsegfm_role"] == role``) and no
        longer uses, of dimensionality ``ndim``, to reuse: this image's own, or one whose image
        left the viewer (the dataset navigator's next case); never another image's. ``None`` if
        there is none."""
        mine = {id(ly) for ly in (self.seg_layer, self.box_layer, self.click_layer, self.scribble_layer,
                                  self.extent_layer)
                if ly is not None}
        cands = [ly for ly in self.viewer.layers
                 if _is_layer(ly, kind) and (ly.metadata or {}).get("medsegfm_role") == role and ly.ndim == ndim
                 and id(ly) not in mine and ly is not self.gt_layer and self._belongs(ly, self.image_layer,
                                                                                      reusable=True)]
        own = [ly for ly in cands if (ly.metadata or {}).get("medsegfm_image_id") == self._image_id()]
        ly = (own or cands or [None])[0]
        if ly is not None:
            ly.metadata = {**(ly.metadata or {}), **self._owner_meta()}
        return ly

    def _image_id(self, image_layer: Any = None) -> str:
        im = image_layer if image_layer is not None else self.image_layer
        return str(im.unique_id)

    def _owner_meta(self) -> dict[str, Any]:
        """Metadata that ties a layer this controller makes to its image (layers, objects and
        names of one image never serve another)."""
        return {"medsegfm_image_id": self._image_id()}

    def _belongs(self, layer: Any, image_layer: Any, *, reusable: bool = False) -> bool:
        """Whether ``layer`` (labels, boxes, clicks, scribbles) goes with ``image_layer``.

        A layer made for an image (``medsegfm_image_id``) goes with that image only, or — with
        ``reusable`` — with any image once its own left the viewer. A layer read from a case
        (``medsegfm_case``) goes with the image of the same case. A layer without either tag (a
        user's own) goes with any image, as before.
        """
        m = layer.metadata or {}
        owner = m.get("medsegfm_image_id")
        if owner:
            if owner == self._image_id(image_layer):
                return True
            if not reusable:
                return False
            return not any(str(ly.unique_id) == owner for ly in self.viewer.layers if _is_layer(ly, "Image"))
        case = m.get("medsegfm_case")
        img_case = (image_layer.metadata or {}).get("medsegfm_case")
        if case or img_case:
            return bool(case) and str(case) == str(img_case)
        return True

    def _apply_colormap(self) -> None:
        from napari.utils.colormaps import DirectLabelColormap

        if self.session is None or self.seg_layer is None:
            return
        cd: dict[Any, Any] = {0: (0.0, 0.0, 0.0, 0.0), None: (0.8, 0.8, 0.8, 1.0)}
        for lid, info in self.session.objects.items():
            cd[lid] = tuple(info.color) if info.color is not None else (0.8, 0.8, 0.8, 1.0)
        key = (id(self.seg_layer), tuple(sorted((k, v) for k, v in cd.items() if k is not None)))
        if key == self._colormap_key:
            return  # a new colormap re-uploads the layer's textures: only when colours changed
        self._colormap_key = key
        self.seg_layer.colormap = DirectLabelColormap(color_dict=cd)

    def _on_layer_removed(self, event: Any) -> None:
        ly = event.value
        if ly is self.image_layer:
            unsaved = self.dirty
            self.detach()
            self._message("the annotated image was removed" +
                          ("; its unsaved segmentation is still in the segmentation layer (File > Save Selected "
                           "Layers)" if unsaved else ""), "warning" if unsaved else None)
            return
        if ly is self.seg_layer:
            # the segmentation holds the session's labels: put it back unless the image went too
            def restore() -> None:
                if self.seg_layer is ly and self.image_layer in self.viewer.layers and ly not in self.viewer.layers:
                    self.viewer.layers.append(ly)
                    self._message("the segmentation layer holds the annotation and stays while annotating; "
                                  "use Delete object or Reset object to clear it", "warning")

            self._post(restore)
        for attr in ("box_layer", "click_layer", "scribble_layer", "extent_layer"):
            if getattr(self, attr) is ly:
                setattr(self, attr, None)
        self.events.tools.emit()

    def _ensure_prompt_layers(self) -> None:
        if self.session is not None and None in (self.box_layer, self.click_layer, self.scribble_layer):
            self._make_prompt_layers()

    def _refresh_region(self, bbox: BBox | None) -> None:
        """Redraw the segmentation layer after the session changed its labels in place.

        Public napari API only: a re-slice of the displayed data without the thumbnail,
        extent and highlight work (``Layer.refresh`` keywords). On a 63x512x512 CT at
        1280x800 under Xvfb it took 120-290 ms per result against 140-200 ms for napari's
        private partial-texture update (noisy machine; the canvas draw dominates both).
        ``bbox`` (the changed region) is accepted for callers; unused.
        """
        layer = self.seg_layer
        if layer is None:
            return
        layer.refresh(thumbnail=False, extent=False, highlight=False)

    def _points_layer_shows(self, coords: np.ndarray, positive: np.ndarray) -> bool:
        layer = self.click_layer
        data = np.asarray(layer.data)
        if data.shape != coords.shape or "positive" not in layer.features:
            return False
        if len(data) == 0:
            return True
        return bool(np.array_equal(np.floor(data + 0.5), coords)
                    and np.array_equal(np.asarray(layer.features["positive"], dtype=bool), positive))

    def _sync_prompt_layers_soon(self) -> None:
        if self._sync_posted:
            return
        self._sync_posted = True

        def run() -> None:
            self._sync_posted = False
            self._sync_prompt_layers()

        self._post(run)

    def _sync_prompt_layers(self) -> None:
        """Show the current object's clicks and scribbles (applied + pending) in the prompt layers."""
        s = self.session
        if s is None:
            return
        lid = self.current_id
        prompts: list[Prompt] = []
        if lid is not None and lid in s.objects:
            prompts = s.prompts_in_effect(lid)
        pts = tuple(p for p in prompts if isinstance(p, Point))
        if self.click_layer is not None and pts != self._shown_points:
            coords, pos = points_of(pts)
            nd = self.click_layer.ndim
            if len(pts) == 0:
                coords = np.zeros((0, nd))
            if self._points_layer_shows(coords, pos):
                self._shown_points = pts  # napari already shows them (the user just clicked): no redraw
                coords = None
        if self.click_layer is not None and pts != self._shown_points:
            colors = np.array([POSITIVE_RGBA if p else NEGATIVE_RGBA for p in pos]).reshape(-1, 4)
            self._syncing += 1
            try:
                import pandas as pd

                self.click_layer.selected_data = set()
                self.click_layer.data = coords
                self.click_layer.features = pd.DataFrame({"object_id": np.full(len(pts), lid or 0, int),
                                                          "positive": pos.astype(bool)})
                if len(pts):
                    self.click_layer.face_color = colors
            finally:
                self._syncing -= 1
            self._shown_points = pts
        scr = tuple(id(p) for p in prompts if isinstance(p, Scribble))
        if self.scribble_layer is not None and scr != self._shown_scribbles:
            data = self.scribble_layer.data
            self._syncing += 1
            try:
                data[...] = 0
                for vox, positive in scribble_voxels_of(prompts):
                    data[tuple(vox.T)] = 1 if positive else 2
                self.scribble_layer.refresh()
            finally:
                self._syncing -= 1
            self._shown_scribbles = scr
