"""SAM-style prompt encoder for LiteMedSAM (our own implementation).

Coordinates are in the model's input frame: pixels of the padded ``256 x 256`` image,
``(x, y)`` order, pixel centres at ``+0.5``.

* sparse prompts: each point or box corner becomes a random-Fourier positional code
  (a fixed ``2 x 128`` Gaussian projection, sin and cos -> 256 values) plus a learned
  type embedding: negative point, positive point, box top-left, box bottom-right,
  or "not a point" (padding, code zeroed).
* dense prompt: a ``(B, 1, 256, 256)`` mask logit map reduced to ``(B, 256, 64, 64)`` by
  two stride-2 convs (channel LayerNorm + GELU) and a 1x1 conv; without a mask, a
  learned "no mask" vector broadcast over the ``64 x 64`` grid.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .tinyvit import LayerNorm2d

__all__ = ["PromptEncoder", "FourierPositions"]


class FourierPositions(nn.Module):
    """Positional code of normalised ``(x, y)`` coordinates in ``[0, 1]`` (random Fourier features).

    Parameters
    ----------
    half_dim : int
        Frequencies; the code has ``2 * half_dim`` channels (sin and cos).
    """

    def __init__(self, half_dim: int = 128) -> None:
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn(2, half_dim))

    def encode(self, xy01: torch.Tensor) -> torch.Tensor:
        """Code of coordinates.

        Parameters
        ----------
        xy01 : torch.Tensor
            ``(..., 2)`` as ``(x, y)`` in ``[0, 1]``.

        Returns
        -------
        torch.Tensor
            ``(..., 2 * half_dim)``.
        """
        proj = (2.0 * xy01 - 1.0).to(self.positional_encoding_gaussian_matrix.dtype)
        proj = 2.0 * math.pi * (proj @ self.positional_encoding_gaussian_matrix)
        return torch.cat([proj.sin(), proj.cos()], dim=-1)

    def grid(self, h: int, w: int) -> torch.Tensor:
        """Dense code of an ``h x w`` grid of cell centres.

        Parameters
        ----------
        h, w : int
            Grid rows and columns.

        Returns
        -------
        torch.Tensor
            ``(2 * half_dim, h, w)``.
        """
        dev = self.positional_encoding_gaussian_matrix.device
        ys = (torch.arange(h, device=dev, dtype=torch.float32) + 0.5) / h
        xs = (torch.arange(w, device=dev, dtype=torch.float32) + 0.5) / w
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        return self.encode(torch.stack([gx, gy], dim=-1)).permute(2, 0, 1)


class PromptEncoder(nn.Module):
    """Encode points, boxes and a mask into sparse ``(B, N, 256)`` and dense ``(B, 256, 64, 64)`` codes.

    Parameters
    ----------
    embed_dim : int
        Code width.
    grid : (h, w)
        The image-embedding grid (64 x 64).
    input_size : (h, w)
        The model frame in pixels (256 x 256); prompt coordinates are normalised by it.
    mask_chans : int
        Hidden channels of the mask downscaling.
    """

    def __init__(self, embed_dim: int = 256, grid: tuple[int, int] = (64, 64), input_size: tuple[int, int] = (256, 256),
                 mask_chans: int = 16) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.grid_size = grid
        self.input_size = input_size
        self.pe_layer = FourierPositions(embed_dim // 2)
        # 0: negative point, 1: positive point, 2: box top-left, 3: box bottom-right
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_chans // 4, 2, stride=2),
            LayerNorm2d(mask_chans // 4),
            nn.GELU(),
            nn.Conv2d(mask_chans // 4, mask_chans, 2, stride=2),
            LayerNorm2d(mask_chans),
            nn.GELU(),
            nn.Conv2d(mask_chans, embed_dim, 1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)
        self._dense_pe: torch.Tensor | None = None

    def dense_pe(self) -> torch.Tensor:
        """Positional code of the image-embedding grid, ``(1, 256, 64, 64)`` (cached in eval mode)."""
        pe = self._dense_pe
        dev = self.pe_layer.positional_encoding_gaussian_matrix.device
        if pe is None or pe.device != dev or self.training:
            pe = self.pe_layer.grid(*self.grid_size)[None]
            if not self.training:
                self._dense_pe = pe
        return pe

    def _code_coords(self, xy: torch.Tensor) -> torch.Tensor:
        h, w = self.input_size
        scale = torch.tensor([1.0 / w, 1.0 / h], device=xy.device, dtype=torch.float32)
        return self.pe_layer.encode((xy.float() + 0.5) * scale)

    def forward(
        self,
        points: tuple[torch.Tensor, torch.Tensor] | None,
        boxes: torch.Tensor | None,
        masks: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode prompts.

        Parameters
        ----------
        points : (coords (B, N, 2) as (x, y), labels (B, N) with 1 positive, 0 negative, -1 padding) or None
        boxes : (B, 4) or (B, 1, 4) as (x_min, y_min, x_max, y_max), or None
        masks : (B, 1, 256, 256) logits, or None

        Returns
        -------
        sparse : (B, N', 256)
        dense : (B, 256, 64, 64)
        """
        bs = 1
        parts: list[torch.Tensor] = []
        dev = self.no_mask_embed.weight.device
        if points is not None:
            coords, labels = points
            bs = coords.shape[0]
            if boxes is None:  # a padding point stands in for the missing box
                coords = torch.cat([coords, coords.new_zeros(bs, 1, 2)], dim=1)
                labels = torch.cat([labels, labels.new_full((bs, 1), -1)], dim=1)
            code = self._code_coords(coords)
            labels = labels[..., None]
            code = torch.where(labels == -1, torch.zeros_like(code), code)
            code = code + (labels == -1) * self.not_a_point_embed.weight
            code = code + (labels == 0) * self.point_embeddings[0].weight
            code = code + (labels == 1) * self.point_embeddings[1].weight
            parts.append(code)
        if boxes is not None:
            corners = boxes.reshape(-1, 2, 2)
            bs = corners.shape[0]
            code = self._code_coords(corners)
            code = code + torch.stack([self.point_embeddings[2].weight[0], self.point_embeddings[3].weight[0]])
            parts.append(code)
        if parts:
            sparse = torch.cat(parts, dim=1)
        else:
            sparse = torch.empty(bs, 0, self.embed_dim, device=dev)
        if masks is not None:
            dense = self.mask_downscaling(masks.float())
        else:
            dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(bs, -1, *self.grid_size)
        return sparse, dense


