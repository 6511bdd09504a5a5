"""MUSE: parallel multi-scale attention (Zhao, Sun, Xu, Zhang & Luo, "MUSE: Parallel Multi-Scale Attention for
Sequence to Sequence Learning", arXiv 2019, arXiv:1911.09483).

Deep self-attention layers tend to concentrate on a few tokens and neglect local structure. MUSE runs, in
parallel and on the same input, a global branch (multi-head self-attention) and a local branch (convolutions
along the sequence), and sums them. The paper stresses that the branches must work in one shared ("unified")
semantic space: the convolutions take the attention's value projection V = X W_v as their input rather than
X itself. The local branch mixes several kernel sizes with learned weights ("dynamic selection"):

    MUSE(X) = W_o SA(Q, K, V) + sum_i alpha_i DepthwiseSeparableConv_{k_i}(V),  alpha = softmax(a),

with each depth-wise separable convolution a depth-wise 1D convolution of width k_i along the sequence followed
by a point-wise (1x1) convolution, and a a learned vector with one entry per kernel size.

Registered as ``muse`` on (N, L, C) token sequences (layout "nlc"): MUSE is a sequence model, so the
convolutions run along the token order as given (for a raster-scanned image, along rows, wrapping from one
row to the next). Self-attention goes through ``scaled_dot_product_attention``.

Departures: the paper's layer also has a third parallel branch, the position-wise feed-forward network, which
is a block-level component and is left to the enclosing block here. Kernel sizes (default 1, 3, 5) are a
hyper-parameter; the kernel of size 1 is a point-wise convolution only. The mixing weights are softmax(a)
computed in every forward pass from a learned ``a``; the public code collection overwrites the parameter with
its own softmax at each call, which breaks training. Odd kernel sizes only (same-length output).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import check_divisible, check_positive_int
from ..registry import register_attention


class DepthwiseSeparableConv1d(nn.Module):
    """(N, C, L) -> (N, C_out, L): depth-wise conv of width k along L (skipped for k = 1), then 1x1 conv."""

    def __init__(self, channels: int, out_channels: int, kernel_size: int):
        super().__init__()
        self.depthwise = (nn.Conv1d(channels, channels, kernel_size, padding=kernel_size // 2, groups=channels)
                          if kernel_size > 1 else nn.Identity())
        self.pointwise = nn.Conv1d(channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


@register_attention("muse", layout="nlc")
class MUSEAttention(nn.Module):
    """(N, L, C) -> (N, L, C): global self-attention plus dynamically weighted local convolutions on V.

    Args:
        channels: C. num_heads: attention heads, must divide C (default 8). kernel_sizes: odd widths of the
        convolution branch (default 1, 3, 5). qkv_bias: biases in the projections. attn_drop: dropout on the
        attention weights (training only).
    """

    def __init__(self, channels: int, num_heads: int = 8, kernel_sizes: tuple[int, ...] = (1, 3, 5),
                 qkv_bias: bool = True, attn_drop: float = 0.0):
        super().__init__()
        check_positive_int("channels", channels)
        check_positive_int("num_heads", num_heads)
        check_divisible("channels", channels, num_heads, "num_heads")
        kernel_sizes = tuple(kernel_sizes)
        if not kernel_sizes:
            raise ValueError("kernel_sizes must not be empty")
        for k in kernel_sizes:
            check_positive_int("kernel_sizes[i]", k)
            if k % 2 == 0:
                raise ValueError(f"kernel sizes must be odd to keep the sequence length, got {k}")
        self.num_heads = num_heads
        self.attn_drop = attn_drop
        self.qkv = nn.Linear(channels, 3 * channels, bias=qkv_bias)
        self.proj = nn.Linear(channels, channels)
        self.convs = nn.ModuleList(DepthwiseSeparableConv1d(channels, channels, k) for k in kernel_sizes)
        self.branch_logits = nn.Parameter(torch.zeros(len(kernel_sizes)))  # uniform mixture at start

    def branch_weights(self) -> torch.Tensor:
        """alpha: the softmax mixing weights of the kernel sizes."""
        return self.branch_logits.softmax(dim=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, length, c = x.shape
        q, k, v = self.qkv(x).reshape(n, length, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        y = self.proj(y.transpose(1, 2).reshape(n, length, c))
        v_seq = v.transpose(1, 2).reshape(n, length, c).transpose(1, 2)  # shared value projection, (N, C, L)
        alpha = self.branch_weights()
        local = sum(a * conv(v_seq) for a, conv in zip(alpha, self.convs))
        return y + local.transpose(1, 2)
