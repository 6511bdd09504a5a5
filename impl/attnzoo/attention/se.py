"""Squeeze-and-Excitation (Hu, Shen & Sun, CVPR 2018, arXiv:1709.01507).

Squeeze: global average pooling gives one descriptor per channel, z = mean_{h,w} x.
Excitation: s = sigmoid(W2 relu(W1 z)) with W1: C -> C/r, W2: C/r -> C (r = 16 in the paper).
Scale: y = s * x, channel by channel.

The two fully connected layers are 1x1 convolutions on the (N, C, 1, 1) descriptor (the parameter layout of
timm's SEModule and of Caffe-style checkpoints, both with bias as in the paper's code); ``PooledConv1x1`` computes
them as matrix products, the same linear map.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..layers import PooledConv1x1, create_act, reduced_channels
from ..registry import register_attention


@register_attention("se")
class SqueezeExcite(nn.Module):
    """(N, C, H, W) -> (N, C, H, W): x * sigmoid(MLP(avgpool(x))).

    Args:
        channels: C.
        rd_ratio: bottleneck ratio 1/r (paper: r = 16).
        rd_channels: explicit bottleneck width, overrides ``rd_ratio``.
        act: activation inside the bottleneck. gate: the gating function.
    """

    def __init__(self, channels: int, rd_ratio: float = 1 / 16, rd_channels: int | None = None,
                 act: str = "relu", gate: str = "sigmoid"):
        super().__init__()
        rd = reduced_channels(channels, rd_ratio, rd_channels)
        self.fc1 = PooledConv1x1(channels, rd)
        self.act = create_act(act)
        self.fc2 = PooledConv1x1(rd, channels)
        self.gate = create_act(gate)

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """The per-channel gate s, shape (N, C, 1, 1)."""
        z = x.mean(dim=(2, 3), keepdim=True)
        return self.gate(self.fc2(self.act(self.fc1(z))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weights(x)
