"""LocalViT: analyzing locality in vision transformers (Li et al., IROS 2023, arXiv:2104.05707).

A transformer's feed-forward network treats every token on its own. LocalViT puts the patch tokens back on their
(H, W) grid and replaces the FFN by an inverted residual block (Sec. 3, Fig. 2): a pointwise expansion to e C
channels, a 3 x 3 depthwise convolution that mixes each token with its neighbours, and a pointwise projection back,
each followed by BatchNorm, with hard-swish after the first two and a squeeze-excitation gate on the hidden map
(Table 2's best activation, "h-swish + SE"):

    Y = X + BN(W_2 * SE(hswish(BN(DW_3x3 * hswish(BN(W_1 * X)))))).

The class token bypasses it. The module is registered alone as the attention ``locality_ffn``.

Faithful to the authors' code (ofsoundof/LocalViT, models/localvit.py, ``LocalityFeedForward`` and ``Block``):
the block is x = x + DropPath(MSA(LN(x))), then the patch tokens go through the locality FFN, which carries its own
residual, with **no LayerNorm before it** and no drop path on it; convolutions without bias; the SE gate uses a
ReLU bottleneck of (e C) / r channels and a hard sigmoid, with r = C for LocalViT-T/S (4 hidden channels) and r = 4
for LocalViT-T-SE4; init as timm's ViT (truncated-normal linear layers, PyTorch's default for convolutions).

Sizes (the authors' model zoo and ``localvit_*`` functions): LocalViT-T = 192 wide, **4 heads** (DeiT-Ti has 3),
12 blocks, e = 4; LocalViT-S = 384 wide, 8 heads (DeiT-S has 6). There is no LocalViT in timm.

Departures: any input size. The authors' block assumes a square grid and a table for one size; ours pads the input
to whole patches (this package's ViT) and resizes the position table bicubically (DeiT's recipe). ``act="relu6"``
and ``se=False`` give the paper's other rows of Table 2 (the ECA gates of the authors' code are not included).
"""
from __future__ import annotations

from functools import partial

import torch
import torch.nn as nn

from ..attention.se import SqueezeExcite
from ..layers import (ConvNormAct, DropPath, MultiHeadSelfAttention, TokenAttention, check_choice, check_positive_int,
                      tokens_to_grid)
from ..registry import register_attention, register_model
from .vit import VisionTransformer


@register_attention("locality_ffn", layout="nlc")
class LocalityFeedForward(TokenAttention):
    """X + inverted-residual(X) on the token grid: (N, L, C) with hw -> (N, L, C); maps (N, C, H, W) -> same.

    Args: channels, mlp_ratio (e, 4), act ("hard_swish", the paper's choice, or "relu6"), se (True: an SE gate on
    the hidden map), se_reduction (r: the gate's bottleneck is e C / r wide; None: r = C, LocalViT-T/S).
    """

    def __init__(self, channels: int, mlp_ratio: float = 4.0, act: str = "hard_swish", se: bool = True,
                 se_reduction: int | None = None):
        super().__init__(channels)
        hidden = int(channels * mlp_ratio)
        check_positive_int("channels * mlp_ratio", hidden)
        check_choice("act", act, ("hard_swish", "relu6"))
        r = channels if se_reduction is None else check_positive_int("se_reduction", se_reduction)
        if se and hidden // r < 1:
            raise ValueError(f"se_reduction={r} leaves no channel in the SE bottleneck of {hidden} hidden channels")
        layers = [ConvNormAct(channels, hidden, 1, act=act), ConvNormAct(hidden, hidden, 3, groups=hidden, act=act)]
        if se:
            layers.append(SqueezeExcite(hidden, rd_channels=hidden // r, act="relu", gate="hard_sigmoid"))
        layers.append(ConvNormAct(hidden, channels, 1, act=None))
        self.conv = nn.Sequential(*layers)

    def forward_tokens(self, x: torch.Tensor, hw: tuple[int, int] | None) -> torch.Tensor:
        grid = tokens_to_grid(x, hw).permute(0, 3, 1, 2)
        return x + self.conv(grid).flatten(2).transpose(1, 2)


class LocalityBlock(nn.Module):
    """x + DropPath(MSA(LN(x))), then the locality FFN on the patch tokens: (N, 1 + L, D), hw -> same."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True, drop: float = 0.0,
                 drop_path: float = 0.0, **ffn_kwargs):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = MultiHeadSelfAttention(dim, num_heads, qkv_bias, proj_drop=drop)
        self.drop_path = DropPath(drop_path)
        self.conv = LocalityFeedForward(dim, mlp_ratio, **ffn_kwargs)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return torch.cat([x[:, :1], self.conv(x[:, 1:], hw)], dim=1)


class LocalViT(VisionTransformer):
    """(N, in_chans, H, W) -> (N, num_classes) logits; any H, W >= 1.

    Args: those of ``VisionTransformer``, plus act, se, se_reduction of the locality FFN (``LocalityFeedForward``).
    """

    def __init__(self, *args, act: str = "hard_swish", se: bool = True, se_reduction: int | None = None, **kwargs):
        super().__init__(*args, block_layer=partial(LocalityBlock, act=act, se=se, se_reduction=se_reduction),
                         **kwargs)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, 1 + L, D) normalised tokens, class token first."""
        x, hw = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.pos_drop(x + self.position_embedding(hw))
        for block in self.blocks:
            x = block(x, hw)
        return self.norm(x)


register_model("localvit_t", LocalViT, img_size=224, patch_size=16, depth=12, embed_dim=192, num_heads=4)
register_model("localvit_t_se4", LocalViT, img_size=224, patch_size=16, depth=12, embed_dim=192, num_heads=4,
               se_reduction=4)
register_model("localvit_s", LocalViT, img_size=224, patch_size=16, depth=12, embed_dim=384, num_heads=8)
