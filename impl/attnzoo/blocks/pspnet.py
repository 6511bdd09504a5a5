"""Pyramid pooling module (Zhao, Shi, Qi, Wang & Jia, "Pyramid Scene Parsing Network", CVPR 2017,
arXiv:1612.01105).

A pixel's class often depends on the scene around it (a boat is on water, not on a road), but even deep CNNs have
an effective receptive field much smaller than the image. The pyramid pooling module hands every pixel a
global-to-regional context prior: the map is average-pooled into b x b grids for several bins b, each pooled map is
reduced by a 1x1 convolution and upsampled back, and the results are concatenated with the input:

    P_b = Up_{H x W}(ReLU(BN(W_b AvgPool_{b x b}(x))))     (N, C_in / len(bins), H, W),  b in (1, 2, 3, 6)
    z   = [x, P_1, P_2, P_3, P_6]                           (N, 2 C_in, H, W)
    y   = Dropout(ReLU(BN(W_3x3 * z)))                      (N, C_out, H, W)

The last line is the 3x3 convolution (512 filters) that follows the module in PSPNet before the classifier. Defaults
follow the first author's PyTorch code (``hszhao/semseg``, ``model/pspnet.py``, and the released Caffe
prototxts): bins 1, 2, 3, 6, reduction to C_in / 4 per level, 1x1 convolutions without bias, bilinear upsampling
with ``align_corners=True``, a 3x3 bottleneck to 512 channels with BN and ReLU, dropout 0.1.

Bins are adaptive average pools, so any H x W works (at sizes divisible by the bin they equal the fixed-kernel pools
of the Caffe model). ``pyramid(x)`` returns z, the module's output before the bottleneck. Departure: none in the
computation; BatchNorm keeps PyTorch's defaults. The bin-1 branch has a BatchNorm on a pooled (N, C, 1, 1) map, so
training needs batches of 2 or more (as in the authors' code).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import ConvNormAct, check_divisible, check_positive_int, check_positive_ints, check_train_batch
from ..registry import register_block


@register_block("ppm")
class PyramidPooling(nn.Module):
    """(N, C_in, H, W) -> (N, C_out, H, W): input and its upsampled b x b pooled contexts, fused by a 3x3 conv.

    Args:
        in_channels: C_in. out_channels: C_out of the 3x3 bottleneck (PSPNet: 512).
        bins: pooled grid sizes (paper: 1, 2, 3, 6).
        reduction_channels: width of each pooled level (default C_in / len(bins), the paper's 1/N).
        drop: Dropout2d after the bottleneck (authors' code: 0.1).
    """

    min_train_batch = 2

    def __init__(self, in_channels: int, out_channels: int = 512, bins=(1, 2, 3, 6),
                 reduction_channels: int | None = None, drop: float = 0.1):
        super().__init__()
        check_positive_int("in_channels", in_channels)
        check_positive_int("out_channels", out_channels)
        bins = check_positive_ints("bins", bins)
        if reduction_channels is None:
            check_divisible("in_channels", in_channels, len(bins), "len(bins)")
            reduction_channels = in_channels // len(bins)
        check_positive_int("reduction_channels", reduction_channels)
        self.bins = bins
        self.features = nn.ModuleList([nn.Sequential(nn.AdaptiveAvgPool2d(b), ConvNormAct(in_channels,
                                                                                        reduction_channels, 1))
                                       for b in bins])
        self.bottleneck = ConvNormAct(in_channels + len(bins) * reduction_channels, out_channels, 3)
        self.drop = nn.Dropout2d(drop)

    def pyramid(self, x: torch.Tensor) -> torch.Tensor:
        """z = [x, P_b for every bin]: (N, C_in + len(bins) * reduction_channels, H, W)."""
        check_train_batch(self, x)
        size = x.shape[-2:]
        levels = [F.interpolate(f(x), size=size, mode="bilinear", align_corners=True) for f in self.features]
        return torch.cat([x] + levels, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.bottleneck(self.pyramid(x)))
