"""Convolution + normalization + activation, the most repeated block in CNNs."""
from __future__ import annotations

import torch.nn as nn

from .create_act import create_act


class ConvNormAct(nn.Sequential):
    """Conv2d (same padding for odd kernels) -> BatchNorm2d -> activation. (N, C_in, H, W) -> (N, C_out, H', W')."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1, groups: int = 1,
                 dilation: int = 1, act: str | None = "relu", norm: bool = True, bias: bool | None = None):
        padding = dilation * (kernel_size - 1) // 2
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
                      bias=(not norm) if bias is None else bias),
            nn.BatchNorm2d(out_channels) if norm else nn.Identity(),
            create_act(act),
        )
