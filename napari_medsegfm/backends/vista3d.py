"""VISTA3D (MONAI) behind the backend protocol: class prompts from text, plus clicks.

The network is the ``monai`` package's own architecture
(:func:`monai.networks.nets.vista3d132`), loaded with user-supplied weights found by the
weights manager (:mod:`napari_medsegfm.backends.weights`, model ``"vista3d"``: a file
``model.pt``/``.pth``/``.safetensors`` or a MONAI bundle folder with
``models/model.pt``). Nothing is downloaded.

Prompts (all for one object):

* :class:`~napari_medsegfm.types.TextPrompt` -> a VISTA3D class index through the
  vocabulary's ``"vista3d"`` label space (``"left kidney"`` -> 14), attached by the host
  (:func:`napari_medsegfm.engine.vocab.attach_vocabulary`; backends do not import ``engine``).
  Ambiguous or unknown text raises ``ValueError`` listing the candidates: never a guess.
  The class head segments it over the whole volume (sliding window, cached per class).
* :class:`~napari_medsegfm.types.Point` -> positive/negative clicks for the point head,
  in windows centred on the clicks (MONAI's ``point_based_window_inferer``). With a
  class they correct its automatic result; alone they segment a structure (the
  "supported" point mode, or zero-shot when ``zero_shot_points``).

Geometry. Our arrays are ``(Z, Y, X)``; MONAI/VISTA3D works on ``(X, Y, Z)`` volumes (as a
NIfTI loads), so the volume is transposed, optionally resampled to ``target_spacing`` mm
(VISTA3D was trained at 1.5 mm), and a click ``(z, y, x)`` becomes ``(x', y', z')`` in that
grid. Results are resampled back and transposed, so masks are ``(Z, Y, X)`` of the input
volume. CT in Hounsfield units is scaled with the bundle's window; uint8 (CVPR npz) is
divided by 255; other intensities are min-max scaled between the 0.5 and 99.5 percentiles.

torch and monai are imported lazily: importing this module (and ``status()``) stays cheap.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..types import CancelToken, Capability, Point, Prompt, TextPrompt, Volume
from . import weights as weights_manager
from .base import BackendStatus, BackendUnavailableError, UnsupportedPromptError, check_capabilities
from .device import status_device

__all__ = ["VISTA3DBackend", "VISTA3D_SPACE", "VISTA3D_LABELS", "SPECIAL_CLASSES", "INSTALL_HINT",
           "load_vista3d_state_dict"]

log = logging.getLogger(__name__)

#: Label space of VISTA3D class indices in the vocabulary.
VISTA3D_SPACE = "vista3d"
#: Classes whose click labels VISTA3D shifts by 2 (tumours, vessels, airway: MONAI's default).
SPECIAL_CLASSES = (23, 24, 25, 26, 27, 57, 128)
#: Highest class index with a trained class embedding (vista3d132).
LAST_SUPPORTED = 132
INSTALL_HINT = ("install MONAI into this environment: `python -m pip install -c constraints.txt 'monai>=1.4'` "
                "(or `pip install napari-medsegfm[vista3d]`)")
# Intensity window of the VISTA3D bundle (ScaleIntensityRanged a_min/a_max), Hounsfield units.
CT_WINDOW = (-963.8247715525971, 1053.678477684517)
_POS, _NEG = 10.0, -10.0  # logits standing for a binary previous mask


# VISTA3D label dictionary (MONAI model zoo, models/vista3d/configs/metadata.json): index i+1 -> name.
VISTA3D_LABELS: tuple[str, ...] = (
    "liver", "kidney", "spleen", "pancreas", "right kidney", "aorta", "inferior vena cava",
    "right adrenal gland", "left adrenal gland", "gallbladder", "esophagus", "stomach", "duodenum",
    "left kidney", "bladder", "prostate or uterus", "portal vein and splenic vein", "rectum", "small bowel",
    "lung", "bone", "brain", "lung tumor", "pancreatic tumor", "hepatic vessel", "hepatic tumor",
    "colon cancer primaries", "left lung upper lobe", "left lung lower lobe", "right lung upper lobe",
    "right lung middle lobe", "right lung lower lobe",
    *(f"vertebrae {v}" for v in ("L5", "L4", "L3", "L2", "L1", "T12", "T11", "T10", "T9", "T8", "T7", "T6",
                                  "T5", "T4", "T3", "T2", "T1", "C7", "C6", "C5", "C4", "C3", "C2", "C1")),
    "trachea", "left iliac artery", "right iliac artery", "left iliac vena", "right iliac vena", "colon",
    *(f"left rib {i}" for i in range(1, 13)), *(f"right rib {i}" for i in range(1, 13)),
    "left humerus", "right humerus", "left scapula", "right scapula", "left clavicula", "right clavicula",
    "left femur", "right femur", "left hip", "right hip", "sacrum", "left gluteus maximus",
    "right gluteus maximus", "left gluteus medius", "right gluteus medius", "left gluteus minimus",
    "right gluteus minimus", "left autochthon", "right autochthon", "left iliopsoas", "right iliopsoas",
    "left atrial appendage", "brachiocephalic trunk", "left brachiocephalic vein", "right brachiocephalic vein",
    "left common carotid artery", "right common carotid artery", "costal cartilages", "heart",
    "left kidney cyst", "right kidney cyst", "prostate", "pulmonary vein", "skull", "spinal cord", "sternum",
    "left subclavian artery", "right subclavian artery", "superior vena cava", "thyroid gland", "vertebrae S1",
    "bone lesion", "kidney mass", "liver tumor", "vertebrae L6", "airway",
)


def _simple_key(text: str) -> str:
    toks = re.findall(r"[a-z0-9]+", text.lower())
    toks = [t[:-1] if len(t) > 3 and t.endswith("s") and not t.endswith(("ss", "us", "as")) else t for t in toks]
    return " ".join(sorted(toks))


_VISTA3D_BY_KEY = {_simple_key(n): i for i, n in enumerate(VISTA3D_LABELS, start=1)}


def _resolver_from(vocabulary: Any) -> Callable[[str], int]:
    def resolve(text: str) -> int:
        res = vocabulary.resolve(text, space=VISTA3D_SPACE)
        if not res.ok:
            raise ValueError(f"VISTA3D: {res.describe()}")
        return int(res.label_id(VISTA3D_SPACE))

    return resolve


def _monai_available() -> bool:
    return importlib.util.find_spec("monai") is not None


def load_vista3d_state_dict(path: str | os.PathLike[str]) -> dict[str, Any]:
    """State dict of a VISTA3D checkpoint file (``.pt``/``.pth`` torch file or ``.safetensors``).

    Accepts a plain state dict or one wrapped in ``{"model": ...}``/``{"state_dict": ...}``/
    ``{"network": ...}`` (MONAI bundles save the former), and strips a DataParallel
    ``module.`` prefix. Uses ``torch.load(weights_only=True)``: no code runs from the file.

    Parameters
    ----------
    path : path-like
        The checkpoint file.

    Returns
    -------
    dict of str to torch.Tensor
        On the CPU.

    Raises
    ------
    ValueError
        Not a readable checkpoint, or no state dict of tensors in it.
    BackendUnavailableError
        A ``.safetensors`` file without the ``safetensors`` package.
    """
    import torch

    p = os.fspath(path)
    if p.endswith(".safetensors"):
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise BackendUnavailableError(
                f"{p} is a .safetensors file; install the 'safetensors' package to read it"
            ) from None
        sd: Any = load_file(p, device="cpu")
    else:
        try:
            sd = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as exc:  # a pickled non-tensor object, a truncated file, ...
            raise ValueError(f"{p}: not a readable VISTA3D checkpoint ({type(exc).__name__}: {exc})") from None
    for key in ("model", "state_dict", "network", "model_state_dict"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
            break
    if not isinstance(sd, dict) or not sd:
        raise ValueError(f"{p}: expected a state dict of tensors; got {type(sd).__name__}")
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


class VISTA3DBackend:
    """VISTA3D with class (text) and click prompts; see the module docstring.

    Parameters
    ----------
    weights : path-like, optional
        Checkpoint file or bundle folder; default: the weights manager's ``"vista3d"`` entry.
    device : str, optional
        ``"cpu"``, ``"cuda"``, ... (default :func:`~napari_medsegfm.backends.device.select_device`).
    network : torch.nn.Module, optional
        A ready VISTA3D network (skips weight loading; for tests and custom builds).
    vocabulary : Vocabulary, optional
        Resolves text to class indices through its ``"vista3d"`` label space
        (:class:`napari_medsegfm.engine.vocab.Vocabulary`; backends may not import ``engine``,
        so the host hands it over, see :func:`napari_medsegfm.engine.vocab.attach_vocabulary`).
    text_resolver : callable(str) -> int, optional
        Alternative to ``vocabulary``: any text -> class index function.
    patch_size : 3 ints
        Sliding-window / click-window size in voxels (128 in the bundle).
    target_spacing : 3 floats or None
        Resample to this spacing in mm before inference (1.5 in the bundle); None keeps the grid.
    overlap : float
        Sliding-window overlap of class prompts.
    intensity : {"auto", "ct", "uint8", "minmax"}
        Intensity scaling to [0, 1] (see the module docstring).
    zero_shot_points : bool
        Clicks without a class use VISTA3D's zero-shot embedding instead of the "supported" one.
    encoder_embed_dim : int
        Width of the architecture built for the checkpoint (48 for the released weights).
    """

    name = "vista3d"
    capabilities = Capability.TEXT | Capability.POINTS
    #: label space of the vocabulary whose ids this backend takes (see ``attach_vocabulary``)
    label_space = VISTA3D_SPACE

    def __init__(
        self,
        weights: str | os.PathLike[str] | None = None,
        device: str | None = None,
        *,
        network: Any = None,
        vocabulary: Any = None,
        text_resolver: Callable[[str], int] | None = None,
        patch_size: Sequence[int] = (128, 128, 128),
        target_spacing: Sequence[float] | None = (1.5, 1.5, 1.5),
        overlap: float = 0.3,
        intensity: str = "auto",
        zero_shot_points: bool = False,
        encoder_embed_dim: int = 48,
    ) -> None:
        if intensity not in ("auto", "ct", "uint8", "minmax"):
            raise ValueError(f"intensity must be 'auto', 'ct', 'uint8' or 'minmax'; got {intensity!r}")
        self.patch_size = tuple(int(p) for p in patch_size)
        if len(self.patch_size) != 3 or min(self.patch_size) < 8:
            raise ValueError(f"patch_size must be 3 sizes >= 8; got {patch_size!r}")
        self.target_spacing = None if target_spacing is None else tuple(float(s) for s in target_spacing)
        self.overlap = float(overlap)
        self.intensity = intensity
        self.zero_shot_points = bool(zero_shot_points)
        self.text_resolver: Callable[[str], int] | None = text_resolver
        if self.text_resolver is None and vocabulary is not None:
            self.text_resolver = _resolver_from(vocabulary)
        if not _monai_available():
            raise BackendUnavailableError(f"VISTA3D needs the 'monai' package: {INSTALL_HINT}")
        from .device import select_device

        self.device = select_device(device)
        self.weights_path: str = ""
        if network is None:
            loc = weights_manager.require("vista3d", weights)
            from monai.networks.nets import vista3d132

            network = vista3d132(encoder_embed_dim=int(encoder_embed_dim))
            sd = load_vista3d_state_dict(loc.path)  # type: ignore[arg-type]
            try:
                network.load_state_dict(sd, strict=True)
            except RuntimeError as exc:
                raise ValueError(
                    f"{loc.path} does not fit the VISTA3D architecture of monai's vista3d132 "
                    f"(encoder_embed_dim={encoder_embed_dim}): {str(exc).splitlines()[0]}"
                ) from None
            self.weights_path = str(loc.path)
        self.network = network.eval().to(self.device)
        self._reset_image()

    # ----------------------------------------------------------------- status
    @classmethod
    def status(cls) -> BackendStatus:
        """Cheap: checks that monai is installed and the weights file exists (no import, no load)."""
        dev = status_device()
        if not _monai_available():
            return BackendStatus(cls.name, cls.capabilities, "package missing", device=dev,
                                 message=f"VISTA3D needs the 'monai' package: {INSTALL_HINT}")
        loc = weights_manager.locate("vista3d")
        if not loc.ok:
            return BackendStatus(cls.name, cls.capabilities, "weights missing", device=dev, message=loc.message,
                                 extra={"folder": str(loc.folder), "missing": [str(m) for m in loc.missing]})
        return BackendStatus(cls.name, cls.capabilities, "ready", device=dev, weights=str(loc.path),
                             extra={"via": loc.via})

    # ----------------------------------------------------------------- text -> class
    def class_index(self, text: str) -> int:
        """VISTA3D class index (1..512) of ``text``.

        Uses the attached resolver (``text_resolver``, set from the constructor's
        ``vocabulary``/``text_resolver`` or by
        :func:`napari_medsegfm.engine.vocab.attach_vocabulary`): synonyms, typos, sentences,
        laterality. Without one, only VISTA3D's own class names match (case, ``_``, word order
        and plural aside), plus ``"14"``/``"#14"`` for a raw index.

        Parameters
        ----------
        text : str
            A class name, a description, or ``"14"``/``"#14"``.

        Returns
        -------
        int

        Raises
        ------
        ValueError
            Ambiguous or unknown text (naming the candidates), or a raw index outside 1..512.
        """
        s = str(text).strip()
        if s.lstrip("#").isdigit():
            idx = int(s.lstrip("#"))
            if not 1 <= idx <= 512:
                raise ValueError(f"VISTA3D class index {idx} is outside 1..512")
            return idx
        if self.text_resolver is not None:
            return int(self.text_resolver(s))
        idx = _VISTA3D_BY_KEY.get(_simple_key(s))
        if idx is None:
            raise ValueError(
                f"VISTA3D: {s!r} is not one of its class names and no vocabulary is attached to resolve it "
                "(call napari_medsegfm.engine.vocab.attach_vocabulary(backend), or pass vocabulary=...); "
                f"class names: {', '.join(VISTA3D_LABELS[:8])}, ... (see `medsegfm vocab --list --space vista3d`)"
            )
        return idx

    # ----------------------------------------------------------------- image
    def _reset_image(self) -> None:
        self._volume: Volume | None = None
        self._image: Any = None  # torch (1, 1, X', Y', Z') float32 on CPU
        self._shape_xyz: tuple[int, int, int] = (0, 0, 0)
        self._work_xyz: tuple[int, int, int] = (0, 0, 0)
        self._auto_cache: dict[int, Any] = {}
        self._obj_cache: dict[int, tuple[tuple[Prompt, ...], int | None, Any, np.ndarray]] = {}

    def reset(self) -> None:
        """Forget the image and the cached per-class and per-object results."""
        self._reset_image()

    def _scale_intensity(self, arr: np.ndarray) -> np.ndarray:
        mode = self.intensity
        if mode == "auto":
            if arr.dtype == np.uint8:
                mode = "uint8"
            elif float(arr.min()) < -200.0:
                mode = "ct"
            else:
                mode = "minmax"
        a = arr.astype(np.float32, copy=False)
        if mode == "uint8":
            return a / 255.0
        if mode == "ct":
            lo, hi = CT_WINDOW
            return np.clip((a - lo) / (hi - lo), 0.0, 1.0)
        lo, hi = np.percentile(a, (0.5, 99.5))
        if hi <= lo:
            return np.zeros_like(a)
        return np.clip((a - lo) / (hi - lo), 0.0, 1.0)

    def set_image(self, volume: Volume) -> None:
        """Take a 3D volume; scales intensities and resamples to the working grid once.

        Parameters
        ----------
        volume : Volume
            Grey ``(Z, Y, X)`` with ``spacing`` in mm; resampled (trilinear) to
            ``target_spacing`` (mm, ``(x, y, z)`` order) when that is set.

        Raises
        ------
        ValueError
            A 2D or RGB image.
        """
        import torch
        import torch.nn.functional as F

        if volume.ndim != 3 or volume.is_rgb:
            raise ValueError(f"VISTA3D needs a 3D grey volume (Z, Y, X); got spatial shape {volume.spatial_shape}")
        self._reset_image()
        arr = np.asarray(volume.array)
        img = self._scale_intensity(arr).transpose(2, 1, 0)  # (X, Y, Z)
        self._shape_xyz = tuple(int(s) for s in img.shape)  # type: ignore[assignment]
        t = torch.from_numpy(np.ascontiguousarray(img))[None, None]
        if self.target_spacing is not None:
            sp_xyz = tuple(reversed(volume.spacing))
            size = tuple(max(1, int(round(n * s / ts))) for n, s, ts in zip(self._shape_xyz, sp_xyz,
                                                                             self.target_spacing))
            if size != self._shape_xyz:
                t = F.interpolate(t, size=size, mode="trilinear", align_corners=False)
        self._image = t.contiguous()
        self._work_xyz = tuple(int(s) for s in t.shape[2:])  # type: ignore[assignment]
        self._volume = volume
        log.debug("VISTA3D image %s (Z,Y,X) -> working grid %s (X,Y,Z)", arr.shape, self._work_xyz)

    # ----------------------------------------------------------------- geometry
    def to_work_coords(self, zyx: Sequence[int]) -> tuple[float, float, float]:
        """Voxel ``(z, y, x)`` of the input volume -> ``(x', y', z')`` of the working grid.

        Parameters
        ----------
        zyx : sequence of int
            Voxel index in the input volume, ``(z, y, x)``.

        Returns
        -------
        tuple of 3 float
            Working-grid coordinates ``(x', y', z')`` (voxel centres map to voxel centres).
        """
        xyz = (float(zyx[2]), float(zyx[1]), float(zyx[0]))
        return tuple((c + 0.5) * w / n - 0.5 for c, n, w in zip(xyz, self._shape_xyz, self._work_xyz))  # type: ignore[return-value]

    def _to_work(self, t: Any) -> Any:
        import torch.nn.functional as F

        if tuple(t.shape[2:]) == self._work_xyz:
            return t
        return F.interpolate(t, size=self._work_xyz, mode="trilinear", align_corners=False)

    def _from_work(self, logits: Any) -> np.ndarray:
        """Working-grid logits (1, 1, X', Y', Z') -> bool mask (Z, Y, X) of the input volume."""
        import torch
        import torch.nn.functional as F

        lg = torch.nan_to_num(logits.float(), nan=_NEG)
        if tuple(lg.shape[2:]) != self._shape_xyz:
            lg = F.interpolate(lg, size=self._shape_xyz, mode="trilinear", align_corners=False)
        return np.ascontiguousarray((lg[0, 0] > 0).cpu().numpy().transpose(2, 1, 0))

    def _mask_logits(self, mask: np.ndarray) -> Any:
        import torch

        m = np.asarray(mask, dtype=bool).transpose(2, 1, 0)
        t = torch.from_numpy(np.where(m, _POS, _NEG).astype(np.float32))[None, None]
        return self._to_work(t)

    # ----------------------------------------------------------------- inference
    def _predictor(self, cancel: CancelToken) -> Any:
        net = self.network

        def run(*args: Any, **kwargs: Any) -> Any:
            cancel.check()
            out = net(*args, **kwargs)
            cancel.check()
            return out

        run.point_head = getattr(net, "point_head", None)  # type: ignore[attr-defined]
        return run

    def _auto_logits(self, cls_idx: int, cancel: CancelToken) -> Any:
        """Class-head logits over the whole working grid (cached per class)."""
        import torch
        from monai.inferers import sliding_window_inference

        hit = self._auto_cache.get(cls_idx)
        if hit is not None:
            return hit
        dev = self.device
        with torch.inference_mode():
            out = sliding_window_inference(
                self._image.to(dev), roi_size=self.patch_size, sw_batch_size=1, predictor=self._predictor(cancel),
                overlap=self.overlap, mode="gaussian", sw_device=dev, device="cpu",
                class_vector=torch.tensor([[cls_idx]], device=dev), transpose=True,
            )
        out = out.as_tensor() if hasattr(out, "as_tensor") else out
        out = out.float().cpu()
        self._auto_cache[cls_idx] = out
        return out

    def _point_logits(self, coords: Any, labels: Any, cls_idx: int | None, prev: Any, point_start: int,
                      cancel: CancelToken) -> Any:
        import torch
        from monai.apps.vista3d.inferer import point_based_window_inferer

        dev = self.device
        cv = None if cls_idx is None else torch.tensor([[cls_idx]], device=dev)
        if cls_idx is not None:
            pc = cv
        elif self.zero_shot_points:
            pc = torch.tensor([[LAST_SUPPORTED + 469]], device=dev)  # any index > 132 is zero-shot
        else:
            pc = None
        with torch.inference_mode():
            out = point_based_window_inferer(
                inputs=self._image.to(dev), roi_size=self.patch_size, predictor=self._predictor(cancel),
                point_coords=coords.to(dev), point_labels=labels.to(dev), class_vector=cv, prompt_class=pc,
                prev_mask=None if prev is None else prev.to(dev), point_start=point_start, transpose=True,
            )
        out = out.as_tensor() if hasattr(out, "as_tensor") else out
        return out.float().cpu()

    def translate_points(self, points: Sequence[Point], cls_idx: int | None) -> tuple[Any, Any]:
        """Clicks -> VISTA3D's ``point_coords`` and ``point_labels`` tensors.

        Parameters
        ----------
        points : sequence of Point
            Clicks with ``(z, y, x)`` voxel indices of the input volume.
        cls_idx : int or None
            The object's class; for VISTA3D's special classes labels shift from 1/0 to 3/2.

        Returns
        -------
        point_coords : torch.Tensor
            ``(1, N, 3)`` float32, working-grid ``(x', y', z')``, clipped to the grid.
        point_labels : torch.Tensor
            ``(1, N)`` long: 1 positive, 0 negative (3/2 for special classes).

        Raises
        ------
        ValueError
            A click without three coordinates.
        """
        import torch

        coords = []
        for p in points:
            if len(p.zyx) != 3:
                raise ValueError(f"VISTA3D clicks need (z, y, x); got {p.zyx}")
            w = self.to_work_coords(p.zyx)
            coords.append([min(max(int(round(c)), 0), n - 1) for c, n in zip(w, self._work_xyz)])
        labels = [1 if p.positive else 0 for p in points]
        if cls_idx in SPECIAL_CLASSES:
            labels = [v + 2 for v in labels]
        return (torch.tensor([coords], dtype=torch.float32), torch.tensor([labels], dtype=torch.long))

    def predict(self, prompts: Sequence[Prompt], prev_mask: np.ndarray | None, cancel: CancelToken) -> np.ndarray:
        """Bool mask ``(Z, Y, X)`` of one object from its text and click prompts.

        A text prompt alone gives the class's automatic segmentation; clicks correct it (or
        the previous mask) around the clicks, continuing from the cached result of the same
        prompts.

        Parameters
        ----------
        prompts : sequence of Prompt
            The object's :class:`TextPrompt` (the newest names the class) and :class:`Point`.
        prev_mask : np.ndarray or None
            The object's current bool mask ``(Z, Y, X)``.
        cancel : CancelToken
            Checked between network passes.

        Returns
        -------
        np.ndarray
            ``bool`` ``(Z, Y, X)``.

        Raises
        ------
        RuntimeError
            :meth:`set_image` was not called.
        UnsupportedPromptError
            Neither text nor clicks (or a prompt kind VISTA3D does not serve).
        ValueError
            Unknown class text, or ``prev_mask`` of another shape.
        """
        if self._volume is None:
            raise RuntimeError("VISTA3D: call set_image() before predict()")
        check_capabilities(self, prompts)
        cancel.check()
        texts = [p for p in prompts if isinstance(p, TextPrompt)]
        points = [p for p in prompts if isinstance(p, Point)]
        if not texts and not points:
            raise UnsupportedPromptError("VISTA3D needs a text (class) prompt or clicks for this object")
        cls_idx = self.class_index(texts[-1].text) if texts else None
        shape = self._volume.spatial_shape
        if prev_mask is not None and tuple(prev_mask.shape) != tuple(shape):
            raise ValueError(f"prev_mask shape {prev_mask.shape} differs from the volume's {shape}")
        oid = prompts[0].object_id
        if not points:
            logits = self._auto_logits(int(cls_idx), cancel)  # type: ignore[arg-type]
            mask = self._from_work(logits)
            self._obj_cache[oid] = (tuple(prompts), cls_idx, logits, mask)
            return mask
        # clicks: correct the class result / the previous mask around the clicks only
        prev, point_start = None, 0
        cached = self._obj_cache.get(oid)
        if cached is not None:
            c_prompts, c_cls, c_logits, c_mask = cached
            same_prefix = tuple(prompts[:len(c_prompts)]) == c_prompts and c_cls == cls_idx
            if same_prefix and (prev_mask is None or np.array_equal(prev_mask, c_mask)):
                prev = c_logits
                point_start = sum(isinstance(p, Point) for p in c_prompts)
        if prev is None:
            if prev_mask is not None and prev_mask.any():
                prev = self._mask_logits(prev_mask)
            elif cls_idx is not None:
                prev = self._auto_logits(cls_idx, cancel)
        if point_start >= len(points):  # nothing new (a repeated request)
            mask = self._from_work(prev)
            return mask
        coords, labels = self.translate_points(points, cls_idx)
        logits = self._point_logits(coords, labels, cls_idx, prev, point_start, cancel)
        mask = self._from_work(logits)
        self._obj_cache[oid] = (tuple(prompts), cls_idx, logits, mask)
        return mask
