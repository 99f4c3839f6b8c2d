"""The dataset navigator's case editors: how an open case is shown in the viewer (Qt-free).

Two editors, one interface (``show(open_case, prediction)``, ``clear()``, ``labels()``,
``labels_layer``):

* :class:`LayerEditor` — plain napari layers (image, editable segmentation, hidden
  pre-segmentation contours), reused from case to case;
* :class:`AnnotationEditor` — the case handed to the interactive segmentation
  controller (any object with a ``controller`` attribute holding an
  :class:`~napari_medsegfm.widgets.controller.AnnotationController`, e.g. the dock
  widget), its Save routed to the dataset's sidecar.

Both work on a napari ``ViewerModel`` (tested headless); the Qt table and dock widget
are in :mod:`.case_table` and :mod:`.navigator`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import numpy as np

from ..dataset.workspace import OpenCase
from .layer_sync import set_if_changed

__all__ = ["LayerEditor", "AnnotationEditor", "remove_layers", "contrast_limits"]


def remove_layers(viewer: Any, layers: Any) -> None:
    """Remove layers with one scene-graph rebuild: napari runs a full ``gc.collect()`` after each
    removal (and after each batched update, so nothing is batched when nothing is removed)."""
    alive: list[Any] = []
    for lay in layers:
        if lay is not None and lay in viewer.layers and all(lay is not a for a in alive):
            alive.append(lay)
    if not alive:
        return
    fn = getattr(viewer.layers, "batched_update", None)
    with fn() if callable(fn) and len(alive) > 1 else contextlib.nullcontext():
        for lay in alive:
            viewer.layers.remove(lay)


def contrast_limits(arr: np.ndarray) -> tuple[float, float]:
    """Display range (finite even with NaN/inf voxels): the io layer's rule."""
    from ..io.layers import contrast_limits_for

    lo, hi = contrast_limits_for(arr)
    return lo, hi


class LayerEditor:
    """Shows an open case in the viewer with plain layers, reusing them from case to case.

    Layers: ``image`` (+ extra images), ``segmentation`` (editable labels, the array of
    :attr:`OpenCase.labels` itself, so brush edits land in it in place), and, when a
    pre-segmentation exists, ``pre-segmentation`` (contours, hidden).
    """

    IMAGE = "image"
    LABELS = "segmentation"
    PRED = "pre-segmentation"

    def __init__(self, viewer: Any, on_edit: Callable[[], None]) -> None:
        self.viewer = viewer
        self.on_edit = on_edit
        self._labels_layer: Any = None
        self._extra: list[Any] = []

    def labels(self) -> np.ndarray | None:
        return None if self._labels_layer is None else np.asarray(self._labels_layer.data)

    @property
    def labels_layer(self) -> Any:
        return self._labels_layer

    def _layer(self, name: str) -> Any:
        try:
            return self.viewer.layers[name]
        except KeyError:
            return None

    def show(self, oc: OpenCase, prediction: np.ndarray | None = None) -> None:
        vol = oc.case.image
        meta = {"medsegfm_case": str(oc.entry.path), "medsegfm_format": oc.entry.fmt, "medsegfm_case_id": oc.case_id}
        scale = tuple(vol.spacing)
        arr = vol.array
        rgb = bool(vol.is_rgb)
        clim = contrast_limits(arr)
        img = self._layer(self.IMAGE)
        if img is not None and (img.rgb != rgb or img.data.ndim != arr.ndim):
            self.viewer.layers.remove(img)
            img = None
        if img is None:
            img = self.viewer.add_image(arr, name=self.IMAGE, scale=scale, rgb=rgb, contrast_limits=clim,
                                        metadata=meta)
        else:
            img.data = arr
            set_if_changed(img, scale=scale)
            if not rgb:
                img.contrast_limits_range = clim
                img.contrast_limits = clim
            img.metadata = meta
        remove_layers(self.viewer, self._extra)
        self._extra = []
        for name, extra in oc.case.images.items():
            self._extra.append(self.viewer.add_image(extra.array, name=f"image: {name}", scale=tuple(extra.spacing),
                                                     visible=False, contrast_limits=contrast_limits(extra.array)))
        pred = self._layer(self.PRED)
        if prediction is not None and prediction.shape == oc.labels.shape:
            if pred is None:
                pred = self.viewer.add_labels(prediction, name=self.PRED, scale=scale[-prediction.ndim:],
                                              visible=False, opacity=0.8)
                pred.contour = 1
                pred.editable = False
            else:
                pred.data = prediction
                set_if_changed(pred, scale=scale[-prediction.ndim:])
        elif pred is not None:
            self.viewer.layers.remove(pred)
        lab = self._labels_layer
        if lab is not None and lab not in self.viewer.layers:
            lab = None
        lmeta = dict(meta, medsegfm_key="segs")
        if lab is None or lab.data.ndim != oc.labels.ndim:
            if lab is not None:
                self.viewer.layers.remove(lab)
            lab = self.viewer.add_labels(oc.labels, name=self.LABELS, scale=scale[-oc.labels.ndim:], metadata=lmeta)
            lab.events.paint.connect(self._painted)
            lab.events.data.connect(self._painted)
            self._labels_layer = lab
        else:
            with lab.events.data.blocker(self._painted):
                lab.data = oc.labels
            set_if_changed(lab, scale=scale[-oc.labels.ndim:])
            lab.metadata = lmeta
        lab.editable = not oc.read_only
        lab.name = self.LABELS + (" (read-only)" if oc.read_only else "")
        self.viewer.layers.selection.active = lab
        if arr.ndim >= 3 and not rgb:
            self.viewer.dims.set_point(0, (arr.shape[0] // 2) * scale[0])
        self.viewer.reset_view()

    def _painted(self, event: Any = None) -> None:
        self.on_edit()

    def clear(self) -> None:
        remove_layers(self.viewer, [self._labels_layer, self._layer(self.IMAGE), self._layer(self.PRED),
                                     *self._extra])
        self._labels_layer = None
        self._extra = []


class AnnotationEditor:
    """Shows an open case through the interactive segmentation widget (:class:`AnnotationWidget`).

    The case's layers are built like the plugin's reader builds them
    (:func:`napari_medsegfm.io.layers.case_to_layers`: image(s), boxes, clicks), the
    segmentation layer holds the case's starting labels (saved correction, else existing
    labels), then the widget's controller attaches to the image. Edits and accepted
    prompts are reported through the session's listener. The widget's Save (Ctrl+S, the
    Save button, "Save" when napari closes) is routed to ``save`` — the case's sidecar
    correction — through ``AnnotationController.set_save_handler``: the dataset's original
    files are never written by it.

    Layers are reused from case to case where the kind and dimensionality match (new data
    is swapped in): adding and removing napari layers is what makes switching slow
    (napari runs a full garbage collection after each removal, and new layers build their
    GL programs). That includes the controller's boxes (emptied for a case without file
    boxes), clicks and scribbles layers, which the next attach adopts.
    """

    def __init__(self, viewer: Any, widget: Any, on_change: Callable[[bool], None],
                 save: Callable[[], Any] | None = None, save_target: str = "") -> None:
        self.viewer = viewer
        self.widget = widget
        self.on_change = on_change
        self.save = save
        self.save_target = save_target
        self._images: list[Any] = []
        self._seg: Any = None
        self._pred: Any = None
        self._boxes: Any = None
        self._others: list[Any] = []
        self._prompt_layers: list[Any] = []  # the controller's clicks/scribbles, kept for the next attach
        self._session: Any = None

    @property
    def controller(self) -> Any:
        return self.widget.controller

    def labels(self) -> np.ndarray | None:
        s = self.controller.session
        return None if s is None else s.labels

    @property
    def labels_layer(self) -> Any:
        return self.controller.seg_layer

    def _listener(self, change: Any) -> None:
        if change.kind in ("backend", "error"):
            return
        self.on_change(change.kind in ("result", "object_accept"))

    def _alive(self, lay: Any) -> bool:
        return lay is not None and lay in self.viewer.layers

    def _detach(self) -> list[Any]:
        """Detach the controller; returns layers it used that are not kept for the next case.

        Its clicks/scribbles layers are kept (the next attach adopts them), and so is a box
        layer it made itself (it becomes this editor's box layer, emptied or refilled by
        :meth:`show`).
        """
        ctrl = self.controller
        stale: list[Any] = []
        self._prompt_layers = [ly for ly in (ctrl.click_layer, ctrl.scribble_layer, ctrl.extent_layer)
                               if self._alive(ly)]
        if ctrl.box_layer is not None and ctrl.box_layer is not self._boxes:
            if self._alive(self._boxes) or not self._alive(ctrl.box_layer):
                stale.append(ctrl.box_layer)
            else:
                self._boxes = ctrl.box_layer
        if ctrl.seg_layer is not None and ctrl.seg_layer is not self._seg:
            stale.append(ctrl.seg_layer)
        if self._session is not None:
            try:
                self._session.remove_listener(self._listener)
            except (ValueError, AttributeError):
                pass
            self._session = None
        if ctrl.attached:
            ctrl.detach()
        return stale

    def clear(self) -> None:
        stale = self._detach()
        remove_layers(self.viewer, [*stale, *self._prompt_layers, *self._images, self._seg, self._pred, self._boxes,
                                     *self._others])
        self._images, self._seg, self._pred, self._boxes, self._others = [], None, None, None, []
        self._prompt_layers = []

    def _put(self, old: Any, data: Any, kw: dict[str, Any], kind: str, remove: list[Any]) -> Any:
        """Swap ``data`` into ``old`` when compatible, else queue ``old`` for removal and add a new layer."""
        if self._alive(old) and type(old).__name__.lower() == kind and getattr(old, "ndim", None) == (
                np.ndim(data) - (1 if kw.get("rgb") else 0)) and bool(getattr(old, "rgb", False)) == bool(kw.get("rgb")):
            old.data = data
            set_if_changed(old, **{k: kw[k] for k in ("scale", "metadata", "name", "visible", "contrast_limits")
                                   if k in kw})
            return old
        if old is not None:
            remove.append(old)
        return getattr(self.viewer, f"add_{kind}")(data, **kw)

    def show(self, oc: OpenCase, prediction: np.ndarray | None = None) -> None:
        from ..io.layers import case_to_layers

        remove = self._detach()
        case = oc.case
        scale = tuple(float(v) for v in case.image.spacing)
        labels_kw: dict[str, Any] | None = None
        images, others, boxes = [], [], None
        for data, kw, kind in case_to_layers(case):
            if kind == "labels":
                if labels_kw is None or kw.get("metadata", {}).get("medsegfm_key") == "gts":
                    labels_kw = kw
            elif kind == "image":
                images.append((data, kw))
            elif kind == "shapes" and (kw.get("metadata") or {}).get("medsegfm_kind") == "boxes" and boxes is None:
                boxes = (data, kw)
            else:
                others.append((data, kw, kind))
        if not images:
            raise ValueError(f"case {oc.case_id!r} has no image to annotate")
        # images: reuse by position
        new_images = []
        for i, (data, kw) in enumerate(images):
            kw = dict(kw, contrast_limits=kw.get("contrast_limits") or contrast_limits(data))
            if kw.get("rgb"):
                kw.pop("contrast_limits", None)
            old = self._images[i] if i < len(self._images) else None
            new_images.append(self._put(old, data, kw, "image", remove))
        remove.extend(self._images[len(images):])
        self._images = new_images
        image_layer = next((ly for ly, (_, kw) in zip(new_images, images) if kw.get("visible", True)), new_images[0])
        # boxes: reuse the shapes layer (data + features swapped), or hide an empty one
        if boxes is not None:
            data, kw = boxes
            if self._alive(self._boxes) and self._boxes.ndim == np.asarray(data[0]).shape[-1]:
                lay = self._boxes
                lay.selected_data = set()
                lay.data = [(np.asarray(r), "rectangle") for r in data]
                lay.features = kw.get("features", {})
                set_if_changed(lay, scale=kw["scale"], metadata=kw["metadata"], name=kw["name"], visible=True)
            else:
                if self._boxes is not None:
                    remove.append(self._boxes)
                lay = self.viewer.add_shapes(data, **kw)
            self._boxes = lay
        elif self._alive(self._boxes) and self._boxes.ndim == case.image.ndim:
            # no boxes in this case: keep the layer, empty, for the boxes the user draws
            lay = self._boxes
            # (keeps the feature columns consistent, unlike data = []; no selection of all: napari
            # 0.6.5 fails selecting several shapes of which none is on the displayed slice)
            lay.remove(list(range(len(lay.data))))
            set_if_changed(lay, metadata={"medsegfm_role": "boxes"}, name=f"{case.name} boxes",
                           scale=scale[-lay.ndim:])
        elif self._alive(self._boxes):
            remove.append(self._boxes)
            self._boxes = None
        remove.extend(self._others)
        self._others = [getattr(self.viewer, f"add_{kind}")(d, **kw) for d, kw, kind in others]
        # pre-segmentation (hidden contours) for review
        if prediction is not None and prediction.shape == oc.labels.shape:
            pkw = {"name": f"{case.name} pre-segmentation", "scale": scale, "visible": False,
                   "metadata": {"medsegfm_role": "prediction"}}
            self._pred = self._put(self._pred, prediction, pkw, "labels", remove)
            self._pred.contour = 1
            self._pred.editable = False
        elif self._pred is not None:
            remove.append(self._pred)
            self._pred = None
        # the segmentation layer: the case's starting labels
        md = dict((labels_kw or {}).get("metadata") or {})
        md.update(medsegfm_case=str(case.source or oc.entry.path), medsegfm_format=case.format or oc.entry.fmt,
                  medsegfm_key="segs", medsegfm_role="segmentation", medsegfm_case_id=oc.case_id,
                  medsegfm_label_names={int(k): v for k, v in oc.label_names.items()})
        skw: dict[str, Any] = {"name": f"{case.name} segmentation", "scale": scale, "metadata": md, "opacity": 0.6}
        if not self._alive(self._seg):
            skw.update({k: v for k, v in (labels_kw or {}).items() if k in ("colormap", "features")})
        self._seg = self._put(self._seg, oc.labels, skw, "labels", remove)
        remove_layers(self.viewer, remove)
        self.controller.attach(image_layer)
        ctrl = self.controller
        unused = [ly for ly in self._prompt_layers
                  if ly is not ctrl.click_layer and ly is not ctrl.scribble_layer and ly is not ctrl.extent_layer]
        remove_layers(self.viewer, unused)  # not adopted (e.g. a 2D case after a 3D one)
        self._prompt_layers = []
        if self.save is not None:
            self.controller.set_save_handler(self.save, target=self.save_target)
        sess = self.controller.session
        if sess is not None:
            sess.add_listener(self._listener)
            self._session = sess
        lab = self.controller.seg_layer
        if lab is not None:
            lab.editable = not oc.read_only
        if case.image.ndim == 3:
            self.viewer.dims.set_point(0, (case.image.spatial_shape[0] // 2) * scale[0])
        self.viewer.reset_view()
