"""Spatial group-wise enhance (Li, Hu & Yang, "Spatial Group-wise Enhance: Improving Semantic Feature Learning in
Convolutional Networks", arXiv:1905.09646, 2019).

The channels of a feature map are split into G groups (G = 64), each group being meant to capture one semantic
sub-feature. Within a group, the group's own global descriptor g = GAP(X_group) (a C/G-vector) is compared with
the local vector x_i at every position i:

    c_i = g . x_i                           (similarity of position i to the group's global feature),
    n_i = (c_i - mean_i c) / (std_i c + eps) (normalized over the H W positions of that group and sample),
    a_i = gamma n_i + beta,                  x_i' = x_i * sigmoid(a_i),

with one learned (gamma, beta) pair per group: 2 G parameters per module. gamma starts at 0 and beta at 1, so
every position starts with the same weight sigmoid(1). Positions that agree with the group's overall feature are
amplified, noisy ones suppressed.

``sge``: (N, C, H, W) -> (N, C, H, W), C divisible by G (G = 64 works for C = 64: one channel per group).
``sge_resnet50``: one module after the last BatchNorm of every bottleneck (authors' resnet_sge.py): 2,048 extra
parameters, 25.56 M in total, 4.127 GFLOPs in the authors' table.

Departures: the authors' std is the unbiased one (divides by H W - 1); for a 1x1 map that is NaN, so there we
divide by H W instead (the normalized value is then 0 and the gate sigmoid(beta)).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..layers import check_divisible, check_positive_int
from ..models.resnet import register_resnet
from ..registry import register_attention


@register_attention("sge")
class SpatialGroupEnhance(nn.Module):
    """(N, C, H, W) -> (N, C, H, W): per group, positions gated by their normalized similarity to the group mean.

    Args:
        channels: C (divisible by groups). groups: G (paper: 64). eps: added to the std (code: 1e-5).
    """

    def __init__(self, channels: int, groups: int = 64, eps: float = 1e-5):
        super().__init__()
        check_positive_int("channels", channels)
        self.groups = check_positive_int("groups", groups)
        check_divisible("channels", channels, groups, "groups")
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(1, groups, 1, 1))
        self.bias = nn.Parameter(torch.ones(1, groups, 1, 1))

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """sigmoid(gamma n + beta), shape (N, G, H, W)."""
        n, c, h, w = x.shape
        xg = x.reshape(n, self.groups, c // self.groups, h, w)
        sim = (xg * xg.mean(dim=(3, 4), keepdim=True)).sum(dim=2)  # (N, G, H, W)
        flat = sim.flatten(2)
        std, mean = torch.std_mean(flat, dim=-1, keepdim=True, correction=1 if h * w > 1 else 0)  # one pass
        norm = ((flat - mean) / (std + self.eps)).view_as(sim)
        return torch.sigmoid(norm * self.weight + self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = self.gate(x).unsqueeze(2)  # (N, G, 1, H, W)
        return (x.reshape(n, self.groups, c // self.groups, h, w) * g).reshape(n, c, h, w)


register_resnet("sge_resnet50", 50, attn_layer="sge")
