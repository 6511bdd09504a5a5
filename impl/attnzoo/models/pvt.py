"""PVT: Pyramid Vision Transformer (Wang et al., ICCV 2021, arXiv:2102.12122).

ViT keeps one coarse 1/16 token grid from the first block to the last; PVT gives the transformer a CNN's four-stage
pyramid (strides 4, 8, 16, 32) so that it can feed dense-prediction heads. Stage i cuts its input into P_i x P_i
patches (P_1 = 4, then 2), embeds them linearly (a stride-P_i convolution) with a LayerNorm, adds a learned position
table of its own and runs L_i pre-norm transformer blocks.

**Spatial-reduction attention** (SRA, Sec. 3.3, Eq. 2-4) keeps the first stages affordable at 1/4 resolution: the
queries are all H W tokens, but the keys and values come from a map shrunk R_i times per side,

    SR(x)  = LN(Conv_{R x R, stride R}(x))                        (H W / R^2 tokens)
    SRA(x) = Concat_j softmax(x W_j^Q (SR(x) W_j^K)^T / sqrt(d)) SR(x) W_j^V  W^O,

so one head costs O(H^2 W^2 / R^2) instead of O(H^2 W^2). It is registered on its own as the attention module
``pvt_sra`` (a token mechanism: feature maps or tokens with their grid); SegFormer's encoder reuses it.

Sizes (the authors' classification/pvt.py, whai362/PVT): widths (64, 128, 320, 512), heads (1, 2, 5, 8), MLP ratios
(8, 8, 4, 4), reduction ratios (8, 4, 2, 1), depths Tiny (2, 2, 2, 2), Small (3, 4, 6, 3), Medium (3, 4, 18, 3),
Large (3, 8, 27, 3); biases in Q, K, V. As in that code, the block and final LayerNorms use eps 1e-6 and the patch
embedding's and SRA's LayerNorms PyTorch's default 1e-5; a class token joins the last stage (with its own position
entry), whose final LayerNorm output feeds the linear head. timm implements only PVT v2 (overlapping embeddings,
convolutional FFN, no position tables), so PVT v1 has no timm twin.

Sizes of input: as the authors' code, any input of at least 32 x 32 (the smallest on which every stage's reduction
convolution has one window; a ValueError names it otherwise). The patch embeddings drop the last rows/columns that
do not fill a patch (floor, the authors' un-padded strided convolutions), and the position tables, learned for
``img_size``, are resized bilinearly to the actual grid (``align_corners=False``), as the authors' ``_get_pos_embed``.
Departures: none in the computation; softmax attention runs in ``F.scaled_dot_product_attention``.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import (check_images, DropPath, Mlp, TokenAttention, check_divisible, check_hw, check_positive_int, check_stages,
                      resize_pos_grid, to_2tuple, trunc_normal_init)
from ..layers.drop import stage_drop_path_rates
from ..registry import register_attention, register_model


class ReducedKVAttention(TokenAttention):
    """Multi-head attention whose queries are all L tokens and whose keys and values come from a reduced set of L'
    tokens, ``kv_tokens(x, hw, *extra)`` (PVT's spatial reduction, P2T's pooling pyramid): (N, L, C) -> (N, L, C),
    softmax(Q K^T / sqrt(d)) V in ``F.scaled_dot_product_attention``, then the output projection. The base builds
    ``q``, ``kv`` (one linear layer for K and V), ``proj`` and the dropouts; subclasses build what ``kv_tokens`` needs.
    """

    def __init__(self, channels: int, num_heads: int, qkv_bias: bool, attn_drop: float = 0.0,
                 proj_drop: float = 0.0):
        super().__init__(channels)
        self.num_heads = check_positive_int("num_heads", num_heads)
        check_divisible("channels", channels, num_heads, "num_heads")
        self.head_dim = channels // num_heads
        self.q = nn.Linear(channels, channels, bias=qkv_bias)
        self.kv = nn.Linear(channels, 2 * channels, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(channels, channels)
        self.proj_drop = nn.Dropout(proj_drop)

    def kv_tokens(self, x: torch.Tensor, hw, *extra) -> torch.Tensor:
        raise NotImplementedError

    def _qkv(self, x: torch.Tensor, hw, *extra) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n, length, _ = x.shape
        q = self.q(x).reshape(n, length, self.num_heads, self.head_dim).transpose(1, 2)
        kv = self.kv(self.kv_tokens(x, hw, *extra))
        k, v = kv.reshape(n, -1, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return q, k, v

    def forward_tokens(self, x: torch.Tensor, hw, *extra) -> torch.Tensor:
        n, length, c = x.shape
        y = F.scaled_dot_product_attention(*self._qkv(x, hw, *extra),
                                           dropout_p=self.attn_drop if self.training else 0.0)
        return self.proj_drop(self.proj(y.transpose(1, 2).reshape(n, length, c)))

    @torch.no_grad()
    def attention_map(self, x: torch.Tensor, hw, *extra) -> torch.Tensor:
        """The softmax weights (N, heads, L, L') over the reduced keys, computed explicitly for plots."""
        q, k, _ = self._qkv(x, hw, *extra)
        return (q @ k.transpose(-2, -1) * self.head_dim ** -0.5).softmax(dim=-1)


@register_attention("pvt_sra", layout="nlc")
class SpatialReductionAttention(ReducedKVAttention):
    """Spatial-reduction attention (PVT Eq. 3-4): (N, L, C) tokens on an (H, W) grid -> (N, L, C).

    Queries from every token; keys and values from the map reduced by a ``sr_ratio`` x ``sr_ratio`` stride-``sr_ratio``
    convolution and a LayerNorm (H // R x W // R tokens, the remainder rows/columns dropped as in the authors' code).
    ``sr_ratio=1`` is plain multi-head self-attention with separate Q and KV projections (then no grid is needed).

    Args:
        channels: C. num_heads: heads (1, PVT's first stage). sr_ratio: R (2 here, PVT's third stage: the plug-in
            meets small maps; PVT uses 8, 4, 2, 1). qkv_bias: biases in the Q and KV projections (True in every
            released model). attn_drop, proj_drop: dropout on the attention weights and the output.
    """

    def __init__(self, channels: int, num_heads: int = 1, sr_ratio: int = 2, qkv_bias: bool = True,
                 attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__(channels, num_heads, qkv_bias, attn_drop, proj_drop)
        self.sr_ratio = check_positive_int("sr_ratio", sr_ratio)
        if sr_ratio > 1:
            self.sr = nn.Conv2d(channels, channels, sr_ratio, sr_ratio)
            self.norm = nn.LayerNorm(channels)
        else:
            self.sr = self.norm = None

    def kv_tokens(self, x: torch.Tensor, hw) -> torch.Tensor:
        """(N, L, C) -> the (N, L', C) tokens keys and values are computed from (L' = (H // R) (W // R))."""
        if self.sr is None:
            return x
        h, w = check_hw(hw, x.shape[1]) if hw is not None else (None, None)
        if h is None:
            raise ValueError(f"{type(self).__name__} with sr_ratio={self.sr_ratio} needs the token grid: "
                             f"call it as module(x, hw=(H, W))")
        if h < self.sr_ratio or w < self.sr_ratio:
            raise ValueError(f"{type(self).__name__} with sr_ratio={self.sr_ratio} needs a grid of at least "
                             f"{self.sr_ratio}x{self.sr_ratio}, got {h}x{w}")
        n, _, c = x.shape
        y = self.sr(x.transpose(1, 2).reshape(n, c, h, w))
        return self.norm(y.flatten(2).transpose(1, 2))


class PatchEmbed(nn.Module):
    """(N, C, H, W) -> (N, H' W', D) tokens and their grid (H', W'): a P x P convolution of stride S (default P) and
    padding, then a LayerNorm with PyTorch's eps 1e-5 (PVT: S = P, no padding, H' = H // P; SegFormer's overlapping
    patch merging: P = 7 or 3, S = 4 or 2, padding P // 2)."""

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int, stride: int | None = None, padding: int = 0):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride or patch_size, padding)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        x = self.proj(x)
        hw = (x.shape[-2], x.shape[-1])
        return self.norm(x.flatten(2).transpose(1, 2)), hw


class TokenMlp(Mlp):
    """The transformer MLP with the grid argument of the MLPs that need one (SegFormer's Mix-FFN): (N, L, C)."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0):
        super().__init__(dim, hidden, drop=drop)

    def forward(self, x: torch.Tensor, hw=None) -> torch.Tensor:
        return super().forward(x)


class Block(nn.Module):
    """Pre-norm transformer block with SRA: x + SRA(LN(x)), then x + MLP(LN(x)); (N, L, C) tokens on the grid ``hw``.

    ``mlp_layer(dim, hidden, drop)`` builds the feed-forward network, called as ``mlp(x, hw)`` (PVT: ``TokenMlp``;
    SegFormer: Mix-FFN). LayerNorms with eps 1e-6, as both papers' code.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, sr_ratio: int, qkv_bias: bool = True,
                 drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0, mlp_layer=TokenMlp):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = SpatialReductionAttention(dim, num_heads, sr_ratio, qkv_bias, attn_drop, drop)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = mlp_layer(dim, int(dim * mlp_ratio), drop)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, hw) -> torch.Tensor:
        x = x + self.drop_path(self.attn.forward_tokens(self.norm1(x), hw))
        return x + self.drop_path(self.mlp(self.norm2(x), hw))


def check_pyramid(depths, embed_dims, num_heads, sr_ratios, mlp_ratios) -> tuple[tuple, ...]:
    """Validate a four-stage pyramid's per-stage arguments; returns them as tuples (ValueErrors name the culprit)."""
    depths, embed_dims = check_stages(depths, embed_dims)
    for name, values in dict(num_heads=num_heads, sr_ratios=sr_ratios, mlp_ratios=mlp_ratios).items():
        if len(tuple(values)) != 4:
            raise ValueError(f"{name} needs 4 entries (one per stage), got {values!r}")
    num_heads = tuple(check_positive_int(f"num_heads[{i}]", h) for i, h in enumerate(num_heads))
    sr_ratios = tuple(check_positive_int(f"sr_ratios[{i}]", r) for i, r in enumerate(sr_ratios))
    return depths, embed_dims, num_heads, sr_ratios, tuple(mlp_ratios)


class TokenStage(nn.Module):
    """The stage of the overlapping-patch pyramids (SegFormer's MiT, P2T): (N, C_in, H, W) -> ``patch_embed`` ->
    (N, H' W', D) tokens -> ``blocks``, each called as ``block(x, (H', W'), *self.block_extras())`` -> ``norm``
    (None: none) -> (N, D, H', W'). Subclasses build the three; ``block_extras`` gives what their blocks take beyond
    the grid (P2T: the stage's depthwise convolutions)."""

    def block_extras(self) -> tuple:
        return ()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, hw = self.patch_embed(x)
        extras = self.block_extras()
        for block in self.blocks:
            x = block(x, hw, *extras)
        if self.norm is not None:
            x = self.norm(x)
        return x.transpose(1, 2).reshape(x.shape[0], -1, *hw)


def stage_outputs(stages: nn.ModuleList, x: torch.Tensor) -> list[torch.Tensor]:
    """Run ``stages`` in turn on ``x``; the output of every stage."""
    outs = []
    for stage in stages:
        x = stage(x)
        outs.append(x)
    return outs


class PVTStage(nn.Module):
    """Patch embedding, position table (+ the class token's entry in the last stage), blocks:
    (N, C_in, H, W) -> (N, D, H // P, W // P), or (N, 1 + L, D) tokens with the class token first (last stage)."""

    def __init__(self, in_chans: int, dim: int, patch_size: int, grid: tuple[int, int], depth: int, num_heads: int,
                 mlp_ratio: float, sr_ratio: int, qkv_bias: bool, drop: float, attn_drop: float,
                 drop_paths: list[float], cls_token: bool):
        super().__init__()
        self.grid = grid
        self.patch_embed = PatchEmbed(in_chans, dim, patch_size)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid[0] * grid[1] + int(cls_token), dim))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if cls_token else None
        self.pos_drop = nn.Dropout(drop)
        self.blocks = nn.ModuleList([Block(dim, num_heads, mlp_ratio, sr_ratio, qkv_bias, drop, attn_drop, r)
                                     for r in drop_paths])
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.trunc_normal_(self.cls_token, std=0.02)

    def position_embedding(self, hw: tuple[int, int]) -> torch.Tensor:
        """(1, [1 +] H W, D): the learned table, resized bilinearly (corners not aligned) to another grid."""
        t = int(self.cls_token is not None)
        if tuple(hw) == self.grid:
            return self.pos_embed
        grid = resize_pos_grid(self.pos_embed[:, t:], self.grid, hw, "bilinear", align_corners=False)
        return torch.cat([self.pos_embed[:, :t], grid], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, hw = self.patch_embed(x)
        n = x.shape[0]
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(n, -1, -1), x], dim=1)
        x = self.pos_drop(x + self.position_embedding(hw))
        for block in self.blocks:  # the class-token stage has sr_ratio 1: its attention needs no grid
            x = block(x, hw if self.cls_token is None else None)
        if self.cls_token is not None:
            return x
        return x.transpose(1, 2).reshape(n, -1, *hw)


class PyramidVisionTransformer(nn.Module):
    """(N, in_chans, H, W) -> (N, num_classes) logits; H, W >= ``min_input_size`` (32 for the released models).

    Args:
        img_size: int or (H, W), the size the position tables are laid out for. patch_size: P_1 (later stages 2).
        embed_dims, num_heads, mlp_ratios, sr_ratios, depths: per stage (4 entries). qkv_bias: Q/KV biases.
        drop_rate, attn_drop_rate: dropout; drop_path_rate: stochastic depth rising linearly over all blocks.
    """

    def __init__(self, img_size=224, patch_size: int = 4, in_chans: int = 3, num_classes: int = 1000,
                 embed_dims=(64, 128, 320, 512), num_heads=(1, 2, 5, 8), mlp_ratios=(8, 8, 4, 4),
                 sr_ratios=(8, 4, 2, 1), depths=(2, 2, 2, 2), qkv_bias: bool = True, drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0, drop_path_rate: float = 0.0):
        super().__init__()
        depths, embed_dims, num_heads, sr_ratios, mlp_ratios = check_pyramid(depths, embed_dims, num_heads,
                                                                             sr_ratios, mlp_ratios)
        if sr_ratios[-1] != 1:
            raise ValueError(f"the last stage carries the class token and needs sr_ratio 1, got {sr_ratios[-1]}")
        for name, value in dict(patch_size=patch_size, in_chans=in_chans, num_classes=num_classes).items():
            check_positive_int(name, value)
        patches = [patch_size, 2, 2, 2]
        strides = [patch_size * 2 ** i for i in range(4)]
        self.min_input_size = max(s * r for s, r in zip(strides, sr_ratios))
        img_hw = to_2tuple(img_size)
        if min(img_hw) < self.min_input_size:
            raise ValueError(f"img_size={img_size} is smaller than the smallest input, {self.min_input_size}")
        rates = stage_drop_path_rates(drop_path_rate, depths)
        self.stages = nn.ModuleList([
            PVTStage(in_chans if i == 0 else embed_dims[i - 1], embed_dims[i], patches[i],
                     tuple(s // strides[i] for s in img_hw), depths[i], num_heads[i], mlp_ratios[i], sr_ratios[i],
                     qkv_bias, drop_rate, attn_drop_rate, rates[i], cls_token=i == 3)
            for i in range(4)])
        self.norm = nn.LayerNorm(embed_dims[-1], eps=1e-6)
        self.num_features = embed_dims[-1]
        self.head = nn.Linear(embed_dims[-1], num_classes)
        self.apply(trunc_normal_init)

    def check_input(self, x: torch.Tensor) -> None:
        check_images("PVT", x, self.min_input_size, "one spatial-reduction window in every stage")

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The four stage outputs: maps (N, D_i, H_i, W_i) for stages 1-3, then the normalized last-stage tokens
        (N, 1 + H_4 W_4, D_4), class token first."""
        self.check_input(x)
        outs = stage_outputs(self.stages, x)
        outs[-1] = self.norm(outs[-1])
        return outs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x)[-1][:, 0])


_VARIANTS = {"tiny": (2, 2, 2, 2), "small": (3, 4, 6, 3), "medium": (3, 4, 18, 3), "large": (3, 8, 27, 3)}
for _size, _depths in _VARIANTS.items():
    register_model(f"pvt_{_size}", PyramidVisionTransformer, img_size=224, depths=_depths)
