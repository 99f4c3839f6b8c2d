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
(the case's file, "Save as", a host's save handler). This module keeps attaching,
objects, the other prompt tools, inference and the session's change events.
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..backends.base import BackendStatus, capability_names
from ..engine.postprocess import BBox
from ..engine.session import AnnotationSession, Change, InferenceResult
from ..types import (
    Capability,
    Prompt,
    Scribble,
    TextPrompt,
    Volume,
    prompt_kind,
    required_capability,
    validate_prompt,
)
from .backend_picker import BackendPicker
from .box_tool import BoxTool, slices_to_warm
from .events import ControllerEvents
from .layer_sync import (
    NEGATIVE_RGBA,
    POSITIVE_RGBA,
    LayerSync,
    _is_layer,
    _set_defaults,
)
from .objects import ObjectRow, format_volume, rgba_to_hex, short_class_name
from .prompts import (
    point_to_prompt,
    scribbles_from_atoms,
)
from .saving import Saving

__all__ = ["AnnotationController", "ToolState", "TOOLS", "volume_from_layer", "short_class_name", "slices_to_warm"]

log = logging.getLogger(__name__)

TOOLS = ("box", "click", "scribble", "brush", "text", "z_extent", "run_boxes")

_KIND_NAMES = {"box3d": "3D box", "box2d": "2D box", "point": "click", "scribble": "scribble", "text": "text"}


@dataclass(frozen=True)
class ToolState:
    """Whether a tool can be used now, and why not."""

    enabled: bool
    reason: str = ""


@dataclass
class _Inflight:
    label_id: int
    t_submit: float
    kind: str


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








def _bbox_of_atoms(atoms: Any, shape: tuple[int, ...]) -> BBox | None:
    lo = np.full(len(shape), np.iinfo(np.int64).max, dtype=np.int64)
    hi = np.full(len(shape), -1, dtype=np.int64)
    for atom in atoms:
        if hasattr(atom, "slice_key"):
            key = atom.slice_key
            lo = np.minimum(lo, [s.start or 0 for s in key])
            hi = np.maximum(hi, [(s.stop if s.stop is not None else n) - 1 for s, n in zip(key, shape)])
        else:
            idx = atom[0]
            if len(idx) == 0 or np.asarray(idx[0]).size == 0:
                continue
            lo = np.minimum(lo, [int(np.min(a)) for a in idx])
            hi = np.maximum(hi, [int(np.max(a)) for a in idx])
    if np.any(hi < 0):
        return None
    lo = np.clip(lo, 0, np.asarray(shape) - 1)
    hi = np.clip(hi, 0, np.asarray(shape) - 1)
    return tuple(slice(int(a), int(b) + 1) for a, b in zip(lo, hi))




class AnnotationController(LayerSync, BoxTool, BackendPicker, Saving):
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
                self.extent_layer.selected_data = set(range(len(self.extent_layer.data)))
                self.extent_layer.remove_selected()
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

    @property
    def capabilities(self) -> Capability:
        b = self.session.backend if self.session is not None else None
        return getattr(b, "capabilities", Capability.NONE) if b is not None else Capability.NONE

    def tool_states(self) -> dict[str, ToolState]:
        """Enabled state of each tool in :data:`TOOLS`, with the reason when disabled."""
        out: dict[str, ToolState] = {}
        if self.session is None:
            why = "open an image first"
            return {t: ToolState(False, why) for t in TOOLS}
        caps = self.capabilities
        name = self._backend_name or "no backend"
        loading = self._backend_loading is not None and self.session.backend is None
        in3d = self.viewer.dims.ndisplay == 3
        vol3d = self.volume.ndim == 3
        axial = not vol3d or tuple(self.viewer.dims.order[-2:]) == (
            self.viewer.dims.ndim - 2, self.viewer.dims.ndim - 1)

        def cap(flag: Capability, label: str) -> ToolState:
            if loading:
                return ToolState(False, f"loading backend {self._backend_loading}…")
            if self.session.backend is None:
                return ToolState(False, "pick a backend first")
            if not (flag & caps):
                have = ", ".join(capability_names(caps)) or "nothing"
                return ToolState(False, f"backend {name!r} cannot use {label} (it supports: {have})")
            return ToolState(True)

        box_caps = Capability.BOX3D | Capability.BOX2D
        st = cap(box_caps, "boxes")
        if st.enabled and in3d:
            st = ToolState(False, "boxes are drawn on a slice: switch to the 2D view (Ctrl+Y)")
        elif st.enabled and not axial:
            st = ToolState(False, "boxes are drawn on axial (z) slices: reset the axis order (View > Axes)")
        out["box"] = st
        out["run_boxes"] = cap(box_caps, "boxes")
        out["z_extent"] = (ToolState(False, "2D image: no z extent") if not vol3d else
                           cap(Capability.BOX3D, "3D boxes"))
        st = cap(Capability.POINTS, "clicks")
        if st.enabled and in3d:
            st = ToolState(False, "clicks are placed on a slice: switch to the 2D view (Ctrl+Y)")
        out["click"] = st
        st = cap(Capability.SCRIBBLE, "scribbles")
        if st.enabled and in3d:
            st = ToolState(False, "scribbles are painted on a slice: switch to the 2D view (Ctrl+Y)")
        out["scribble"] = st
        out["brush"] = (ToolState(False, "the brush paints on a slice: switch to the 2D view (Ctrl+Y)") if in3d
                        else ToolState(True))
        if loading or self.session.backend is None or Capability.TEXT in caps:
            out["text"] = cap(Capability.TEXT, "text")
        else:
            out["text"] = ToolState(False, f"backend {name!r} cannot segment from text: the text only names the "
                                           "object; segment it with a box, clicks or scribbles")
        return out

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

    # ================================================================ tools
    def activate_tool(self, tool: str) -> None:
        """Select the layer and mode of a tool: ``box``, ``click``, ``scribble``, ``brush``, ``pan``."""
        self._require_session()
        if tool != "pan":
            st = self.tool_states().get(tool)
            if st is not None and not st.enabled:
                self._message(st.reason, "warning")
                return
        self._ensure_prompt_layers()
        sel = self.viewer.layers.selection
        if tool == "box":
            self.ensure_object()
            self._select_current_in_layers()
            sel.active = self.box_layer
            self.box_layer.selected_data = set()
            self.box_layer.mode = "add_rectangle"
        elif tool == "click":
            self.ensure_object()
            sel.active = self.click_layer
            self.click_layer.mode = "add"
        elif tool == "scribble":
            self.ensure_object()
            sel.active = self.scribble_layer
            self.scribble_layer.selected_label = 2 if self.negative else 1
            self.scribble_layer.mode = "paint"
        elif tool == "brush":
            lid = self.ensure_object()
            sel.active = self.seg_layer
            self.seg_layer.selected_label = lid
            self.seg_layer.mode = "paint"
        elif tool == "pan":
            active = sel.active
            if active is not None and hasattr(active, "mode"):
                active.mode = "pan_zoom"
        else:
            raise ValueError(f"unknown tool {tool!r}; expected box, click, scribble, brush or pan")
        self.events.tools.emit()

    def set_negative(self, negative: bool) -> None:
        """Clicks and scribbles mark background (True) or the object (False)."""
        self.negative = bool(negative)
        if self.scribble_layer is not None and self.scribble_layer.selected_label in (1, 2):
            self.scribble_layer.selected_label = 2 if negative else 1
        self.events.tools.emit()
        self._message("negative (background) prompts" if negative else "positive (object) prompts")

    def toggle_negative(self) -> None:
        self.set_negative(not self.negative)

    # ------------------------------------------------------------ clicks
    def _on_points_press(self, layer: Any, event: Any) -> None:
        mods = {str(getattr(m, "name", m)).lower() for m in (event.modifiers or ())}
        self._press_shift = "shift" in mods
        if layer.mode == "add":
            positive = not (self.negative ^ self._press_shift)
            layer.selected_data = set()
            self._syncing += 1
            try:
                _set_defaults(layer, object_id=self.current_id or 0, positive=positive)
                layer.current_face_color = POSITIVE_RGBA if positive else NEGATIVE_RGBA
            finally:
                self._syncing -= 1

    def _on_points_data(self, event: Any) -> None:
        if self._syncing or self.session is None:
            return
        if str(getattr(event, "action", "")) != "added":
            return
        layer = self.click_layer
        n = len(layer.data)
        idx = sorted({i % n for i in (event.data_indices or ())}) if n else []
        for i in idx:
            positive = bool(layer.features["positive"].iloc[i]) if "positive" in layer.features else True
            self.add_click(layer.data[i], positive=positive, _from_layer=True)

    def add_click(self, coord: Any, positive: bool = True, *, _from_layer: bool = False) -> int | None:
        """Submit a click at data coordinate ``coord`` for the current object."""
        self._require_session()
        lid = self.ensure_object()
        try:
            p = point_to_prompt(coord, self.volume.spatial_shape, lid, positive=positive)
        except ValueError as exc:
            self._message(str(exc), "error")
            if _from_layer:
                self._shown_points = None
                self._sync_prompt_layers()
            return None
        gen = self.submit(p)
        if not _from_layer:
            self._shown_points = None
            self._sync_prompt_layers()
        elif gen is None:
            self._shown_points = None
            self._sync_prompt_layers()
        return gen

    # ------------------------------------------------------------ scribbles
    def _on_scribble_paint(self, event: Any) -> None:
        if self._syncing or self.session is None:
            return
        lid = self.ensure_object()
        prompts = scribbles_from_atoms(event.value, self.volume.spatial_shape, lid)
        shown = self._shown_scribbles
        for p in prompts:
            self.submit(p)
        if shown is not None and lid == self.current_id:
            # napari already draws the stroke: count it as shown, no rewrite of the layer
            mine = self.session.prompts_in_effect(lid)
            self._shown_scribbles = tuple(id(p) for p in mine if isinstance(p, Scribble))

    # ------------------------------------------------------------ brush
    def _on_seg_paint(self, event: Any) -> None:
        if self._syncing or self.session is None:
            return
        bbox = _bbox_of_atoms(event.value, tuple(self.seg_layer.data.shape))
        if bbox is None:
            return
        values = {int(getattr(a, "new_value", 0)) for a in event.value if hasattr(a, "new_value")}
        desc = "eraser" if values == {0} else "brush"
        sess = self.session

        def commit() -> None:
            # napari emits ``paint`` before writing for programmatic paint() calls: commit afterwards.
            # (napari keeps its own bounded stroke history too; Ctrl+Z is the dock's while docked.)
            if self.session is sess:
                sess.apply_edit(bbox=bbox, description=desc)

        self._post(commit)

    # ------------------------------------------------------------ text
    def text_prompt(self, text: str, *, instance: bool | None = None) -> int | None:
        """Name the current object ``text`` and, if the backend reads text, segment it from the text."""
        self._require_session()
        text = (text or "").strip()
        if not text:
            return None
        lid = self.ensure_object()
        self.rename_object(lid, text)
        if self._backend_loading is None and Capability.TEXT not in self.capabilities:
            self._message(f"named the object {text!r}. Backend {self._backend_name or 'none'!r} cannot segment "
                          "from text: draw a box, click or scribble on it.")
            return None
        inst = self.objects[lid].instance if instance is None else instance
        return self.submit(TextPrompt(text, instance=bool(inst), object_id=lid))

    # ================================================================ inference
    @property
    def busy(self) -> bool:
        return bool(self._inflight) or self._backend_loading is not None

    @property
    def busy_since(self) -> float | None:
        if not self._inflight:
            return None
        return min(f.t_submit for f in self._inflight.values())

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    def submit(self, prompt: Prompt, *, replace: bool = False) -> int | None:
        """Validate ``prompt`` and queue it on the session's worker; returns the generation.

        Problems (unsupported kind, outside the volume) become an error
        notification and return ``None``; nothing is lost. ``replace``: the prompt
        starts the object's prompts anew (see ``AnnotationSession.submit``).
        """
        self._require_session()
        s = self.session
        if s.backend is None:
            if self._backend_loading is not None:
                self._deferred.append((prompt, replace))
                self._message(f"{_KIND_NAMES.get(prompt_kind(prompt), 'prompt')} queued: "
                              f"backend {self._backend_loading} is loading")
                return None
            self._message("no backend selected: pick one in the Backend list", "error")
            return None
        need = required_capability(prompt)
        if not (need & self.capabilities):
            self._message(
                f"backend {self._backend_name!r} cannot use a {_KIND_NAMES.get(prompt_kind(prompt))} "
                f"(it supports {', '.join(capability_names(self.capabilities)) or 'nothing'})", "error")
            return None
        try:
            validate_prompt(prompt, self.volume.spatial_shape)
        except ValueError as exc:
            self._message(f"prompt outside the image: {exc}", "error")
            return None
        t0 = time.perf_counter()
        sess = s

        def done(res: InferenceResult) -> None:  # worker thread
            self._post(lambda: self._on_result(sess, res, t0))

        try:
            gen = s.submit(prompt, done, replace=replace)
        except ValueError as exc:
            self._message(str(exc), "error")
            return None
        self._inflight[gen] = _Inflight(prompt.object_id, t0, prompt_kind(prompt))
        self.events.busy.emit(True)
        self.events.objects.emit()
        return gen

    def _on_result(self, sess: AnnotationSession, res: InferenceResult, t0: float) -> None:
        self._inflight.pop(res.generation, None)
        if sess is not self.session:
            return
        applied = sess.apply_result(res)
        name = self.objects.get(res.label_id).name if res.label_id in self.objects else f"object {res.label_id}"
        if res.error is not None and not res.stale:
            self._message(f"segmenting {name!r} failed ({res.backend}): {res.error_message}. "
                          "The prompt was dropped; the labels are unchanged.", "error")
            self._shown_points = self._shown_scribbles = None
            self._sync_prompt_layers()
        elif applied:
            self.last_backend_s = res.elapsed_s
            self.last_roundtrip_s = time.perf_counter() - t0
            waited = self.warmup_overlap(t0, t0 + res.queued_s)
            self.last_warmup_wait_s = waited
            self.last_queued_s = max(0.0, res.queued_s - waited)
            vox = self._voxels.get(res.label_id, 0)
            size = f"{vox:,} {self.size_unit}" if self.size_unit else format_volume(vox * self.volume.voxel_volume_ml)
            self._message(f"{name}: {size}"
                          f" in {res.elapsed_s:.2f} s ({res.backend})")
        elif res.cancelled and not self._inflight:
            self._message("cancelled")
        self.events.busy.emit(self.busy)
        self.events.objects.emit()

    def cancel(self) -> None:
        """Cancel every queued and running request (results are discarded)."""
        if self.session is None:
            return
        self.session.cancel()
        self._deferred.clear()
        self._message("cancelling…")

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
