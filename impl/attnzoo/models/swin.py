"""Swin Transformer (Liu et al., ICCV 2021, arXiv:2103.14030).

A hierarchical transformer: 4 x 4 patches are embedded (C channels), then four stages at strides 4, 8, 16, 32
each stack blocks x = x + (S)W-MSA(LN(x)); x = x + MLP(LN(x)). Self-attention is computed inside
non-overlapping M x M windows (M = 7), with a learned relative position bias B indexed by the offset between
query and key, Attention(Q, K, V) = SoftMax(Q K^T / sqrt(d) + B) V (Eq. 4), so its cost grows linearly with the
image area. Every second block shifts the window partition by floor(M / 2) tokens to connect neighbouring
windows; as the authors do, the shift is a cyclic roll of the map (``torch.roll``) and an attention mask stops a
token from attending to tokens that the roll brought over from the opposite border (Sec. 3.2, Fig. 4). Between
stages, patch merging concatenates each 2 x 2 group of tokens (4C) and maps it linearly to 2C.

Variants (Table 1 / Sec. 3.3): Swin-T (C=96, depths 2-2-6-2), Swin-S (C=96, 2-2-18-2), Swin-B (C=128, 2-2-18-2),
heads of width 32, window 7, at 224 x 224.

Follows the authors' released classification code (microsoft/Swin-Transformer, models/swin_transformer.py):
the mask adds -100 (not -inf) to blocked pairs (line 241), and when a stage's map is no larger than the window
the window shrinks to the map and the block does not shift (lines 206-209; at 224 x 224 this holds for the
7 x 7 last stage). We apply that rule per axis, as timm does, which is the same for square maps. The relative
position bias table keeps its (2M - 1)^2 entries; a shrunk window reads the entries of its own offsets.

Any input size works, padded as the authors' detection code does (SwinTransformer/Swin-Transformer-Object-
Detection, mmdet/models/backbones/swin_transformer.py): the image is zero-padded on the right and bottom to a
multiple of the patch size (lines 431-436), odd maps are zero-padded before patch merging (lines 283-286), and
in every block the normalized map is zero-padded to a multiple of the window *before* the cyclic shift, the mask
being built for the padded map (lines 214-223, 370-389); padded tokens take part in attention as keys, as
there, and are cropped afterwards. (timm pads after the shift instead; both agree when no padding is needed.)

Attention runs in ``F.scaled_dot_product_attention`` with the bias plus mask as ``attn_mask``.
The window attention alone is registered as ``swin_window_attn``: (N, C, H, W) -> same.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import (DropPath, Mlp, TokenAttention, cached_geometry, check_hw, check_positive_int, drop_path_rates,
                      heads_for_width, pad_to_multiple, resolve_device, trunc_normal_init)
from ..layers.window import window_partition, window_reverse
from ..registry import register_attention, register_model
from ..timm import register_timm_rules

MASK_VALUE = -100.0  # what the authors add to the logits of blocked pairs (models/swin_transformer.py line 241)


def relative_position_index(window: tuple[int, int], table_window: tuple[int, int] | None = None,
                            device=None) -> torch.Tensor:
    """(wh*ww, wh*ww) indices into a relative position bias table laid out for ``table_window`` (Th, Tw).

    Query i and key j (raster order inside a wh x ww window) have the offset (dy, dx) = pos(i) - pos(j); its entry
    is (dy + Th - 1) * (2 Tw - 1) + (dx + Tw - 1), the authors' layout of the (2 Th - 1)(2 Tw - 1) table. Cached
    per window (``cached_geometry``).
    """
    window = tuple(window)
    table_window = tuple(table_window or window)
    if window[0] > table_window[0] or window[1] > table_window[1]:
        raise ValueError(f"window {window} is larger than the bias table's window {table_window}")
    device = resolve_device(device)
    return cached_geometry(("relative_position_index", window, table_window, device),
                           lambda: _relative_position_index(window, table_window, device))


def key_offset_index(window: tuple[int, int], device=None) -> torch.Tensor:
    """(wh*ww, wh*ww) index of the key's offset from the query, (y_j - y_i + wh - 1) * (2 ww - 1) + x_j - x_i + ww - 1
    (MaxViT's and MOAT's layout): ``relative_position_index`` read from the other end of the table. Cached."""
    window, device = tuple(window), resolve_device(device)
    size = (2 * window[0] - 1) * (2 * window[1] - 1)
    return cached_geometry(("key_offset_index", window, device),
                           lambda: size - 1 - _relative_position_index(window, window, device))


def _relative_position_index(window, table_window, device):
    (wh, ww), (th, tw) = window, table_window
    ys = torch.arange(wh, device=device).repeat_interleave(ww)
    xs = torch.arange(ww, device=device).repeat(wh)
    dy = ys[:, None] - ys[None, :]
    dx = xs[:, None] - xs[None, :]
    return (dy + th - 1) * (2 * tw - 1) + (dx + tw - 1)


def shifted_window_mask(hp: int, wp: int, window: tuple[int, int], shift: tuple[int, int],
                        device=None, value: float = MASK_VALUE) -> torch.Tensor:
    """(nW, wh*ww, wh*ww) additive mask of the shifted partition of an hp x wp map (multiples of the window).

    After rolling the map by -shift, the last window row (column) mixes tokens from up to three bands of the
    original map: [0, hp - wh), [hp - wh, hp - shift) and the wrapped [hp - shift, hp). Tokens of different
    bands (in either axis) must not attend to each other: their pair gets ``value``, every other pair 0. Cached per
    map size (``cached_geometry``).
    """
    window, shift, device = tuple(window), tuple(shift), resolve_device(device)
    return cached_geometry(("shifted_window_mask", hp, wp, window, shift, device, value),
                           lambda: _shifted_window_mask(hp, wp, window, shift, device, value))


def _shifted_window_mask(hp, wp, window, shift, device, value):
    (wh, ww), (sh, sw) = window, shift
    ys, xs = torch.arange(hp, device=device), torch.arange(wp, device=device)
    band_y = (ys >= hp - wh).long() + (ys >= hp - sh).long() if sh else torch.zeros_like(ys)
    band_x = (xs >= wp - ww).long() + (xs >= wp - sw).long() if sw else torch.zeros_like(xs)
    region = (band_y[:, None] * 3 + band_x[None, :]).reshape(1, hp, wp, 1)
    region = window_partition(region, window).squeeze(-1)  # (nW, wh*ww)
    blocked = region[:, :, None] != region[:, None, :]
    return torch.zeros(blocked.shape, device=device).masked_fill(blocked, value)


@register_attention("swin_window_attn", layout="nlc")
class WindowAttention(TokenAttention):
    """(N, L, C) tokens on an H x W grid -> same, ``forward(x, hw=(H, W))``; (N, C, H, W) maps -> same.

    W-MSA (``shift_size=0``) or SW-MSA (``shift_size=window_size // 2`` in Swin): multi-head self-attention inside
    M x M windows, SoftMax(Q K^T / sqrt(d) + B) V, B from the learned (2M - 1)^2 x heads relative position bias
    table. Maps that are not multiples of M are zero-padded (right, bottom) before the shift and cropped after;
    an axis no longer than M is one window along that axis and is not shifted (see the module docstring).

    Args:
        channels: C. num_heads: heads (default C / 32, Swin's head width). window_size: M.
        shift_size: the cyclic shift, 0 <= shift_size < M. qkv_bias: biases in Q, K, V.
        attn_drop, proj_drop: dropout on the attention weights and on the output.
    """

    def __init__(self, channels: int, num_heads: int | None = None, window_size: int = 7, shift_size: int = 0,
                 qkv_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__(channels)
        num_heads = heads_for_width(channels, num_heads, 32, "Swin")
        self.window_size = check_positive_int("window_size", window_size)
        if isinstance(shift_size, bool) or not isinstance(shift_size, int) or not 0 <= shift_size < window_size:
            raise ValueError(f"shift_size must be an integer in [0, window_size={window_size}), got {shift_size!r}")
        self.shift_size = shift_size
        self.num_heads = num_heads
        self.attn_drop = attn_drop
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        self.qkv = nn.Linear(channels, channels * 3, bias=qkv_bias)
        self.proj = nn.Linear(channels, channels)
        self.proj_drop = nn.Dropout(proj_drop)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.apply(trunc_normal_init)

    def window_and_shift(self, h: int, w: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """The window and shift used on an h x w map: an axis no longer than M is one unshifted window."""
        m, s = self.window_size, self.shift_size
        return (min(h, m), min(w, m)), (0 if h <= m else s, 0 if w <= m else s)

    def relative_position_bias(self, window: tuple[int, int]) -> torch.Tensor:
        """(heads, wh*ww, wh*ww) bias B for a (possibly shrunk) window."""
        m = self.window_size
        index = relative_position_index(window, (m, m), device=self.relative_position_bias_table.device)
        n = index.shape[0]
        return self.relative_position_bias_table[index.reshape(-1)].reshape(n, n, -1).permute(2, 0, 1)

    def forward_tokens(self, x: torch.Tensor, hw: tuple[int, int] | None) -> torch.Tensor:
        h, w = check_hw(hw, x.shape[1])
        n, _, c = x.shape
        (wh, ww), (sh, sw) = self.window_and_shift(h, w)
        x = x.reshape(n, h, w, c)
        pad_b, pad_r = (-h) % wh, (-w) % ww
        if pad_b or pad_r:  # the detection code's padding, before the shift
            x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        hp, wp = h + pad_b, w + pad_r
        if sh or sw:
            x = torch.roll(x, shifts=(-sh, -sw), dims=(1, 2))
        windows = window_partition(x, (wh, ww))  # (n * nW, T, C), T = wh * ww
        t = wh * ww
        bias = self.relative_position_bias((wh, ww))  # (heads, T, T)
        if sh or sw:
            mask = shifted_window_mask(hp, wp, (wh, ww), (sh, sw), device=x.device)  # (nW, T, T)
            attn_mask = (bias[None] + mask[:, None]).expand(n, -1, -1, -1, -1).reshape(-1, self.num_heads, t, t)
        else:
            attn_mask = bias[None]
        q, k, v = self.qkv(windows).reshape(-1, t, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask.to(q.dtype),
                                             dropout_p=self.attn_drop if self.training else 0.0)
        out = self.proj_drop(self.proj(out.transpose(1, 2).reshape(-1, t, c)))
        x = window_reverse(out, (wh, ww), hp, wp)
        if sh or sw:
            x = torch.roll(x, shifts=(sh, sw), dims=(1, 2))
        return x[:, :h, :w].reshape(n, h * w, c)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, num_heads={self.num_heads}, window_size={self.window_size}, " \
               f"shift_size={self.shift_size}"


class PatchEmbed(nn.Module):
    """(N, C, H, W) -> (N, ceil(H/P), ceil(W/P), D) channels-last: zero-pad right/bottom, P x P conv, LayerNorm."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, patch_size)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(pad_to_multiple(x, self.patch_size)).permute(0, 2, 3, 1))


class PatchMerging(nn.Module):
    """(B, H, W, C) -> (B, ceil(H/2), ceil(W/2), out_dim): concatenate each 2 x 2 group (4C), LayerNorm, linear.

    The concatenation order is the authors': (0, 0), (1, 0), (0, 1), (1, 1) as (row, column) offsets. Odd maps
    are zero-padded on the right/bottom first (detection code).
    """

    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, out_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        if h % 2 or w % 2:
            x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x))


class SwinTransformerBlock(nn.Module):
    """(B, H, W, C) -> same: x = x + (S)W-MSA(LN(x)); x = x + MLP(LN(x))."""

    def __init__(self, dim: int, num_heads: int, window_size: int = 7, shift_size: int = 0, mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, num_heads, window_size, shift_size, qkv_bias, attn_drop, drop)
        self.drop_path1 = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)
        self.drop_path2 = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        y = self.attn(self.norm1(x).reshape(b, h * w, c), hw=(h, w)).reshape(b, h, w, c)
        x = x + self.drop_path1(y)
        return x + self.drop_path2(self.mlp(self.norm2(x)))


class SwinTransformerStage(nn.Module):
    """Patch merging (stages 2-4) then ``depth`` blocks, alternating W-MSA and SW-MSA (shift M // 2)."""

    def __init__(self, dim: int, out_dim: int, depth: int, num_heads: int, window_size: int, downsample: bool,
                 mlp_ratio: float, qkv_bias: bool, drop: float, attn_drop: float, drop_path: list[float]):
        super().__init__()
        self.downsample = PatchMerging(dim, out_dim) if downsample else nn.Identity()
        self.blocks = nn.Sequential(*[
            SwinTransformerBlock(out_dim, num_heads, window_size, 0 if i % 2 == 0 else window_size // 2, mlp_ratio,
                                 qkv_bias, drop, attn_drop, drop_path[i]) for i in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


class SwinTransformer(nn.Module):
    """(N, in_chans, H, W) -> (N, num_classes) logits; any H, W >= 1.

    Args:
        patch_size: P (4). embed_dim: C of stage 1 (doubled at every stage). depths, num_heads: per stage.
        window_size: M. mlp_ratio: MLP width / C. qkv_bias: biases in Q, K, V. drop_rate: dropout in the blocks
        and before the head. attn_drop_rate: attention dropout. drop_path_rate: stochastic depth, rising linearly
        over all blocks (the authors' configs train Swin-T/S/B with 0.2/0.3/0.5; registered as such).
    """

    def __init__(self, patch_size: int = 4, in_chans: int = 3, num_classes: int = 1000, embed_dim: int = 96,
                 depths: tuple[int, ...] = (2, 2, 6, 2), num_heads: tuple[int, ...] = (3, 6, 12, 24),
                 window_size: int = 7, mlp_ratio: float = 4.0, qkv_bias: bool = True, drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0, drop_path_rate: float = 0.0):
        super().__init__()
        for name, value in dict(patch_size=patch_size, in_chans=in_chans, num_classes=num_classes,
                                embed_dim=embed_dim, window_size=window_size).items():
            check_positive_int(name, value)
        depths, num_heads = tuple(depths), tuple(num_heads)
        if not depths or len(depths) != len(num_heads):
            raise ValueError(f"depths {depths} and num_heads {num_heads} must be non-empty and of the same length")
        for d in depths:
            check_positive_int("depths[i]", d)
        dims = [embed_dim * 2 ** i for i in range(len(depths))]
        rates = drop_path_rates(drop_path_rate, sum(depths))
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        stages, start = [], 0
        for i, (depth, heads) in enumerate(zip(depths, num_heads)):
            stages.append(SwinTransformerStage(dims[max(i - 1, 0)], dims[i], depth, heads, window_size, i > 0,
                                               mlp_ratio, qkv_bias, drop_rate, attn_drop_rate,
                                               rates[start:start + depth]))
            start += depth
        self.layers = nn.Sequential(*stages)
        self.num_features = dims[-1]
        self.norm = nn.LayerNorm(self.num_features)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(self.num_features, num_classes)
        self.apply(trunc_normal_init)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, H/32, W/32, 8C) normalized channels-last map."""
        return self.norm(self.layers(self.patch_embed(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.head_drop(self.forward_features(x).mean(dim=(1, 2))))


# timm's SwinTransformer (timm/models/swin_transformer.py) uses the same names (patch merging at the start of
# stages 2-4, as here) except its classifier, ClassifierHead's ``fc``.
register_timm_rules(SwinTransformer, renames=((r"^head\.fc\.", "head."),))

_VARIANTS = {
    "swin_tiny_patch4_window7_224": dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24),
                                         drop_path_rate=0.2),
    "swin_small_patch4_window7_224": dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24),
                                          drop_path_rate=0.3),
    "swin_base_patch4_window7_224": dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32),
                                         drop_path_rate=0.5),
}
for _name, _cfg in _VARIANTS.items():
    register_model(_name, SwinTransformer, timm=_name, patch_size=4, window_size=7, **_cfg)
