"""2D LiteMedSAM predictor: preprocessing, batched slice encoding, prompted decoding.

Preprocessing follows the released LiteMedSAM inference pipeline:

1. a grey slice ``(H, W)`` is replicated to three channels (RGB ``(H, W, 3)`` is kept);
2. the longest side is resized to 256 (area averaging when shrinking, bilinear when
   enlarging; uint8 input is rounded back to uint8 as OpenCV does);
3. min-max normalisation to ``[0, 1]`` over the whole resized image;
4. zero padding at the bottom/right to ``256 x 256``.

Prompts are scaled by ``256 / max(H, W)`` (boxes truncated to integers as in the
released pipeline); the ``256 x 256`` logits are cropped to the resized extent and
bilinearly upsampled back to ``(H, W)``; the mask is ``logit > 0``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .model import IMAGE_SIZE, LiteMedSAM

__all__ = ["SliceGeometry", "preprocess_slices", "LiteMedSAMPredictor", "PointPrompt"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SliceGeometry:
    """Original ``(H, W)`` and resized ``(h, w)`` (longest side 256) of a slice.

    Parameters
    ----------
    H, W : int
        The slice's rows and columns in pixels.
    """

    H: int
    W: int

    @property
    def scale(self) -> float:
        """Resize factor to the model frame: ``256 / max(H, W)``."""
        return IMAGE_SIZE / max(self.H, self.W)

    @property
    def resized(self) -> tuple[int, int]:
        """``(h, w)`` after resizing by :attr:`scale` (rounded); the rest of the 256 x 256 frame is padding."""
        s = self.scale
        return int(self.H * s + 0.5), int(self.W * s + 0.5)


@dataclass(frozen=True)
class PointPrompt:
    """A click in original pixel coordinates of one slice.

    Parameters
    ----------
    y, x : float
        Row and column in pixels of the original slice.
    positive : bool
        Foreground (True) or background click.
    """

    y: float
    x: float
    positive: bool = True


def preprocess_slices(slices: np.ndarray) -> torch.Tensor:
    """Model input for a stack of slices.

    Parameters
    ----------
    slices : np.ndarray
        ``(N, H, W)`` grey or ``(N, H, W, 3)`` RGB, any real dtype (uint8 expected: the
        model was trained on 0..255 images).

    Returns
    -------
    torch.Tensor
        ``(N, 3, 256, 256)`` float32 in ``[0, 1]``.
    """
    arr = np.asarray(slices)
    if arr.ndim == 3:
        rgb = False
    elif arr.ndim == 4 and arr.shape[-1] in (3, 4):
        rgb = True
        arr = arr[..., :3]
    else:
        raise ValueError(f"expected slices of shape (N, H, W) or (N, H, W, 3); got {arr.shape}")
    n = arr.shape[0]
    H, W = arr.shape[1:3]
    geom = SliceGeometry(H, W)
    h, w = geom.resized
    t = torch.from_numpy(np.ascontiguousarray(arr)).float()
    t = t.permute(0, 3, 1, 2) if rgb else t[:, None]
    if (h, w) != (H, W):
        if h <= H and w <= W:
            t = F.interpolate(t, size=(h, w), mode="area")
        else:
            t = F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False)
        if arr.dtype == np.uint8:
            t = t.round_().clamp_(0, 255)
    flat = t.reshape(n, -1)
    lo = flat.min(dim=1).values.view(n, 1, 1, 1)
    hi = flat.max(dim=1).values.view(n, 1, 1, 1)
    t = (t - lo) / (hi - lo).clamp_min(1e-8)
    if not rgb:
        t = t.expand(n, 3, h, w)
    out = torch.zeros(n, 3, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.float32)
    out[:, :, :h, :w] = t
    return out


class LiteMedSAMPredictor:
    """Encode slices and decode prompts with one loaded :class:`LiteMedSAM`.

    Parameters
    ----------
    model : LiteMedSAM
    device : torch device string
    encoder_dtype : ``torch.float32``, ``torch.bfloat16``/``torch.float16`` (autocast for
        the whole image encoder), or ``"mixed"`` (bfloat16 only for the encoder parts named in
        :data:`.tinyvit.MIXED_STAGES`); the decoder always runs in float32
    batch_size : slices per encoder call
    """

    def __init__(self, model: LiteMedSAM, device: str = "cpu", encoder_dtype: torch.dtype | str = torch.float32,
                 batch_size: int = 4) -> None:
        self.model = model
        self.device = torch.device(device)
        self.encoder_dtype = encoder_dtype
        self.batch_size = max(1, int(batch_size))

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.encoder_dtype == "mixed":
            from .tinyvit import mixed_precision

            return mixed_precision(torch.bfloat16)
        if self.encoder_dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.encoder_dtype)

    @torch.inference_mode()
    def encode(self, slices: np.ndarray, check: Callable[[], None] | None = None) -> Iterator[torch.Tensor]:
        """Yield float32 embeddings for consecutive batches of ``slices``.

        Parameters
        ----------
        slices : np.ndarray
            ``(N, H, W)`` uint8 grey or ``(N, H, W, 3)`` uint8 RGB slices.
        check : callable, optional
            Called before each batch (raises to cancel).

        Yields
        ------
        torch.Tensor
            ``(b, 256, 64, 64)`` float32 on the predictor's device, ``b <= batch_size``.
        """
        n = len(slices)
        for i in range(0, n, self.batch_size):
            if check is not None:
                check()
            x = preprocess_slices(slices[i : i + self.batch_size]).to(self.device)
            if getattr(self.model, "optimized", False):
                x = x.contiguous(memory_format=torch.channels_last)
            with self._autocast():
                emb = self.model.encode(x)
            yield emb.float()

    @torch.inference_mode()
    def decode(
        self,
        embedding: torch.Tensor,
        geom: SliceGeometry,
        box: Sequence[float] | None = None,
        points: Sequence[PointPrompt] = (),
        mask_logits: torch.Tensor | None = None,
        multimask: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Decode one slice.

        Parameters
        ----------
        embedding : (1, 256, 64, 64) or (256, 64, 64)
        geom : original size of the slice
        box : (y_min, x_min, y_max, x_max) inclusive, original pixels
        points : clicks in original pixels
        mask_logits : optional dense prompt, (256, 256) low-resolution logits of a previous decode
        multimask : return the 3 alternative masks

        Returns
        -------
        logits : (M, H, W) float32 at the original size (mask = logits > 0)
        iou : (M,) predicted IoU
        low_res : (M, 256, 256) logits in the model frame (for a later mask prompt)
        """
        emb = embedding if embedding.ndim == 4 else embedding[None]
        emb = emb.to(self.device, torch.float32)
        s = geom.scale
        boxes_t = None
        if box is not None:
            y0, x0, y1, x1 = (float(v) for v in box)
            b = np.floor(np.array([x0, y0, x1, y1]) * s)
            boxes_t = torch.as_tensor(b, dtype=torch.float32, device=self.device).view(1, 1, 4)
        pts = None
        if points:
            coords = torch.tensor([[p.x * s, p.y * s] for p in points], dtype=torch.float32, device=self.device)
            labels = torch.tensor([1 if p.positive else 0 for p in points], dtype=torch.int64, device=self.device)
            pts = (coords[None], labels[None])
        masks = None
        if mask_logits is not None:
            masks = mask_logits.reshape(1, 1, IMAGE_SIZE, IMAGE_SIZE).to(self.device, torch.float32)
        if boxes_t is None and pts is None and masks is None:
            raise ValueError("decode needs a box, points or a mask prompt")
        low, iou = self.model.decode(emb, boxes=boxes_t, points=pts, masks=masks, multimask=multimask)
        logits = self.upsample(low, geom)
        return logits[0], iou[0], low[0]

    @torch.inference_mode()
    def decode_boxes(
        self,
        embedding: torch.Tensor,
        geom: SliceGeometry,
        boxes: Sequence[Sequence[float]],
        points: Sequence[PointPrompt] = (),
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode several boxes on one slice in one decoder call (batch).

        Same as :meth:`decode` per box (logits agree to ~1e-5), but the decoder runs once
        with a batch: ~20 % less time than separate calls for two boxes on CPU.

        Parameters
        ----------
        embedding : torch.Tensor
            ``(256, 64, 64)`` or ``(1, 256, 64, 64)`` image embedding of the slice.
        geom : SliceGeometry
            The slice's original and resized size.
        boxes : sequence of (y0, x0, y1, x1)
            Boxes in original pixel coordinates.
        points : sequence of PointPrompt
            Clicks added to every box's prompt.

        Returns
        -------
        logits : torch.Tensor
            ``(B, H, W)`` float32 at the original size (> 0: inside).
        iou : torch.Tensor
            ``(B,)`` predicted IoU.
        """
        emb = embedding if embedding.ndim == 4 else embedding[None]
        emb = emb.to(self.device, torch.float32)
        s = geom.scale
        b = np.floor(np.array([[x0, y0, x1, y1] for y0, x0, y1, x1 in boxes], dtype=np.float64) * s)
        boxes_t = torch.as_tensor(b, dtype=torch.float32, device=self.device).view(len(boxes), 1, 4)
        pts = None
        if points:
            coords = torch.tensor([[p.x * s, p.y * s] for p in points], dtype=torch.float32, device=self.device)
            labels = torch.tensor([1 if p.positive else 0 for p in points], dtype=torch.int64, device=self.device)
            pts = (coords[None].expand(len(boxes), -1, -1), labels[None].expand(len(boxes), -1))
        low, iou = self.model.decode(emb, boxes=boxes_t, points=pts)
        return self.upsample(low, geom)[:, 0], iou[:, 0]

    @staticmethod
    def upsample(low: torch.Tensor, geom: SliceGeometry) -> torch.Tensor:
        """Model-frame logits -> logits at the slice's original size (bilinear, padding cropped first).

        Parameters
        ----------
        low : torch.Tensor
            ``(B, M, 256, 256)`` logits.
        geom : SliceGeometry
            The slice's original and resized size.

        Returns
        -------
        torch.Tensor
            ``(B, M, H, W)``.
        """
        h, w = geom.resized
        return F.interpolate(low[..., :h, :w], size=(geom.H, geom.W), mode="bilinear", align_corners=False)
