"""A spatial gate computed from channel-pooled descriptors (CBAM's spatial attention, triplet attention's branches)."""
from __future__ import annotations

import torch
import torch.nn as nn

from .helpers import check_positive_int


class SpatialGate(nn.Module):
    """(N, D, A, B) -> (N, 1, A, B): sigmoid(BN(conv_k([mean_D x; max_D x]))) over the (A, B) plane.

    Args:
        kernel_size: odd k of the k x k convolution (keeps the plane's size).
        norm: BatchNorm after the convolution (the convolution then has no bias).
        max_first: stack the descriptors as [max; mean] (triplet attention's Z-pool) instead of [mean; max] (CBAM),
            so that the convolution's two input channels match the official weights.
        norm_momentum: BatchNorm momentum (triplet attention's code uses 0.01).
    """

    def __init__(self, kernel_size: int = 7, norm: bool = True, max_first: bool = False, norm_momentum: float = 0.1):
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
