"""Cross-normalized linear attention of UFO-ViT (Song, "UFO-ViT: High Performance Linear Vision Transformer
without Softmax", arXiv 2021, arXiv:2109.14382).

Without the softmax, attention is a product of three matrices, and (Q K^T) V = Q (K^T V): computing K^T V first
costs O(L d^2) per head instead of O(L^2 d). What replaces the softmax is a normalization, XNorm, applied to
both factors: XNorm(a) = gamma * a / ||a||_2, an L2 normalization with a learnable per-head scale gamma.

    UFO(X) = W_o concat_h [ XNorm(Q_h) XNorm(K_h^T V_h) ].

K^T V (d x d) can be read as d cluster centres in the d-dimensional key space (its columns); each query, scaled
to unit length, is compared with each unit-length centre, so every output element is gamma_q gamma_kv times a
cosine in [-1, 1]: a bounded "unit force" between a token and a centre, whatever the number of tokens.

Registered as ``ufo`` on (N, L, C) tokens (layout "nlc"); O(L C d) time, no L x L matrix, any L.

Departures: we normalize each query over its d channels and each column of K^T V over the d key channels (the
axis that the product Q (K^T V) contracts), our reading of the paper's equations; the public code collections
normalize the rows of K^T V (over the value channels) instead, and share one gamma between both normalizations.
gamma starts at 1 (one per head and per factor) and the norms use F.normalize's eps = 1e-12. The full UFO-ViT
models also change the MLP and the patch embedding and are not registered.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import check_divisible, check_positive_int
from ..layers.tokens import TokenAttention
from ..registry import register_attention


@register_attention("ufo", layout="nlc")
class UFOAttention(TokenAttention):
    """(N, L, C) -> (N, L, C): W_o [XNorm(Q) XNorm(K^T V)] per head, linear in L.

    Args:
        channels: C. num_heads: h, must divide C (default 8). qkv_bias: biases in Q, K, V.
        proj_drop: dropout after W_o.
    """

    def __init__(self, channels: int, num_heads: int = 8, qkv_bias: bool = True, proj_drop: float = 0.0):
        super().__init__(channels)
        check_positive_int("num_heads", num_heads)
        check_divisible("channels", channels, num_heads, "num_heads")
        self.num_heads = num_heads
        self.qkv = nn.Linear(channels, 3 * channels, bias=qkv_bias)
        self.gamma_q = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.gamma_kv = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.proj = nn.Linear(channels, channels)
        self.proj_drop = nn.Dropout(proj_drop)

    def normalized_factors(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """XNorm(Q) (N, h, L, d) and XNorm(K^T V) (N, h, d, d); the output is their product."""
        n, length, c = x.shape
        q, k, v = self.qkv(x).reshape(n, length, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        kv = k.transpose(-2, -1) @ v                                   # (N, h, d_k, d_v), O(L d^2)
        q = self.gamma_q * F.normalize(q, dim=-1)                      # each query over its channels
        kv = self.gamma_kv * F.normalize(kv, dim=-2)                   # each centre (column) over the key channels
        return q, kv

    def forward_tokens(self, x: torch.Tensor, hw=None) -> torch.Tensor:
        n, length, c = x.shape
        q, kv = self.normalized_factors(x)
        y = (q @ kv).transpose(1, 2).reshape(n, length, c)
        return self.proj_drop(self.proj(y))
