"""MUSE: parallel multi-scale attention (Zhao, Sun, Xu, Zhang & Luo, "MUSE: Parallel Multi-Scale Attention for
Sequence to Sequence Learning", arXiv 2019, arXiv:1911.09483).

Deep self-attention layers tend to concentrate on a few tokens and neglect local structure. MUSE runs, in
parallel and on the same input, a global branch (multi-head self-attention) and a local branch (convolutions
along the sequence), and combines them. The paper stresses that the branches must work in one shared
("unified") semantic space: the convolutions read the attention's own value projection V = X W_v rather than X.

This module follows the authors' released fairseq code (github.com/lancopku/MUSE: ``ParallelMultiheadAttention``
in ``fairseq/modules/multihead_attention.py`` and ``DynamicConv1dTBC`` in ``fairseq/modules/dynamic_convolution.py``,
with the command line of their README: ``--attn_dynamic_type 2 --attn_dynamic_cat 1 --attn_wide_kernels [3,15]
--dynamic_gate 1``). The local branch is a *dynamic* convolution (Wu et al., 2019) of V, one per kernel size k:

    a_t = softmax_k( V_t W_k )                      (num_heads x k kernel of position t, predicted from V_t and
                                                     normalised over its k taps; shared by the C / h channels of
                                                     each head, as the attention heads split the channels)
    D_k(V)_t = sum_j a_t[head(c), j] V_{t - k//2 + j, c}   (zero outside the sequence; centred window)

and the branches are gated and fused by one shared output projection of the concatenation:

    MUSE(X) = W_o [ MHA(Q, K, V) ; sum_i g_i D_{k_i}(V) ],   g = softmax(gate),  W_o: 2C -> C.

W_o acting on the concatenation is the paper's point-wise part of the depth-wise separable convolution and the
attention's output projection in one matrix. Defaults as released: kernel sizes (3, 15), gate initialised to
1 / (number of kernel sizes), W_k without bias; the taps that fall outside the sequence count in the softmax
and read zeros (``unfold1d`` pads with zeros before the window is applied).

Registered as ``muse`` on tokens (layout "nlc", a ``TokenAttention``). MUSE is a sequence model: the
convolutions run along the token order as given. For an image the tokens are the pixels in raster order, as one
1-D sequence (as the official 1-D dynamic convolution sees a sentence), with the non-causal, centred padding of
the authors' encoder: a window reaches k // 2 tokens back and forth along a row and wraps from the end of one
row to the start of the next; the grid ``hw`` is not used. Self-attention goes through
``scaled_dot_product_attention`` (scale 1 / sqrt(head dim), as the official ``q *= self.scaling``).

Departures: the decoder's causal convolution (left padding k - 1) and incremental decoding are not provided; the
feed-forward network that the paper's MUSE layer runs as a third parallel branch is left to the enclosing block.
Dropout rates default to 0 (the released runs use 0.1 on the attention weights and 0.1 DropConnect on the
dynamic kernels: ``attn_drop``, ``kernel_drop``). Initialisation as released for the projections: q, k, v
weights as ``nn.Linear`` (the ``km`` init), zero biases, ``W_o`` Kaiming-uniform with a = 1.
``convert_official_state_dict`` renames a released checkpoint's keys to this module's.

An earlier version of this file used the design of a public re-implementation (static depth-wise separable
convolutions with kernels 1, 3, 5 summed with softmax weights); it matches neither the paper's nor the authors'
dynamic convolution and was removed.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import check_divisible, check_positive_int
from ..layers.tokens import TokenAttention
from ..registry import register_attention


def dynamic_conv1d(v: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Centred dynamic depth-wise convolution along L, vectorised.

    v: (N, L, H, d) values split into H heads; weights: (N, L, H, k) per-position kernels (k odd).
    Returns (N, L, H, d) with out[t] = sum_j weights[t, :, j] * v[t - k // 2 + j] (zeros outside the sequence).
    """
    k = weights.shape[-1]
    n, length, h, d = v.shape
    padded = F.pad(v, (0, 0, 0, 0, k // 2, k // 2))          # zeros before and after the sequence
    windows = padded.unfold(1, k, 1)                          # (N, L, H, d, k): window of position t
    return torch.einsum("nlhdk,nlhk->nlhd", windows, weights.to(v.dtype))


@register_attention("muse", layout="nlc")
class MUSEAttention(TokenAttention):
    """(N, L, C) -> (N, L, C): self-attention and gated dynamic convolutions of the shared V, fused by one W_o.

    Args:
        channels: C. num_heads: h, must divide C; used by the attention and by the dynamic kernels (default 8).
        kernel_sizes: odd widths of the dynamic convolutions (default (3, 15), as released).
        qkv_bias: biases in the q, k, v projection and in W_o (the official ``bias`` flag covers both).
        attn_drop: dropout on the attention weights. kernel_drop: DropConnect on the normalised dynamic kernels
        (the official ``weight_dropout``). Both training only, default 0.
    """

    def __init__(self, channels: int, num_heads: int = 8, kernel_sizes: tuple[int, ...] = (3, 15),
                 qkv_bias: bool = True, attn_drop: float = 0.0, kernel_drop: float = 0.0):
        super().__init__(channels)
        check_positive_int("num_heads", num_heads)
        check_divisible("channels", channels, num_heads, "num_heads")
        kernel_sizes = tuple(kernel_sizes)
        if not kernel_sizes:
            raise ValueError("kernel_sizes must not be empty")
        for k in kernel_sizes:
            check_positive_int("kernel_sizes[i]", k)
            if k % 2 == 0:
                raise ValueError(f"kernel sizes must be odd (centred window), got {k}")
        for name, p in (("attn_drop", attn_drop), ("kernel_drop", kernel_drop)):
            if not 0.0 <= p < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {p!r}")
        self.num_heads = num_heads
        self.kernel_sizes = kernel_sizes
        self.attn_drop = attn_drop
        self.kernel_drop = kernel_drop
        self.qkv = nn.Linear(channels, 3 * channels, bias=qkv_bias)
        # one kernel predictor per width: V_t -> num_heads x k logits (official DynamicConv1dTBC.weight_linear)
        self.kernel_proj = nn.ModuleList(nn.Linear(channels, num_heads * k, bias=False) for k in kernel_sizes)
        self.gate = nn.Parameter(torch.full((len(kernel_sizes),), 1.0 / len(kernel_sizes)))
        self.proj = nn.Linear(2 * channels, channels, bias=qkv_bias)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The released initialisation (``init_method='km'``): zero biases, W_o Kaiming-uniform with a = 1."""
        self.qkv.reset_parameters()
        nn.init.kaiming_uniform_(self.proj.weight, a=1)
        for lin in (self.qkv, self.proj):
            if lin.bias is not None:
                nn.init.zeros_(lin.bias)
        for lin in self.kernel_proj:
            lin.reset_parameters()
        with torch.no_grad():
            self.gate.fill_(1.0 / len(self.kernel_sizes))

    def gate_weights(self) -> torch.Tensor:
        """g: the softmax weights of the kernel sizes."""
        return self.gate.softmax(dim=0)

    def dynamic_kernels(self, v: torch.Tensor, i: int) -> torch.Tensor:
        """The normalised kernels (N, L, h, k_i) of branch ``i``, predicted from the values v (N, L, C)."""
        n, length, _ = v.shape
        logits = self.kernel_proj[i](v).reshape(n, length, self.num_heads, self.kernel_sizes[i])
        weights = logits.float().softmax(dim=-1)
        return F.dropout(weights, self.kernel_drop, training=self.training)

    def forward_tokens(self, x: torch.Tensor, hw=None) -> torch.Tensor:
        n, length, c = x.shape
        h = self.num_heads
        q, k, v = self.qkv(x).reshape(n, length, 3, h, c // h).permute(2, 0, 3, 1, 4)   # (N, h, L, d)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        y = y.transpose(1, 2).reshape(n, length, c)
        v_seq = v.transpose(1, 2)                                                     # (N, L, h, d): shared V
        flat_v = v_seq.reshape(n, length, c)
        g = self.gate_weights()
        local = sum(g[i] * dynamic_conv1d(v_seq, self.dynamic_kernels(flat_v, i))
                    for i in range(len(self.kernel_sizes)))
        return self.proj(torch.cat([y, local.reshape(n, length, c).to(y.dtype)], dim=-1))


def convert_official_state_dict(state_dict: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """Rename the keys of one released ``ParallelMultiheadAttention`` (encoder self-attention) to ``MUSEAttention``.

    ``prefix`` is the layer's prefix in the checkpoint (e.g. ``"encoder.layers.0.self_attn."``); keys outside it
    are dropped. The tensors keep their layout: ``in_proj_weight`` is the (3C, C) q, k, v weight as ``qkv``.
    """
    rename = {"in_proj_weight": "qkv.weight", "in_proj_bias": "qkv.bias", "out_proj.weight": "proj.weight",
              "out_proj.bias": "proj.bias", "dynamic_gate_para": "gate"}
    out = {}
    for key, value in state_dict.items():
        if not key.startswith(prefix):
            continue
        key = key[len(prefix):]
        if key in rename:
            out[rename[key]] = value
        elif key.startswith("dynamics.") and key.endswith(".weight_linear.weight"):
            out[f"kernel_proj.{key.split('.')[1]}.weight"] = value
    return out

