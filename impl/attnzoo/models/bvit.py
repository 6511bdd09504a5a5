"""BViT: broad attention based vision transformer (Li, Chen, Li, Ding, Zhao & Nie, IEEE TNNLS 2024,
arXiv:2202.06268).

A ViT uses the attention of each layer once, inside that layer. BViT adds **broad attention**, which combines the
attention information of *all* layers without new parameters:

* **broad connection**: the queries, keys and values every layer has already computed, q_l, k_l, v_l (per head,
  width d, l = 1..L), are collected and concatenated along the channel axis of each head,
  Q_B = [q_1, ..., q_L], K_B = [k_1, ..., k_L], V_B = [v_1, ..., v_L]  (N tokens x L d per head);
* **parameter-free attention** over them:

      A = softmax(Q_B K_B^T / sqrt(d)) = softmax(sum_l q_l k_l^T / sqrt(d)),       O = A V_B,

  so the attention weights pool the similarities seen at every depth and gather the values of every depth; the
  heads' outputs (h x L d channels) are averaged in consecutive groups of L down to the model width D = h d (the
  authors' ``AdaptiveAvgPool1d``), and added to the last layer's output with a fixed weight 0.4:
  x <- x_L + 0.4 * Pool(O). The class token of LN(x) feeds the linear classifier.

The broad part has no parameters: a BViT has exactly the parameters of its ViT. Registered alone as the token
attention module ``broad_attention`` (the transformer layers with their broad attention on top, ``depth`` layers,
2 by default: the smallest stack with more than one layer to combine; the models use 12).

Models (the authors' README, "Model Results"; the layouts of DeiT-Ti and DeiT-S): ``bvit_5m`` (BViT-5M, width
192, 12 layers, 3 heads, MLP 768) and ``bvit_22m`` (BViT-22M, 384, 12, 6, 1536); patches of 16, a class token,
learned absolute position embeddings, pre-norm blocks (LayerNorm eps 1e-5), Q, K, V without bias, exact GELU.

Follows the authors' code (koala719/BViT, ``model/layer/bvit.py``; its README calls it "the official
implementation"; the addresses printed in the paper, github.com/DRL-CASIA/Broad_ViT in arXiv v2 and
github.com/DRL/BViT in the journal version, were not available to us): its initialisation (PyTorch's default linear layers; class token and position
embeddings drawn from N(0, 1)), head width d = 64 = D / h in both models, the weight 0.4 and the grouped
average. Departures, where that file contradicts the figures the paper reports:

* its ``BViT`` runs a 7 x 7, stride-2 convolution (3 -> 3 channels) on the image before the patch embedding and
  keeps only the first 1 + (H/32)(W/32) position embeddings. That model has 50 tokens at 224 px and about a
  quarter of the reported FLOPs (1.2 G for BViT-5M is the cost of 197 tokens); we leave that convolution out,
  as the paper's description of BViT (a ViT with broad attention) does.
* its pooling width is hard-coded to 192, which only fits BViT-5M (BViT-22M would fail to add a 192-wide output
  to its 384-wide tokens); we pool to the model's width D, which is the same map for BViT-5M.
* its ``BViT_Ti`` has 2 classes (a leftover); the registered models have 1000.
* any input size works: sides that are not multiples of 16 are zero-padded at the bottom/right and the position
  embeddings resized bicubically to the patch grid (``VisionTransformer``'s rule); the authors' code asserts
  multiples of the patch size.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import DropPath, Mlp, MultiHeadSelfAttention, TokenAttention, check_positive_int, heads_for_width
from ..registry import register_attention, register_model
from .vit import VisionTransformer


class QKVAttention(MultiHeadSelfAttention):
    """Multi-head self-attention that also returns its queries, keys and values: (N, L, C) -> ((N, L, C),
    (q, k, v) each (N, heads, L, C / heads)). Q, K, V without bias by default (the authors' code)."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        n, length, c = x.shape
        q, k, v = self.qkv(x).reshape(n, length, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        return self.proj_drop(self.proj(y.transpose(1, 2).reshape(n, length, c))), (q, k, v)


class BViTBlock(nn.Module):
    """Pre-norm transformer block on (N, L, D) tokens, returning the tokens and the layer's (q, k, v)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = False,
                 drop: float = 0.0, drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = QKVAttention(dim, num_heads, qkv_bias, proj_drop=drop)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        y, qkv = self.attn(self.norm1(x))
        x = x + self.drop_path(y)
        return x + self.drop_path(self.mlp(self.norm2(x))), qkv


def broad_attention(qkvs: list[tuple[torch.Tensor, ...]]) -> torch.Tensor:
    """The parameter-free attention over the (q, k, v) of L layers, each (N, h, T, d) -> (N, T, h d).

    softmax(sum_l q_l k_l^T / sqrt(d)) [v_1 ... v_L], the h x L d output channels averaged in consecutive groups
    of L (head by head, layer by layer: the authors' ``AdaptiveAvgPool1d(h d)`` over the flattened heads)."""
    q, k, v = (torch.cat(t, dim=-1) for t in zip(*qkvs))                  # (N, h, T, L d)
    n, heads, tokens, _ = q.shape
    layers, d = len(qkvs), qkvs[0][0].shape[-1]
    out = F.scaled_dot_product_attention(q, k, v, scale=d ** -0.5)        # the scale of one layer's head width
    return out.transpose(1, 2).reshape(n, tokens, heads * d, layers).mean(dim=-1)


def run_broad(blocks, x: torch.Tensor, weight: float) -> torch.Tensor:
    """x through ``blocks``, then x_L + weight * broad_attention(their q, k, v)."""
    qkvs = []
    for block in blocks:
        x, qkv = block(x)
        qkvs.append(qkv)
    return x + weight * broad_attention(qkvs)


@register_attention("broad_attention", layout="nlc")
class BroadTransformer(TokenAttention):
    """BViT's encoder as a token module: ``depth`` pre-norm transformer layers, then broad attention over their
    queries, keys and values, added with ``broad_weight``: (N, L, C) on an (H, W) grid -> (N, L, C) (and
    (N, C, H, W) maps -> the same).

    Args: channels; depth (2, see the module docstring); num_heads (heads of 64 channels, BViT's width, if None);
    mlp_ratio (4); qkv_bias (False, the authors'); broad_weight (0.4, the authors'); drop, drop_path.
    """

    def __init__(self, channels: int, depth: int = 2, num_heads: int | None = None, mlp_ratio: float = 4.0,
                 qkv_bias: bool = False, broad_weight: float = 0.4, drop: float = 0.0, drop_path: float = 0.0):
        super().__init__(channels)
        check_positive_int("depth", depth)
        heads = heads_for_width(channels, num_heads, 64, "BViT")
        self.broad_weight = broad_weight
        self.blocks = nn.ModuleList(BViTBlock(channels, heads, mlp_ratio, qkv_bias, drop, drop_path)
                                    for _ in range(depth))

    def forward_tokens(self, x: torch.Tensor, hw=None) -> torch.Tensor:
        return run_broad(self.blocks, x, self.broad_weight)


class BViT(VisionTransformer):
    """(N, in_chans, H, W) -> (N, num_classes) logits; any H, W >= 1.

    Args: those of ``VisionTransformer`` (img_size, patch_size, embed_dim, depth, num_heads, mlp_ratio, qkv_bias,
    drop_rate, drop_path_rate, pos_embed_interp), with BViT's defaults (no Q, K, V bias), plus broad_weight (0.4).
    """

    def __init__(self, *args, qkv_bias: bool = False, broad_weight: float = 0.4, **kwargs):
        super().__init__(*args, qkv_bias=qkv_bias, block_layer=BViTBlock, **kwargs)
        self.broad_weight = broad_weight
        self.norm = nn.LayerNorm(self.num_features)                        # the head's LayerNorm, eps 1e-5
        if not self.pos_embed.is_meta:                                     # the authors' initialisation
            for m in self.modules():
                if isinstance(m, (nn.Linear, nn.Conv2d)):
                    m.reset_parameters()
            nn.init.normal_(self.pos_embed)
            nn.init.normal_(self.cls_token)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, 1 + L, D) normalised tokens, class token first, broad attention added."""
        x, grid_hw = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.pos_drop(x + self.position_embedding(grid_hw))
        return self.norm(run_broad(self.blocks, x, self.broad_weight))


register_model("bvit_5m", BViT, img_size=224, patch_size=16, embed_dim=192, depth=12, num_heads=3)
register_model("bvit_22m", BViT, img_size=224, patch_size=16, embed_dim=384, depth=12, num_heads=6)
