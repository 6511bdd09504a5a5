"""BoTNet: bottleneck transformers (Srinivas et al., CVPR 2021, arXiv:2101.11605).

BoT50 is ResNet-50 whose last stage (c5) replaces the 3 x 3 convolution of each of its three bottlenecks by global
multi-head self-attention over the feature map. The attention (``bot_mhsa``) has 4 heads, Q, K, V
from one bias-free 1 x 1 convolution, and 2D relative position logits (Bello et al., 2019): for a query at (y, x)
and a key at (y', x'),

    logit = q . k + q . r^h_{y' - y} + q . r^w_{x' - x},   softmax over the H W keys, output sum of p v,

with learned tables r^h (2 H_max - 1, d) and r^w (2 W_max - 1, d), d = C / heads. The first author's reference
implementation (the gist aravindsrinivas/56359b79f0ce4449bcb04ab4b56a57a2, not read here) is what timm ports;
timm scales the position logits by d^-1/2 together with q . k "as per references" (timm commit 02daf2ab, discussion
#912) but keeps the unscaled form as its default. We default to the references' form (``scale_pos=True``);
``scale_pos=False`` is timm's default; our tests compare with timm's ``BottleneckAttn`` in both settings. The
softmax runs in ``F.scaled_dot_product_attention`` with the position logits as its additive mask. In a
stride-2 block (the first of c5) a 2 x 2 average pooling follows the attention; BatchNorm and ReLU follow as
after the convolution they replace.

Sizes: relative tables cover offsets up to the largest map the module is built for (``feat_size``): the paper's
c5 maps at 224 are 14 x 14 (first block, before its pooling) and 7 x 7. Any smaller map reads the centre of the tables
(the same offsets); a larger one is a ValueError naming the largest accepted. The registered module defaults to
``feat_size=64`` (maps up to 64 x 64). ``botnet50`` is built for 224 x 224 inputs and accepts any smaller
size, odd ones included.

Departures: the 2 x 2 average pooling uses ``ceil_mode`` so that odd maps give ceil(H / 2), the size of the
stride-2 projection shortcut; even maps are unchanged. The 1 x 1 Q/K/V convolution takes the ResNet's He fan-out
initialisation; the tables are N(0, d^-1) (truncated at 2 std). timm's ``botnet26t_256`` / ``botnet50ts_256`` are
timm's own networks (other stems and depths, attention in c4 too), not the paper's BoT50, so ``botnet50`` has no timm
twin.
"""
from __future__ import annotations

from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import ConvNormAct, check_divisible, check_positive_int, key_minus_query, to_2tuple
from ..models.resnet import register_resnet
from ..registry import register_attention


@register_attention("bot_mhsa")
class BoTMHSA(nn.Module):
    """(N, C, H, W) -> (N, C, H, W) for H <= H_max, W <= W_max: global multi-head self-attention with 2D relative
    position logits.

    Args: channels (C), num_heads (4), feat_size (H_max, W_max: the largest map; 64), scale_pos (True: the position
    logits are scaled by d^-1/2 too, as the authors' code), qkv_bias (False).
    """

    def __init__(self, channels: int, num_heads: int = 4, feat_size=64, scale_pos: bool = True,
                 qkv_bias: bool = False):
        super().__init__()
        check_positive_int("channels", channels)
        check_positive_int("num_heads", num_heads)
        check_divisible("channels", channels, num_heads, "num_heads")
        self.max_hw = tuple(check_positive_int("feat_size", s) for s in to_2tuple(feat_size))
        self.num_heads, self.head_dim, self.scale_pos = num_heads, channels // num_heads, bool(scale_pos)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1, bias=qkv_bias)
        self.rel_h = nn.Parameter(torch.empty(2 * self.max_hw[0] - 1, self.head_dim))
        self.rel_w = nn.Parameter(torch.empty(2 * self.max_hw[1] - 1, self.head_dim))
        for table in (self.rel_h, self.rel_w):
            if not table.is_meta:
                nn.init.trunc_normal_(table, std=self.head_dim ** -0.5, a=-2 * self.head_dim ** -0.5,
                                      b=2 * self.head_dim ** -0.5)

    def relative_logits(self, q: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        """(N, heads, L, L) position logits q . r^h_{y'-y} + q . r^w_{x'-x} for queries q (N, heads, L, d)."""
        h, w = hw
        n, heads = q.shape[:2]
        q = q.reshape(n, heads, h, w, self.head_dim)
        idx_h, idx_w = key_minus_query(h, self.max_hw[0], q.device), key_minus_query(w, self.max_hw[1], q.device)
        logit_h = torch.einsum("nmyxd,yvd->nmyxv", q, self.rel_h[idx_h].to(q.dtype))     # (N, m, h, w, h')
        logit_w = torch.einsum("nmyxd,xud->nmyxu", q, self.rel_w[idx_w].to(q.dtype))     # (N, m, h, w, w')
        return (logit_h[..., :, None] + logit_w[..., None, :]).reshape(n, heads, h * w, h * w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        if h > self.max_hw[0] or w > self.max_hw[1]:
            raise ValueError(f"BoTMHSA's relative position tables cover maps up to {self.max_hw[0]}x{self.max_hw[1]} "
                             f"(feat_size), got {h}x{w}")
        tokens = x.flatten(2).transpose(1, 2)                                             # (N, L, C)
        qkv = F.linear(tokens, self.qkv.weight.flatten(1), self.qkv.bias)                 # the 1x1 conv, per token
        q, k, v = qkv.reshape(n, h * w, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # unit-stride heads
        bias = self.relative_logits(q * self.head_dim ** -0.5 if self.scale_pos else q, (h, w))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)                       # (N, m, L, d)
        return y.permute(0, 1, 3, 2).reshape(n, c, h, w)


def bot_unit(channels: int, stride: int, img_size: int = 224, stage_width: int = 512, num_heads: int = 4,
             scale_pos: bool = True) -> nn.Module:
    """``mid_layer`` of the ResNet skeleton: in the stage of width ``stage_width`` (c5), MHSA (tables for the map
    of an ``img_size`` input), a 2 x 2 average pooling if strided, BN, ReLU; the usual 3x3 conv-BN-ReLU elsewhere."""
    if channels != stage_width:
        return ConvNormAct(channels, channels, 3, stride)
    feat = -(-img_size // (32 // stride))                       # c5's input map: 1/16 before the strided block
    layers = [BoTMHSA(channels, num_heads, feat, scale_pos)]
    if stride > 1:
        layers.append(nn.AvgPool2d(2, 2, ceil_mode=True))
    layers += [nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


register_resnet("botnet50", 50, mid_layer=partial(bot_unit, img_size=224))
