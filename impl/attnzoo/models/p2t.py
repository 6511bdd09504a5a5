"""P2T: Pyramid Pooling Transformer (Wu et al., IEEE TPAMI 2023, arXiv:2106.12011).

PVT (``models.pvt``) shortens the keys and values of its attention with one strided convolution. P2T builds them from
a **pyramid of pooled maps** instead (pooling-based MHSA, P-MHSA, Sec. 3.2): the token map X (H x W) is average-pooled
to several sizes, each pooled map gets a depthwise 3x3 convolution as a residual (relative position encoding), the
pooled tokens of all levels are concatenated and layer-normalized, and they give the keys and values:

    P_i = AvgPool_{r_i}(X) + DWConv_i(AvgPool_{r_i}(X)),   i = 1..4   (size round(H / r_i) x round(W / r_i))
    P   = LN(Concat(flatten(P_1), ..., flatten(P_4)))
    P-MHSA(X) = softmax(X W^Q (P W^K)^T / sqrt(d)) P W^V  W^O.

The pooling ratios per stage are (12, 16, 20, 24), (6, 8, 10, 12), (3, 4, 5, 6), (1, 2, 3, 4), so at 224 x 224 the keys
are 5^2 + 4^2 + 3^2 + 2^2 = 54 tokens in stages 1-3 (vs 3136 queries in the first) and 7^2 + 4^2 + 2^2 + 2^2 = 73 in
the last. It is registered as the attention
module ``p2t_pooling_attn`` (default ratios (1, 2, 3, 4), the last stage's, for the small maps a plug-in meets).

The rest of the network (the authors' p2t.py, yuhuan-wu/P2T, latest version): overlapping patch embeddings (7 x 7
stride 4, then 3 x 3 stride 2, padding k // 2, LayerNorm; ``models.pvt.PatchEmbed``), pre-norm blocks (LayerNorm eps
1e-6) whose feed-forward network is an inverted residual block (IRB: 1x1 conv, Hardswish, depthwise 3x3, Hardswish,
1x1 conv), no position embeddings, no final norm: the last stage's tokens are averaged and fed to a linear head. In
the authors' code the depthwise convolutions of the pooled maps belong to the stage and are shared by all its blocks;
so they are here. Sizes: Tiny (48, 96, 240, 384) x (2, 2, 6, 3); Small (64, 128, 320, 512) x (2, 2, 9, 3); Base
(64, 128, 320, 512) x (3, 4, 18, 3); Large (64, 128, 320, 640) x (3, 8, 27, 3); heads (1, 2, 5, 8); MLP ratios
(8, 8, 4, 4); biases in Q and KV.

Departures: a pooled size round(H / r) (Python's rounding, as the authors) that would be 0 on a small map is 1 here
(the authors' code fails there), so any input size works; attention in ``F.scaled_dot_product_attention``;
drop_path_rate defaults to 0 (the authors' class default, a training setting, is 0.1).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import check_images, DropPath, check_hw, check_positive_int, check_positive_ints
from ..layers.drop import stage_drop_path_rates
from ..registry import register_attention, register_model
from .pvt import PatchEmbed, ReducedKVAttention, TokenStage, check_pyramid, stage_outputs

_POOL_RATIOS = ((12, 16, 20, 24), (6, 8, 10, 12), (3, 4, 5, 6), (1, 2, 3, 4))


def pooled_sizes(hw: tuple[int, int], pool_ratios) -> list[tuple[int, int]]:
    """The pyramid's map sizes: (round(H / r), round(W / r)) per ratio (Python rounding, as the authors), at least 1."""
    return [(max(1, round(hw[0] / r)), max(1, round(hw[1] / r))) for r in pool_ratios]


def _dw_convs(channels: int, n: int) -> nn.ModuleList:
    return nn.ModuleList([nn.Conv2d(channels, channels, 3, 1, 1, groups=channels) for _ in range(n)])


@register_attention("p2t_pooling_attn", layout="nlc")
class PoolingAttention(ReducedKVAttention):
    """Pooling-based MHSA (P2T Sec. 3.2): (N, L, C) tokens on an (H, W) grid -> (N, L, C); keys and values from the
    layer-normalized concatenation of the map average-pooled by each of ``pool_ratios``, each plus a depthwise 3x3
    convolution of itself.

    Args:
        channels: C. num_heads: heads (1). pool_ratios: r_i ((1, 2, 3, 4): P2T's last stage). qkv_bias: Q/KV biases.
        own_convs: False inside P2T, whose stages own the depthwise convolutions shared by their blocks (then pass
            them to ``forward_tokens(x, hw, d_convs)``).
    """

    def __init__(self, channels: int, num_heads: int = 1, pool_ratios=(1, 2, 3, 4), qkv_bias: bool = True,
                 own_convs: bool = True):
        super().__init__(channels, num_heads, qkv_bias)
        self.pool_ratios = check_positive_ints("pool_ratios", pool_ratios)
        self.norm = nn.LayerNorm(channels)
        self.d_convs = _dw_convs(channels, len(self.pool_ratios)) if own_convs else None

    def kv_tokens(self, x: torch.Tensor, hw, d_convs=None) -> torch.Tensor:
        """(N, L, C) -> the (N, sum_i h_i w_i, C) normalized pyramid tokens keys and values come from."""
        h, w = check_hw(hw, x.shape[1])
        d_convs = self.d_convs if d_convs is None else d_convs
        if d_convs is None or len(d_convs) != len(self.pool_ratios):
            raise ValueError(f"{type(self).__name__} needs one depthwise conv per pooling ratio {self.pool_ratios}")
        n, _, c = x.shape
        grid = x.transpose(1, 2).reshape(n, c, h, w)
        levels = []
        for size, conv in zip(pooled_sizes((h, w), self.pool_ratios), d_convs):
            p = F.adaptive_avg_pool2d(grid, size)
            levels.append((p + conv(p)).flatten(2))
        return self.norm(torch.cat(levels, dim=2).transpose(1, 2))


class IRB(nn.Module):
    """Inverted residual feed-forward network on the token grid: 1x1 conv, Hardswish, depthwise 3x3, Hardswish,
    1x1 conv; (N, L, C) tokens with their grid ``hw``."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.act = nn.Hardswish()
        self.conv = nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden)
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        n, _, c = x.shape
        y = self.fc2(self.act(self.conv(self.act(self.fc1(x.transpose(1, 2).reshape(n, c, *hw))))))
        return y.flatten(2).transpose(1, 2)


class P2TBlock(nn.Module):
    """x + P-MHSA(LN(x)) (with the stage's depthwise convs), then x + IRB(LN(x)); (N, L, C) tokens, grid ``hw``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, pool_ratios, qkv_bias: bool, drop_path: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = PoolingAttention(dim, num_heads, pool_ratios, qkv_bias, own_convs=False)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = IRB(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, hw, d_convs: nn.ModuleList) -> torch.Tensor:
        x = x + self.drop_path(self.attn.forward_tokens(self.norm1(x), hw, d_convs))
        return x + self.drop_path(self.mlp(self.norm2(x), hw))


class P2TStage(TokenStage):
    """Overlapping patch embedding, the stage's depthwise convs (one per pooling ratio), blocks, no norm:
    (N, C_in, H, W) -> (N, D, ceil(H / S), ceil(W / S))."""

    def __init__(self, in_chans: int, dim: int, patch_size: int, stride: int, depth_rates: list[float],
                 num_heads: int, mlp_ratio: float, pool_ratios, qkv_bias: bool):
        super().__init__()
        self.patch_embed = PatchEmbed(in_chans, dim, patch_size, stride, patch_size // 2)
        self.d_convs = _dw_convs(dim, len(pool_ratios))
        self.blocks = nn.ModuleList([P2TBlock(dim, num_heads, mlp_ratio, pool_ratios, qkv_bias, r)
                                     for r in depth_rates])
        self.norm = None

    def block_extras(self) -> tuple:
        return (self.d_convs,)


class PyramidPoolingTransformer(nn.Module):
    """(N, in_chans, H, W) -> (N, num_classes) logits; any H, W >= 1.

    Args: embed_dims, num_heads, mlp_ratios, depths (4 entries each); pool_ratios (4 tuples, P2T's by default);
    qkv_bias; drop_path_rate (linear over all blocks).
    """

    def __init__(self, in_chans: int = 3, num_classes: int = 1000, embed_dims=(48, 96, 240, 384),
                 num_heads=(1, 2, 5, 8), mlp_ratios=(8, 8, 4, 4), depths=(2, 2, 6, 3), pool_ratios=_POOL_RATIOS,
                 qkv_bias: bool = True, drop_path_rate: float = 0.0):
        super().__init__()
        depths, embed_dims, num_heads, _, mlp_ratios = check_pyramid(depths, embed_dims, num_heads, (1,) * 4,
                                                                     mlp_ratios)
        if len(tuple(pool_ratios)) != 4:
            raise ValueError(f"pool_ratios needs 4 entries (one tuple per stage), got {pool_ratios!r}")
        check_positive_int("num_classes", num_classes)
        check_positive_int("in_chans", in_chans)
        rates = stage_drop_path_rates(drop_path_rate, depths)
        self.stages = nn.ModuleList([
            P2TStage(in_chans if i == 0 else embed_dims[i - 1], embed_dims[i], 7 if i == 0 else 3, 4 if i == 0 else 2,
                     rates[i], num_heads[i], mlp_ratios[i], pool_ratios[i], qkv_bias)
            for i in range(4)])
        self.num_features = embed_dims[-1]
        self.head = nn.Linear(embed_dims[-1], num_classes)
        self.apply(_init)

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(N, C, H, W) -> the four stage maps (N, C_i, H_i, W_i), strides 4, 8, 16, 32 (rounded up)."""
        check_images("P2T", x)
        return stage_outputs(self.stages, x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x)[-1].mean(dim=(2, 3)))


def _init(m: nn.Module) -> None:
    """The authors' init: truncated-normal (std 0.02) linear weights with zero biases; convs keep PyTorch's."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


_VARIANTS = {
    "tiny": dict(embed_dims=(48, 96, 240, 384), depths=(2, 2, 6, 3)),
    "small": dict(embed_dims=(64, 128, 320, 512), depths=(2, 2, 9, 3)),
    "base": dict(embed_dims=(64, 128, 320, 512), depths=(3, 4, 18, 3)),
    "large": dict(embed_dims=(64, 128, 320, 640), depths=(3, 8, 27, 3)),
}
for _size, _cfg in _VARIANTS.items():
    register_model(f"p2t_{_size}", PyramidPoolingTransformer, **_cfg)
