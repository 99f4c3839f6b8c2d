"""The annotation controller: napari layers in, session prompts out, results back into a Labels layer.

Qt-free. It works on a napari ``ViewerModel`` (or a ``Viewer``) and never imports a
Qt binding, so every behaviour of the dock widget can be tested headless. The Qt
view (:mod:`.view`) only builds widgets and wires their signals to the methods here.

Threads
-------
Inference runs on the session's one persistent worker
(:meth:`AnnotationSession.submit <napari_medsegfm.engine.session.AnnotationSession.submit>`).
The worker's callback only *posts* the result: ``post(fn)`` must run ``fn`` later
on the GUI thread (the view passes a Qt queued signal; headless code uses the
built-in queue and :meth:`AnnotationController.process_pending`). On the GUI
thread :meth:`_on_result` calls ``session.apply_result`` (stale results are refused
there) and refreshes only the changed box of the Labels layer. Backend loading
(which may read weights) and saving also run off the GUI thread.

Layers
------
``<image> segmentation`` (Labels, shares ``session.labels``; napari's brush and
eraser paint into it and every stroke is committed as one undo step),
``<image> boxes`` (Shapes, rectangles with features ``object_id``, ``z_min``,
``z_max``; a CVPR boxes layer made by the reader is adopted), ``<image> clicks``
(Points, features ``object_id``, ``positive``; green positive, red negative) and
``<image> scribbles`` (Labels, 1 = object, 2 = background). All share the image's
scale and translate, so data coordinates are voxel indices of the image.

Parts
-----
The class is assembled from Qt-free mixins, one per concern: :mod:`.layer_sync`
(making, adopting and redrawing those layers), :mod:`.box_tool` (rectangles and their
z extent), :mod:`.backend_picker` (listing and loading backends) and :mod:`.saving`
(the case's file, "Save as", a host's save handler), :mod:`.object_list` (the objects and
their rows), :mod:`.prompt_tools` (tool states, clicks, scribbles, brush, text) and
:mod:`.inference` (prompts onto the worker, results back). This module keeps attaching,
the view state, the session's change events and undo.
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..backends.base import BackendStatus
from ..engine.session import AnnotationSession, Change
from ..types import Prompt, Volume
from .backend_picker import BackendPicker
from .box_tool import BoxTool, slices_to_warm
from .events import ControllerEvents
from .inference import Inference, _Inflight
from .layer_sync import LayerSync, _is_layer
from .object_list import ObjectList
from .objects import short_class_name
from .prompt_tools import TOOLS, PromptTools, ToolState
from .saving import Saving

__all__ = ["AnnotationController", "ToolState", "TOOLS", "volume_from_layer", "short_class_name", "slices_to_warm"]

log = logging.getLogger(__name__)


def _napari_notify(level: str, message: str) -> None:
    try:
        from napari.utils import notifications
    except ImportError:  # pragma: no cover - napari is a dependency
        log.warning("%s: %s", level, message)
        return
    {"error": notifications.show_error, "warning": notifications.show_warning}.get(
        level, notifications.show_info)(message)


def volume_from_layer(layer: Any) -> Volume:
    """A :class:`~napari_medsegfm.types.Volume` viewing a napari Image layer's data.

    Spacing comes from ``metadata["medsegfm_spacing"]`` when the plugin's reader set
    it, else from the layer's ``scale``; the source path and format from the
    ``medsegfm_*`` metadata or the layer's ``source``.
    """
    data = layer.data
    if getattr(layer, "multiscale", False):
        data = data[0]
    arr = np.asarray(data)
    meta = dict(getattr(layer, "metadata", {}) or {})
    source = meta.get("medsegfm_case") or getattr(getattr(layer, "source", None), "path", None)
    vmeta: dict[str, Any] = {"source": str(source) if source else "", "format": meta.get("medsegfm_format", ""),
                             "layer": layer.name}
    rgb = bool(getattr(layer, "rgb", False))
    nsp = 2 if rgb else arr.ndim
    if arr.ndim - (1 if rgb else 0) not in (2, 3) or (rgb and arr.ndim != 3):
        raise ValueError(
            f"image layer {layer.name!r} has shape {arr.shape}; expected a 3D volume (Z, Y, X), "
            "a 2D image (Y, X) or a 2D RGB image (Y, X, 3)"
        )
    spacing = meta.get("medsegfm_spacing")
    if spacing is None or len(spacing) != nsp:
        spacing = tuple(float(s) for s in np.asarray(layer.scale)[-nsp:])
    spacing = tuple(float(abs(s)) if s else 1.0 for s in spacing)
    if rgb:
        return Volume.rgb(arr, spacing=spacing, meta=vmeta)
    return Volume(arr, spacing=spacing, meta=vmeta)


class AnnotationController(LayerSync, BoxTool, BackendPicker, Saving, ObjectList, PromptTools, Inference):
    """Qt-free logic of the annotation dock widget (see module docstring).

    Parameters
    ----------
    viewer : napari.components.ViewerModel
        The viewer (a ``napari.Viewer`` is one).
    post : callable, optional
        ``post(fn)`` runs ``fn()`` soon on the GUI thread; thread-safe. Default: an
        internal queue drained by :meth:`process_pending`.
    notify : callable, optional
        ``notify(level, message)`` with level ``"error" | "warning" | "info"``;
        default: napari notifications.
    backend : str or backend instance or None
        Backend to load on :meth:`attach` (``"default"``: the registry's default).
    undo_levels : int
        Undo steps kept by the session.
    """

    def __init__(
        self,
        viewer: Any,
        *,
        post: Callable[[Callable[[], None]], None] | None = None,
        notify: Callable[[str, str], None] | None = None,
        backend: Any = "default",
        undo_levels: int = 200,
        session_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        self.viewer = viewer
        self.events = ControllerEvents()
        self._queue: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._post = post or self._queue.put
        self._notify = notify or _napari_notify
        self._backend_request = backend
        self._undo_levels = undo_levels
        self._session_kwargs = dict(session_kwargs or {})
        self._gui_thread = threading.current_thread()

        self.session: AnnotationSession | None = None
        self.volume: Volume | None = None
        self.image_layer: Any = None
        self.seg_layer: Any = None
        self.box_layer: Any = None
        self.click_layer: Any = None
        self.scribble_layer: Any = None
        self.extent_layer: Any = None  # 3D: the boxes' outlines on the other slices of their z extent
        self._shown_extents: Any = None
        self.gt_layer: Any = None

        self.current_id: int | None = None
        self.negative = False
        self.auto_run = True
        self.pending_z: list[int | None] = [None, None]
        self.case_path: Path | None = None
        self.case_format: str = ""
        self.save_key = "segs"
        self._save_path_override: Path | None = None
        self._save_handler: Callable[[], Any] | None = None
        self._save_target = ""
        self._labels_meta: dict[str, Any] = {}
        self.label_names: dict[int, str] = {}
        self.last_backend_s: float | None = None
        self.last_roundtrip_s: float | None = None
        self.last_queued_s: float = 0.0  # the last result waited this long behind other prompts
        self.last_warmup_wait_s: float = 0.0  # ... and this long for the model's warm-up (image encoding)
        self.last_warmup_s: float | None = None  # how long the last warm-up took
        self._warmup_span: list[float | None] | None = None  # [start, end] of the image's preparation
        self.last_message = ""

        self._inflight: dict[int, _Inflight] = {}
        self._deferred: list[tuple[Prompt, bool]] = []  # (prompt, replace) while a backend loads
        self._backend_name = ""
        self._backend_inst: Any = None  # kept across attach: the next image uses the same model
        self._backend_status: BackendStatus | None = None
        self._backend_loading: str | None = None
        self._backend_token = 0
        self._statuses: dict[str, BackendStatus] = {}
        self._colormap_key: Any = None
        self._voxels: dict[int, int] = {}
        self._known_objects: set[int] = set()  # objects the boxes layer follows (see _boxes_follow_objects)
        self._removed_boxes: dict[int, list[tuple[np.ndarray, str, dict[str, Any]]]] = {}
        self._version = 0
        self._saved_version = 0
        self._saving = False
        self._syncing = 0
        self._press_shift = False
        self._shown_points: tuple[Any, ...] | None = None
        self._shown_scribbles: tuple[int, ...] | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="medsegfm-io")
        self._connections: list[tuple[Any, Callable[..., Any]]] = []
        self._closed = False
        self._sync_posted = False

    # ================================================================ plumbing
    def post(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the GUI thread (now when already there and nothing is queued)."""
        self._post(fn)

    def process_pending(self, timeout: float = 0.0) -> int:
        """Run callables posted to the internal queue (headless use); returns how many ran.

        With ``timeout`` > 0, waits up to that long for the first one.
        """
        n = 0
        if timeout > 0:
            try:
                fn = self._queue.get(timeout=timeout)
            except queue.Empty:
                return 0
            fn()
            n += 1
        while True:
            try:
                fn = self._queue.get_nowait()
            except queue.Empty:
                return n
            fn()
            n += 1

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Headless helper: process posted callables until nothing is in flight."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.process_pending(timeout=0.02)
            if not self.busy and not self._saving:
                self.process_pending()
                return True
        return False

    def _on_gui(self, fn: Callable[[], None]) -> None:
        if threading.current_thread() is self._gui_thread:
            fn()
        else:
            self._post(fn)

    def _message(self, text: str, level: str | None = None) -> None:
        self.last_message = text
        self.events.status.emit(text)
        if level is not None:
            self._notify(level, text)

    def _connect(self, emitter: Any, fn: Callable[..., Any]) -> None:
        emitter.connect(fn)
        self._connections.append((emitter, fn))

    # ================================================================ attach
    @property
    def attached(self) -> bool:
        return self.session is not None

    def find_image_layer(self) -> Any:
        """The image to annotate: one opened by the plugin's reader, else the active or first Image."""
        images = [ly for ly in self.viewer.layers if _is_layer(ly, "Image")]
        if not images:
            return None
        tagged = [ly for ly in images if (ly.metadata or {}).get("medsegfm_case")]
        active = self.viewer.layers.selection.active
        if active in images:
            return active
        for group in ([ly for ly in tagged if ly.visible], tagged, [ly for ly in images if ly.visible], images):
            if group:
                return group[-1]
        return None

    def attach(self, image_layer: Any = None, *, backend: Any = None) -> None:
        """Start annotating ``image_layer`` (default: :meth:`find_image_layer`).

        Raises ``ValueError`` when there is no suitable image.
        """
        if image_layer is None:
            image_layer = self.find_image_layer()
        if image_layer is None:
            raise ValueError("no image layer to annotate: open a case first (File > Open, or a sample)")
        if self.session is not None:
            self.detach()
        try:
            self._attach(image_layer)
        except Exception:
            self.detach()
            raise
        if backend is None and self._backend_inst is not None:
            # the next image keeps the backend in use (no reload, no fall-back to the first choice)
            self._backend_token += 1
            self._install_backend(self._backend_token, self._backend_inst, None, self._backend_name)
        else:
            b = backend if backend is not None else self._backend_request
            if b is not None:
                self.set_backend(b)
        n_boxes = len(self.box_layer.data) if self.box_layer is not None else 0
        extra = f"; {n_boxes} box prompt(s) from the file — Run all boxes (Ctrl+Shift+Enter)" if n_boxes else ""
        self._message(f"Annotating {image_layer.name!r} {'x'.join(map(str, self.volume.spatial_shape))}{extra}")
        self.events.tools.emit()

    def _attach(self, image_layer: Any) -> None:
        volume = volume_from_layer(image_layer)
        shape = volume.spatial_shape
        self.image_layer = image_layer
        self.volume = volume
        meta = dict(image_layer.metadata or {})

        # labels already in the viewer for this image: the reader's gts/segs layers
        seg_src, gt = None, None
        for ly in self.viewer.layers:
            if not _is_layer(ly, "Labels") or tuple(ly.data.shape) != tuple(shape):
                continue
            if not self._belongs(ly, image_layer):  # another image's labels (same shape or not)
                continue
            m = ly.metadata or {}
            key = m.get("medsegfm_key")
            if m.get("medsegfm_role") in ("scribbles",):
                continue
            if key in ("segs", "prev_pred", "all_segs") or m.get("medsegfm_role") == "segmentation":
                seg_src = seg_src or ly
            elif key == "gts":
                gt = gt or ly
        self.gt_layer = gt
        self._labels_meta = dict((seg_src or gt).metadata) if (seg_src or gt) is not None else {}
        src_meta = {**(gt.metadata if gt is not None else {}), **(seg_src.metadata if seg_src is not None else {}),
                    **meta}
        case = src_meta.get("medsegfm_case") or volume.meta.get("source") or ""
        self.case_path = Path(case) if case else None
        self.case_format = str(src_meta.get("medsegfm_format") or volume.meta.get("format") or "")
        names = src_meta.get("medsegfm_label_names") or {}
        self.label_names = {int(k): short_class_name(str(v)) for k, v in dict(names).items()}
        # corrections are saved as ``segs`` (never over ``gts``; ``prev_pred`` is a challenge input)
        self.save_key = "segs"

        initial = np.asarray(seg_src.data) if seg_src is not None else None
        self.session = AnnotationSession(
            volume, None, labels=initial, undo_levels=self._undo_levels,
            label_names=self.label_names or None, **self._session_kwargs,
        )
        self.session.add_listener(self._on_change_any_thread)
        self._version = self._saved_version = 0

        self._make_layers(seg_src)
        self._known_objects = set(self.session.objects)
        self._removed_boxes = {}
        if gt is not None and seg_src is None and gt.visible:
            gt.visible = False  # the new segmentation draws over it; its eye toggles it back for comparison
        self._recount()
        objs = self.session.objects
        self.current_id = min(objs) if objs else None
        self._connect(self.viewer.dims.events.ndisplay, self._on_view_changed)
        self._connect(self.viewer.dims.events.order, self._on_view_changed)
        self._connect(self.viewer.dims.events.current_step, self._on_slice_changed)
        self._connect(self.viewer.layers.events.removed, self._on_layer_removed)
        self.events.attached.emit(True)
        self.events.objects.emit()
        self.events.current.emit(self.current_id)
        self._select_current_in_layers()
        if not self._statuses:
            self.refresh_backends()

    def detach(self) -> None:
        """Stop annotating (the layers stay in the viewer)."""
        for emitter, fn in self._connections:
            try:
                emitter.disconnect(fn)
            except (ValueError, RuntimeError, TypeError):
                pass
        self._connections.clear()
        for ly, cb in ((self.click_layer, self._on_points_press),):
            if ly is not None and cb in ly.mouse_drag_callbacks:
                ly.mouse_drag_callbacks.remove(cb)
        if self.session is not None:
            self.session.remove_listener(self._on_change_any_thread)
            self.session.close()
        self.session = None
        self._warmup_span = None
        self._inflight.clear()
        self._deferred.clear()
        self._save_handler, self._save_target = None, ""  # every attach starts with the default
        self._save_path_override = None  # "Save as" of the previous image must not catch this one's Ctrl+S
        if self.extent_layer is not None:  # its outlines belong to this image's boxes
            try:
                self.extent_layer.remove(list(range(len(self.extent_layer.data))))
            except (ValueError, RuntimeError, IndexError):
                pass
        self._shown_extents = None
        self.image_layer = self.seg_layer = self.box_layer = self.click_layer = self.scribble_layer = None
        self.extent_layer = None
        self.volume = None
        self.current_id = None
        self.events.attached.emit(False)
        self.events.busy.emit(False)

    def close(self) -> None:
        """Detach and stop the background threads."""
        if self._closed:
            return
        self._closed = True
        self.detach()
        self._executor.shutdown(wait=True)

    # ================================================================ view state
    def current_z(self) -> int | None:
        """The displayed slice index of a 3D image (``None`` for 2D images)."""
        if self.volume is None or self.volume.ndim != 3:
            return None
        pos = self.image_layer.world_to_data(self.viewer.dims.point)
        z = int(round(float(pos[0])))
        return min(max(z, 0), self.volume.spatial_shape[0] - 1)

    def _on_view_changed(self, event: Any = None) -> None:
        self.events.tools.emit()

    def _on_slice_changed(self, event: Any = None) -> None:
        self._sync_box_extents()
        self._warm_towards_current_slice()

    # ================================================================ changes
    def _on_change_any_thread(self, change: Change) -> None:
        self._on_gui(lambda: self._on_change(change))

    def _on_change(self, change: Change) -> None:
        s = self.session
        if s is None:
            return
        if change.kind not in ("backend", "error"):
            self._version += 1
        if change.labels_replaced and self.seg_layer is not None:
            self._syncing += 1
            try:
                self.seg_layer.data = s.labels
            finally:
                self._syncing -= 1
        elif change.labels_changed:
            self._refresh_region(change.bbox)
        if change.labels_changed or change.kind in ("undo", "redo", "object_delete", "object_reset"):
            ids = set(change.label_ids) if change.bbox is not None else set(s.objects) | set(self._voxels)
            for lid in ids:
                self._voxels[lid] = s.object_voxels(lid) if lid in s.objects else 0
        if change.objects_changed or change.kind in ("undo", "redo"):
            self._apply_colormap()
            self._boxes_follow_objects(set(s.objects))
            for lid in list(self._voxels):
                if lid not in s.objects:
                    self._voxels.pop(lid, None)
            if self.current_id is not None and self.current_id not in s.objects:
                ids = sorted(s.objects)
                self.current_id = None
                self.select_object(ids[-1] if ids else None)
                self.events.current.emit(self.current_id)
            if self.current_id is not None and (self.current_id in change.label_ids or
                                                change.kind in ("undo", "redo")):
                if change.kind == "result":
                    # a prompt layer update (napari re-checks the dims of every layer) in a later
                    # event-loop turn than the labels update: two short GUI stalls, not one long
                    self._sync_prompt_layers_soon()
                else:
                    self._sync_prompt_layers()
            if change.kind in ("undo", "redo", "object_add", "object_delete", "object_color"):
                self._select_current_in_layers()
            if change.kind in ("object_color", "undo", "redo", "object_add", "object_delete"):
                self._sync_box_extents()
            if change.kind in ("object_color", "undo", "redo") and self.box_layer is not None:
                self._syncing += 1
                try:
                    for lid in change.label_ids:
                        for i in self._object_box_indices(lid):
                            self._color_box(i, lid)
                finally:
                    self._syncing -= 1
        self.events.objects.emit()
        self.events.history.emit()

    def _recount(self) -> None:
        s = self.session
        self._voxels = {lid: s.object_voxels(lid) for lid in s.objects}

    # ================================================================ undo
    @property
    def can_undo(self) -> bool:
        return self.session is not None and self.session.can_undo

    @property
    def can_redo(self) -> bool:
        return self.session is not None and self.session.can_redo

    def undo(self) -> None:
        if self.session is None:
            return
        ch = self.session.undo()
        self._message(ch.description if ch else "nothing to undo")

    def redo(self) -> None:
        if self.session is None:
            return
        ch = self.session.redo()
        self._message(ch.description if ch else "nothing to redo")

    # ================================================================ helpers
    def _require_session(self) -> None:
        if self.session is None:
            raise ValueError("no image attached: open a case and press Start (or call attach())")
