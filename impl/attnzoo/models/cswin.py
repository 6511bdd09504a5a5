"""CSWin Transformer (Dong et al., CVPR 2022, arXiv:2107.00652).

Cross-shaped window self-attention (Sec. 3.2, Eq. 1-2): the K heads of a block are split in two halves. The first
half attends inside vertical stripes of width sw (the full height of the map by sw columns), the second inside
horizontal stripes (sw rows by the full width); the two outputs are concatenated along the channels and projected,
so each token sees a cross of stripes through it. Stripes are disjoint and cover the map, so a block costs
O(sw * HW * (H + W)) instead of O((HW)^2):

    head_k = Attention(X^i W_k^Q, X^i W_k^K, X^i W_k^V)   for stripe X^i (vertical for k < K/2, horizontal else)
    CSWin-Attention(X) = Concat(head_1, ..., head_K) W^O.

Locally-enhanced positional encoding (LePE, Sec. 3.3, Eq. 4): a depthwise 3 x 3 convolution of the values, computed
inside each stripe, is added to the attention output, Attention(Q, K, V) = SoftMax(Q K^T / sqrt(d)) V + DWConv(V).

The network (Sec. 3.1, Table 1): a 7 x 7 stride-4 convolution (padding 2) and LayerNorm embed the image; four
stages of pre-norm blocks x = x + CSWin-Attention(LN(x)); x = x + MLP(LN(x)) with stripe widths 1, 2, 7, 7; a 3 x 3
stride-2 convolution and LayerNorm between stages double the width; the last stage (7 x 7 at 224) attends over the
whole map with all heads in one branch; LayerNorm, global average pooling, linear classifier.

Follows the authors' released code (microsoft/CSWin-Transformer, models/cswin.py): the variants
``CSWin_64_12211_tiny_224`` (C=64, depths 1-2-21-1, heads 2-4-8-16), ``CSWin_64_24322_small_224`` (C=64, 2-4-32-2)
and ``CSWin_96_24322_base_224`` (C=96, 2-4-32-2, heads 4-8-16-32), stripe widths (1, 2, 7, 7), MLP ratio 4, Q/K/V
biases (``qkv_bias=True``), the first half of the channels of Q, K and V in the vertical stripes, one LePE
convolution per branch; drop-path rates 0.2 / 0.4 / 0.5 from the README's training commands. As there, the block's
output projection has no dropout (the authors define ``proj_drop`` but never apply it) and the scale is
head_dim^-0.5.

Other input sizes: the classification code takes only the size it is built for. Ours takes any size of at least
3 x 3 pixels, as the authors' segmentation backbone (segmentation/backbone/cswin_transformer.py) does: Q, K and V
(after their projection) are zero-padded evenly on both sides (the extra row or column at the bottom/right) to a
multiple of the stripe width, the padded tokens take part as keys and values (logit 0, value 0) and in LePE's
convolution, and the output is cropped. One departure: a stripe width larger than the map's side shrinks to that
side instead of padding (so a map no wider than sw is a single stripe, as the classification code does when the
resolution equals sw). At 224 x 224 (maps 56, 28, 14, 7) nothing is padded or shrunk, and the logits equal those
of the classification code on the same weights (checked while writing this file).

The mechanism alone is registered as the token attention ``cswin_attn`` ((N, C, H, W) -> same;
``full=True`` gives the last stage's single-branch attention over the whole map).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import (DropPath, Mlp, TokenAttention, check_hw, check_positive_int, check_stages, drop_path_rates,
                      heads_for_width, trunc_normal_init, window_partition, window_reverse)
from ..registry import register_attention, register_model


def stripe_windows(h: int, w: int, split_size: int, branches: int) -> list[tuple[int, int]]:
    """The (height, width) of the windows of each branch on an h x w map: vertical stripes (h, sw) then horizontal
    stripes (sw, w) for two branches, the whole map for one; sw larger than a side shrinks to it."""
    if branches == 1:
        return [(h, w)]
    return [(h, min(split_size, w)), (min(split_size, h), w)]


@register_attention("cswin_attn", layout="nlc")
class CrossShapedWindowAttention(TokenAttention):
    """(N, L, C) tokens on an H x W grid -> same, ``forward(x, hw=(H, W))``; (N, C, H, W) maps -> same.

    Cross-shaped window self-attention with LePE: heads [0, K/2) attend in vertical stripes of ``split_size``
    columns, heads [K/2, K) in horizontal stripes of ``split_size`` rows (``full=True``: all heads over the whole
    map, CSWin's last stage); SoftMax(Q K^T / sqrt(d)) V + DWConv3x3(V) per stripe, then a linear projection.

    Args:
        channels: C. num_heads: K (default C / 32, the head width of CSWin-T/S); even unless ``full``.
        split_size: stripe width sw (CSWin: 1, 2, 7 in stages 1-3). full: one branch over the whole map.
        qkv_bias: biases in Q, K, V (True in the released models). attn_drop: dropout on the attention weights.
    """

    def __init__(self, channels: int, num_heads: int | None = None, split_size: int = 7, full: bool = False,
                 qkv_bias: bool = True, attn_drop: float = 0.0):
        super().__init__(channels)
        num_heads = heads_for_width(channels, num_heads, 32, "CSWin")
        self.split_size = check_positive_int("split_size", split_size)
        self.branches = 1 if full else 2
        if num_heads % self.branches:
            raise ValueError(f"num_heads={num_heads} must be even: half the heads attend in vertical stripes, "
                             f"half in horizontal ones (or pass full=True)")
        self.num_heads = num_heads
        self.full = full
        self.attn_drop = attn_drop
        width = channels // self.branches
        self.qkv = nn.Linear(channels, 3 * channels, bias=qkv_bias)
        # LePE: one depthwise 3 x 3 convolution of the values per branch (the authors' ``get_v``).
        self.lepe = nn.ModuleList(nn.Conv2d(width, width, 3, padding=1, groups=width) for _ in range(self.branches))
        self.proj = nn.Linear(channels, channels)
        self.apply(trunc_normal_init)

    def attend(self, qkv: torch.Tensor, window: tuple[int, int], lepe: nn.Module) -> torch.Tensor:
        """(N, H, W, 3, c) projected Q, K, V of one branch -> (N, H, W, c): attention inside every wh x ww window
        (all windows at once), plus LePE; padded evenly to whole windows with zeros (the segmentation code)."""
        n, h, w, _, c = qkv.shape
        wh, ww = window
        heads = self.num_heads // self.branches
        ph, pw = (-h) % wh, (-w) % ww
        qkv = qkv.reshape(n, h, w, 3 * c)
        if ph or pw:
            qkv = F.pad(qkv, (0, 0, pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
        t = wh * ww
        windows = window_partition(qkv, window).reshape(-1, t, 3, c)  # (N * nW, T, 3, c)
        q, k, v = windows.reshape(-1, t, 3, heads, c // heads).permute(2, 0, 3, 1, 4)  # (N * nW, heads, T, d)
        pos = lepe(windows[:, :, 2].transpose(1, 2).reshape(-1, c, wh, ww)).flatten(2).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        out = out.transpose(1, 2).reshape(-1, t, c) + pos
        out = window_reverse(out, window, h + ph, w + pw)
        return out[:, ph // 2:ph // 2 + h, pw // 2:pw // 2 + w]

    def forward_tokens(self, x: torch.Tensor, hw: tuple[int, int] | None) -> torch.Tensor:
        h, w = check_hw(hw, x.shape[1])
        n, _, c = x.shape
        qkv = self.qkv(x).reshape(n, h, w, 3, c)
        width = c // self.branches
        windows = stripe_windows(h, w, self.split_size, self.branches)
        out = torch.cat([self.attend(qkv[..., i * width:(i + 1) * width], win, lepe)
                         for i, (win, lepe) in enumerate(zip(windows, self.lepe))], dim=-1)
        return self.proj(out.reshape(n, h * w, c))

    def extra_repr(self) -> str:
        return f"channels={self.channels}, num_heads={self.num_heads}, split_size={self.split_size}, full={self.full}"


class CSWinBlock(nn.Module):
    """(N, H, W, C) -> same: x = x + CSWin-Attention(LN(x)); x = x + MLP(LN(x))."""

    def __init__(self, dim: int, num_heads: int, split_size: int, full: bool, mlp_ratio: float, qkv_bias: bool,
                 drop: float, attn_drop: float, drop_path: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = CrossShapedWindowAttention(dim, num_heads, split_size, full, qkv_bias, attn_drop)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, h, w, c = x.shape
        x = x + self.drop_path(self.attn(self.norm1(x).reshape(n, h * w, c), hw=(h, w)).reshape(n, h, w, c))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class ConvEmbed(nn.Module):
    """(N, C_in, H, W) -> (N, H', W', C_out) channels-last: a strided convolution, then LayerNorm. The stem is 7 x 7,
    stride 4, padding 2; the merge blocks between stages 3 x 3, stride 2, padding 1 (ceil(H / 2))."""

    def __init__(self, in_dim: int, out_dim: int, kernel_size: int, stride: int, padding: int):
        super().__init__()
        self.kernel_size, self.padding = kernel_size, padding
        self.conv = nn.Conv2d(in_dim, out_dim, kernel_size, stride, padding)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        need = self.kernel_size - 2 * self.padding
        if x.shape[-2] < need or x.shape[-1] < need:
            raise ValueError(f"CSWin needs inputs of at least {need}x{need} pixels, got {x.shape[-2]}x{x.shape[-1]}")
        return self.norm(self.conv(x).permute(0, 2, 3, 1))


class CSWinTransformer(nn.Module):
    """(N, in_chans, H, W) -> (N, num_classes) logits; any H, W >= 3.

    Args:
        embed_dim: C of stage 1 (doubled at every stage). depths, num_heads, split_sizes: per stage (four).
        mlp_ratio: MLP width / C. qkv_bias: biases in Q, K, V. drop_rate: dropout in the MLPs.
        attn_drop_rate: attention dropout. drop_path_rate: stochastic depth, rising linearly over all blocks.
    """

    def __init__(self, in_chans: int = 3, num_classes: int = 1000, embed_dim: int = 64,
                 depths: tuple[int, ...] = (1, 2, 21, 1), num_heads: tuple[int, ...] = (2, 4, 8, 16),
                 split_sizes: tuple[int, ...] = (1, 2, 7, 7), mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 drop_rate: float = 0.0, attn_drop_rate: float = 0.0, drop_path_rate: float = 0.0):
        super().__init__()
        for name, value in dict(in_chans=in_chans, num_classes=num_classes, embed_dim=embed_dim).items():
            check_positive_int(name, value)
        dims = tuple(embed_dim * 2 ** i for i in range(4))
        depths, _ = check_stages(depths, dims)
        num_heads, _ = check_stages(num_heads, dims)
        split_sizes, _ = check_stages(split_sizes, dims)
        rates = drop_path_rates(drop_path_rate, sum(depths))
        self.stages = nn.ModuleList()
        start = 0
        for i in range(4):
            embed = ConvEmbed(in_chans, dims[0], 7, 4, 2) if i == 0 else ConvEmbed(dims[i - 1], dims[i], 3, 2, 1)
            blocks = [CSWinBlock(dims[i], num_heads[i], split_sizes[i], i == 3, mlp_ratio, qkv_bias, drop_rate,
                                 attn_drop_rate, rates[start + j]) for j in range(depths[i])]
            self.stages.append(nn.Sequential(embed, *blocks))
            start += depths[i]
        self.num_features = dims[-1]
        self.norm = nn.LayerNorm(self.num_features)
        self.head = nn.Linear(self.num_features, num_classes)
        self.apply(trunc_normal_init)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, H', W', 8C) normalized channels-last map of the last stage (stride 32)."""
        for i, stage in enumerate(self.stages):
            x = stage(x if i == 0 else x.permute(0, 3, 1, 2))
        return self.norm(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x).mean(dim=(1, 2)))


_VARIANTS = {  # the authors' CSWin_64_12211_tiny_224, CSWin_64_24322_small_224, CSWin_96_24322_base_224
    "cswin_tiny_224": dict(embed_dim=64, depths=(1, 2, 21, 1), num_heads=(2, 4, 8, 16), drop_path_rate=0.2),
    "cswin_small_224": dict(embed_dim=64, depths=(2, 4, 32, 2), num_heads=(2, 4, 8, 16), drop_path_rate=0.4),
    "cswin_base_224": dict(embed_dim=96, depths=(2, 4, 32, 2), num_heads=(4, 8, 16, 32), drop_path_rate=0.5),
}
for _name, _cfg in _VARIANTS.items():
    register_model(_name, CSWinTransformer, split_sizes=(1, 2, 7, 7), **_cfg)
