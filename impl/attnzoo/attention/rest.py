"""ResT and its efficient multi-head self-attention, EMSA (Zhang & Yang, "ResT: An Efficient Transformer for
Visual Recognition", NeurIPS 2021, arXiv:2105.13677).

EMSA changes standard multi-head attention in two places.

* Memory: keys and values come from a spatially reduced copy of the tokens. The L = H W tokens are put back on
  their H x W grid, a depth-wise convolution with kernel s + 1, stride s and padding s // 2 shrinks the grid by s
  in each direction, and a LayerNorm follows; K and V are projected from these L' ~ L / s^2 tokens.
* Interaction across heads: the h score maps Q K^T / sqrt(d) (h x L x L') are mixed by a 1x1 convolution over
  the head axis before the softmax, and each head's softmax map is instance-normalized afterwards:

      EMSA(X) = W_o [ IN( softmax( Conv_1x1( Q K^T / sqrt(d) ) ) ) V ].

  Because the convolution mixes the logits of different heads before the softmax, the attention cannot be
  computed by ``scaled_dot_product_attention`` (which takes each head's logits on their own); the score maps
  are materialized (h x L x L', small thanks to the reduction). After the instance norm the weights are no
  longer a probability distribution: each head's map has zero mean and unit variance, and may be negative.
  With a single head (ResT's first stage) there is nothing to mix and EMSA reduces to softmax attention on
  the reduced keys, which then does go through SDPA.

The ResT backbones (Lite, Small, Base, Large) are registered as models. A stem of three 3x3 convolutions
(strides 2, 1, 2) and, before stages 2-4, a stride-2 3x3 convolution with BatchNorm embed the patches; after each
of these a "pixel attention" positional encoding multiplies the map by sigmoid(depthwise 3x3 conv(map)), which
works at any resolution. Each stage is a stack of pre-norm blocks x + EMSA(LN(x)), x + MLP(LN(x)); global
average pooling of the final LayerNorm output feeds the linear head.

Departures: the ``emsa`` module's defaults (4 heads, s = 2) are the paper's third-stage setting (ResT uses 64
channels per head; here any C divisible by the number of heads). The instance norm is written out (zero mean,
unit variance over each L x L' map, eps 1e-5, no affine, as ``nn.InstanceNorm2d``), so that a map of a single
element, which ``nn.InstanceNorm2d`` rejects, is handled (it becomes zero). The grid size of each stage is
taken from the convolution output, so odd input sizes work (the authors' code divides H and W by the stride,
which is wrong for odd sizes).
"""
from __future__ import annotations

from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import drop_path_rates, DropPath, Mlp, check_divisible, check_hw, check_positive_int, trunc_normal_init
from ..layers.tokens import TokenAttention
from ..registry import register_attention, register_model



def instance_norm_maps(attn: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Normalize each (L, L') map of (N, h, L, L') to zero mean and unit variance (no affine parameters)."""
    # statistics in at least float32 (also under autocast); float64 input stays float64. One fused layer_norm
    # over the last two axes computes exactly this (a 1-element map becomes 0, where nn.InstanceNorm2d raises).
    a = attn.to(torch.promote_types(attn.dtype, torch.float32))
    return F.layer_norm(a, a.shape[-2:], eps=eps).to(attn.dtype)


@register_attention("emsa", layout="nlc")
class EMSA(TokenAttention):
    """(N, L, C) -> (N, L, C), ``forward(x, hw=(H, W))`` (hw is needed when sr_ratio > 1).

    Args:
        channels: C. num_heads: h, must divide C (default 4). sr_ratio: s, the spatial reduction of K, V (default 2).
        qkv_bias: biases in the Q and K, V projections. transform: the 1x1 convolution across heads and the
        instance norm (ResT; only with h > 1). attn_drop, proj_drop: dropout on the weights and after W_o.
    """

    def __init__(self, channels: int, num_heads: int = 4, sr_ratio: int = 2, qkv_bias: bool = True,
                 transform: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__(channels)
        check_positive_int("num_heads", num_heads)
        check_positive_int("sr_ratio", sr_ratio)
        check_divisible("channels", channels, num_heads, "num_heads")
        self.num_heads = num_heads
        self.head_dim = channels // num_heads
        self.scale = self.head_dim ** -0.5
        self.sr_ratio = sr_ratio
        self.q = nn.Linear(channels, channels, bias=qkv_bias)
        self.kv = nn.Linear(channels, 2 * channels, bias=qkv_bias)
        if sr_ratio > 1:
            self.sr = nn.Conv2d(channels, channels, sr_ratio + 1, sr_ratio, sr_ratio // 2, groups=channels)
            self.sr_norm = nn.LayerNorm(channels)
        self.transform = transform and num_heads > 1
        if self.transform:
            self.transform_conv = nn.Conv2d(num_heads, num_heads, 1)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(channels, channels)
        self.proj_drop = nn.Dropout(proj_drop)

    def _qkv(self, x: torch.Tensor, hw) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n, length, c = x.shape
        q = self.q(x).reshape(n, length, self.num_heads, self.head_dim).transpose(1, 2)
        if self.sr_ratio > 1:
            h, w = check_hw(hw, length)
            grid = self.sr(x.transpose(1, 2).reshape(n, c, h, w))
            x = self.sr_norm(grid.flatten(2).transpose(1, 2))          # (N, L', C)
        elif hw is not None:
            check_hw(hw, length)
        k, v = self.kv(x).reshape(n, -1, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return q, k, v

    def _weights(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        attn = self.transform_conv(q @ k.transpose(-2, -1) * self.scale)  # mix the heads' logits
        return instance_norm_maps(attn.softmax(dim=-1))

    def attention_map(self, x: torch.Tensor, hw=None) -> torch.Tensor:
        """The weights applied to V, (N, heads, L, L'), computed explicitly for inspection and plots."""
        with torch.no_grad():
            q, k, _ = self._qkv(x, hw)
            if self.transform:
                return self._weights(q, k)
            return (q @ k.transpose(-2, -1) * self.scale).softmax(dim=-1)

    def forward_tokens(self, x: torch.Tensor, hw=None) -> torch.Tensor:
        n, length, c = x.shape
        q, k, v = self._qkv(x, hw)
        if self.transform:
            y = self.attn_drop(self._weights(q, k)) @ v
        else:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop.p if self.training else 0.0)
        return self.proj_drop(self.proj(y.transpose(1, 2).reshape(n, length, c)))


# ---------------------------------------------------------------------------------------------------------
# ResT backbones
# ---------------------------------------------------------------------------------------------------------


class PixelAttention(nn.Module):
    """ResT's positional encoding: x * sigmoid(depthwise 3x3 conv(x)) on an (N, C, H, W) map."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, groups=channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.conv(x))


class ResTBlock(nn.Module):
    """Pre-norm block on (N, L, C) tokens: x + EMSA(LN(x)), x + MLP(LN(x))."""

    def __init__(self, dim: int, num_heads: int, sr_ratio: int, mlp_ratio: float = 4.0, drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = EMSA(dim, num_heads, sr_ratio, qkv_bias=True, transform=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), hw=hw))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class ResTStage(nn.Module):
    """Patch embedding (stem or stride-2 conv + BN), pixel-attention encoding, then blocks; (N,C,H,W) in and out."""

    def __init__(self, embed: nn.Module, dim: int, depth: int, num_heads: int, sr_ratio: int, mlp_ratio: float,
                 rates: list[float]):
        super().__init__()
        self.embed = embed
        self.pos = PixelAttention(dim)
        self.blocks = nn.ModuleList(ResTBlock(dim, num_heads, sr_ratio, mlp_ratio, r) for r in rates)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pos(self.embed(x))
        n, c, h, w = x.shape
        t = x.flatten(2).transpose(1, 2)
        for blk in self.blocks:
            t = blk(t, (h, w))
        return t.transpose(1, 2).reshape(n, c, h, w)


class ResT(nn.Module):
    """(N, in_chans, H, W) -> (N, num_classes) logits; any H, W >= 1.

    Args:
        embed_dims, depths, num_heads, sr_ratios, mlp_ratio: the four stages (ResT: heads 1, 2, 4, 8 and
        reductions 8, 4, 2, 1). drop_path_rate: stochastic depth, linear over blocks.
    """

    def __init__(self, embed_dims=(64, 128, 256, 512), depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8),
                 sr_ratios=(8, 4, 2, 1), mlp_ratio: float = 4.0, num_classes: int = 1000, in_chans: int = 3,
                 drop_path_rate: float = 0.0):
        super().__init__()
        check_positive_int("num_classes", num_classes)
        check_positive_int("in_chans", in_chans)
        if not len(embed_dims) == len(depths) == len(num_heads) == len(sr_ratios) == 4:
            raise ValueError("embed_dims, depths, num_heads and sr_ratios must have four entries each")
        d0 = embed_dims[0]
        stem = nn.Sequential(  # three 3x3 convolutions, strides 2, 1, 2
            nn.Conv2d(in_chans, d0 // 2, 3, 2, 1, bias=False), nn.BatchNorm2d(d0 // 2), nn.ReLU(inplace=True),
            nn.Conv2d(d0 // 2, d0 // 2, 3, 1, 1, bias=False), nn.BatchNorm2d(d0 // 2), nn.ReLU(inplace=True),
            nn.Conv2d(d0 // 2, d0, 3, 2, 1, bias=False))
        rates = drop_path_rates(drop_path_rate, sum(depths))
        stages, in_dim, i = [], in_chans, 0
        for s, (dim, depth, heads, sr) in enumerate(zip(embed_dims, depths, num_heads, sr_ratios)):
            embed = stem if s == 0 else nn.Sequential(nn.Conv2d(in_dim, dim, 3, 2, 1), nn.BatchNorm2d(dim))
            stages.append(ResTStage(embed, dim, depth, heads, sr, mlp_ratio, rates[i:i + depth]))
            in_dim, i = dim, i + depth
        self.stages = nn.Sequential(*stages)
        self.norm = nn.LayerNorm(in_dim)
        self.num_features = in_dim
        self.head = nn.Linear(in_dim, num_classes)
        self.apply(partial(trunc_normal_init, types=(nn.Linear, nn.Conv2d)))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, num_features, H/32, W/32) (sizes rounded up)."""
        return self.stages(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x).flatten(2).transpose(1, 2)
        return self.head(self.norm(x).mean(dim=1))


_RES_T = {
    "rest_lite": dict(embed_dims=(64, 128, 256, 512), depths=(2, 2, 2, 2)),
    "rest_small": dict(embed_dims=(64, 128, 256, 512), depths=(2, 2, 6, 2)),
    "rest_base": dict(embed_dims=(96, 192, 384, 768), depths=(2, 2, 6, 2)),
    "rest_large": dict(embed_dims=(96, 192, 384, 768), depths=(2, 2, 18, 2)),
}
for _name, _cfg in _RES_T.items():
    register_model(_name, ResT, num_heads=(1, 2, 4, 8), sr_ratios=(8, 4, 2, 1), **_cfg)
