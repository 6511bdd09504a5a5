"""Concurrent spatial and channel squeeze & excitation (Roy, Navab & Wachinger, "Concurrent Spatial and Channel
'Squeeze & Excitation' in Fully Convolutional Networks", MICCAI 2018, arXiv:1803.02579).

For segmentation, where the decision is made per pixel, the authors pair SE's channel gate with a spatial one:

* cSE (``cse``): SE, x * sigmoid(W2 ReLU(W1 avgpool(x))), with reduction r = 2 in the paper's networks;
* sSE (``sse``): the mirror image: squeeze the channels with a 1x1 convolution to one map q = sigmoid(W_s * x)
  (H x W) and excite every pixel, x * q;
* scSE (``scse``): both, side by side, combined by element-wise addition, x_cSE + x_sSE, as in the MICCAI
  paper. ``combine="max"`` gives the element-wise maximum that the authors' journal follow-up (TMI 2019) prefers
  and that their released code (ai-med/squeeze_and_excitation) uses; "mul" is also offered.

The blocks are drop-in modules for encoder and decoder blocks of U-Net-like networks (the paper adds one after
every encoder/decoder block of U-Net, SD-Net and a fully convolutional DenseNet); the paper reports Dice scores,
not a backbone with a parameter count, so no model is registered here.

Departures: the channel branch is the package's ``SqueezeExcite`` (1x1 convolutions with biases on the pooled
vector), the same function as the paper's fully connected layers.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..layers import check_choice, check_positive_int
from ..registry import register_attention
from .se import SqueezeExcite


@register_attention("cse")
def channel_se(channels: int, rd_ratio: float = 1 / 2, rd_channels: int | None = None) -> SqueezeExcite:
    """cSE: SE with the paper's reduction r = 2."""
    return SqueezeExcite(channels, rd_ratio=rd_ratio, rd_channels=rd_channels)


@register_attention("sse")
class SpatialSE(nn.Module):
    """(N, C, H, W) -> (N, C, H, W): x * sigmoid(conv1x1(x)), one gate per pixel shared by all channels."""

    def __init__(self, channels: int):
        super().__init__()
        check_positive_int("channels", channels)
        self.conv = nn.Conv2d(channels, 1, 1)

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """The spatial gate q, shape (N, 1, H, W)."""
        return torch.sigmoid(self.conv(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weights(x)


@register_attention("scse")
class SCSE(nn.Module):
    """(N, C, H, W) -> (N, C, H, W): combine(cSE(x), sSE(x)).

    Args:
        channels: C. rd_ratio / rd_channels: cSE bottleneck (paper: r = 2).
        combine: "add" (the MICCAI paper), "max" (the TMI follow-up) or "mul".
    """

    def __init__(self, channels: int, rd_ratio: float = 1 / 2, rd_channels: int | None = None, combine: str = "add"):
        super().__init__()
        self.combine = check_choice("combine", combine, ("add", "max", "mul"))
        self.cse = SqueezeExcite(channels, rd_ratio=rd_ratio, rd_channels=rd_channels)
        self.sse = SpatialSE(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c, s = self.cse(x), self.sse(x)
        if self.combine == "add":
            return c + s
        if self.combine == "max":
            return torch.maximum(c, s)
        return c * s
