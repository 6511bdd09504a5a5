"""Shuffle attention (Zhang & Yang, "SA-Net: Shuffle Attention for Deep Convolutional Neural Networks",
ICASSP 2021, arXiv:2102.00240).

SA splits the C channels into G groups and treats each group on its own (as ShuffleNet does), which keeps the
module almost free. Each group of C/G channels is halved:

* channel half X1 (C/2G channels): s = GAP(X1), X1' = sigmoid(W1 s + b1) * X1, an SE gate reduced to a per-channel
  scale and shift (no MLP);
* spatial half X2 (C/2G channels): X2' = sigmoid(W2 GN(X2) + b2) * X2, where GN is a GroupNorm with one group per
  channel (it normalizes each channel over H x W), so the gate is high where a channel is above its own mean.

The halves are concatenated, the groups put back together, and a channel shuffle with 2 groups interleaves the
channel-attended and spatially-attended halves so that information crosses the groups in the next layer. W1, b1,
W2, b2 and the GroupNorm's affine parameters are (C/2G)-vectors shared by all groups: 3 C / G parameters per
module. W1 and W2 start at 0 and b1, b2 at 1, so every gate starts at sigmoid(1).

Groups: the paper uses G = 64, which needs C divisible by 2 G = 128. The registered default ``groups=None`` takes
64 when possible and otherwise the largest G <= 64 that divides C / 2; for C = 64 that is G = 32 (each half is one
channel per group). An explicit ``groups`` that does not divide C / 2 raises ValueError.

SA-Net-50 (``sa_resnet50``): one module after the last BatchNorm of every bottleneck (authors' SABottleneck), G = 64
everywhere (all widths are multiples of 128): 708 extra parameters, 25.56 M in total; the paper reports 25.56 M
parameters and 4.12 GFLOPs for the ResNet-50 backbone plus a few hundred parameters and 2.76e-3 GFLOPs for SA.

Departures: none in the computation (the authors' code); only the group default adapts to small C as described.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..layers import check_positive_int
from ..models.resnet import register_resnet
from ..registry import register_attention


def default_groups(channels: int, max_groups: int = 64) -> int:
    """The paper's G = 64 if C allows it, else the largest G <= 64 dividing C / 2."""
    half = channels // 2
    return max(g for g in range(1, min(max_groups, half) + 1) if half % g == 0)


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    n, c, h, w = x.shape
    return x.reshape(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


@register_attention("shuffle_attn")
class ShuffleAttention(nn.Module):
    """(N, C, H, W) -> (N, C, H, W): per group, a channel gate on one half and a spatial gate on the other, shuffled.

    Args:
        channels: C (even). groups: G, C must be divisible by 2 G (paper: 64; None: 64 or the largest that fits).
    """

    def __init__(self, channels: int, groups: int | None = None):
        super().__init__()
        check_positive_int("channels", channels)
        if channels % 2:
            raise ValueError(f"channels must be even (each group is split into two halves), got {channels}")
        self.groups = default_groups(channels) if groups is None else check_positive_int("groups", groups)
        if channels % (2 * self.groups):
            raise ValueError(f"channels={channels} must be divisible by 2 * groups = {2 * self.groups}")
        sub = channels // (2 * self.groups)
        self.c_weight = nn.Parameter(torch.zeros(1, sub, 1, 1))
        self.c_bias = nn.Parameter(torch.ones(1, sub, 1, 1))
        self.s_weight = nn.Parameter(torch.zeros(1, sub, 1, 1))
        self.s_bias = nn.Parameter(torch.ones(1, sub, 1, 1))
        self.gn = nn.GroupNorm(sub, sub)

    def _halves(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The channel half and the spatial half of every group, each (N*G, C/2G, H, W)."""
        n, c, h, w = x.shape
        return x.reshape(n * self.groups, -1, h, w).chunk(2, dim=1)

    def _gates(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        g_c = torch.sigmoid(self.c_weight * x1.mean(dim=(2, 3), keepdim=True) + self.c_bias)
        g_s = torch.sigmoid(self.s_weight * self.gn(x2) + self.s_bias)
        return g_c, g_s

    def gates(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The channel gate (N*G, C/2G, 1, 1) and the spatial gate (N*G, C/2G, H, W) of each group."""
        return self._gates(*self._halves(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        x1, x2 = self._halves(x)  # split once: the gates and the products share the halves
        g_c, g_s = self._gates(x1, x2)
        out = torch.cat([x1 * g_c, x2 * g_s], dim=1).reshape(n, c, h, w)
        return channel_shuffle(out, 2)


register_resnet("sa_resnet50", 50, attn_layer="shuffle_attn", attn_kwargs={"groups": 64})
