"""External attention (Guo, Liu, Mu & Hu, "Beyond Self-attention: External Attention using Two Linear Layers
for Visual Tasks", TPAMI 2022, arXiv:2105.02358).

Self-attention compares each token with the other tokens of the same sample. External attention compares each
token with S learned memory slots instead, shared by the whole dataset: a key memory M_k (S x C) and a value
memory M_v (S x C), i.e. two bias-free linear layers. For tokens F (L x C):

    A = Norm(F M_k^T)    (L x S affinities),    F_out = A M_v    (L x C).

"Norm" is the paper's double normalization: a softmax over the L tokens (for each memory slot, which tokens
does it claim?) followed by an L1 normalization over the S slots (each token's weights sum to one). A plain
softmax over S would be sensitive to the scale of the features; normalizing over tokens first removes that. The
cost is O(L S C), linear in the number of tokens.

Registered names (both on (N, L, C) tokens, layout "nlc"; any L, no spatial arrangement needed):

* ``external_attn``: the single-head operator of the paper's Algorithm 1, S = 64 (the paper's default).
* ``external_attn_mh``: the multi-head form used in the all-MLP EAMLP models: a linear layer widens C by
  ``coef`` = 4, the result is split into ``num_heads * coef`` heads, each with its own double-normalized
  external attention over S = 256 / coef slots (memories shared across heads, as in the authors' code), and a
  linear layer maps back to C.

Departures: we chose the token layout (as the paper's pseudo-code); the segmentation network EANet wraps the
operator between 1x1 convolutions with BatchNorm and a residual connection on (N, C, H, W) maps, which is a
block around this operator, not part of it. The L1 step divides by (sum + 1e-9) as in the authors' code.

Biases of ``external_attn_mh``: our memories M_k, M_v are bias-free linear layers (the paper's "two linear layers"
are memories, M_k F^T and A M_v); the authors' multi-head code (MenghaoGuo/EANet, multi_head_attention_torch.py
lines 10-11: ``linear_0``, ``linear_1``) uses ``nn.Linear`` with its default biases. Harmless: the bias of M_k adds
the same constant to every token's logit for a slot, which the softmax over tokens cancels exactly, and the bias of
M_v adds the same vector to every token of every head, which the following projection turns into a constant that
its own bias absorbs (fold tile(b_v) W_proj^T into the projection's bias). Their checkpoints therefore map onto
ours exactly after dropping one bias and folding the other.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..layers import check_divisible, check_positive_int
from ..layers.tokens import TokenAttention
from ..registry import register_attention


def double_normalize(logits: torch.Tensor, token_dim: int = -2, eps: float = 1e-9) -> torch.Tensor:
    """Softmax over the tokens (``token_dim``), then L1 normalization over the memory slots (last dim)."""
    attn = logits.softmax(dim=token_dim)
    return attn / (attn.sum(dim=-1, keepdim=True) + eps)


@register_attention("external_attn", layout="nlc")
class ExternalAttention(TokenAttention):
    """(N, L, C) -> (N, L, C): M_v(DoubleNorm(M_k(x))).

    Args:
        channels: C. memory_size: S, the number of memory slots (paper: 64).
    """

    def __init__(self, channels: int, memory_size: int = 64):
        super().__init__(channels)
        check_positive_int("memory_size", memory_size)
        self.mk = nn.Linear(channels, memory_size, bias=False)
        self.mv = nn.Linear(memory_size, channels, bias=False)

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """Double-normalized affinities (N, L, S): each token's weights over the S memory slots sum to one."""
        return double_normalize(self.mk(x))

    def forward_tokens(self, x: torch.Tensor, hw=None) -> torch.Tensor:
        return self.mv(self.attention_map(x))


@register_attention("external_attn_mh", layout="nlc")
class MultiHeadExternalAttention(TokenAttention):
    """(N, L, C) -> (N, L, C): multi-head external attention of the EAMLP models.

    Args:
        channels: C. num_heads: heads before the widening (paper: 8); there are ``num_heads * coef`` heads of
        width C * coef / (num_heads * coef) = C / num_heads. coef: widening factor (paper: 4).
        memory_size: S per head (paper: 256 / coef = 64). proj_drop: dropout after the output projection.
    """

    def __init__(self, channels: int, num_heads: int = 8, coef: int = 4, memory_size: int = 64,
                 proj_drop: float = 0.0):
        super().__init__(channels)
        for name, value in dict(channels=channels, num_heads=num_heads, coef=coef, memory_size=memory_size).items():
            check_positive_int(name, value)
        check_divisible("channels", channels, num_heads, "num_heads")
        self.heads = num_heads * coef
        head_dim = channels // num_heads
        self.widen = nn.Linear(channels, channels * coef)
        self.mk = nn.Linear(head_dim, memory_size, bias=False)
        self.mv = nn.Linear(memory_size, head_dim, bias=False)
        self.proj = nn.Linear(channels * coef, channels)
        self.proj_drop = nn.Dropout(proj_drop)

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """Per-head double-normalized affinities (N, heads, L, S)."""
        n, length, _ = x.shape
        t = self.widen(x).reshape(n, length, self.heads, -1).transpose(1, 2)  # (N, heads, L, d)
        return double_normalize(self.mk(t))

    def forward_tokens(self, x: torch.Tensor, hw=None) -> torch.Tensor:
        n, length, _ = x.shape
        y = self.mv(self.attention_map(x))  # (N, heads, L, d)
        return self.proj_drop(self.proj(y.transpose(1, 2).reshape(n, length, -1)))
