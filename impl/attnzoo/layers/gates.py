"""Gate building blocks: a 1x1 convolution for pooled descriptors, and a spatial gate from channel-pooled maps."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .helpers import check_positive_int


class PooledConv1x1(nn.Conv2d):
    """A 1x1 ``nn.Conv2d`` meant for pooled (N, C_in, 1, 1) descriptors (SE-style excitation MLPs), where it
    runs as ``F.linear``: (N, C_in, 1, 1) -> (N, C_out, 1, 1).

    Same parameters, initialization and state-dict keys as ``nn.Conv2d(C_in, C_out, 1)`` (weight
    (C_out, C_in / groups, 1, 1), bias (C_out,)), so the authors' and timm's checkpoints load unchanged. On a
    1 x 1 map one matrix product replaces a convolution launch, whose fixed cost dominates on such tiny inputs
    (forward+backward, CPU, 2 threads: ~0.7 ms against ~10 ms for a (8, 256) descriptor). Any other input (a
    larger map, grouped weights) runs the ordinary convolution.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1,
                 groups: int = 1, bias: bool = True, **kwargs):
        if kernel_size not in (1, (1, 1)) or kwargs.get("padding", 0) not in (0, (0, 0)):
            raise ValueError(f"PooledConv1x1 is a 1x1 convolution without padding, got kernel_size={kernel_size!r}, "
                             f"padding={kwargs.get('padding')!r}")
        super().__init__(in_channels, out_channels, 1, stride, groups=groups, bias=bias, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.groups == 1 and x.dim() == 4 and x.shape[-2:] == (1, 1):
            return F.linear(x.flatten(1), self.weight.flatten(1), self.bias)[:, :, None, None]
        return super().forward(x)


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
        # max with indices: its backward scatters into the argmax, where amax's builds a full-size equality mask
        mean, mx = x.mean(dim=1, keepdim=True), x.max(dim=1, keepdim=True).values
        return torch.cat([mx, mean] if self.max_first else [mean, mx], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.norm(self.conv(self.pool(x))))
