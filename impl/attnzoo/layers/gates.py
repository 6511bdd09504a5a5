"""A spatial gate computed from channel-pooled descriptors (CBAM's spatial attention, triplet attention's branches)."""
from __future__ import annotations

import torch
import torch.nn as nn

from .helpers import check_positive_int


class SpatialGate(nn.Module):
    """(N, D, A, B) -> (N, 1, A, B): sigmoid(BN(conv_k([max_D x; mean_D x]))) over the (A, B) plane.

    The defaults are the layout of both official codes that use this gate, CBAM's (Jongchan/attention-module,
    MODELS/cbam.py: ``ChannelPool`` stacks [max; mean], ``BasicConv`` has a bias-free convolution and
    ``BatchNorm2d(eps=1e-5, momentum=0.01)``) and triplet attention's (LandskapeAI/triplet-attention,
    triplet_attention.py: ``ZPool`` and ``BasicConv``, the same), so that their weights load channel for channel.
    The CBAM paper writes the descriptors in the other order, [mean; max] (its Eq. 3); that is the same function
    with the convolution's two input channels swapped, available as ``max_first=False``.

    Args:
        kernel_size: odd k of the k x k convolution (keeps the plane's size).
        norm: BatchNorm after the convolution (the convolution then has no bias).
        max_first: stack the descriptors as [max; mean] (both official codes) rather than [mean; max].
        norm_momentum: BatchNorm momentum (both official codes: 0.01; PyTorch's default is 0.1).
    """

    def __init__(self, kernel_size: int = 7, norm: bool = True, max_first: bool = True, norm_momentum: float = 0.01):
        super().__init__()
        check_positive_int("kernel_size", kernel_size)
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd to keep the spatial size, got {kernel_size}")
        self.max_first = max_first
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=not norm)
        self.norm = nn.BatchNorm2d(1, momentum=norm_momentum) if norm else nn.Identity()

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """(N, D, A, B) -> (N, 2, A, B) channel-wise mean and max, in this gate's order."""
        mean, mx = x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)
        return torch.cat([mx, mean] if self.max_first else [mean, mx], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.norm(self.conv(self.pool(x))))
