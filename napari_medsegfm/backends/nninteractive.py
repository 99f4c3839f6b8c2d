"""nnInteractive behind the backend protocol: boxes, clicks, scribbles and lassos.

Uses the ``nninteractive`` package (optional extra; its inference session
``nnInteractive.inference.inference_session.nnInteractiveInferenceSession``) with a
checkpoint folder found by the weights manager (model ``"nninteractive"``: a folder with
``plans.json``, ``dataset.json``, ``inference_session_class.json`` or
``inference_info.json`` and ``fold_0/checkpoint_final.pth``, directly or in a subfolder
``nnInteractive_v1.0``). Nothing is downloaded.

Prompt translation (our prompts are inclusive voxel indices in ``(Z, Y, X)``; the
session takes the same axis order, as the image is handed over as ``(1, Z, Y, X)``, and
half-open box intervals):

* :class:`~napari_medsegfm.types.Box3D` -> ``[[z_min, z_max+1], [y_min, y_max+1], [x_min, x_max+1]]``
  when the checkpoint supports 3D boxes, else the 2D box on its ``z_mid`` slice
  (``[[z, z+1], ...]``, what nnInteractive v1.0 expects);
* :class:`~napari_medsegfm.types.Box2D` -> ``[[z, z+1], [y_min, y_max+1], [x_min, x_max+1]]``;
* :class:`~napari_medsegfm.types.Point` -> ``add_point_interaction((z, y, x), include_interaction=positive)``;
* :class:`~napari_medsegfm.types.Scribble` -> a uint8 mask of the volume for
  ``add_scribble_interaction``; a *lasso* (a filled region on one slice, see
  :func:`is_lasso`; :func:`lasso_scribble` rasterizes a polygon into one) goes to
  ``add_lasso_interaction`` instead.

The session is incremental (it keeps an interaction state for one object): a request
whose prompts extend the previous request of the same object, on an unchanged mask,
only adds the new prompts. Otherwise the state is rebuilt: from the previous mask
(``add_initial_seg_interaction``) plus the newest prompt when there is a mask, or by
replaying every prompt of the object. Only the last interaction triggers a prediction.

Cancellation: checked between interactions and before every network forward pass
inside a prediction (the session's network is wrapped); a cancelled request leaves the
session marked stale, and the next request rebuilds its state.

2D images are handled as one-slice volumes ``(1, Y, X)``.
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..types import (
    Box2D,
    Box3D,
    Cancelled,
    CancelToken,
    Capability,
    Point,
    Prompt,
    Scribble,
    Volume,
)
from . import weights as weights_manager
from .base import BackendStatus, BackendUnavailableError, check_capabilities
from .device import status_device

__all__ = ["NNInteractiveBackend", "is_lasso", "lasso_scribble", "box_to_nninteractive", "INSTALL_HINT"]

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "install the optional extra: `python -m pip install -c constraints.txt nninteractive` "
    "(`pip install napari-medsegfm[nninteractive]`). Note: it depends on nnunetv2 -> "
    "dynamic-network-architectures -> timm -> torchvision, which must match your torch build"
)
_MODULE = "nnInteractive.inference.inference_session"


def _package_available() -> bool:
    try:
        return importlib.util.find_spec("nnInteractive") is not None
    except (ImportError, ValueError):
        return False


def _session_class() -> Any:
    """The package's session class (imported lazily; patched in tests)."""
    import importlib

    try:
        mod = importlib.import_module(_MODULE)
    except ImportError as exc:
        raise BackendUnavailableError(f"nnInteractive is not importable ({exc}); {INSTALL_HINT}") from None
    return mod.nnInteractiveInferenceSession


# ------------------------------------------------------------------------- helpers
def box_to_nninteractive(box: Box3D | Box2D, ndim: int, bbox3d: bool) -> list[list[int]]:
    """Our inclusive box -> nnInteractive's half-open ``[[z0, z1], [y0, y1], [x0, x1]]``.

    Parameters
    ----------
    box : Box3D or Box2D
        Inclusive voxel indices.
    ndim : int
        The volume's spatial dimensionality (2D images are one-slice volumes, z = 0).
    bbox3d : bool
        The checkpoint takes 3D boxes; otherwise a :class:`Box3D` becomes the 2D box on
        its mid slice.

    Returns
    -------
    list of [start, stop] pairs
        Three pairs, axis order ``(z, y, x)``, stop exclusive.
    """
    if isinstance(box, Box3D):
        yx = [[box.y_min, box.y_max + 1], [box.x_min, box.x_max + 1]]
        if bbox3d:
            return [[box.z_min, box.z_max + 1], *yx]
        z = box.mid_slice
        return [[z, z + 1], *yx]
    z = 0 if ndim == 2 else int(box.z if box.z is not None else 0)
    return [[z, z + 1], [box.y_min, box.y_max + 1], [box.x_min, box.x_max + 1]]


def is_lasso(scribble: Scribble, min_thickness: int = 3) -> bool:
    """True when a scribble is a filled region on one slice (a lasso), not a stroke.

    Rule: all voxels share one z (or the image is 2D), and at least 25% of them survive
    an erosion by a ``min_thickness`` x ``min_thickness`` square, i.e. lie inside the
    region rather than on its rim. Painted strokes a few voxels wide fail it; a polygon
    filled by :func:`lasso_scribble` (at least a few voxels across) passes.

    Parameters
    ----------
    scribble : Scribble
        ``voxels`` ``(N, 3)`` ``(z, y, x)`` or ``(N, 2)`` ``(y, x)``.
    min_thickness : int
        Side in voxels of the erosion square.

    Returns
    -------
    bool
    """
    from scipy import ndimage

    v = scribble.voxels
    if v.shape[0] < min_thickness * min_thickness:
        return False
    if v.shape[1] == 3:
        if np.unique(v[:, 0]).size != 1:
            return False
        yx = v[:, 1:]
    else:
        yx = v
    lo = yx.min(axis=0)
    hi = yx.max(axis=0)
    grid = np.zeros(tuple(hi - lo + 1 + 2), dtype=bool)
    grid[tuple((yx - lo + 1).T)] = True
    inner = ndimage.binary_erosion(grid, structure=np.ones((min_thickness, min_thickness), bool))
    return int(inner.sum()) >= 0.25 * int(grid.sum())


def lasso_scribble(
    polygon_yx: Sequence[Sequence[float]],
    shape: tuple[int, ...],
    z: int | None = None,
    positive: bool = True,
    object_id: int = 1,
) -> Scribble:
    """Rasterize a closed polygon on slice ``z`` into a filled :class:`Scribble`.

    The result is what :func:`is_lasso` recognizes (for any polygon at least 3 voxels
    across). Voxel centres inside the polygon count (even-odd rule).

    Parameters
    ----------
    polygon_yx : sequence of (y, x)
        At least 3 vertices, in voxel coordinates (float).
    shape : tuple of int
        The spatial shape ``(Z, Y, X)`` or ``(Y, X)``; the polygon is clipped to it.
    z : int, optional
        The slice (needed for a 3D ``shape``).
    positive : bool
        Passed to the scribble.
    object_id : int
        Passed to the scribble.

    Returns
    -------
    Scribble
        ``voxels`` ``(N, 3)`` ``(z, y, x)`` (3D) or ``(N, 2)`` ``(y, x)``.

    Raises
    ------
    ValueError
        Fewer than 3 vertices, a polygon outside the image or enclosing no voxel centre,
        or no ``z`` for a 3D shape.
    """
    poly = np.asarray(polygon_yx, dtype=float)
    if poly.ndim != 2 or poly.shape[1] != 2 or len(poly) < 3:
        raise ValueError(f"a lasso needs >= 3 (y, x) vertices; got shape {poly.shape}")
    h, w = shape[-2], shape[-1]
    y0, x0 = np.floor(poly.min(axis=0)).astype(int)
    y1, x1 = np.ceil(poly.max(axis=0)).astype(int)
    y0, x0 = max(y0, 0), max(x0, 0)
    y1, x1 = min(y1, h - 1), min(x1, w - 1)
    if y1 < y0 or x1 < x0:
        raise ValueError(f"the lasso polygon lies outside the image ({h} x {w})")
    yy, xx = np.mgrid[y0:y1 + 1, x0:x1 + 1]
    py, px = yy.ravel().astype(float), xx.ravel().astype(float)
    inside = np.zeros(py.shape, dtype=bool)
    vy, vx = poly[:, 0], poly[:, 1]
    j = len(poly) - 1
    for i in range(len(poly)):  # even-odd rule, voxel centres
        cond = (vy[i] > py) != (vy[j] > py)
        with np.errstate(divide="ignore", invalid="ignore"):
            xc = (vx[j] - vx[i]) * (py - vy[i]) / (vy[j] - vy[i]) + vx[i]
        inside ^= cond & (px < xc)
        j = i
    pts = np.stack([py[inside], px[inside]], axis=1).astype(np.int64)
    if pts.size == 0:
        raise ValueError("the lasso polygon encloses no voxel centre")
    if len(shape) == 3:
        if z is None:
            raise ValueError("a lasso on a 3D volume needs its slice z")
        pts = np.concatenate([np.full((len(pts), 1), int(z), np.int64), pts], axis=1)
    return Scribble(pts, positive=positive, object_id=object_id)


class _CancellableNet:
    """Wraps the session's network: checks the current cancel token before each forward pass."""

    def __init__(self, net: Any) -> None:
        self._net = net
        self.token: CancelToken | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.token is not None:
            self.token.check()
        return self._net(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._net, name)


class NNInteractiveBackend:
    """nnInteractive with box, click, scribble and lasso prompts; see the module docstring.

    Parameters
    ----------
    weights : path-like, optional
        The checkpoint folder; default: the weights manager's ``"nninteractive"`` entry.
    device : str, optional
        Default :func:`~napari_medsegfm.backends.device.select_device`.
    use_fold : int or str, optional
        Passed to ``initialize_from_trained_model_folder`` (None: the only ``fold_*`` folder).
    do_autozoom : bool
        nnInteractive's automatic zoom-out for objects larger than its patch.
    torch_threads : int, optional
        Threads the session may use (default: all cores).
    lasso : {"auto", "never"}
        Whether filled single-slice scribbles are sent as lassos (see :func:`is_lasso`).
    session : object, optional
        A ready, initialized session (skips loading; for tests and custom setups).
    """

    name = "nninteractive"
    capabilities = Capability.BOX3D | Capability.BOX2D | Capability.POINTS | Capability.SCRIBBLE | Capability.LASSO

    def __init__(
        self,
        weights: str | os.PathLike[str] | None = None,
        device: str | None = None,
        *,
        use_fold: int | str | None = None,
        do_autozoom: bool = True,
        torch_threads: int | None = None,
        lasso: str = "auto",
        session: Any = None,
    ) -> None:
        if lasso not in ("auto", "never"):
            raise ValueError(f"lasso must be 'auto' or 'never'; got {lasso!r}")
        self.lasso = lasso
        from .device import select_device

        self.device = select_device(device)
        self.weights_path = ""
        if session is None:
            if not _package_available():
                raise BackendUnavailableError(f"nnInteractive needs the 'nninteractive' package: {INSTALL_HINT}")
            loc = weights_manager.require("nninteractive", weights)
            import torch

            cls = _session_class()
            kwargs: dict[str, Any] = {
                "device": torch.device(self.device),
                "use_torch_compile": False,
                "verbose": False,
                "torch_n_threads": int(torch_threads or os.cpu_count() or 1),
                "do_autozoom": bool(do_autozoom),
            }
            params = inspect.signature(cls.__init__).parameters
            if "enable_undo" in params:
                kwargs["enable_undo"] = False  # we never call undo(); skips its bookkeeping
            session = cls(**{k: v for k, v in kwargs.items() if k in params})
            session.initialize_from_trained_model_folder(str(loc.root), use_fold=use_fold)
            self.weights_path = str(loc.root)
        self.session = session
        self._net: _CancellableNet | None = None
        self._wrap_network()
        self._reset_state()
        self._shape: tuple[int, ...] | None = None
        self._ndim = 3

    # ----------------------------------------------------------------- status
    @classmethod
    def status(cls) -> BackendStatus:
        """Cheap: checks that the package is installed and the checkpoint files exist."""
        dev = status_device()
        if not _package_available():
            return BackendStatus(cls.name, cls.capabilities, "package missing", device=dev,
                                 message=f"nnInteractive needs the 'nninteractive' package: {INSTALL_HINT}")
        loc = weights_manager.locate("nninteractive")
        if not loc.ok:
            return BackendStatus(cls.name, cls.capabilities, "weights missing", device=dev, message=loc.message,
                                 extra={"folder": str(loc.folder), "missing": [str(m) for m in loc.missing]})
        return BackendStatus(cls.name, cls.capabilities, "ready", device=dev, weights=str(loc.root),
                             extra={"via": loc.via})

    # ----------------------------------------------------------------- state
    def _wrap_network(self) -> None:
        net = getattr(self.session, "network", None)
        if net is not None and not isinstance(net, _CancellableNet):
            self._net = _CancellableNet(net)
            self.session.network = self._net
        elif isinstance(net, _CancellableNet):
            self._net = net

    def _reset_state(self) -> None:
        self._oid: int | None = None
        self._history: tuple[Prompt, ...] = ()
        self._last_mask: np.ndarray | None = None
        self._stale = True

    def reset(self) -> None:
        """Forget the image and the interaction history."""
        self._reset_state()
        self._shape = None

    @property
    def bbox3d_supported(self) -> bool:
        """True when the loaded checkpoint takes 3D boxes (v1.0 checkpoints take 2D boxes only)."""
        sup = getattr(self.session, "supported_interactions", None)
        if isinstance(sup, dict):
            return bool(sup.get("bbox3d", False))
        return False  # nnInteractive v1.0 checkpoints take 2D boxes only

    def set_image(self, volume: Volume) -> None:
        """Hand the image over as ``(1, Z, Y, X)`` float32 (2D: ``(1, 1, Y, X)``).

        Parameters
        ----------
        volume : Volume
            Grey ``(Z, Y, X)`` or ``(Y, X)``.

        Raises
        ------
        ValueError
            An RGB image.
        """
        import torch

        if volume.is_rgb:
            raise ValueError("nnInteractive takes grey images; convert the RGB image to one channel first")
        arr = np.asarray(volume.array, dtype=np.float32)
        self._ndim = arr.ndim
        if arr.ndim == 2:
            arr = arr[None]
        self.session.set_image(arr[None])
        self.session.set_target_buffer(torch.zeros(arr.shape, dtype=torch.uint8))
        self._shape = tuple(volume.spatial_shape)
        self._reset_state()

    # ----------------------------------------------------------------- prompts
    def _as3d(self, a: np.ndarray) -> np.ndarray:
        return a[None] if self._ndim == 2 else a

    def _scribble_mask(self, s: Scribble) -> np.ndarray:
        shape = self._shape if self._ndim == 3 else (1, *self._shape)  # type: ignore[misc]
        m = np.zeros(shape, dtype=np.uint8)
        v = s.voxels if self._ndim == 3 else np.concatenate([np.zeros((len(s.voxels), 1), np.int64), s.voxels], 1)
        m[tuple(v.T)] = 1
        return m

    def _add(self, p: Prompt, run_prediction: bool) -> None:
        ses = self.session
        if isinstance(p, (Box3D, Box2D)):
            ses.add_bbox_interaction(box_to_nninteractive(p, self._ndim, self.bbox3d_supported),
                                     include_interaction=True, run_prediction=run_prediction)
        elif isinstance(p, Point):
            zyx = tuple(int(c) for c in (p.zyx if self._ndim == 3 else (0, *p.zyx)))
            ses.add_point_interaction(zyx, include_interaction=p.positive, run_prediction=run_prediction)
        elif isinstance(p, Scribble):
            mask = self._scribble_mask(p)
            if self.lasso == "auto" and is_lasso(p):
                ses.add_lasso_interaction(mask, include_interaction=p.positive, run_prediction=run_prediction)
            else:
                ses.add_scribble_interaction(mask, include_interaction=p.positive, run_prediction=run_prediction)
        else:  # check_capabilities ran first
            raise AssertionError(p)

    def _result(self) -> np.ndarray:
        tb = self.session.target_buffer
        arr = tb.cpu().numpy() if hasattr(tb, "cpu") else np.asarray(tb)
        out = arr > 0
        return np.ascontiguousarray(out[0] if self._ndim == 2 else out)

    def predict(self, prompts: Sequence[Prompt], prev_mask: np.ndarray | None, cancel: CancelToken) -> np.ndarray:
        """Bool mask of one object in the volume's spatial shape.

        Prompts that extend the previous call's (same object, same previous mask) are added
        incrementally; otherwise the interactions restart from ``prev_mask`` plus the newest prompt.

        Parameters
        ----------
        prompts : sequence of Prompt
            The object's boxes, points and scribbles (lassos), oldest first; at least one.
        prev_mask : np.ndarray or None
            The object's current bool mask ``(Z, Y, X)`` / ``(Y, X)``.
        cancel : CancelToken
            Checked between interactions.

        Returns
        -------
        np.ndarray
            ``bool``, the volume's spatial shape.

        Raises
        ------
        RuntimeError
            :meth:`set_image` was not called.
        ValueError
            No prompt, or ``prev_mask`` of another shape.
        Cancelled
            ``cancel`` was set.
        """
        if self._shape is None:
            raise RuntimeError("nnInteractive: call set_image() before predict()")
        if not prompts:
            raise ValueError("nnInteractive: predict() needs at least one prompt")
        check_capabilities(self, prompts)
        cancel.check()
        if prev_mask is not None and tuple(prev_mask.shape) != self._shape:
            raise ValueError(f"prev_mask shape {prev_mask.shape} differs from the volume's {self._shape}")
        prompts = tuple(prompts)
        oid = prompts[0].object_id
        same_mask = (prev_mask is None and self._last_mask is None) or (
            prev_mask is not None and self._last_mask is not None and np.array_equal(prev_mask, self._last_mask))
        incremental = (not self._stale and oid == self._oid and len(prompts) > len(self._history)
                       and prompts[:len(self._history)] == self._history and same_mask)
        if incremental:
            todo = list(prompts[len(self._history):])
        else:
            self.session.reset_interactions()
            if prev_mask is not None and prev_mask.any():
                self.session.add_initial_seg_interaction(self._as3d(prev_mask.astype(np.uint8)),
                                                         run_prediction=False)
                todo = [prompts[-1]]  # the mask stands for the earlier prompts
            else:
                todo = list(prompts)
        self._stale = True
        if self._net is not None:
            self._net.token = cancel
        try:
            for i, p in enumerate(todo):
                cancel.check()
                self._add(p, run_prediction=(i == len(todo) - 1))
            cancel.check()
        except Cancelled:
            self._reset_state()
            raise
        finally:
            if self._net is not None:
                self._net.token = None
        mask = self._result()
        self._oid, self._history, self._last_mask, self._stale = oid, prompts, mask.copy(), False
        return mask
