"""CBAM: Convolutional Block Attention Module (Woo, Park, Lee & Kweon, ECCV 2018, arXiv:1807.06521).

Channel attention: M_c = sigmoid(MLP(avgpool(x)) + MLP(maxpool(x))), a shared bottleneck MLP (ratio 16).
Spatial attention: M_s = sigmoid(conv7x7([mean_c(x); max_c(x)])).
The two are applied in sequence, channel first: x' = M_c(x) * x, y = M_s(x') * x'.

Departure from the paper's equation: the 7x7 convolution is followed by BatchNorm, as in the authors'
official code (the paper's Eq. 3 has the convolution only); ``spatial_norm=False`` gives the equation.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..layers import SpatialGate, create_act, reduced_channels
from ..registry import register_attention


class ChannelGate(nn.Module):
    """(N, C, H, W) -> (N, C, 1, 1) weights from average- and max-pooled descriptors through one shared MLP."""

    def __init__(self, channels: int, rd_ratio: float = 1 / 16, rd_channels: int | None = None, act: str = "relu"):
        super().__init__()
        rd = reduced_channels(channels, rd_ratio, rd_channels)
        self.mlp = nn.Sequential(nn.Conv2d(channels, rd, 1), create_act(act), nn.Conv2d(rd, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(dim=(2, 3), keepdim=True), x.amax(dim=(2, 3), keepdim=True)], dim=0)
        avg, mx = self.mlp(pooled).chunk(2, dim=0)  # one MLP call for both descriptors
        return torch.sigmoid(avg + mx)


@register_attention("cbam")
class CBAM(nn.Module):
    """(N, C, H, W) -> (N, C, H, W): channel gate, then spatial gate.

    Args:
        channels: C. rd_ratio / rd_channels: channel MLP bottleneck (paper: 1/16).
        kernel_size: spatial convolution size (paper: 7). spatial_norm: BatchNorm after it (official code).
        use_spatial: False leaves only the channel gate (the paper's channel-only ablation).
    """

    def __init__(self, channels: int, rd_ratio: float = 1 / 16, rd_channels: int | None = None,
                 kernel_size: int = 7, spatial_norm: bool = True, use_spatial: bool = True):
        super().__init__()
        self.channel = ChannelGate(channels, rd_ratio, rd_channels)
        self.spatial = SpatialGate(kernel_size, spatial_norm) if use_spatial else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self.channel(x)
        if self.spatial is not None:
            x = x * self.spatial(x)
        return x
