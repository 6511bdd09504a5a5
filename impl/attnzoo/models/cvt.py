"""CvT: introducing convolutions to vision transformers (Wu et al., ICCV 2021, arXiv:2103.15808).

A three-stage hierarchical transformer without position embeddings. Each stage starts with a **convolutional token
embedding** (an overlapping strided convolution, 7x7 stride 4 then 3x3 stride 2, followed by LayerNorm on the tokens),
then transformer blocks whose attention uses a **convolutional projection** (Sec. 3.2, registered alone as
``cvt_attn``): the tokens are put back on their H x W grid and each of Q, K, V is a depthwise 3x3 convolution +
BatchNorm (the "dw_bn" projection), then a linear layer:

    Q = W_q BN(DWConv_s=1(X)),  K = W_k BN(DWConv_s=2(X)),  V = W_v BN(DWConv_s=2(X)),
    Attn = softmax(Q K^T * scale) V,  out = W_o Attn,

with keys and values subsampled by stride 2 ("squeezed", L / 4 of them: the cost drops 4x). The class token,
appended only in the last stage, skips the convolutions and is prepended to Q, K and V as it is. The head reads the
last stage's class token after a LayerNorm. Blocks are pre-norm, MLP x4; the MLP's GELU is QuickGELU
x * sigmoid(1.702 x), as the authors' code.

Sizes (Table 2 and the authors' experiments/imagenet/cvt/*.yaml): widths (64, 192, 384), heads (1, 3, 6), blocks
(1, 2, 10) for CvT-13 and (1, 4, 16) for CvT-21, drop path 0.1 in the last stage. There is no timm twin; the layers
follow the authors' lib/models/cls_cvt.py one by one, with the same parameter names (their ``stage{i}.`` is our
``stages.{i}.``): with the same random weights, their ConvolutionalVisionTransformer (CvT-13 spec) and ours gave the
same logits to 4e-6 at 224 x 224 and 67 x 45 (a one-off check; the tests check the attention against a reference).

Follows the authors' code where it differs from the usual choices and from the paper's wording:

* the attention scale is ``dim ** -0.5`` over the **whole** width, not per head (``Attention.scale``); the
  released models were trained with it (``per_head_scale=True`` gives 1 / sqrt(head dim) instead);
* QuickGELU in the MLP, LayerNorm eps 1e-5, QKV biases, the depthwise projection convolutions without bias;
* initialisation: linear layers truncated normal (0.02) with zero bias, norms 1 / 0, convolutions PyTorch's default.

Departure: the authors' head squeezes the class token with ``torch.squeeze``, which also drops the batch axis at
batch 1; here the token is indexed, so batch 1 gives (1, num_classes).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import (DropPath, Mlp, TokenAttention, check_hw, check_positive_int, check_positive_ints,
                      drop_path_rates, tokens_to_grid, trunc_normal_init)
from ..registry import register_attention, register_model


class QuickGELU(nn.Module):
    """x * sigmoid(1.702 x): the GELU approximation of the authors' code."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class ConvProjection(nn.Sequential):
    """Depthwise k x k convolution (no bias) + BatchNorm on the grid, back to tokens: (N, C, H, W) -> (N, L', C)."""

    def __init__(self, dim: int, kernel_size: int, stride: int):
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, kernel_size, stride, kernel_size // 2, groups=dim, bias=False)
        self.bn = nn.BatchNorm2d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x).flatten(2).transpose(1, 2)


@register_attention("cvt_attn", layout="nlc")
class ConvProjectionAttention(TokenAttention):
    """CvT's attention with convolutional projections: (N, L, C) tokens on an (H, W) grid -> same ((N, C, H, W) maps
    -> same).

    Args: channels; num_heads (1: CvT's first stage); kernel_size (3), stride_kv (2), stride_q (1), qkv_bias (True):
    the authors' settings; per_head_scale (False: the authors' dim ** -0.5, see the module docstring).
    """

    def __init__(self, channels: int, num_heads: int = 1, kernel_size: int = 3, stride_kv: int = 2,
                 stride_q: int = 1, qkv_bias: bool = True, per_head_scale: bool = False, drop: float = 0.0):
        super().__init__(channels)
        self.num_heads = check_positive_int("num_heads", num_heads)
        if channels % num_heads:
            raise ValueError(f"channels={channels} must be a multiple of num_heads={num_heads}")
        check_positive_int("kernel_size", kernel_size)
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (a centred depthwise window), got {kernel_size}")
        self.scale = (channels // num_heads if per_head_scale else channels) ** -0.5
        self.conv_proj_q = ConvProjection(channels, kernel_size, check_positive_int("stride_q", stride_q))
        self.conv_proj_k = ConvProjection(channels, kernel_size, check_positive_int("stride_kv", stride_kv))
        self.conv_proj_v = ConvProjection(channels, kernel_size, stride_kv)
        self.proj_q = nn.Linear(channels, channels, bias=qkv_bias)
        self.proj_k = nn.Linear(channels, channels, bias=qkv_bias)
        self.proj_v = nn.Linear(channels, channels, bias=qkv_bias)
        self.proj = nn.Linear(channels, channels)
        self.proj_drop = nn.Dropout(drop)

    def forward_tokens(self, x: torch.Tensor, hw: tuple[int, int] | None) -> torch.Tensor:
        return self.attend(x, check_hw(hw, x.shape[1]), 0)

    def attend(self, x: torch.Tensor, hw: tuple[int, int], num_prefix: int = 0) -> torch.Tensor:
        """(N, prefix + H * W, C) -> same; the prefix (class token) skips the convolutions."""
        n, length, c = x.shape
        prefix, grid = x[:, :num_prefix], tokens_to_grid(x[:, num_prefix:], hw).permute(0, 3, 1, 2)

        def heads(proj, conv):
            t = torch.cat([prefix, conv(grid)], dim=1)
            return proj(t).view(n, t.shape[1], self.num_heads, -1).transpose(1, 2)

        q, k, v = (heads(self.proj_q, self.conv_proj_q), heads(self.proj_k, self.conv_proj_k),
                   heads(self.proj_v, self.conv_proj_v))
        y = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        return self.proj_drop(self.proj(y.transpose(1, 2).reshape(n, -1, c)))


class CvTBlock(nn.Module):
    """x + attn(LN(x)), then x + MLP(LN(x)): (N, prefix + H * W, C) on (H, W) -> same."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, drop: float, drop_path: float,
                 per_head_scale: bool):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = ConvProjectionAttention(dim, num_heads, per_head_scale=per_head_scale, drop=drop)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act=QuickGELU, drop=drop)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, hw: tuple[int, int], num_prefix: int) -> torch.Tensor:
        x = x + self.drop_path(self.attn.attend(self.norm1(x), hw, num_prefix))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class ConvEmbed(nn.Module):
    """Overlapping strided convolution, then LayerNorm on the tokens: (N, C_in, H, W) -> (N, L, C) and (H', W')."""

    def __init__(self, in_dim: int, dim: int, kernel_size: int, stride: int, padding: int):
        super().__init__()
        self.proj = nn.Conv2d(in_dim, dim, kernel_size, stride, padding)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        x = self.proj(x)
        return self.norm(x.flatten(2).transpose(1, 2)), (x.shape[2], x.shape[3])


class CvTStage(nn.Module):
    """Convolutional token embedding, [class token], blocks: (N, C_in, H, W) -> ((N, C, H', W') map, class token
    (N, 1, C) or None)."""

    def __init__(self, in_dim: int, dim: int, depth: int, num_heads: int, patch: tuple[int, int, int],
                 cls_token: bool, mlp_ratio: float, drop: float, drop_paths: list[float], per_head_scale: bool):
        super().__init__()
        self.patch_embed = ConvEmbed(in_dim, dim, *patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if cls_token else None
        self.blocks = nn.ModuleList(CvTBlock(dim, num_heads, mlp_ratio, drop, drop_paths[i], per_head_scale)
                                    for i in range(depth))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        x, hw = self.patch_embed(x)
        prefix = 0
        if self.cls_token is not None:
            x, prefix = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1), 1
        for block in self.blocks:
            x = block(x, hw, prefix)
        cls = x[:, :prefix] if prefix else None
        return tokens_to_grid(x[:, prefix:], hw).permute(0, 3, 1, 2), cls


class CvT(nn.Module):
    """(N, in_chans, H, W) -> (N, num_classes) logits.

    Args:
        embed_dims, depths, num_heads: widths, blocks and heads of the 3 stages. mlp_ratio (4). drop_rate.
        stage_drop_path: the largest drop-path rate of each stage (linear from 0 within a stage, as the authors;
            (0, 0, 0.1)).
        per_head_scale: 1 / sqrt(head dim) in attention instead of the authors' 1 / sqrt(width).
    """

    PATCHES = ((7, 4, 2), (3, 2, 1), (3, 2, 1))  # kernel, stride, padding of the three token embeddings

    def __init__(self, embed_dims=(64, 192, 384), depths=(1, 2, 10), num_heads=(1, 3, 6), mlp_ratio: float = 4.0,
                 in_chans: int = 3, num_classes: int = 1000, drop_rate: float = 0.0,
                 stage_drop_path=(0.0, 0.0, 0.1), per_head_scale: bool = False):
        super().__init__()
        embed_dims, depths, num_heads = (check_positive_ints(name, v) for name, v in
                                         (("embed_dims", embed_dims), ("depths", depths), ("num_heads", num_heads)))
        if not len(embed_dims) == len(depths) == len(num_heads) == 3 or len(tuple(stage_drop_path)) != 3:
            raise ValueError(f"embed_dims, depths, num_heads and stage_drop_path need 3 entries (one per stage), got "
                             f"{embed_dims}, {depths}, {num_heads}, {tuple(stage_drop_path)}")
        check_positive_int("num_classes", num_classes)
        dims_in = (in_chans,) + embed_dims[:2]
        self.stages = nn.ModuleList(
            CvTStage(dims_in[i], embed_dims[i], depths[i], num_heads[i], self.PATCHES[i], i == 2, mlp_ratio,
                     drop_rate, drop_path_rates(stage_drop_path[i], depths[i]), per_head_scale)
            for i in range(3))
        self.norm = nn.LayerNorm(embed_dims[-1])
        self.num_features = embed_dims[-1]
        self.head = nn.Linear(embed_dims[-1], num_classes)
        self.apply(trunc_normal_init)
        cls = self.stages[2].cls_token
        if not cls.is_meta:
            nn.init.trunc_normal_(cls, std=0.02)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, C, H, W) -> (last stage's (N, C_3, H / 16, W / 16) map, its class token (N, 1, C_3))."""
        cls = None
        for stage in self.stages:
            x, cls = stage(x)
        return x, cls

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, cls = self.forward_features(x)
        return self.head(self.norm(cls[:, 0]))


_VARIANTS = {
    "13": dict(depths=(1, 2, 10)),
    "21": dict(depths=(1, 4, 16)),
}
for _name, _cfg in _VARIANTS.items():
    register_model(f"cvt_{_name}", CvT, embed_dims=(64, 192, 384), num_heads=(1, 3, 6), **_cfg)
