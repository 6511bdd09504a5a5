"""Double attention block of A^2-Nets (Chen, Kalantidis, Li, Yan & Feng, "A^2-Nets: Double Attention
Networks", NeurIPS 2018, arXiv:1810.11579).

Two attention steps exchange information between every pair of positions through a small set of global
descriptors instead of an L x L affinity matrix. From X (C x L, L = H W) three 1x1 convolutions give
A (c_m x L), B (c_n x L) and V (c_n x L).

1. Gather (second-order attention pooling): each of the c_n rows of B, softmax-normalized over the L positions,
   is a spatial attention map; pooling A with it gives one c_m-dimensional descriptor per map,
   G = A softmax_L(B)^T  (c_m x c_n). This is bilinear (second-order) pooling of A and B.
2. Distribute: at every position i, a softmax over the c_n entries of V_i chooses a mixture of the descriptors,
   Z_i = G softmax_cn(V_i)  (c_m per position).

A 1x1 convolution maps Z back to C channels and the result is added to the input, Y = X + W_z Z. The cost is
O(L c_m c_n): linear in the number of positions.

Departures: the paper treats c_m and c_n as hyper-parameters; our default c_m = c_n = C / 4 is our choice.
The residual addition follows the paper's block diagram; several public re-implementations leave it out.
The output convolution is zero-initialized (``zero_init=True``) so that a new block starts as the identity,
as is common for residual attention blocks (non-local, GC); the paper does not state its initialization.
No ResNet-50 variant is registered: the ImageNet configuration (how many blocks, where, and c_m, c_n) could not
be verified against the paper's text here.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import check_positive_int, reduced_channels
from ..registry import register_attention


@register_attention("double_attn")
class DoubleAttention(nn.Module):
    """(N, C, H, W) -> (N, C, H, W): X + W_z(gather-then-distribute(X)).

    Args:
        channels: C. rd_ratio: c_m = c_n = C * rd_ratio unless given (default 1/4).
        c_m: width of the gathered descriptors. c_n: number of gathering maps (= descriptors).
        residual: add the input back (the paper's block). zero_init: start W_z at zero (identity block).
    """

    def __init__(self, channels: int, rd_ratio: float = 1 / 4, c_m: int | None = None, c_n: int | None = None,
                 residual: bool = True, zero_init: bool = True):
        super().__init__()
        check_positive_int("channels", channels)
        self.c_m = reduced_channels(channels, rd_ratio, c_m)
        self.c_n = reduced_channels(channels, rd_ratio, c_n)
        self.residual = residual
        self.conv_a = nn.Conv2d(channels, self.c_m, 1)
        self.conv_b = nn.Conv2d(channels, self.c_n, 1)
        self.conv_v = nn.Conv2d(channels, self.c_n, 1)
        self.proj = nn.Conv2d(self.c_m, channels, 1)
        if zero_init:
            nn.init.zeros_(self.proj.weight)
            nn.init.zeros_(self.proj.bias)

    def _projections(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """conv_a, conv_b, conv_v of x as one convolution (their weights concatenated per call; the parameters
        stay three convolutions, the authors' layout), split into (N, c_m, L), (N, c_n, L), (N, c_n, L) views:
        the same numbers as three convolutions, ~25 % faster forward+backward."""
        weight = torch.cat([self.conv_a.weight, self.conv_b.weight, self.conv_v.weight])
        bias = torch.cat([self.conv_a.bias, self.conv_b.bias, self.conv_v.bias])
        return F.conv2d(x, weight, bias).flatten(2).split([self.c_m, self.c_n, self.c_n], dim=1)

    def attention_maps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Gathering maps (N, c_n, H, W), each summing to one over space, and distribution weights
        (N, c_n, H, W), summing to one over the c_n descriptors at every position."""
        _, b, v = self._projections(x)
        shape = (x.shape[0], self.c_n, *x.shape[2:])
        return b.softmax(dim=-1).view(shape), v.softmax(dim=1).view(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        a, b, v = self._projections(x)                              # (N, c_m, L), (N, c_n, L) twice
        descriptors = a @ b.softmax(dim=-1).transpose(1, 2)         # (N, c_m, c_n): step 1, gather
        z = (descriptors @ v.softmax(dim=1)).view(n, self.c_m, h, w)  # step 2, distribute
        y = self.proj(z)
        return x + y if self.residual else y
