"""Convolution + normalization + activation, the most repeated block in CNNs."""
from __future__ import annotations

from typing import Callable

import torch.nn as nn

from .create_act import create_act
from .helpers import to_2tuple


class ConvNormAct(nn.Sequential):
    """Conv2d (same padding for odd kernels) -> BatchNorm2d -> activation. (N, C_in, H, W) -> (N, C_out, H', W').

    ``conv_layer`` (a factory ``f(in, out, kernel_size, stride=, groups=)``, e.g. from ``registry.get_conv``)
    replaces the plain convolution; a conv module that normalises its own output says so with ``has_norm = True``
    (e.g. ACNet's ACB with ``use_last_bn=False``), and the BatchNorm here is then left out (``nn.Identity``).
    ``post_conv`` (``f(out_channels)``) inserts a module between the convolution
    and the norm (e.g. SimAM in the authors' ResNet); the norm and activation then sit at indices 2 and 3.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1, groups: int = 1,
                 dilation: int = 1, act: str | None = "relu", norm: bool = True, bias: bool | None = None,
                 conv_layer: Callable[..., nn.Module] | None = None, post_conv: Callable[[int], nn.Module] | None = None):
        bias = (not norm) if bias is None else bias
        if conv_layer is None:
            padding = tuple(dilation * (k - 1) // 2 for k in to_2tuple(kernel_size))  # also (1, 3), (3, 1)
            conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias=bias)
        else:
            extra = {"dilation": dilation} if dilation != 1 else {}
            conv = conv_layer(in_channels, out_channels, kernel_size, stride=stride, groups=groups,
                              **({"bias": True} if bias else {}), **extra)
        norm = norm and not getattr(conv, "has_norm", False)
        layers = [conv] + ([post_conv(out_channels)] if post_conv is not None else [])
        super().__init__(*layers, nn.BatchNorm2d(out_channels) if norm else nn.Identity(), create_act(act))
