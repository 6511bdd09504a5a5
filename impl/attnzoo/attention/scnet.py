"""Self-calibrated convolutions (Liu, Hou, Cheng, Wang & Feng, "Improving Convolutional Networks with
Self-Calibrated Convolutions", CVPR 2020; no arXiv version).

A self-calibrated convolution replaces a 3x3 convolution C -> C with the same number of weights, split into four
C/2 -> C/2 kernels K1..K4, and lets part of the output be steered by a low-resolution view of the input. The input
is split along the channels into X1 and X2:

* X1 -> Y1 = K1 * X1, an ordinary convolution (keeps the original spatial detail);
* X2 -> self-calibration: T2 = Up(K2 * AvgPool_r(X2)) sees an r times larger field of view (r = 4),
  Y2' = (K3 * X2) . sigmoid(X2 + T2), and Y2 = K4 * Y2'.

The output is [Y1, Y2]. The calibration gate sigmoid(X2 + T2) depends on the context around each position, so
it acts as a spatial, per-channel attention on the K3 response; every convolution is 3x3, followed by
BatchNorm (and ReLU after K1 and K4) in the authors' code.

Registered: ``scconv`` (N, C, H, W) -> (N, C, H, W) (stride 1 by default, C even), and ``scnet50``, ResNet-50 with
the 3x3 convolution of every bottleneck replaced by a self-calibrated one (stride on K1 and K4, the ResNet v1.5
placement used by the authors' SCNet). The authors' two 1x1 input convolutions conv1_a / conv1_b (C_in -> C/2
each, each with its BatchNorm) are exactly one 1x1 convolution C_in -> C with BatchNorm split in two halves,
which is what our bottleneck's conv1 followed by the channel split computes. SCNet-50: 25.56 M parameters,
4.0 G MAdds (authors' README; the paper's ImageNet table).

Departures: the paper's equations have no normalization; we follow the code (BatchNorm after every K, ReLU after
K1 and K4, nearest-neighbour upsampling). The pooling is the authors' ``AvgPool2d(r)`` (window r, stride r,
floor mode, MCG-NKU/SCNet scnet.py line 28): when H or W is not a multiple of r the last H mod r rows (W mod r
columns) never reach the calibration branch, exactly as in their code. This matters at the paper's own 224 px
input, where the 14 x 14 and 7 x 7 maps of stages 3 and 4 are not multiples of r = 4, so the authors'
checkpoints only reproduce with floor-mode pooling. The one extension: along a side shorter than r, where their
pooling fails (an empty output), the window shrinks to that side (a global average along it).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import ConvNormAct, check_positive_int, conv_fan_out_init
from ..models.resnet import register_resnet
from ..registry import register_attention


@register_attention("scconv")
class SelfCalibratedConv(nn.Module):
    """(N, C, H, W) -> (N, C, H', W'): [K1 * X1, K4 * ((K3 * X2) . sigmoid(X2 + Up(K2 * Pool_r(X2))))].

    Args:
        channels: C (even). stride: stride of K1 and K4 (1 keeps the size).
        pooling_r: down-sampling factor r of the calibration branch (paper: 4); average pooling with window and
            stride r in floor mode, as the authors' ``AvgPool2d(r)`` (a side shorter than r is averaged whole).
        act: activation after K1 and K4 (code: ReLU; None for a purely linear-gated convolution).
    """

    def __init__(self, channels: int, stride: int = 1, pooling_r: int = 4, act: str | None = "relu"):
        super().__init__()
        check_positive_int("channels", channels)
        if channels % 2:
            raise ValueError(f"channels must be even (the input is split into two halves), got {channels}")
        check_positive_int("stride", stride)
        self.pooling_r = check_positive_int("pooling_r", pooling_r)
        half = channels // 2
        self.k1 = ConvNormAct(half, half, 3, stride, act=act)
        self.k2 = ConvNormAct(half, half, 3, act=None)
        self.k3 = ConvNormAct(half, half, 3, act=None)
        self.k4 = ConvNormAct(half, half, 3, stride, act=act)

    def calibration(self, x2: torch.Tensor) -> torch.Tensor:
        """The gate sigmoid(X2 + Up(K2 * AvgPool_r(X2))), shape of x2."""
        h, w = x2.shape[-2:]
        # the authors' AvgPool2d(r) (floor mode: a remainder of H mod r rows is dropped); a side shorter than r,
        # where theirs has no output, is averaged whole
        kernel = (min(self.pooling_r, h), min(self.pooling_r, w))
        small = self.k2(F.avg_pool2d(x2, kernel, kernel))
        return torch.sigmoid(x2 + F.interpolate(small, size=(h, w), mode="nearest"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x.chunk(2, dim=1)
        y2 = self.k4(self.k3(x2) * self.calibration(x2))
        return torch.cat([self.k1(x1), y2], dim=1)


def sc_unit(channels: int, stride: int, pooling_r: int = 4) -> nn.Module:
    """SCNet's replacement of a bottleneck's 3x3 conv-BN-ReLU: a self-calibrated convolution (Kaiming-initialised
    like the rest of the ResNet)."""
    unit = SelfCalibratedConv(channels, stride, pooling_r)
    conv_fan_out_init(unit)
    return unit


register_resnet("scnet50", 50, mid_layer=sc_unit)
