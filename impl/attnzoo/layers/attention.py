"""Multi-head scaled dot-product self-attention on token sequences (Vaswani et al., 2017).

Shared by the transformer-style modules and models; the softmax attention itself runs in
``torch.nn.functional.scaled_dot_product_attention`` (fused kernels on CPU and CUDA).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .helpers import check_divisible, check_positive_int


class MultiHeadSelfAttention(nn.Module):
    """(N, L, C) -> (N, L, C): softmax(Q K^T / sqrt(d)) V in ``num_heads`` heads of width C / num_heads.

    ``attn_bias`` (broadcastable to (N, heads, L, L)) can be passed to forward for relative position biases.
    """

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = True, attn_drop: float = 0.0,
                 proj_drop: float = 0.0):
        super().__init__()
        check_positive_int("dim", dim)
        check_positive_int("num_heads", num_heads)
        check_divisible("dim", dim, num_heads, "num_heads")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor, attn_bias: torch.Tensor | None = None) -> torch.Tensor:
        n, length, c = x.shape
        q, k, v = self.qkv(x).reshape(n, length, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias,
                                           dropout_p=self.attn_drop if self.training else 0.0)
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(n, length, c)))

    @torch.no_grad()
    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """The softmax weights (N, heads, L, L), computed explicitly for inspection and plots."""
        n, length, _ = x.shape
        q, k, _ = self.qkv(x).reshape(n, length, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return (q @ k.transpose(-2, -1) * self.head_dim ** -0.5).softmax(dim=-1)
