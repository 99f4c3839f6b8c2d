"""Build the LiteMedSAM network and load the released weights (strict, SHA-256 verified)."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import torch
from torch import nn

from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder
from .tinyvit import TinyViTEncoder
from .weights import INSTALL_HINT, locate_weights, verify_weights

__all__ = ["LiteMedSAM", "build_litemedsam", "load_litemedsam", "count_parameters", "optimize_for_inference"]

log = logging.getLogger(__name__)

IMAGE_SIZE = 256  # model input side (pixels)
EMBED_GRID = 64  # image-embedding side


class LiteMedSAM(nn.Module):
    """TinyViT encoder + SAM prompt encoder + SAM mask decoder at ``256 x 256`` input.

    Attribute names (``image_encoder``, ``prompt_encoder``, ``mask_decoder``) match the
    released checkpoint's key prefixes.
    """

    def __init__(self) -> None:
        super().__init__()
        self.image_encoder = TinyViTEncoder()
        self.prompt_encoder = PromptEncoder(256, (EMBED_GRID, EMBED_GRID), (IMAGE_SIZE, IMAGE_SIZE), 16)
        self.mask_decoder = MaskDecoder(256, 3, 3, 256)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Image embeddings of a batch of model-frame slices.

        Parameters
        ----------
        images : torch.Tensor
            ``(B, 3, 256, 256)`` float in ``[0, 1]`` (resized, padded slices).

        Returns
        -------
        torch.Tensor
            ``(B, 256, 64, 64)``.
        """
        return self.image_encoder(images)

    def decode(
        self,
        embeddings: torch.Tensor,
        boxes: torch.Tensor | None = None,
        points: tuple[torch.Tensor, torch.Tensor] | None = None,
        masks: torch.Tensor | None = None,
        multimask: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompted decoding in the 256 frame.

        Parameters
        ----------
        embeddings : torch.Tensor
            ``(B, 256, 64, 64)`` from :meth:`encode`.
        boxes : torch.Tensor, optional
            ``(B, 4)`` or ``(B, 1, 4)``, ``(x_min, y_min, x_max, y_max)`` in model-frame pixels.
        points : (coords, labels), optional
            ``coords`` ``(B, N, 2)`` as ``(x, y)`` model-frame pixels; ``labels`` ``(B, N)``:
            1 positive, 0 negative, -1 padding.
        masks : torch.Tensor, optional
            ``(B, 1, 256, 256)`` logits of a previous mask.
        multimask : bool
            Return the three alternative masks instead of the single one.

        Returns
        -------
        logits : torch.Tensor
            ``(B, M, 256, 256)``, M = 1 or 3 (> 0: inside).
        iou : torch.Tensor
            ``(B, M)`` predicted IoU.
        """
        sparse, dense = self.prompt_encoder(points, boxes, masks)
        return self.mask_decoder(embeddings, self.prompt_encoder.dense_pe(), sparse, dense, multimask)


def optimize_for_inference(model: LiteMedSAM) -> LiteMedSAM:
    """Fold batch norms, use channels-last convolutions and oneDNN's fused kernels (CPU inference).

    Fuses conv/linear + GELU on float32 CPU input (CPU: ~0.84 -> ~0.6 s per slice in all).
    Folding and channels-last leave the masks bit-identical; the fused GELU differs from
    ``F.gelu`` by < 1e-6 and the masks agree with the plain float32 ones (Dice on 17 real
    objects in benchmarks/model_bench.py, encoder section). The state dict no longer matches
    the checkpoint afterwards, so load first.

    Parameters
    ----------
    model : LiteMedSAM
        With the checkpoint loaded; changed in place.

    Returns
    -------
    LiteMedSAM
        ``model`` itself, with ``optimized = True``.
    """
    from .tinyvit import ConvBN

    for mod in model.image_encoder.modules():
        if isinstance(mod, ConvBN):
            mod.fuse_()
    model.image_encoder.to(memory_format=torch.channels_last)
    model.image_encoder.enable_fused(True)
    model.optimized = True  # type: ignore[attr-defined]
    return model


def count_parameters(model: nn.Module) -> int:
    """Number of learnable parameters.

    Parameters
    ----------
    model : torch.nn.Module
        Any module.

    Returns
    -------
    int
    """
    return sum(p.numel() for p in model.parameters())


def build_litemedsam() -> LiteMedSAM:
    """An untrained LiteMedSAM in eval mode."""
    return LiteMedSAM().eval()


_cache: dict[tuple[str, str, bool], LiteMedSAM] = {}
_cache_lock = threading.Lock()


def load_litemedsam(path: str | Path | None = None, device: str = "cpu", *, reuse: bool = True,
                    optimize: bool = False) -> LiteMedSAM:
    """Load the released checkpoint into our architecture with a strict state-dict load.

    Parameters
    ----------
    path : path to ``lite_medsam.pth``; default: located by :func:`weights.locate_weights`.
    device : torch device string.
    reuse : return the process-wide instance already loaded for this path/device.
    optimize : apply :func:`optimize_for_inference` (fused, channels-last encoder).

    Raises
    ------
    FileNotFoundError, ValueError
        Missing file, wrong size or SHA-256 (message says what to install where).
    RuntimeError
        The state dict does not match the architecture (strict load).
    """
    if path is None:
        found, how = locate_weights()
        if found is None:
            raise FileNotFoundError(f"LiteMedSAM checkpoint not found ({how}); {INSTALL_HINT}")
        path = found
    path = Path(path)
    key = (str(path), str(device), bool(optimize))
    with _cache_lock:
        if reuse and key in _cache:
            return _cache[key]
        verify_weights(path)
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
            state = state["model"]
        model = LiteMedSAM()
        model.load_state_dict(state, strict=True)
        model.eval().requires_grad_(False).to(device)
        if optimize:
            optimize_for_inference(model)
        log.info("loaded LiteMedSAM (%d parameters) from %s on %s", count_parameters(model), path, device)
        if reuse:
            _cache[key] = model
        return model
