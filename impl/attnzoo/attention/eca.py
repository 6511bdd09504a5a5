"""ECA: Efficient Channel Attention (Wang, Wu, Zhu, Li, Zuo & Hu, "ECA-Net: Efficient Channel Attention for Deep
Convolutional Neural Networks", CVPR 2020, arXiv:1910.03151).

SE squeezes the pooled channel vector through a bottleneck (C -> C/r -> C). The paper argues that the reduction
hurts and that a channel only needs to interact with its neighbours, so it replaces the MLP by one 1D
convolution of size k across the channel axis, without bias:

    y = GAP(x) in R^C,   w = sigmoid(conv1d_k(y)),   out_c = w_c x_c,

k parameters per module. The kernel size grows with the width, k = psi(C) = |log2(C) / gamma + b / gamma|_odd
with gamma = 2, b = 1 and |t|_odd the odd number nearest to t (ties rounded up, as in the authors' code:
t = int(|(log2 C + b) / gamma|), k = t if t is odd else t + 1). For C = 64 that is k = 3, for 256-1024 k = 5,
for 2048 k = 7.

``eca_resnet50`` is the authors' released ECA-Net50 (BangguWu/ECANet, ``models/eca_resnet.py``,
``eca_resnet50(k_size=[3, 5, 5, 7])``), the model behind their reported numbers: ECA where SE sits in every
bottleneck, with the kernel sizes set by hand per stage, 3, 5, 5, 7 (80 weights in all). The formula would give
5, 5, 5, 7 (86 weights); ``create_model("resnet50", attn_layer="eca")`` builds that variant.

Known bug this avoids: many public re-implementations (and the default ``k_size=3`` of the authors' module)
fix k = 3 for every width, which is not the paper's method; here k comes from the formula unless
``kernel_size`` is given explicitly.

Departures: none in the module. Note that the paper counts ResNet-50 as 24.37 M parameters with a FLOP-counting
tool that misses layers; the true count of both ResNet-50 and ECA-ResNet-50 is 25.56 M (ECA adds 80 weights).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from ..layers import check_positive_int
from ..models.resnet import register_resnet
from ..registry import register_attention


def eca_kernel_size(channels: int, gamma: float = 2, b: float = 1) -> int:
    """psi(C): the odd kernel size nearest to (log2 C + b) / gamma (ties upwards), at least 1."""
    check_positive_int("channels", channels)
    if not gamma > 0:
        raise ValueError(f"gamma must be positive, got {gamma!r}")
    t = int(abs((math.log2(channels) + b) / gamma))
    return t if t % 2 else t + 1


@register_attention("eca")
class EfficientChannelAttention(nn.Module):
    """(N, C, H, W) -> (N, C, H, W): x * sigmoid(conv1d_k(avgpool(x))).

    Args:
        channels: C. kernel_size: k; None (default) uses the paper's adaptive psi(C).
        gamma, b: the constants of psi (paper: 2 and 1).
    """

    def __init__(self, channels: int, kernel_size: int | None = None, gamma: float = 2, b: float = 1):
        super().__init__()
        if kernel_size is None:
            k = eca_kernel_size(channels, gamma, b)
        else:
            k = check_positive_int("kernel_size", kernel_size)
        if k % 2 == 0:
            raise ValueError(f"kernel_size must be odd so that every channel stays centred, got {k}")
        self.kernel_size = k
        self.conv = nn.Conv1d(1, 1, k, padding=k // 2, bias=False)

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """The per-channel gate, shape (N, C, 1, 1)."""
        y = x.mean(dim=(2, 3))[:, None, :]  # (N, 1, C): channels as a 1D signal
        return torch.sigmoid(self.conv(y))[:, 0, :, None, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weights(x)


# The released ECA-Net50: kernel sizes per stage set by hand (not by the formula, which gives 5, 5, 5, 7).
ECA_RESNET50_KERNELS = (3, 5, 5, 7)
register_resnet("eca_resnet50", 50, attn_layer="eca",
                attn_kwargs=tuple({"kernel_size": k} for k in ECA_RESNET50_KERNELS))
