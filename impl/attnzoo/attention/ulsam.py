"""ULSAM, the ultra-lightweight subspace attention module (Saini, Jha, Das, Mittal & Mohan, WACV 2020,
arXiv:2006.15102).

Compact CNNs cannot afford SE- or non-local-style attention. ULSAM splits the C channels into g groups
("subspaces") of C/g channels and gives each subspace its own spatial attention map, built with a depthwise 1x1
convolution, a 3x3 max pool and a pointwise convolution to one channel, normalised by a softmax over all positions;
each subspace is then re-weighted by its map, with a residual connection:

    d_i = MaxPool3x3(ReLU(BN(DW1x1(x_i))))            (N, C/g, H, W)    x_i: channels of subspace i
    a_i = softmax_{HW}(ReLU(BN(PW(d_i))))              (N, 1, H, W), sums to 1 over the H x W positions
    y_i = x_i * a_i + x_i,   y = [y_1, ..., y_g]       (N, C, H, W)

All g subspaces are computed at once: the depthwise convolution and its BatchNorm act on all C channels, the
pointwise convolutions become one grouped 1x1 convolution C -> g (groups = g) and their g one-channel BatchNorms
one BatchNorm over g channels; this is the same computation and the same number of parameters as the authors'
ModuleList of subspaces (``Nandan91/ULSAM``, ``ulsam.py``), without a Python loop over groups.

Defaults follow that code: convolutions with bias, BatchNorm momentum 0.9 (PyTorch's convention, i.e. the running
statistics follow the last batch closely; likely meant as a Keras-style 0.9 decay, but that is what the released
code computes), g = 4 (its example ``ULSAM(64, 64, 112, 112, 4)``; the paper evaluates g from 1 to 32).
Departure: the parameters are named per layer (``conv_dws``, ``conv_point``, ...) rather than per subspace.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import check_divisible, check_positive_int
from ..registry import register_attention


@register_attention("ulsam")
class ULSAM(nn.Module):
    """(N, C, H, W) -> (N, C, H, W): every group of C/g channels re-weighted by its own softmax spatial map.

    Args: channels: C. num_splits: g, the number of subspaces (must divide C; code example: 4).
    """

    def __init__(self, channels: int, num_splits: int = 4):
        super().__init__()
        check_positive_int("channels", channels)
        check_positive_int("num_splits", num_splits)
        check_divisible("channels", channels, num_splits, "num_splits")
        self.num_splits = num_splits
        self.conv_dws = nn.Conv2d(channels, channels, 1, groups=channels)
        self.bn_dws = nn.BatchNorm2d(channels, momentum=0.9)
        self.conv_point = nn.Conv2d(channels, num_splits, 1, groups=num_splits)
        self.bn_point = nn.BatchNorm2d(num_splits, momentum=0.9)

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """The g attention maps a_i, (N, g, H, W), each summing to 1 over the positions."""
        d = F.max_pool2d(F.relu(self.bn_dws(self.conv_dws(x))), 3, stride=1, padding=1)
        a = F.relu(self.bn_point(self.conv_point(d)))
        return a.flatten(2).softmax(dim=-1).view_as(a)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        groups = x.view(n, self.num_splits, c // self.num_splits, h, w)
        return (groups * (1 + self.weights(x).unsqueeze(2))).view(n, c, h, w)
