"""The plain convolution (LeCun et al., 1989), registered as ``conv2d``: the baseline of the conv kind.

``create_conv("conv2d", in_channels, out_channels, kernel_size, stride, groups)`` is ``nn.Conv2d`` with "same"
padding ``dilation * (kernel_size - 1) // 2``, so every conv kind shares one output-shape rule:
(N, C_in, H, W) -> (N, C_out, ceil(H / stride), ceil(W / stride)) for odd kernels. Backbones use it when
``conv_layer=None``, and every paper's convolution (CondConv, DO-Conv, ACNet, ...) replaces it one for one.
"""
from __future__ import annotations

import torch.nn as nn

from ..layers import check_positive_int
from ..registry import register_conv


@register_conv("conv2d")
class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` with same padding; bias off by default since a BatchNorm usually follows.

    Args:
        in_channels, out_channels, kernel_size, stride, groups: as ``nn.Conv2d``. dilation: spacing of the taps.
        bias: add a learned bias.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, groups: int = 1,
                 dilation: int = 1, bias: bool = False):
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels),
                            ("kernel_size", kernel_size), ("stride", stride), ("groups", groups),
                            ("dilation", dilation)):
            check_positive_int(name, value)
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"groups={groups} must divide in_channels={in_channels} and out_channels={out_channels}")
        super().__init__(in_channels, out_channels, kernel_size, stride, dilation * (kernel_size - 1) // 2,
                         dilation, groups, bias)
