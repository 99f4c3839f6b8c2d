"""SAM-style mask decoder with a two-way transformer (our own implementation).

The decoder attends between prompt tokens (an IoU token, four mask tokens, then the
sparse prompt codes) and the ``64 x 64`` image embedding in both directions, upsamples
the image side 4x with two transposed convs to ``256 x 256`` (32 channels), and turns
each mask token into a 32-vector (a small MLP) whose dot product with every upsampled
pixel is that mask's logit. LiteMedSAM uses the single-mask output (token 0).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .tinyvit import LayerNorm2d

__all__ = ["MaskDecoder", "TwoWayTransformer"]


class ProjAttention(nn.Module):
    """Multi-head attention with q/k/v projections to ``dim / downsample`` and an output projection."""

    def __init__(self, dim: int, heads: int, downsample: int = 1) -> None:
        super().__init__()
        inner = dim // downsample
        if inner % heads:
            raise ValueError(f"attention width {inner} is not divisible by {heads} heads")
        self.heads = heads
        self.q_proj = nn.Linear(dim, inner)
        self.k_proj = nn.Linear(dim, inner)
        self.v_proj = nn.Linear(dim, inner)
        self.out_proj = nn.Linear(inner, dim)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.view(b, n, self.heads, c // self.heads).transpose(1, 2)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        qh, kh, vh = self._split(self.q_proj(q)), self._split(self.k_proj(k)), self._split(self.v_proj(v))
        out = F.scaled_dot_product_attention(qh, kh, vh)
        b, h, n, d = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, h * d))


class FeedForward(nn.Module):
    """``lin1`` -> ReLU -> ``lin2``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.lin1 = nn.Linear(dim, hidden)
        self.lin2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(F.relu(self.lin1(x)))


class TwoWayBlock(nn.Module):
    """Token self-attention, token->image cross-attention, token MLP, image->token cross-attention.

    Each step is residual and followed by a LayerNorm. Positional codes are added to
    queries and keys (not values); the very first self-attention uses none.
    """

    def __init__(self, dim: int, heads: int, mlp_dim: int, downsample: int, first: bool) -> None:
        super().__init__()
        self.first = first
        self.self_attn = ProjAttention(dim, heads)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn_token_to_image = ProjAttention(dim, heads, downsample)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = FeedForward(dim, mlp_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.norm4 = nn.LayerNorm(dim)
        self.cross_attn_image_to_token = ProjAttention(dim, heads, downsample)

    def forward(
        self, tokens: torch.Tensor, image: torch.Tensor, token_pe: torch.Tensor, image_pe: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.first:
            tokens = self.self_attn(tokens, tokens, tokens)
        else:
            q = tokens + token_pe
            tokens = tokens + self.self_attn(q, q, tokens)
        tokens = self.norm1(tokens)
        tq, ik = tokens + token_pe, image + image_pe
        tokens = self.norm2(tokens + self.cross_attn_token_to_image(tq, ik, image))
        tokens = self.norm3(tokens + self.mlp(tokens))
        tq = tokens + token_pe
        image = self.norm4(image + self.cross_attn_image_to_token(ik, tq, tokens))
        return tokens, image


class TwoWayTransformer(nn.Module):
    """Stack of :class:`TwoWayBlock` and a final token->image attention.

    Parameters
    ----------
    depth : int
        Number of two-way blocks.
    dim : int
        Token and image channel width.
    heads : int
        Attention heads.
    mlp_dim : int
        Hidden width of the blocks' feed-forward layers.
    downsample : int
        Channel reduction of the token<->image attentions' projections.
    """

    def __init__(self, depth: int = 2, dim: int = 256, heads: int = 8, mlp_dim: int = 2048, downsample: int = 2) -> None:
        super().__init__()
        self.layers = nn.ModuleList(TwoWayBlock(dim, heads, mlp_dim, downsample, first=(i == 0)) for i in range(depth))
        self.final_attn_token_to_image = ProjAttention(dim, heads, downsample)
        self.norm_final_attn = nn.LayerNorm(dim)

    def forward(
        self, image: torch.Tensor, image_pe: torch.Tensor, tokens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Attend tokens to image and image to tokens.

        Parameters
        ----------
        image : torch.Tensor
            ``(B, C, H, W)`` image embedding.
        image_pe : torch.Tensor
            ``(B, C, H, W)`` (or broadcastable ``(1, C, H, W)``) positional code of the image.
        tokens : torch.Tensor
            ``(B, N, C)`` output and prompt tokens.

        Returns
        -------
        tokens : torch.Tensor
            ``(B, N, C)``.
        image : torch.Tensor
            ``(B, H*W, C)``.
        """
        image = image.flatten(2).transpose(1, 2)
        image_pe = image_pe.flatten(2).transpose(1, 2)
        token_pe = tokens
        for layer in self.layers:
            tokens, image = layer(tokens, image, token_pe, image_pe)
        out = self.final_attn_token_to_image(tokens + token_pe, image + image_pe, image)
        return self.norm_final_attn(tokens + out), image


class HeadMLP(nn.Module):
    """Plain MLP with ReLU between its ``layers``."""

    def __init__(self, dim_in: int, hidden: int, dim_out: int, depth: int) -> None:
        super().__init__()
        dims = [dim_in] + [hidden] * (depth - 1) + [dim_out]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, lin in enumerate(self.layers):
            x = lin(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class MaskDecoder(nn.Module):
    """Predict mask logits ``(B, M, 256, 256)`` and IoU estimates ``(B, M)`` from embeddings and prompts.

    Parameters
    ----------
    dim : int
        Embedding width (256 for the released checkpoint).
    num_multimask : int
        Alternative masks besides the single-mask output.
    iou_depth : int
        Layers of the IoU head.
    iou_hidden : int
        Hidden width of the IoU head.
    """

    def __init__(self, dim: int = 256, num_multimask: int = 3, iou_depth: int = 3, iou_hidden: int = 256) -> None:
        super().__init__()
        self.num_masks = num_multimask + 1
        self.transformer = TwoWayTransformer(2, dim, 8, 2048, 2)
        self.iou_token = nn.Embedding(1, dim)
        self.mask_tokens = nn.Embedding(self.num_masks, dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(dim, dim // 4, 2, stride=2),
            LayerNorm2d(dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(dim // 4, dim // 8, 2, stride=2),
            nn.GELU(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(HeadMLP(dim, dim, dim // 8, 3) for _ in range(self.num_masks))
        self.iou_prediction_head = HeadMLP(dim, iou_hidden, self.num_masks, iou_depth)

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse: torch.Tensor,
        dense: torch.Tensor,
        multimask: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode.

        Parameters
        ----------
        image_embeddings : (B, 256, 64, 64)
        image_pe : (1, 256, 64, 64)
        sparse : (B, N, 256) prompt tokens
        dense : (B, 256, 64, 64) dense prompt code
        multimask : return the three alternative masks instead of the single one

        Returns
        -------
        logits : (B, 1 or 3, 256, 256)
        iou : (B, 1 or 3)
        """
        b = sparse.shape[0]
        fixed = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        tokens = torch.cat([fixed[None].expand(b, -1, -1).to(sparse.dtype), sparse], dim=1)
        if image_embeddings.shape[0] != b:
            image_embeddings = image_embeddings.expand(b, -1, -1, -1)
        src = image_embeddings + dense
        pe = image_pe.expand(b, -1, -1, -1)
        c, h, w = src.shape[1:]
        hs, img = self.transformer(src, pe, tokens)
        iou_out = hs[:, 0]
        mask_out = hs[:, 1 : 1 + self.num_masks]
        up = self.output_upscaling(img.transpose(1, 2).reshape(b, c, h, w))
        sel = range(1, self.num_masks) if multimask else range(1)
        hyper = torch.stack([self.output_hypernetworks_mlps[i](mask_out[:, i]) for i in sel], dim=1)  # (B, M, 32)
        bu, cu, hu, wu = up.shape
        logits = (hyper @ up.view(bu, cu, hu * wu)).view(bu, -1, hu, wu)
        iou = self.iou_prediction_head(iou_out)
        iou = iou[:, 1:] if multimask else iou[:, :1]
        return logits, iou


