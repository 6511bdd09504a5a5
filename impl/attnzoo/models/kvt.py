"""KVT: k-NN attention for boosting vision transformers (Wang et al., ECCV 2022, arXiv:2106.00515).

Dense self-attention lets every query mix all tokens, noisy ones (clutter, occlusion) included. **k-NN attention**
(Sec. 3, Eq. 2) keeps, for each query, only its k most similar keys and gives the others no weight:

    A = Q K^T / sqrt(d),   T_k(A)_ij = A_ij if A_ij is among the k largest of row i, else -inf,
    Attn_kNN(Q, K, V) = softmax(T_k(A)) V.

The selection adds a locality bias without convolutions (nearby patches are usually the most similar) while still
allowing long-range keys; the paper shows it filters noise and speeds up training. It changes no parameter, so it
replaces the attention of any transformer; the paper applies it to ten architectures, among them DeiT (Touvron et al.,
2021), which the authors' released code trains.

Follows the authors' code (damo-cv/KVT, KNN_VisionTransformer.py, ``kNNAttention``): ``topk=100`` in every block of
every variant (the default there, which their training command keeps), the top k of the scaled scores per query and
head chosen with ``torch.topk`` (ties broken as there) and every other score set to -inf before the softmax; the class
token takes part like any other token. The network is DeiT's ViT (``models.deit``): ``kvt_deit_tiny`` / ``small`` /
``base`` have the parameters of ``deit_*_patch16_224`` and load their weights (``load_timm_weights`` from timm's DeiT:
the rules of our ViT apply), but compute other logits by design; with ``topk`` at least the number of tokens they are
DeiT.

Here the masked softmax runs in ``F.scaled_dot_product_attention`` with the kept keys as a boolean ``attn_mask``; the
scores are computed once more to choose them (without gradient: the choice is a constant of the backward pass, as
``torch.topk``'s indices are in the authors' code). Departure: the authors' ``torch.topk`` fails when k exceeds the
number of tokens (at 224 x 224, DeiT has 197); ours then keeps every key (plain attention), so any input size works.

The mechanism alone is registered as the token attention ``kvt_knn_attn`` ((N, C, H, W) maps or (N, L, C) tokens ->
same; it needs no grid); ``num_heads=None`` gives heads of 64 channels, as in DeiT.
"""
from __future__ import annotations

import functools

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import TokenAttention, check_positive_int, heads_for_width, trunc_normal_init
from ..registry import register_attention, register_model
from .vit import Block, VisionTransformer


@register_attention("kvt_knn_attn", layout="nlc")
class KNNAttention(TokenAttention):
    """(N, L, C) -> (N, L, C): multi-head self-attention in which each query attends to its ``topk`` best keys only.

    Args:
        channels: C. num_heads: heads of C / num_heads channels (default: 64 channels each, DeiT's head width).
        topk: k, the keys kept per query and head (100 in the authors' code); k >= L keeps all (plain attention).
        qkv_bias: biases in Q, K, V (True in DeiT). attn_drop: dropout on the weights. proj_drop: after the projection.
    """

    def __init__(self, channels: int, num_heads: int | None = None, topk: int = 100, qkv_bias: bool = True,
                 attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__(channels)
        self.num_heads = heads_for_width(channels, num_heads, 64, "DeiT")
        self.topk = check_positive_int("topk", topk)
        self.head_dim = channels // self.num_heads
        self.attn_drop = attn_drop
        self.qkv = nn.Linear(channels, 3 * channels, bias=qkv_bias)
        self.proj = nn.Linear(channels, channels)
        self.proj_drop = nn.Dropout(proj_drop)
        self.apply(trunc_normal_init)

    def _qkv(self, x: torch.Tensor) -> torch.Tensor:
        n, length, _ = x.shape
        return self.qkv(x).reshape(n, length, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)

    def keep_mask(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor | None:
        """(N, heads, L, L) boolean mask of the ``topk`` largest scaled scores of each query (None when it keeps
        every key)."""
        length = k.shape[-2]
        if self.topk >= length:
            return None
        scores = (q.detach() @ k.detach().transpose(-2, -1)) * self.head_dim ** -0.5
        index = scores.topk(self.topk, dim=-1).indices
        return torch.zeros_like(scores, dtype=torch.bool).scatter_(-1, index, True)

    def forward_tokens(self, x: torch.Tensor, hw: tuple[int, int] | None) -> torch.Tensor:
        n, length, c = x.shape
        q, k, v = self._qkv(x)
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=self.keep_mask(q, k),
                                           dropout_p=self.attn_drop if self.training else 0.0)
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(n, length, c)))

    @torch.no_grad()
    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """The softmax weights (N, heads, L, L) of (N, L, C) tokens, zero outside each query's k nearest keys,
        computed explicitly for inspection and plots."""
        q, k, _ = self._qkv(x)
        scores = (q @ k.transpose(-2, -1)) * self.head_dim ** -0.5
        keep = self.keep_mask(q, k)
        if keep is not None:
            scores = scores.masked_fill(~keep, float("-inf"))
        return scores.softmax(dim=-1)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, num_heads={self.num_heads}, topk={self.topk}"


class KNNBlock(Block):
    """ViT's pre-norm block (``models.vit.Block``) with k-NN attention: same parameters, same names."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True, drop: float = 0.0,
                 drop_path: float = 0.0, topk: int = 100):
        super().__init__(dim, num_heads, mlp_ratio, qkv_bias, drop, drop_path)
        self.attn = KNNAttention(dim, num_heads, topk, qkv_bias, proj_drop=drop)


class KNNVisionTransformer(VisionTransformer):
    """DeiT's ViT with k-NN attention in every block: (N, in_chans, H, W) -> (N, num_classes) logits, any H, W >= 1.

    Args: those of ``models.vit.VisionTransformer``, plus ``topk`` (k in every block; 100 in the authors' code).
    """

    def __init__(self, *args, topk: int = 100, **kwargs):
        self.topk = check_positive_int("topk", topk)
        super().__init__(*args, block_layer=functools.partial(KNNBlock, topk=topk), **kwargs)


# DeiT-Ti/S/B (DeiT's Table 1) with k-NN attention, as the authors' deit_*_patch16_224 (their README trains DeiT-Ti).
_VARIANTS = {
    "tiny": dict(embed_dim=192, depth=12, num_heads=3),
    "small": dict(embed_dim=384, depth=12, num_heads=6),
    "base": dict(embed_dim=768, depth=12, num_heads=12),
}
for _size, _cfg in _VARIANTS.items():
    register_model(f"kvt_deit_{_size}", KNNVisionTransformer, img_size=224, patch_size=16, topk=100, **_cfg)
