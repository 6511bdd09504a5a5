"""CeiT: convolution-enhanced image transformer (Yuan et al., ICCV 2021, arXiv:2103.11816).

DeiT with three convolutional changes (Sec. 3):

* **Image-to-Tokens (I2T)** stem: tokens are cut from low-level features instead of raw pixels. A 7x7 stride-2
  convolution, BatchNorm and a 3x3 stride-2 max-pool give a (C_s, H/4, W/4) map; 4 x 4 patches of it are embedded
  linearly, so the total stride stays 16 (a 14 x 14 grid at 224).
* **Locally-enhanced feed-forward (LeFF)**, in place of the MLP of every block: the patch tokens are put back on their
  grid and go through a pointwise expansion, a k x k depthwise convolution and a pointwise projection, each followed
  by BatchNorm (GELU after the first two):

      X_h = GELU(BN(Conv1x1(X)))  (hidden width e C), X_d = GELU(BN(DWConv_kxk(X_h))), X' = BN(Conv1x1(X_d)),

  so each token mixes with its neighbours inside the FFN. It is registered alone as the attention ``leff``.
* **Layer-wise class-token attention (LCA)**: the class token after each of the L blocks, plus a learned per-layer
  embedding, forms a sequence of L tokens; one more pre-norm transformer block (attention + MLP, no drop path) runs
  on it and the last token's output, after the final LayerNorm, feeds the head.

Faithful to the authors' code (coeusguo/ceit, ceit_model.py): stem width 64 (the default of the authors'
``Image2Tokens``), biased convolutions with BatchNorm in the LeFF, the LCA block run on all L tokens
and its last output kept (the same numbers as attending with the last query only), the layer embedding initialised to
zeros, LayerNorm eps 1e-6, DeiT's init (truncated-normal linear layers, PyTorch's default for convolutions).
In the LeFF block the authors' code splits the class token off *after* the second LayerNorm and concatenates it back
unchanged, so the class token's residual update is its own normalised value: x_cls + LN(x_cls)
(``cls_update="norm"``, default). The paper's figure keeps the class token out of the LeFF; ``cls_update="identity"``
leaves it unchanged (a zero update) instead.

Sizes: CeiT-T/S/B (Table 2: DeiT-Ti/S/B widths 192/384/768 with 3/6/12 heads, 12 blocks, expansion 4, k = 3);
``_384`` variants as the authors' ``ceit_*_patch16_384``. There is no CeiT in timm.

Departures: any input size. Sides that are not multiples of 4 after the stem are zero-padded (as this package's ViT
pads to whole patches), and the position table, learned for ``img_size``, is resized bicubically to the actual grid
(DeiT's fine-tuning recipe, which the authors' training code inherits); the authors' model accepts only ``img_size``
(their LeFF assumes a square grid). ``lca=False`` gives the ablation without LCA (the last block's class token).
"""
from __future__ import annotations

from functools import partial

import torch
import torch.nn as nn

from ..layers import (ConvNormAct, DropPath, MultiHeadSelfAttention, PatchEmbed, TokenAttention, check_choice,
                      check_positive_int, tokens_to_grid, trunc_normal_init)
from ..registry import register_attention, register_model
from .vit import Block, VisionTransformer


@register_attention("leff", layout="nlc")
class LocallyEnhancedFeedForward(TokenAttention):
    """LeFF: (N, L, C) tokens on an (H, W) grid -> (N, L, C); maps (N, C, H, W) -> same.

    Args: channels, mlp_ratio (hidden width / C, 4), kernel_size (depthwise k, 3), batch_norm (True, the authors'
    ``with_bn``; False drops the three BatchNorms).
    """

    def __init__(self, channels: int, mlp_ratio: float = 4.0, kernel_size: int = 3, batch_norm: bool = True):
        super().__init__(channels)
        hidden = int(channels * mlp_ratio)
        check_positive_int("channels * mlp_ratio", hidden)
        check_positive_int("kernel_size", kernel_size)
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (a centred depthwise window), got {kernel_size}")
        conv = partial(ConvNormAct, norm=batch_norm, bias=True)
        self.conv1 = conv(channels, hidden, 1, act="gelu")
        self.conv2 = conv(hidden, hidden, kernel_size, groups=hidden, act="gelu")
        self.conv3 = conv(hidden, channels, 1, act=None)

    def forward_tokens(self, x: torch.Tensor, hw: tuple[int, int] | None) -> torch.Tensor:
        grid = tokens_to_grid(x, hw).permute(0, 3, 1, 2)
        return self.conv3(self.conv2(self.conv1(grid))).flatten(2).transpose(1, 2)


class ImageToTokens(nn.Module):
    """I2T: (N, C_in, H, W) -> (tokens (N, gh * gw, D), (gh, gw)) with gh = ceil(ceil(ceil(H / 2) / 2) / (P / 4)).

    A 7x7 stride-2 convolution (no bias), BatchNorm, a 3x3 stride-2 max-pool, then P/4 x P/4 patches embedded.
    """

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int, stem_channels: int = 64):
        super().__init__()
        if patch_size % 4:
            raise ValueError(f"CeiT's patch_size (the total stride) must be a multiple of the stem's 4, "
                             f"got {patch_size}")
        self.stem = ConvNormAct(in_chans, stem_channels, 7, stride=2, act=None)
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.proj = PatchEmbed(patch_size // 4, stem_channels, embed_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        return self.proj(self.pool(self.stem(x)))


class LeFFBlock(nn.Module):
    """Pre-norm block with LeFF instead of the MLP: (N, 1 + L, D) tokens (class token first), hw -> same."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True, drop: float = 0.0,
                 drop_path: float = 0.0, kernel_size: int = 3, batch_norm: bool = True, cls_update: str = "norm"):
        super().__init__()
        self.cls_update = check_choice("cls_update", cls_update, ("norm", "identity"))
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = MultiHeadSelfAttention(dim, num_heads, qkv_bias, proj_drop=drop)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.leff = LocallyEnhancedFeedForward(dim, mlp_ratio, kernel_size, batch_norm)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        y = self.norm2(x)
        cls = y[:, :1] if self.cls_update == "norm" else torch.zeros_like(y[:, :1])
        return x + self.drop_path(torch.cat([cls, self.leff(y[:, 1:], hw)], dim=1))


class CeiT(VisionTransformer):
    """(N, in_chans, H, W) -> (N, num_classes) logits; any H, W >= 1.

    Args: those of ``VisionTransformer`` (``patch_size``: the total stride of I2T, 16), plus stem_channels (64),
    leff_kernel (3), leff_bn (True), cls_update ("norm", the authors' code, or "identity"), lca (True).
    """

    def __init__(self, img_size=224, patch_size: int = 16, in_chans: int = 3, num_classes: int = 1000,
                 embed_dim: int = 768, depth: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                 pos_embed_interp: str = "bicubic", stem_channels: int = 64, leff_kernel: int = 3,
                 leff_bn: bool = True, cls_update: str = "norm", lca: bool = True):
        super().__init__(img_size, patch_size, in_chans, num_classes, embed_dim, depth, num_heads, mlp_ratio,
                         qkv_bias, drop_rate, drop_path_rate, pos_embed_interp,
                         embed_layer=partial(ImageToTokens, stem_channels=stem_channels),
                         block_layer=partial(LeFFBlock, kernel_size=leff_kernel, batch_norm=leff_bn,
                                             cls_update=cls_update))
        self.lca = None
        if lca:                                      # no drop path in the LCA block, as the authors' code
            self.lca = Block(embed_dim, num_heads, mlp_ratio, qkv_bias, drop_rate, 0.0)
            self.pos_layer_embed = nn.Parameter(torch.zeros(1, depth, embed_dim))
            self.lca.apply(trunc_normal_init)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, D): the normalised LCA output (or the last block's normalised class token)."""
        x, hw = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.pos_drop(x + self.position_embedding(hw))
        class_tokens = []
        for block in self.blocks:
            x = block(x, hw)
            class_tokens.append(x[:, 0])
        if self.lca is None:
            return self.norm(x[:, 0])
        layers = torch.stack(class_tokens, dim=1) + self.pos_layer_embed           # (N, L_blocks, D)
        return self.norm(self.lca(layers)[:, -1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


_VARIANTS = {"t": dict(embed_dim=192, num_heads=3), "s": dict(embed_dim=384, num_heads=6),
             "b": dict(embed_dim=768, num_heads=12)}
for _size, _cfg in _VARIANTS.items():
    register_model(f"ceit_{_size}", CeiT, img_size=224, patch_size=16, depth=12, **_cfg)
    if _size != "b":
        register_model(f"ceit_{_size}_384", CeiT, img_size=384, patch_size=16, depth=12, **_cfg)
