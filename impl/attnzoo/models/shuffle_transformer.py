"""Shuffle Transformer (Huang et al., arXiv:2106.03650, 2021).

Window attention (as in Swin) computes self-attention inside non-overlapping M x M windows; Shuffle Transformer links
the windows by a **spatial shuffle** instead of a shifted partition (Sec. 3.1-3.2). Every second block groups the
tokens of an H x W map (H = M * Hg) not by contiguous blocks but by stride: token (y, x) = (i * Hg + a, j * Wg + b)
sits at position (i, j) of window (a, b), so each window gathers M x M tokens spread evenly over the whole map (the
ShuffleNet channel shuffle applied to space), and the output is put back by the inverse permutation. Inside a window,
Attention(Q, K, V) = SoftMax(Q K^T / sqrt(d) + B) V with a learned relative position bias B over the (i, j) offsets.
Because the shuffle reaches far but thins out the neighbourhood, a **neighbour-window connection** follows each
attention: a depthwise M x M convolution with a residual, x = x + DWConv(BN(x)) (Sec. 3.3).

Block (Eq. 4-6, channels-first with BatchNorm): x = x + (Shuffle-)WMSA(BN(x)); x = x + NWC(BN(x));
x = x + MLP(BN(x)), with 1 x 1 convolutions and ReLU6 in the MLP. Stages alternate regular and shuffled blocks.
The stem is two 3 x 3 stride-2 convolutions with BN + ReLU6 and a 1 x 1 convolution; patch merging is BN and a 2 x 2
stride-2 convolution; widths are 32 channels per head; global average pooling and a linear classifier (no final norm).

Follows the authors' released code (mulinmeng/Shuffle-Transformer, models/shuffle_transformer.py and configs/):
Shuffle-T (C=96, depths 2-2-6-2, heads 3-6-12-24), Shuffle-S (C=96, 2-2-18-2), Shuffle-B (C=128, 2-2-18-2,
heads 4-8-16-32), window 7, MLP ratio 4, relative position bias on, Q/K/V without bias, the neighbour-window
convolution with a bias (the configs' ``QKV_BIAS: True`` reaches only that layer), truncated-normal (std 0.02) init
of every linear and convolution weight. As there, stochastic depth is constant within a stage, at
linspace(0, rate, 4)[stage] (rates 0.1 / 0.3 / 0.5 from the configs), and is not applied to the neighbour-window
branch. The 1 x 1 convolutions of the attention and the MLP are linear layers on channels-last tokens (same weights).

Other input sizes: the released code needs maps divisible by the window at every stage (224 x 224). Ours takes any
image of at least 29 x 29 pixels: a map not divisible by M is zero-padded at the bottom and right after BN (as Swin's
detection code pads; the padded tokens are keys with logit 0 and value 0 and are cropped afterwards), and an axis
shorter than M is one window along that axis (reading its offsets from the M x M bias table), as Swin's
classification code does. The strided patch merging floors odd maps as the authors' convolution does.

The attention alone is registered as the token attention ``shuffle_window_attn`` ((N, C, H, W) -> same;
``shuffle=False`` is the regular window attention of the other blocks).
"""
from __future__ import annotations

import functools

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import (DropPath, Mlp, TokenAttention, check_hw, check_positive_int, check_stages, heads_for_width,
                      trunc_normal_init, window_partition, window_reverse)
from ..registry import register_attention, register_model
from .swin import relative_position_index


@register_attention("shuffle_window_attn", layout="nlc")
class ShuffleWindowAttention(TokenAttention):
    """(N, L, C) tokens on an H x W grid -> same, ``forward(x, hw=(H, W))``; (N, C, H, W) maps -> same.

    Multi-head self-attention inside M x M windows with a relative position bias, SoftMax(Q K^T / sqrt(d) + B) V;
    with ``shuffle=True`` window (a, b) gathers the tokens (i * H / M + a, j * W / M + b), i, j < M (spatial
    shuffle), else the contiguous M x M blocks. Maps that are not multiples of M are zero-padded (bottom, right);
    an axis shorter than M is one window along it.

    Args:
        channels: C. num_heads: heads (default C / 32, the paper's head width). window_size: M.
        shuffle: spatially shuffled windows. rel_pos: learned relative position bias (on in the paper's models).
        qkv_bias: biases in Q, K, V (off in the released models). attn_drop, proj_drop: dropout on the attention
        weights and the output.
    """

    def __init__(self, channels: int, num_heads: int | None = None, window_size: int = 7, shuffle: bool = True,
                 rel_pos: bool = True, qkv_bias: bool = False, attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__(channels)
        self.num_heads = heads_for_width(channels, num_heads, 32, "Shuffle Transformer")
        self.window_size = check_positive_int("window_size", window_size)
        self.shuffle = shuffle
        self.attn_drop = attn_drop
        self.qkv = nn.Linear(channels, 3 * channels, bias=qkv_bias)
        self.proj = nn.Linear(channels, channels)
        self.proj_drop = nn.Dropout(proj_drop)
        self.relative_position_bias_table = None
        if rel_pos:
            self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, self.num_heads))
            nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward_tokens(self, x: torch.Tensor, hw: tuple[int, int] | None) -> torch.Tensor:
        h, w = check_hw(hw, x.shape[1])
        n, _, c = x.shape
        m = self.window_size
        window = (min(m, h), min(m, w))
        ph, pw = (-h) % window[0], (-w) % window[1]
        x = F.pad(x.reshape(n, h, w, c), (0, 0, 0, pw, 0, ph))
        windows = window_partition(self.qkv(x), window, strided=self.shuffle)  # (N * nW, T, 3C)
        t = window[0] * window[1]
        q, k, v = windows.reshape(-1, t, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        bias = None
        if self.relative_position_bias_table is not None:
            index = relative_position_index(window, (m, m), device=x.device).reshape(-1)
            # (1, heads, T, T): a 4-D mask keeps CPU's fused kernel (a 3-D one falls back to the math path)
            bias = self.relative_position_bias_table[index].reshape(t, t, -1).permute(2, 0, 1)[None].to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias,
                                             dropout_p=self.attn_drop if self.training else 0.0)
        out = window_reverse(out.transpose(1, 2).reshape(-1, t, c), window, h + ph, w + pw, strided=self.shuffle)
        out = out[:, :h, :w]
        return self.proj_drop(self.proj(out.reshape(n, h * w, c)))

    def extra_repr(self) -> str:
        return f"channels={self.channels}, num_heads={self.num_heads}, window_size={self.window_size}, " \
               f"shuffle={self.shuffle}"


class ShuffleBlock(nn.Module):
    """(N, C, H, W) -> same: x = x + WMSA(BN(x)); x = x + DWConv_MxM(BN(x)); x = x + MLP(BN(x))."""

    def __init__(self, dim: int, num_heads: int, window_size: int, shuffle: bool, mlp_ratio: float, drop: float,
                 attn_drop: float, drop_path: float):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(dim)
        self.attn = ShuffleWindowAttention(dim, num_heads, window_size, shuffle, attn_drop=attn_drop, proj_drop=drop)
        self.norm2 = nn.BatchNorm2d(dim)
        self.local = nn.Conv2d(dim, dim, window_size, padding=window_size // 2, groups=dim)
        self.norm3 = nn.BatchNorm2d(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act="relu6", drop=drop)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        x = x + self.local(self.norm2(x))
        return x + self.drop_path(self.mlp(self.norm3(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2))


class ShuffleStage(nn.Module):
    """Patch merging (BN, 2 x 2 stride-2 convolution) where the width changes, then ``depth`` blocks alternating
    regular and shuffled windows."""

    def __init__(self, dim: int, out_dim: int, depth: int, num_heads: int, window_size: int, mlp_ratio: float,
                 drop: float, attn_drop: float, drop_path: float):
        super().__init__()
        self.downsample = nn.Identity()
        if dim != out_dim:
            self.downsample = nn.Sequential(nn.BatchNorm2d(dim), nn.Conv2d(dim, out_dim, 2, 2, bias=False))
        self.blocks = nn.Sequential(*[ShuffleBlock(out_dim, num_heads, window_size, i % 2 == 1, mlp_ratio, drop,
                                                   attn_drop, drop_path) for i in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


class ShuffleTransformer(nn.Module):
    """(N, in_chans, H, W) -> (N, num_classes) logits; any H, W >= 29.

    Args:
        embed_dim: width of the stem. depths, num_heads: per stage (four; each depth even in the paper's models);
        stage widths are 32 * num_heads. token_dim: width of the stem's first convolution (32). window_size: M.
        mlp_ratio: MLP width / C. drop_rate: dropout after the attention and in the MLP. attn_drop_rate: attention
        dropout. drop_path_rate: stochastic depth, constant within a stage, rising linearly over the four stages.
    """

    min_size = 29  # ceil(H / 4) >= 8 leaves one token after the three floored patch mergings

    def __init__(self, in_chans: int = 3, num_classes: int = 1000, embed_dim: int = 96,
                 depths: tuple[int, ...] = (2, 2, 6, 2), num_heads: tuple[int, ...] = (3, 6, 12, 24),
                 token_dim: int = 32, window_size: int = 7, mlp_ratio: float = 4.0, drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0, drop_path_rate: float = 0.0):
        super().__init__()
        for name, value in dict(in_chans=in_chans, num_classes=num_classes, embed_dim=embed_dim, token_dim=token_dim,
                                window_size=window_size).items():
            check_positive_int(name, value)
        depths, num_heads = check_stages(depths, num_heads)
        dims = [32 * h for h in num_heads]
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, token_dim, 3, 2, 1), nn.BatchNorm2d(token_dim), nn.ReLU6(inplace=True),
            nn.Conv2d(token_dim, embed_dim, 3, 2, 1), nn.BatchNorm2d(embed_dim), nn.ReLU6(inplace=True),
            nn.Conv2d(embed_dim, embed_dim, 1))
        rates = [drop_path_rate * i / 3 for i in range(4)]
        self.stages = nn.Sequential(*[
            ShuffleStage(embed_dim if i == 0 else dims[i - 1], dims[i], depths[i], num_heads[i], window_size,
                         mlp_ratio, drop_rate, attn_drop_rate, rates[i]) for i in range(4)])
        self.num_features = dims[-1]
        self.head = nn.Linear(self.num_features, num_classes)
        self.apply(functools.partial(trunc_normal_init, types=(nn.Linear, nn.Conv2d)))  # every weight, as there

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, 32 * heads[-1], H', W') map of the last stage (stride 32, floored)."""
        if x.shape[-2] < self.min_size or x.shape[-1] < self.min_size:
            raise ValueError(f"Shuffle Transformer needs images of at least {self.min_size}x{self.min_size} pixels "
                             f"(one token after the last patch merging), got {x.shape[-2]}x{x.shape[-1]}")
        return self.stages(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x).mean(dim=(2, 3)))


_VARIANTS = {  # configs/shuffle_vit_{tiny,small,base}_patch4_window7_224.yaml
    "shuffle_tiny_patch4_window7_224": dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24),
                                            drop_path_rate=0.1),
    "shuffle_small_patch4_window7_224": dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24),
                                             drop_path_rate=0.3),
    "shuffle_base_patch4_window7_224": dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32),
                                            drop_path_rate=0.5),
}
for _name, _cfg in _VARIANTS.items():
    register_model(_name, ShuffleTransformer, window_size=7, **_cfg)
