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
    Box2D,
    Box3D,
    Capability,
    Point,
    Prompt,
    Scribble,
    TextPrompt,
    Volume,
    prompt_kind,
    required_capability,
    validate_prompt,
)
from .objects import ObjectRow, format_volume, rgba_to_hex
from .prompts import (
    point_to_prompt,
    points_of,
    rectangle_to_prompt,
    scribble_voxels_of,
    scribbles_from_atoms,
)

__all__ = ["AnnotationController", "Emitter", "ToolState", "TOOLS", "volume_from_layer", "short_class_name", "slices_to_warm"]

log = logging.getLogger(__name__)

TOOLS = ("box", "click", "scribble", "brush", "text", "z_extent", "run_boxes")

POSITIVE_RGBA = (0.1, 0.9, 0.2, 1.0)
NEGATIVE_RGBA = (1.0, 0.15, 0.15, 1.0)
_KIND_NAMES = {"box3d": "3D box", "box2d": "2D box", "point": "click", "scribble": "scribble", "text": "text"}


class Emitter:
    """A minimal, Qt-free signal: ``connect(fn)``, ``disconnect(fn)``, ``emit(*args)``."""

    def __init__(self) -> None:
        self._callbacks: list[Callable[..., Any]] = []

    def connect(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        self._callbacks.append(fn)
        return fn

    def disconnect(self, fn: Callable[..., Any] | None = None) -> None:
        if fn is None:
            self._callbacks.clear()
        elif fn in self._callbacks:
            self._callbacks.remove(fn)

    def emit(self, *args: Any) -> None:
        for fn in list(self._callbacks):
            try:
                fn(*args)
            except Exception:
                log.exception("listener %r failed", fn)


class _Events:
    def __init__(self) -> None:
        self.busy = Emitter()  # (busy: bool)
        self.objects = Emitter()  # ()
        self.current = Emitter()  # (label_id | None)
        self.status = Emitter()  # (message: str)
        self.tools = Emitter()  # ()
        self.backends = Emitter()  # (dict name -> BackendStatus)
        self.backend = Emitter()  # (name, BackendStatus | None)
        self.history = Emitter()  # ()  undo/redo availability changed
        self.saved = Emitter()  # (path)
        self.attached = Emitter()  # (attached: bool)


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


def short_class_name(text: str) -> str:
    """A short object name for a class description (CVPR text prompts are sentences).

    ``"CT imaging of the spleen within the abdomen"`` -> ``"spleen"`` through the class
    vocabulary; text of up to three words, or text the vocabulary cannot place, is kept.
    """
    text = text.strip()
    if len(text.split()) <= 3:
        return text
    try:
        from ..engine.vocab import resolve

        res = resolve(text)
    except (ImportError, OSError, ValueError):
        return text
    return str(res.name) if res.ok and res.name else text


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


def slices_to_warm(z: int, z_min: int, z_max: int) -> list[int]:
    """Slices to encode ahead while the user stands on slice ``z`` outside a box's ``[z_min, z_max]``:
    ``z`` itself, the slices between it and the box, then two beyond (empty inside the box)."""
    if z < z_min:
        return [z, *range(z + 1, z_min), z - 1, z - 2]
    if z > z_max:
        return [z, *range(z - 1, z_max, -1), z + 1, z + 2]
    return []


class AnnotationController:
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
        self.events = _Events()
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
        self.last_queued_s: float = 0.0
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
        self._inflight.clear()
        self._deferred.clear()
        self._save_handler, self._save_target = None, ""  # every attach starts with the default
        self._save_path_override = None  # "Save as" of the previous image must not catch this one's Ctrl+S
        self.image_layer = self.seg_layer = self.box_layer = self.click_layer = self.scribble_layer = None
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

    # ---------------------------------------------------------------- layers
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
        self._sync_prompt_layers()

    def _adopt(self, kind: str, role: str, ndim: int) -> Any:
        """A ``kind`` layer this controller made (``metadata["medsegfm_role"] == role``) and no
        longer uses, of dimensionality ``ndim``, to reuse: this image's own, or one whose image
        left the viewer (the dataset navigator's next case); never another image's. ``None`` if
        there is none."""
        mine = {id(ly) for ly in (self.seg_layer, self.box_layer, self.click_layer, self.scribble_layer)
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

    # ---------------------------------------------------------------- which image a layer belongs to
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
        for attr in ("box_layer", "click_layer", "scribble_layer"):
            if getattr(self, attr) is ly:
                setattr(self, attr, None)
        self.events.tools.emit()

    def _ensure_prompt_layers(self) -> None:
        if self.session is not None and None in (self.box_layer, self.click_layer, self.scribble_layer):
            self._make_prompt_layers()

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
        self._warm_towards_current_slice()

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

    # ================================================================ backends
    def refresh_backends(self, *, wait: bool = False) -> None:
        """List the backends (off the GUI thread); ``events.backends`` gets the statuses."""
        def work() -> None:
            from ..backends.registry import list_backends

            try:
                st = list_backends()
            except Exception as exc:  # the picker must open even if a plugin is broken
                log.exception("listing backends failed")
                st = {}
                msg = f"listing backends failed: {exc}"
                self._post(lambda: self._message(msg, "warning"))
            self._post(lambda: self._set_statuses(st))

        if wait:
            work()
        else:
            threading.Thread(target=work, name="medsegfm-backends", daemon=True).start()

    def _set_statuses(self, statuses: dict[str, BackendStatus]) -> None:
        self._statuses = dict(statuses)
        self.events.backends.emit(dict(statuses))

    @property
    def backend_statuses(self) -> dict[str, BackendStatus]:
        return dict(self._statuses)

    @property
    def backend_name(self) -> str:
        return self._backend_name

    @property
    def backend_status(self) -> BackendStatus | None:
        return self._backend_status

    def set_backend(self, backend: Any) -> None:
        """Switch backend: a registry name (``"default"``), an instance, or ``None``.

        Names load on a helper thread (weights may take a while); prompts given
        meanwhile wait and run once it is ready.
        """
        if self.session is None:
            self._backend_request = backend
            return
        self._backend_token += 1
        token = self._backend_token
        if backend is None or not isinstance(backend, str):
            self._install_backend(token, backend, None, getattr(backend, "name", "") if backend else "")
            return
        name = backend
        self._backend_loading = name
        self.events.tools.emit()
        self.events.busy.emit(True)
        self._message(f"loading backend {name}…")

        def work() -> None:
            from ..backends.registry import default_backend_name, get_backend

            real = default_backend_name() if name == "default" else name
            try:
                inst, err = get_backend(real), None
            except Exception as exc:  # reported to the user, nothing else changes
                inst, err = None, exc
            self._post(lambda: self._install_backend(token, inst, err, real))

        threading.Thread(target=work, name="medsegfm-backend-loader", daemon=True).start()

    def _install_backend(self, token: int, inst: Any, err: BaseException | None, name: str) -> None:
        if token != self._backend_token or self.session is None:
            return
        self._backend_loading = None
        if err is not None:
            self._message(f"backend {name!r} could not be loaded: {err}", "error")
            self._flush_deferred(drop=True)
            self.events.tools.emit()
            self.events.busy.emit(self.busy)
            self.events.backend.emit(self._backend_name, self._backend_status)
            return
        self.session.set_backend(inst)
        self._backend_inst = inst
        self._backend_name = str(getattr(inst, "name", name)) if inst is not None else ""
        st = self._statuses.get(self._backend_name)
        if st is None and inst is not None:
            status_fn = getattr(type(inst), "status", None)
            try:
                st = status_fn() if callable(status_fn) else None
            except Exception:  # status is informative only
                st = None
        if st is None and inst is not None:
            st = BackendStatus(self._backend_name, getattr(inst, "capabilities", Capability.NONE), "ready",
                               device=str(getattr(inst, "device", "cpu")))
        self._backend_status = st
        self.events.backend.emit(self._backend_name, st)
        self.events.tools.emit()
        if inst is not None:
            n_boxes = len(self.box_layer.data) if self.box_layer is not None else 0
            unrun = n_boxes and not any(self.session.prompts_of(i) for i in self.session.objects)
            self._message(f"backend {self._backend_name} ready "
                          f"({', '.join(capability_names(self.capabilities)) or 'no prompt kinds'})"
                          + (f"; {n_boxes} box(es) from the file: Run all boxes (Ctrl+Shift+Enter)" if unrun else ""))
            # encode/prepare the image on the worker right away
            self.session.prepare(lambda res: self._post(lambda: self._on_prepared(res)))
        self._flush_deferred()
        self.events.busy.emit(self.busy)

    def _on_prepared(self, res: InferenceResult) -> None:
        if res.error is not None:
            self._message(f"backend {self._backend_name!r} could not take this image: {res.error_message}", "error")

    def _flush_deferred(self, drop: bool = False) -> None:
        pending, self._deferred = self._deferred, []
        if drop:
            if pending:
                self._message(f"{len(pending)} prompt(s) dropped: no backend", "warning")
            return
        for p, replace in pending:
            self.submit(p, replace=replace)

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
        rows = []
        for lid, info in sorted(self.session.objects.items()):
            vox = self._voxels.get(lid, 0)
            status = getattr(info.status, "value", str(info.status))
            rows.append(ObjectRow(lid, info.name or f"object {lid}", rgba_to_hex(info.color),
                                  "running" if lid in busy else status, vox,
                                  vox * ml, lid in busy))
        return rows

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

    # ------------------------------------------------------------ boxes
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
        self.events.tools.emit()
        self._message(f"box {index + 1}: z {lo}–{hi}")
        if self.auto_run:
            lid = int(feats["object_id"].iloc[index])
            if lid in self.objects and any(isinstance(p, (Box3D, Box2D)) for p in
                                           self.session.prompts_in_effect(lid)):
                self.rerun_object_boxes(lid, why=f"box {index + 1} now spans z {lo}–{hi}")
            else:
                self.run_box(index)

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

    def add_scribble(self, voxels: np.ndarray, positive: bool = True) -> int | None:
        """Submit a scribble (``(N, ndim)`` voxel indices) for the current object and show it."""
        self._require_session()
        lid = self.ensure_object()
        try:
            p = Scribble(np.asarray(voxels), positive=positive, object_id=lid)
        except ValueError as exc:
            self._message(str(exc), "error")
            return None
        gen = self.submit(p)
        self._shown_scribbles = None
        self._sync_prompt_layers()
        return gen

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
            self.last_queued_s = res.queued_s
            self._message(f"{name}: {format_volume(self._voxels.get(res.label_id, 0) * self.volume.voxel_volume_ml)}"
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

    # ================================================================ undo / save
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

    @property
    def dirty(self) -> bool:
        """True when the labels or objects changed since the last save (or since opening)."""
        return self.session is not None and self._version != self._saved_version

    @property
    def saving(self) -> bool:
        return self._saving

    def set_save_handler(self, handler: Callable[[], Any] | None, *, target: str = "") -> None:
        """Route Save (Ctrl+S, the Save button, "Save" when closing) to ``handler``.

        For hosts that keep the annotation somewhere else than in the case's file, e.g.
        the dataset navigator, whose corrections go to the dataset's sidecar folder so
        the original files stay untouched.

        Parameters
        ----------
        handler : callable or None
            ``handler()`` is called on the GUI thread without arguments; it takes its
            snapshot of the labels there and returns the path written, or a
            ``concurrent.futures.Future`` of it (written in the background). Raising
            ``ValueError``/``OSError`` (or a failing future) reports "saving failed" and
            keeps the annotation unsaved. ``None``: the default, the case's own file
            (:meth:`default_save_path`).
        target : str
            Where saves go, in words, for buttons, the close question and the status line
            (e.g. ``"the dataset's correction (sidecar folder)"``).

        "Save as…" (:meth:`save` with an explicit path) is not affected. :meth:`detach`
        (and so every :meth:`attach`) clears the handler: set it after attaching.
        """
        if handler is not None and not callable(handler):
            raise ValueError(f"save handler must be callable or None; got {handler!r}")
        self._save_handler = handler
        self._save_target = str(target) if handler is not None else ""

    @property
    def has_save_handler(self) -> bool:
        """True when Save goes to a handler set with :meth:`set_save_handler`."""
        return self._save_handler is not None

    @property
    def save_target(self) -> str:
        """Where Save (no path) writes, in words: the handler's target or the default file's name."""
        if self._save_handler is not None:
            return self._save_target or "the host's store"
        p = self.default_save_path()
        return "the case's own file" if p is None else f"{p.name}"

    def save(self, path: str | Path | None = None, *, key: str | None = None, fmt: str | None = None,
             wait: bool = False) -> concurrent.futures.Future[Path] | None:
        """Save the labels through the plugin's writer, off the GUI thread.

        ``path`` defaults to the case's own file (npz: written as key ``segs``, every
        other key kept), or goes to the save handler when one is set
        (:meth:`set_save_handler`). Raises ``ValueError`` when there is no path to save
        into. ``events.saved`` fires and the status line confirms when the file is written.
        """
        self._require_session()
        if path is None and self._save_handler is not None:
            return self._save_through_handler(wait)
        target = Path(path) if path is not None else self.default_save_path()
        if target is None:
            raise ValueError("this image has no file to save into in its own format; choose a file (Save as…)")
        from ..io import case_from_layer_metadata, save_labels

        labels = self.session.labels.copy()
        names = {lid: info.name for lid, info in self.session.objects.items()}
        colors = {lid: tuple(int(round(float(c) * 255)) for c in info.color[:3])
                  for lid, info in self.session.objects.items() if info.color is not None}
        version = self._version
        k = key or self.save_key or "segs"
        lower = target.name.lower()
        case: Any = None
        if not lower.endswith(".npz"):
            # geometry/header for write-back: what the reader stored, else re-read the source
            case = case_from_layer_metadata(self._labels_meta, labels.shape, names) if self._labels_meta else None
            if case is None and self.case_path is not None and self.case_path.exists():
                case = self.case_path
        f = fmt
        self._saving = True
        self._message(f"saving to {target.name}…")

        def work() -> Path:
            out = save_labels(labels, target, case=case, key=k, fmt=f, label_names=names, colors=colors or None)
            return Path(out) if out is not None else target

        fut = self._executor.submit(work)
        fut.add_done_callback(lambda fu: self._post(lambda: self._on_saved(fu, version, k)))
        if wait:
            concurrent.futures.wait([fut])
            self.process_pending()
        return fut

    def default_save_path(self) -> Path | None:
        """Where Save (Ctrl+S) writes: the case's own npz (member ``segs``), a
        ``<name>_segs.nii.gz`` beside a NIfTI image, or ``None`` (ask) for other formats."""
        src = self.case_path
        if src is None:
            return None
        if self._save_path_override is not None:
            return self._save_path_override
        fmt = self.case_format
        name = src.name.lower()
        if name.endswith(".npz") or fmt in ("cvpr25_npz", "cvpr24_npz"):
            return src
        if fmt in ("nifti", "ivdm3seg") or name.endswith((".nii", ".nii.gz")):
            if src.is_dir():
                return src / "segs.nii.gz"
            stem = src.name[:-7] if name.endswith(".nii.gz") else src.stem
            return src.with_name(f"{stem}_segs.nii.gz")
        # DICOM -> <series folder>_seg.dcm, NRRD/MHA -> <stem>_segs.nrrd/.mha, .seg.nrrd -> <stem>_segs.seg.nrrd
        from ..io.clinical import default_labels_path

        return default_labels_path(src, fmt)

    def _save_through_handler(self, wait: bool) -> concurrent.futures.Future[Path]:
        handler, target = self._save_handler, self.save_target
        assert handler is not None
        version = self._version
        self._saving = True
        self._message(f"saving to {target}…")
        fut: concurrent.futures.Future[Path]
        try:
            out = handler()
            if out is None:
                raise ValueError(f"nothing to save into ({target} is gone)")
        except (ValueError, OSError) as exc:
            fut = concurrent.futures.Future()
            fut.set_exception(exc)
        else:
            if isinstance(out, concurrent.futures.Future):
                fut = out
            else:
                fut = concurrent.futures.Future()
                fut.set_result(Path(out))
        fut.add_done_callback(lambda fu: self._post(lambda: self._on_saved(fu, version, "", target=target)))
        if wait:
            concurrent.futures.wait([fut])
            self.process_pending()
        return fut

    def _on_saved(self, fut: concurrent.futures.Future[Path], version: int, key: str, *,
                  target: str | None = None) -> None:
        self._saving = False
        exc = fut.exception()
        if exc is not None:
            where = "" if target is None else f" to {target}"
            self._message(f"saving{where} failed: {exc}. The annotation is still here"
                          + ("." if target is not None else "; try another file."), "error")
            self.events.history.emit()  # Save / Save as… are usable again (the view listens)
            return
        path = Path(fut.result())
        self._saved_version = version
        n = len(self.objects)
        if target is not None:
            self._message(f"saved {n} object(s) to {target}: {path}")
            self.events.saved.emit(path)
            self.events.history.emit()
            return
        if self.default_save_path() is None or path != self.default_save_path():
            self._save_path_override = path  # Ctrl+S keeps saving where "Save as" went
        self._message(f"saved {n} object(s) to {path} [{key}]")
        self.events.saved.emit(path)
        self.events.history.emit()

    # ================================================================ helpers
    def _require_session(self) -> None:
        if self.session is None:
            raise ValueError("no image attached: open a case and press Start (or call attach())")
