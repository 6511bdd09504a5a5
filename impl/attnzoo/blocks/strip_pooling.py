"""Strip pooling (Hou, Zhang, Cheng & Feng, "Strip Pooling: Rethinking Spatial Pooling for Scene Parsing",
CVPR 2020, arXiv:2003.13328).

Square pooling windows mix in unrelated regions when the object is long and thin (a pole, a river, a road). Strip
pooling averages over a whole row or a whole column instead: a 1 x W window for each row and an H x 1 window for
each column. Two attention modules (both (N, C, H, W) -> (N, C, H, W)) follow the authors' code
(``Andrew-Qibin/SPNet``):

``spm``, the strip pooling module (``SPBlock`` in ``models/resnet.py``), a gate placed after the 3x3 convolution of
the last bottlenecks of SPNet's ResNet:

    y_h = BN(W_(3x1) * mean_w(x))    (N, C, H, 1)        column strip, a 3-tap convolution along H
    y_w = BN(W_(1x3) * mean_h(x))    (N, C, 1, W)        row strip, a 3-tap convolution along W
    out = x * sigmoid(W_1x1 ReLU(y_h + y_w) + b)          both strips expanded to H x W before the sum

``mpm``, the mixed pooling module (``StripPooling`` in ``models/customize.py``, two of them in SPNet's head). With
C' = C / 4, one 1x1-reduced copy x1 feeds short-range pyramid pooling (the map itself and adaptive average pools to
20 x 20 and 12 x 12, each through a 3x3 conv-BN, upsampled and summed), another copy x2 feeds long-range strip
pooling (1 x W and H x 1 strips, 1x3 / 3x1 conv-BN, upsampled and summed); each sum goes through ReLU and a 3x3
conv-BN-ReLU, and a 1x1 conv-BN maps the concatenation back to C:

    out = ReLU(x + BN(W_1x1 [f_short(x1), f_long(x2)]))

Defaults and names follow that code (pool sizes (20, 12) as SPNet's head, bilinear upsampling with
``align_corners=True``, convolutions without bias except the SPM's last), so the authors' weights load by name.
The adaptive pools of ``mpm`` also work on maps smaller than 20 x 20 (the pool then repeats pixels).

Departures: none in the computation. The SPM's widths are ``channels`` throughout (the code builds
``SPBlock(planes, planes)``); in-place ReLUs are out-of-place.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import ConvNormAct, check_positive_int, check_positive_ints, reduced_channels
from ..registry import register_attention


def _up(t: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(t, size=size, mode="bilinear", align_corners=True)


@register_attention("spm")
class StripPoolingModule(nn.Module):
    """(N, C, H, W) -> (N, C, H, W): x * sigmoid(W ReLU(strip_h(x) + strip_w(x))), one row and one column strip.

    Args: channels: C.
    """

    def __init__(self, channels: int):
        super().__init__()
        check_positive_int("channels", channels)
        self.conv1 = nn.Conv2d(channels, channels, (3, 1), padding=(1, 0), bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, (1, 3), padding=(0, 1), bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv3 = nn.Conv2d(channels, channels, 1)

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """The gate, (N, C, H, W): each position sees the mean of its row and of its column (and their neighbours)."""
        h, w = x.shape[-2:]
        column = self.bn1(self.conv1(x.mean(dim=3, keepdim=True))).expand(-1, -1, h, w)
        row = self.bn2(self.conv2(x.mean(dim=2, keepdim=True))).expand(-1, -1, h, w)
        return torch.sigmoid(self.conv3(F.relu(column + row)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weights(x)


@register_attention("mpm")
class MixedPoolingModule(nn.Module):
    """(N, C, H, W) -> (N, C, H, W): ReLU(x + BN(W [short-range pyramid pooling, long-range strip pooling])).

    Args: channels: C. pool_size: the two square pools of the short-range branch (SPNet: 20 and 12).
    """

    def __init__(self, channels: int, pool_size=(20, 12)):
        super().__init__()
        inter = reduced_channels(channels, 1 / 4)
        self.pool_size = check_positive_ints("pool_size", pool_size)
        if len(self.pool_size) != 2:
            raise ValueError(f"pool_size needs two grid sizes (SPNet: (20, 12)), got {pool_size!r}")
        self.conv1_1 = ConvNormAct(channels, inter, 1)
        self.conv1_2 = ConvNormAct(channels, inter, 1)
        self.conv2_0, self.conv2_1, self.conv2_2 = (ConvNormAct(inter, inter, 3, act=None) for _ in range(3))
        self.conv2_3 = ConvNormAct(inter, inter, (1, 3), act=None)
        self.conv2_4 = ConvNormAct(inter, inter, (3, 1), act=None)
        self.conv2_5 = ConvNormAct(inter, inter, 3)
        self.conv2_6 = ConvNormAct(inter, inter, 3)
        self.conv3 = ConvNormAct(2 * inter, channels, 1, act=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        x1, x2 = self.conv1_1(x), self.conv1_2(x)
        short = (self.conv2_0(x1) + _up(self.conv2_1(F.adaptive_avg_pool2d(x1, self.pool_size[0])), size)
                 + _up(self.conv2_2(F.adaptive_avg_pool2d(x1, self.pool_size[1])), size))
        long = (_up(self.conv2_3(x2.mean(dim=2, keepdim=True)), size)
                + _up(self.conv2_4(x2.mean(dim=3, keepdim=True)), size))
        out = self.conv3(torch.cat([self.conv2_5(F.relu(short)), self.conv2_6(F.relu(long))], dim=1))
        return F.relu(x + out)
