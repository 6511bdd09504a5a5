"""Ghost module (Han, Wang, Tian, Guo, Xu & Xu, "GhostNet: More Features from Cheap Operations", CVPR 2020,
arXiv:1911.11907), registered as the conv ``ghost``.

Feature maps of trained CNNs contain many near-duplicates ("ghosts"). A Ghost module makes only m = ceil(n / s)
of its n output channels with an ordinary convolution (the "primary" one) and derives the others from them with
a cheap d x d depthwise convolution, one (s - 1)-channel group per primary map (Eq. 3-4):

    Y' = X * f' (+ BN, ReLU),   Y'' = Phi(Y') (depthwise d x d, + BN, ReLU),   Y = [Y', Y''][:, :n]

The speed-up over the ordinary convolution is about s (Eq. 5). Defaults s = 2, d = 3 are the paper's (Sec. 4.1)
and the authors' (ghostnet_pytorch/ghostnet.py, ``GhostModule``); as theirs, both parts carry BN and, unless
``relu=False``, ReLU (the second Ghost module of a GhostNet bottleneck has none). As a drop-in for ``nn.Conv2d``
(``create_conv("ghost", c_in, c_out, k, stride)``) the primary convolution takes the kernel size, stride, groups
and dilation; the cheap operation keeps the resolution. The paper's Ghost-VGG/Ghost-ResNet replace convolutions
this way, so in a host network a BN (and activation) of its own follows the module.
(N, C_in, H, W) -> (N, C_out, ceil(H / stride), ceil(W / stride)).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from ..layers import check_conv_args, check_positive_int
from ..registry import register_conv


@register_conv("ghost")
class GhostModule(nn.Module):
    """Primary conv (m = ceil(n/ratio) maps) -> cheap depthwise conv ((ratio-1) m maps) -> concat, first n kept.

    Args:
        in_channels, out_channels, kernel_size, stride, groups, dilation: of the primary convolution.
        ratio: s, outputs per primary map. dw_size: d, the cheap depthwise kernel. relu: ReLU after both BNs.
        bias: a bias on the primary convolution (BN follows it, so the authors have none).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1, groups: int = 1,
                 dilation: int = 1, ratio: int = 2, dw_size: int = 3, relu: bool = True, bias: bool = False):
        super().__init__()
        check_conv_args(in_channels, out_channels, kernel_size, stride, 1, dilation)
        check_positive_int("dw_size", dw_size)
        check_positive_int("groups", groups)
        if isinstance(ratio, bool) or not isinstance(ratio, int) or ratio < 2:
            raise ValueError(f"ratio must be an integer >= 2 (s - 1 ghosts per primary map), got {ratio!r}")
        init = math.ceil(out_channels / ratio)
        if in_channels % groups or init % groups:
            raise ValueError(f"groups={groups} must divide in_channels={in_channels} and the {init} primary maps")
        self.out_channels = out_channels
        self.primary_conv = nn.Sequential(
            nn.Conv2d(in_channels, init, kernel_size, stride, dilation * (kernel_size - 1) // 2, dilation, groups,
                      bias=bias),
            nn.BatchNorm2d(init), nn.ReLU() if relu else nn.Identity())
        self.cheap_operation = nn.Sequential(
            nn.Conv2d(init, init * (ratio - 1), dw_size, 1, dw_size // 2, groups=init, bias=False),
            nn.BatchNorm2d(init * (ratio - 1)), nn.ReLU() if relu else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        primary = self.primary_conv(x)
        return torch.cat([primary, self.cheap_operation(primary)], 1)[:, :self.out_channels]
