"""Scaled dot-product multi-head attention (Vaswani, Shazeer, Parmar, Uszkoreit, Jones, Gomez, Kaiser &
Polosukhin, "Attention Is All You Need", NeurIPS 2017, arXiv:1706.03762).

Every token asks every other token how relevant it is: with queries Q = X W_q, keys K = X W_k and values
V = X W_v, one head computes softmax(Q K^T / sqrt(d)) V, the 1/sqrt(d) keeping the logits' variance near one
for d-wide heads. h heads run side by side on C / h channels each; their outputs are concatenated and mixed by
W_o. The cost is quadratic in the number of tokens L.

Two registrations, both on (N, L, C) tokens (layout "nlc") and both through
``torch.nn.functional.scaled_dot_product_attention``:

* ``mhsa``: the full module, a thin registration of the shared ``attnzoo.layers.MultiHeadSelfAttention``
  (no copy; the same class the ViT backbone uses).
* ``simplified_mhsa``: the form the public code collections call "simplified self-attention": no Q, K, V
  projections (the input, split into heads, is query, key and value at once), only the output projection W_o.
  It shows how much of the mechanism is the softmax pooling itself; with W_o = identity it is a parameter-free
  similarity-weighted average of the tokens.

Departures: the paper's model is an encoder-decoder for translation (with masking, dropout and sinusoidal
position encodings); only the attention operator is registered here, without a mask. 8 heads by default, as in
the paper's base model (which is 512 wide; here any C divisible by the number of heads).
Biases: the paper writes W_q, W_k, W_v, W_o as plain matrices, and the authors' tensor2tensor code has none
(tensor2tensor/layers/common_attention.py: ``use_bias=False`` in ``compute_attention_component``, line 4416,
and in the ``output_transform``, line 4818). ``mhsa`` uses the shared layer's biases (the ViT convention):
Q, K, V biases by default (``qkv_bias=False`` removes them) and a bias on W_o. Harmless (3C + C extra
parameters; zero biases give the paper's operator exactly), but a tensor2tensor checkpoint has no tensors for them.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import MultiHeadSelfAttention, check_divisible, check_positive_int
from ..layers.tokens import TokenAttention
from ..registry import register_attention


@register_attention("mhsa", layout="nlc")
class MHSA(TokenAttention, MultiHeadSelfAttention):
    """(N, L, C) -> (N, L, C) multi-head softmax attention; the shared layer with ``channels`` as first argument
    (and, through ``TokenAttention``, (N, C, H, W) maps over their H * W positions).

    Args:
        channels: C. num_heads: h (paper: 8), must divide C. qkv_bias: biases in the Q, K, V projection.
        attn_drop: dropout on the attention weights (training only). proj_drop: dropout after W_o.
    """

    def __init__(self, channels: int, num_heads: int = 8, qkv_bias: bool = True, attn_drop: float = 0.0,
                 proj_drop: float = 0.0):
        MultiHeadSelfAttention.__init__(self, channels, num_heads, qkv_bias, attn_drop, proj_drop)
        self.channels = channels

    def forward_tokens(self, x: torch.Tensor, hw=None) -> torch.Tensor:
        return MultiHeadSelfAttention.forward(self, x)


@register_attention("simplified_mhsa", layout="nlc")
class SimplifiedMHSA(TokenAttention):
    """(N, L, C) -> (N, L, C): W_o concat_h softmax(X_h X_h^T / sqrt(d)) X_h, with X_h the h-th channel group.

    Args:
        channels: C. num_heads: h, must divide C. attn_drop: dropout on the attention weights (training only).
    """

    def __init__(self, channels: int, num_heads: int = 8, attn_drop: float = 0.0):
        super().__init__(channels)
        check_positive_int("num_heads", num_heads)
        check_divisible("channels", channels, num_heads, "num_heads")
        if not 0.0 <= attn_drop < 1.0:
            raise ValueError(f"attn_drop must be in [0, 1), got {attn_drop}")
        self.num_heads = num_heads
        self.attn_drop = attn_drop
        self.proj = nn.Linear(channels, channels)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        n, length, c = x.shape
        # (N, h, L, d) with unit stride on d (tokens of a feature map are a transposed view): SDPA's fused CPU
        # kernel needs it
        return x.contiguous().reshape(n, length, self.num_heads, c // self.num_heads).transpose(1, 2)

    def forward_tokens(self, x: torch.Tensor, hw=None) -> torch.Tensor:
        n, length, c = x.shape
        t = self._heads(x)
        if torch.is_autocast_enabled(x.device.type):  # no projection before SDPA to cast the inputs for us
            t = t.to(torch.get_autocast_dtype(x.device.type))
        y = F.scaled_dot_product_attention(t, t, t, dropout_p=self.attn_drop if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(n, length, c))

    @torch.no_grad()
    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """The softmax weights (N, heads, L, L), computed explicitly for inspection and plots."""
        t = self._heads(x)
        return (t @ t.transpose(-2, -1) * t.shape[-1] ** -0.5).softmax(dim=-1)
