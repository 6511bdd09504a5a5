"""Per-example convolution kernels applied in one grouped convolution (dynamic convolutions share this)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def per_sample_conv2d(x: torch.Tensor, kernels: torch.Tensor, bias: torch.Tensor | None = None, stride: int = 1,
                      padding: int = 0, dilation: int = 1, groups: int = 1) -> torch.Tensor:
    """Convolve example i of ``x`` with its own kernel ``kernels[i]``, without a Python loop over the batch.

    x: (N, C_in, H, W); kernels: (N, C_out, C_in / groups, kh, kw); bias: (N, C_out) or None.
    Returns (N, C_out, H', W'). The batch is folded into the channels, (N, C_in, H, W) -> (1, N C_in, H, W), and
    ``groups * N`` keeps every example with its own kernel, so the cost is that of one ordinary convolution.
    """
    n, c, h, w = x.shape
    out_channels = kernels.shape[1]
    y = F.conv2d(x.reshape(1, n * c, h, w), kernels.reshape(n * out_channels, *kernels.shape[2:]),
                 None if bias is None else bias.reshape(-1), stride, padding, dilation, groups * n)
    return y.view(n, out_channels, y.shape[-2], y.shape[-1])
