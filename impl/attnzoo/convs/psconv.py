"""PSConv: poly-scale convolution (Li, Yao & Chen, ECCV 2020, arXiv:2007.06191).

A feature pyramid inside one layer, at no extra cost: the kernel W (C_out, C_in, k, k) of a plain convolution is
cut into P x P blocks (P "parts" of the output and input channels), and each block is applied with its own
dilation rate. Rates cycle along both channel axes, so every output channel mixes several scales and every input
channel is seen at several scales (paper, Sec. 3). With base rate d, the authors' layer
(``PSConv2d`` in d-li14/PSConv, ``mmdet/models/utils/psconv.py``) uses

    block (p, p)            dilation d       (``gwconv``: a group convolution with P groups)
    block (p, p + P/2)      dilation 2 d     (``gwconv_shift``: the same on the input with its halves swapped)
    every other block       dilation 1       (``conv``: a dense convolution whose other blocks are masked to zero)

    y = sum over blocks (p, q) of  W_{p,q} *_{dilation(p, q)} x_q                                     (Sec. 3)

and PS-ResNet uses d = 2, P = 4 in the 3x3 convolution of every bottleneck (``mmdet/models/backbones/resnet.py``).

Our form computes the same function with one weight tensor of the plain convolution's shape and P group
convolutions, one per block diagonal: diagonal s holds the blocks (p, p + s mod P), is applied to the input
with its parts rolled by s, and has dilation d (s = 0), 2 d (s = P/2) or 1. Every weight is used once, so the
parameters and multiply-adds are exactly those of the plain convolution, as the paper states; the authors'
code stores and runs the dense convolution and two group convolutions (1.5 times the weights, half of the
dense ones masked to zero and kept at zero by a gradient hook). Their ``gwconv``, ``gwconv_shift`` and the
unmasked part of ``conv`` are our diagonals 0, P/2 and the others.

Grouped form (``PSGConv2d``, for ResNeXt): each of the ``groups`` groups is split into P parts on its own. The
authors' mask indexes the dense blocks as ``i + j * groups`` (part i, group j), which is the group's block
``j * parts + i`` only when groups == parts; we follow the evident intent (every group gets the pattern).
``parts=None`` picks 4 (the paper) or, for widths 4 does not divide, 2; ``dilation`` is the base rate d
(default 2, as PS-ResNet); the contract's padding is "same" for every block.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import check_conv_args, check_positive_int
from ..models.resnet import register_resnet
from ..registry import register_conv


@register_conv("psconv")
class PSConv2d(nn.Module):
    """(N, C_in, H, W) -> (N, C_out, ceil(H / s), ceil(W / s)) with block-wise cycling dilation rates.

    Args:
        in_channels, out_channels, kernel_size, stride, groups, bias: as ``nn.Conv2d``. dilation: base rate d
            (the paper's PS-ResNet: 2). parts: P, even (paper: 4; None: 4 if it divides the widths, else 2).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, groups: int = 1,
                 dilation: int = 2, bias: bool = False, parts: int | None = None):
        super().__init__()
        check_conv_args(in_channels, out_channels, kernel_size, stride, groups, dilation)
        if parts is None:
            parts = next((p for p in (4, 2) if in_channels % (groups * p) == 0 and out_channels % (groups * p) == 0),
                         4)
        check_positive_int("parts", parts)
        if parts % 2:
            raise ValueError(f"parts must be even (the input halves are swapped for the 2d blocks), got {parts}")
        if in_channels % (groups * parts) or out_channels % (groups * parts):
            raise ValueError(f"in_channels={in_channels} and out_channels={out_channels} must be divisible by "
                             f"groups * parts = {groups * parts}")
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.stride, self.groups, self.dilation, self.parts = stride, groups, dilation, parts
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")

    def rate(self, shift: int) -> int:
        """Dilation of block diagonal ``shift`` (blocks (p, p + shift mod P)): d, 2 d, or 1."""
        return self.dilation if shift == 0 else 2 * self.dilation if shift == self.parts // 2 else 1

    def rate_map(self) -> torch.Tensor:
        """(P, P) dilation of block (output part, input part), for display and tests."""
        p = self.parts
        return torch.tensor([[self.rate((q - o) % p) for q in range(p)] for o in range(p)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g, p, k = self.groups, self.parts, self.kernel_size
        blocks = self.weight.view(g, p, self.out_channels // (g * p), p, c // (g * p), k, k)
        parts = x.view(n, g, p, c // (g * p), h, w)
        y = None
        for s in range(p):
            # diagonal s: output part o reads input part (o + s) mod P
            kernel = torch.diagonal(blocks.roll(-s, dims=3), dim1=1, dim2=3).permute(0, 5, 1, 2, 3, 4)
            xs = parts.roll(-s, dims=2).reshape(n, c, h, w)
            r = self.rate(s)
            out = F.conv2d(xs, kernel.reshape(self.out_channels, c // (g * p), k, k), None, self.stride,
                           r * (k - 1) // 2, r, g * p)
            y = out if y is None else y + out
        return y if self.bias is None else y + self.bias.view(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"groups={self.groups}, dilation={self.dilation}, parts={self.parts}")


register_resnet("ps_resnet50", 50, conv_layer="psconv")
