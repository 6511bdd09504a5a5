"""EPSANet (Zhang, Zu, Lu, Zou & Meng, "EPSANet: An Efficient Pyramid Squeeze Attention Block on Convolutional
Neural Network", ACCV 2022, arXiv:2105.14447; arXiv v1 was titled "... Pyramid Split Attention ...").

The pyramid squeeze attention (PSA) module replaces the 3x3 convolution of a ResNet bottleneck. It has four steps:

1. Split-and-concat (SPC): S = 4 branches look at the input with kernels k = 3, 5, 7, 9 and group counts
   G = 1, 4, 8, 16 (larger kernels use more groups so each branch costs about the same); each gives C/S channels,
   F_i = Conv_{k_i, G_i}(X).
2. SE weights: one SE module (GAP -> 1x1 conv C/S -> C/(16 S) -> ReLU -> 1x1 conv -> sigmoid), shared by the
   branches, gives a channel vector Z_i for each F_i.
3. Softmax across the branches: att_i = exp(Z_i) / sum_j exp(Z_j), per channel, so the branches compete: each
   channel picks its scale.
4. Output: concat_i(F_i * att_i), C channels.

Registered: ``pyramid_squeeze`` (N, C, H, W) -> (N, C, H, W) (stride 1 by default; C divisible by S = 4 and the
group counts), and ``epsanet50`` (the paper's EPSANet-50 "small", G = (1, 4, 8, 16)): ResNet-50 whose bottleneck 3x3
conv-BN-ReLU becomes PSA-BN-ReLU (authors' EPSABlock; stride in every branch). 22.56 M parameters, 3.62 GFLOPs
in the paper; ours has 22.56 M and 3.60 GMACs (stride on the PSA stage, as in the authors' code). The
paper's "large" variant is left out (its grouping is not in the authors' released code).

Departures: the paper's figure splits the *input* channels among the branches; the authors' code (and the
paper's parameter counts) give every branch all input channels, grouped, which is what we do. The code
concatenates the weighted branches in reverse order (k = 9 first); we keep the natural order, a fixed channel
permutation that the following 1x1 convolution absorbs.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..layers import PooledConv1x1, check_positive_int, conv_fan_out_init, reduced_channels
from ..models.resnet import register_resnet
from ..registry import register_attention


@register_attention("pyramid_squeeze")
class PyramidSqueezeAttention(nn.Module):
    """(N, C, H, W) -> (N, out_channels, H', W'): multi-kernel grouped branches reweighted by a softmax over branches.

    Args:
        channels: C. out_channels: output width (default C; divisible by the number of branches).
        stride: stride of every branch. kernels / groups: kernel size and group count per branch (paper: (3, 5,
        7, 9) and (1, 4, 8, 16)). se_ratio: reduction of the shared SE module (paper: 1/16).
    """

    def __init__(self, channels: int, out_channels: int | None = None, stride: int = 1,
                 kernels: tuple[int, ...] = (3, 5, 7, 9), groups: tuple[int, ...] = (1, 4, 8, 16),
                 se_ratio: float = 1 / 16):
        super().__init__()
        check_positive_int("channels", channels)
        out_channels = channels if out_channels is None else check_positive_int("out_channels", out_channels)
        check_positive_int("stride", stride)
        if len(kernels) != len(groups) or not kernels:
            raise ValueError(f"kernels and groups must be non-empty and of equal length, got {kernels!r}, {groups!r}")
        self.branches = len(kernels)
        if out_channels % self.branches:
            raise ValueError(f"out_channels={out_channels} must be divisible by the number of branches {self.branches}")
        split = out_channels // self.branches
        for k, g in zip(kernels, groups):
            check_positive_int("kernel size", k)
            check_positive_int("groups", g)
            if k % 2 == 0:
                raise ValueError(f"kernel sizes must be odd, got {k}")
            if channels % g or split % g:
                raise ValueError(f"groups={g} must divide channels={channels} and out_channels/{self.branches}={split}")
        self.convs = nn.ModuleList(
            nn.Conv2d(channels, split, k, stride, k // 2, groups=g, bias=False) for k, g in zip(kernels, groups))
        rd = reduced_channels(split, se_ratio)
        self.se = nn.Sequential(PooledConv1x1(split, rd), nn.ReLU(inplace=True), PooledConv1x1(rd, split), nn.Sigmoid())

    def branch_weights(self, feats: torch.Tensor) -> torch.Tensor:
        """(N, S, C/S, H, W) branch outputs -> (N, S, C/S, 1, 1) weights, softmax over the S branches."""
        n, s, c = feats.shape[:3]
        z = self.se(feats.mean(dim=(3, 4), keepdim=True).reshape(n * s, c, 1, 1))  # one SE call for all branches
        return z.reshape(n, s, c, 1, 1).softmax(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = torch.stack([conv(x) for conv in self.convs], dim=1)  # (N, S, C/S, H', W'); S = 4 branches
        out = feats * self.branch_weights(feats)
        return out.flatten(1, 2)


def psa_unit(channels: int, stride: int, kernels: tuple[int, ...] = (3, 5, 7, 9),
             groups: tuple[int, ...] = (1, 4, 8, 16)) -> nn.Module:
    """EPSANet's replacement of a bottleneck's 3x3 conv-BN-ReLU: PSA-BN-ReLU (the authors' EPSABlock)."""
    psa = PyramidSqueezeAttention(channels, channels, stride, kernels, groups)
    conv_fan_out_init(psa.convs)
    return nn.Sequential(psa, nn.BatchNorm2d(channels), nn.ReLU(inplace=True))


register_resnet("epsanet50", 50, mid_layer=psa_unit)
