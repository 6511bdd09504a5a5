"""Vision Transformer (Dosovitskiy et al., ICLR 2021, arXiv:2010.11929).

The image is cut into P x P patches, each linearly embedded (a stride-P convolution); a learnable [class]
token and learnable 1D position embeddings are added, and L pre-norm transformer blocks follow:
x = x + MSA(LN(x)); x = x + MLP(LN(x)). The class token's final LayerNorm output feeds a linear head.

Sizes: ViT-B/16 (768 wide, 12 deep, 12 heads) and ViT-L/16 from the paper (Table 1); ViT-Ti and ViT-S
(192/3 heads and 384/6 heads, 12 deep) are the smaller configurations introduced by DeiT (Touvron et al.,
ICML 2021, Table 1), since the ViT paper itself starts at Base.

Departures: any input size works. Inputs whose sides are not multiples of P are zero-padded on the right
and bottom, and the position embeddings (learned for ``img_size``) are resized to the actual patch grid, the
2D interpolation the paper uses when fine-tuning at a higher resolution (Sec. 3.2). The kind of interpolation
differs: the authors' code (google-research/vision_transformer, vit_jax/checkpoint.py lines 235-236) resizes
linearly, ``scipy.ndimage.zoom(order=1)``, i.e. bilinear with the corner positions aligned; bicubic resizing is
DeiT's choice and timm's, which we keep as the default (``pos_embed_interp="bicubic"``);
``pos_embed_interp="bilinear"`` reproduces the authors' resizing exactly. The head is a single
linear layer (the paper's fine-tuning head); the pre-training MLP head with one hidden layer is not included.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..layers import (drop_path_rates, DropPath, Mlp, MultiHeadSelfAttention, PatchEmbed, check_choice,
                      check_positive_int, resize_pos_grid, trunc_normal_init)
from ..registry import register_model
from ..timm import register_timm_rules


class Block(nn.Module):
    """Pre-norm transformer encoder block on (N, L, D) tokens."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 drop: float = 0.0, drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = MultiHeadSelfAttention(dim, num_heads, qkv_bias, proj_drop=drop)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class VisionTransformer(nn.Module):
    """(N, in_chans, H, W) -> (N, num_classes) logits; any H, W >= 1.

    Args:
        img_size: the resolution the position embeddings are laid out for. patch_size: P.
        embed_dim, depth, num_heads, mlp_ratio: the transformer's size. qkv_bias: biases in Q, K, V.
        drop_rate: dropout after the embedding and in blocks. drop_path_rate: stochastic depth, linear over blocks.
        pos_embed_interp: how the position embeddings are resized to another patch grid: "bicubic" (DeiT, timm)
            or "bilinear" (the ViT authors' code: linear, corners aligned).
        embed_layer, block_layer: for papers that change ViT's parts (CeiT): factories
            ``embed_layer(patch_size, in_chans, embed_dim)`` of a module mapping images to (tokens, (gh, gw)) with a
            total stride of ``patch_size`` (default ``layers.PatchEmbed``: zero padding on the right and bottom) and
            ``block_layer(dim, num_heads, mlp_ratio, qkv_bias, drop, drop_path)`` (default ``Block``).
    """

    num_prefix_tokens = 1  # the class token (DeiT's distilled model adds a second)

    def __init__(self, img_size: int = 224, patch_size: int = 16, in_chans: int = 3, num_classes: int = 1000,
                 embed_dim: int = 768, depth: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                 pos_embed_interp: str = "bicubic", embed_layer=None, block_layer=None):
        super().__init__()
        self.pos_embed_interp = check_choice("pos_embed_interp", pos_embed_interp, ("bicubic", "bilinear"))
        for name, value in dict(img_size=img_size, patch_size=patch_size, in_chans=in_chans,
                                num_classes=num_classes, depth=depth).items():
            check_positive_int(name, value)
        if img_size % patch_size:
            raise ValueError(f"img_size={img_size} must be a multiple of patch_size={patch_size}")
        self.grid = img_size // patch_size
        self.patch_embed = (embed_layer or PatchEmbed)(patch_size, in_chans, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.randn(1, 1 + self.grid ** 2, embed_dim) * 0.02)
        self.pos_drop = nn.Dropout(drop_rate)
        rates = drop_path_rates(drop_path_rate, depth)
        block_layer = block_layer or Block
        self.blocks = nn.Sequential(*[block_layer(embed_dim, num_heads, mlp_ratio, qkv_bias, drop_rate, r)
                                      for r in rates])
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.num_features = embed_dim
        self.head = nn.Linear(embed_dim, num_classes)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.apply(trunc_normal_init)

    def position_embedding(self, grid_hw: tuple[int, int]) -> torch.Tensor:
        """Position embeddings (1, k + gh*gw, D) for a patch grid: the k = ``num_prefix_tokens`` token positions,
        then the learned grid's, resized to ``grid_hw`` if needed (``resize_pos_grid``)."""
        if tuple(grid_hw) == (self.grid, self.grid):
            return self.pos_embed
        k = self.num_prefix_tokens
        patch_pos = resize_pos_grid(self.pos_embed[:, k:], (self.grid, self.grid), grid_hw, self.pos_embed_interp)
        return torch.cat([self.pos_embed[:, :k], patch_pos], dim=1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, 1 + L, D) normalized tokens, class token first."""
        x, grid_hw = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.pos_drop(x + self.position_embedding(grid_hw))
        return self.norm(self.blocks(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x)[:, 0])


_VARIANTS = {
    "vit_tiny_patch16_224": dict(embed_dim=192, depth=12, num_heads=3),
    "vit_small_patch16_224": dict(embed_dim=384, depth=12, num_heads=6),
    "vit_base_patch16_224": dict(embed_dim=768, depth=12, num_heads=12),
    "vit_large_patch16_224": dict(embed_dim=1024, depth=24, num_heads=16),
}
# timm's VisionTransformer (timm/models/vision_transformer.py) keeps the same names for every tensor; its extra
# modules (norm_pre, ls1/ls2, q_norm/k_norm, fc_norm) are parameter-free identities in these configurations.
register_timm_rules(VisionTransformer, renames=())

for _name, _cfg in _VARIANTS.items():
    register_model(_name, VisionTransformer, timm=_name, img_size=224, patch_size=16, **_cfg)
