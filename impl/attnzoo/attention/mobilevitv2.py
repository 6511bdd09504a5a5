"""Separable self-attention of MobileViTv2 (Mehta & Rastegari, "Separable Self-attention for Mobile Vision
Transformers", TMLR 2023, arXiv:2206.02680).

Multi-head attention compares every token with every other (O(L^2)) through batched matrix products, which are
slow on phones. Separable self-attention compares every token with one learned latent token L instead, and
uses only element-wise operations and reductions:

1. context scores: c_s = softmax over the L tokens of (X W_I), with W_I: C -> 1 (one score per token);
2. context vector: c_v = sum_t c_s(t) * (X_t W_K), a single C-dimensional summary of the sequence;
3. output: Y = ( ReLU(X W_V) * c_v ) W_O, the context vector broadcast to every token and gated by its value.

The cost is O(L C) in time and memory. Registered as ``separable_attn`` on (N, L, C) tokens (layout "nlc"),
any L; the three input projections are one linear layer C -> 1 + 2C, as in the authors' code.

The MobileViTv2 backbones (width multipliers 0.5 to 2.0) are registered as models ``mobilevitv2_050`` ...
``mobilevitv2_200``: a 3x3 stride-2 stem and MobileNetV2 inverted residual blocks (expansion 2, SiLU), then three
stages that each downsample with an inverted residual block and apply a MobileViTv2 block. That block computes a
local representation (depth-wise 3x3 conv + BN + SiLU, then a 1x1 conv to the attention width d), unfolds the map
into 2 x 2 patches, so that the P = 4 pixels at the same place inside their patches form P sequences of N = HW / 4
tokens, runs pre-norm transformer layers x + SepAttn(Norm(x)), x + FFN(Norm(x)) on each sequence (FFN width 2d,
SiLU; Norm is a LayerNorm over channels and positions, i.e. GroupNorm with one group, as in the authors' code),
folds the patches back and projects to the block's width with a 1x1 conv + BN. Global average pooling and a linear
layer classify. Maps whose sides are not even are resized bilinearly to the next even size before unfolding, as
the authors' code does.

Departures: the ``separable_attn`` module attends over the sequence it is given (inside the backbone it is
applied to the P patch-position sequences, as in the paper). Dropout is left out of the backbone (the authors
train without attention/FFN dropout by default).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

import math

from ..layers import ConvNormAct, check_positive_int, make_divisible
from ..layers.tokens import TokenAttention
from ..registry import register_attention, register_model
from ..timm import register_timm_rules


@register_attention("separable_attn", layout="nlc")
class SeparableSelfAttention(TokenAttention):
    """(N, L, C) -> (N, L, C): W_O(ReLU(V) * sum_t softmax_t(I) K_t), linear in L.

    Args:
        channels: C. bias: biases in the projections. attn_drop: dropout on the context scores (training only).
    """

    def __init__(self, channels: int, bias: bool = True, attn_drop: float = 0.0):
        super().__init__(channels)
        self.channels = channels
        self.qkv = nn.Linear(channels, 1 + 2 * channels, bias=bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.out_proj = nn.Linear(channels, channels, bias=bias)

    def context_scores(self, x: torch.Tensor) -> torch.Tensor:
        """c_s: (N, L, 1), non-negative and summing to one over the tokens."""
        return self.qkv(x)[..., :1].softmax(dim=1)

    def forward_tokens(self, x: torch.Tensor, hw=None) -> torch.Tensor:
        scores, key, value = self.qkv(x).split([1, self.channels, self.channels], dim=-1)
        scores = self.attn_drop(scores.softmax(dim=1))                 # (N, L, 1)
        context = (scores * key).sum(dim=1, keepdim=True)               # (N, 1, C)
        return self.out_proj(F.relu(value) * context)


# ---------------------------------------------------------------------------------------------------------
# MobileViTv2 backbones
# ---------------------------------------------------------------------------------------------------------


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand (BN, SiLU), 3x3 depth-wise (stride; BN, SiLU), 1x1 project (BN); residual
    when the shape is kept."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, expand_ratio: float = 2.0):
        super().__init__()
        hidden = make_divisible(round(in_ch * expand_ratio), 8)
        layers = [] if expand_ratio == 1 else [ConvNormAct(in_ch, hidden, 1, act="silu")]
        layers += [ConvNormAct(hidden, hidden, 3, stride, groups=hidden, act="silu"),
                   ConvNormAct(hidden, out_ch, 1, act=None)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.residual else self.block(x)


class LinearAttnFFN(nn.Module):
    """Pre-norm transformer layer on unfolded patches (B, d, P, N): separable attention over the N tokens of each
    of the P sequences, then a 1x1-conv FFN."""

    def __init__(self, dim: int, ffn_dim: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(1, dim)
        self.attn = SeparableSelfAttention(dim)
        self.norm2 = nn.GroupNorm(1, dim)
        self.ffn = nn.Sequential(nn.Conv2d(dim, ffn_dim, 1), nn.SiLU(), nn.Conv2d(ffn_dim, dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, d, p, n = x.shape
        t = self.norm1(x).permute(0, 2, 3, 1).reshape(b * p, n, d)      # P sequences of N tokens
        x = x + self.attn(t).reshape(b, p, n, d).permute(0, 3, 1, 2)
        return x + self.ffn(self.norm2(x))


class MobileViTv2Block(nn.Module):
    """(B, C, H, W) -> (B, C, H', W') with H', W' rounded up to even: local conv, unfold 2 x 2, attention, fold."""

    def __init__(self, channels: int, attn_dim: int, depth: int, ffn_multiplier: float = 2.0, patch: int = 2):
        super().__init__()
        self.patch = patch
        self.local = nn.Sequential(ConvNormAct(channels, channels, 3, groups=channels, act="silu"),
                                   nn.Conv2d(channels, attn_dim, 1, bias=False))
        ffn_dim = int(ffn_multiplier * attn_dim // 16 * 16)
        self.layers = nn.Sequential(*[LinearAttnFFN(attn_dim, ffn_dim) for _ in range(depth)],
                                    nn.GroupNorm(1, attn_dim))
        self.proj = ConvNormAct(attn_dim, channels, 1, act=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.patch
        h, w = math.ceil(x.shape[-2] / p) * p, math.ceil(x.shape[-1] / p) * p
        if (h, w) != tuple(x.shape[-2:]):
            x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=True)
        fm = self.local(x)
        b, d = fm.shape[:2]
        patches = F.unfold(fm, p, stride=p).reshape(b, d, p * p, -1)      # (B, d, P, N)
        patches = self.layers(patches)
        fm = F.fold(patches.reshape(b, d * p * p, -1), (h, w), p, stride=p)
        return self.proj(fm)


class MobileViTv2(nn.Module):
    """(N, in_chans, H, W) -> (N, num_classes) logits; any H, W >= 1.

    Args:
        width_multiplier: alpha, scales every width (paper: 0.5 ... 2.0).
    """

    def __init__(self, width_multiplier: float = 1.0, num_classes: int = 1000, in_chans: int = 3):
        super().__init__()
        check_positive_int("num_classes", num_classes)
        check_positive_int("in_chans", in_chans)
        if not width_multiplier > 0:
            raise ValueError(f"width_multiplier must be positive, got {width_multiplier!r}")
        a = width_multiplier
        stem = make_divisible(min(max(32 * a, 16), 64), 8, min_value=16)
        c1, c2 = make_divisible(64 * a, 16), make_divisible(128 * a, 8)
        self.stem = ConvNormAct(in_chans, stem, 3, 2, act="silu")
        layers = [InvertedResidual(stem, c1, 1), InvertedResidual(c1, c2, 2), InvertedResidual(c2, c2, 1)]
        in_ch = c2
        for width, attn_dim, depth in ((256, 128, 2), (384, 192, 4), (512, 256, 3)):
            out_ch = make_divisible(width * a, 8)
            layers += [InvertedResidual(in_ch, out_ch, 2),
                       MobileViTv2Block(out_ch, make_divisible(attn_dim * a, 8), depth)]
            in_ch = out_ch
        self.stages = nn.Sequential(*layers)
        self.num_features = in_ch
        self.head = nn.Linear(in_ch, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x).mean(dim=(2, 3)))


_TIMM_UNITS = {"stem": "stem", "conv1_1x1": "block.0", "conv2_kxk": "block.1", "conv3_1x1": "block.2",
               "conv_kxk": "local.0", "conv_proj": "proj"}


def _timm_renames(model: MobileViTv2) -> tuple:
    """timm's MobileViTv2 (timm/models/mobilevit.py on byobnet.py) -> ours.

    timm groups the blocks in five stages (1, 2, 2, 2, 2 blocks), ours are one list; conv-norm units are
    ``<name>.conv``/``<name>.bn``; the separable attention's projections are 1x1 convolutions there (same numbers);
    the final GroupNorm of each MobileViTv2 block is ``norm`` there and the last entry of ``layers`` here.
    """
    final_norms = tuple((rf"^stages\.{i}\.norm\.", f"stages.{i}.layers.{len(m.layers) - 1}.")
                        for i, m in enumerate(model.stages) if isinstance(m, MobileViTv2Block))
    return (
        (r"(^|\.)(\w+)\.(conv|bn)\.", lambda m: f"{m[1]}{_TIMM_UNITS.get(m[2], m[2])}.{'01'[m[3] == 'bn']}."),
        (r"^stages\.(\d+)\.(\d+)\.", lambda m: f"stages.{2 * int(m[1]) + int(m[2]) - (m[1] != '0')}."),
        (r"\.conv_1x1\.", ".local.1."), (r"\.transformer\.", ".layers."), (r"\.attn\.qkv_proj\.", ".attn.qkv."),
        (r"\.mlp\.fc1\.", ".ffn.0."), (r"\.mlp\.fc2\.", ".ffn.2."), (r"^head\.fc\.", "head."),
    ) + final_norms


register_timm_rules(MobileViTv2, renames=_timm_renames)

for _alpha in (0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0):
    _name = f"mobilevitv2_{round(_alpha * 100):03d}"
    register_model(_name, MobileViTv2, timm=_name, width_multiplier=_alpha)
