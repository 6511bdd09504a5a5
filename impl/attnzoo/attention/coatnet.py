"""CoAtNet's relative-attention transformer block (Dai, Liu, Le & Tan, "CoAtNet: Marrying Convolution and
Attention for All Data Sizes", NeurIPS 2021, arXiv:2106.04803).

A depthwise convolution weights a neighbour only by its offset, y_i = sum_j w_{i-j} x_j (translation-invariant,
static); self-attention weights every token by content, softmax_j(x_i^T x_j). CoAtNet unites the two by adding
a learnable scalar per relative offset (and per head) to the attention logits *before* the softmax:

    y_i = sum_j  softmax_j( q_i^T k_j / sqrt(d) + w_{i-j} )  v_j ,

with i - j the 2D offset (dh, dw), so w is a table of (2H - 1) x (2W - 1) entries per head. The table enters
``scaled_dot_product_attention`` as an additive float ``attn_mask`` (pre-softmax), so the fused kernels are used.

The block is pre-norm: x <- x + Attention(LN(x)); x <- x + FFN(LN(x)) (FFN: 4x expansion, GELU). The first
block of a stage downsamples, separately in both branches (Appendix A.1):

    x <- Proj(Pool(x)) + Attention(Pool(LN(x))),

Pool being a pooling of window 2 and stride 2 with "same" padding (ceil(H/2) x ceil(W/2) outputs), Proj a 1x1
projection to the new width. We use max pooling by default. Which pooling the paper's models used we could not
verify: no official CoAtNet code has been released, and the closest official code, the same group's MaxViT
(google-research/maxvit, maxvit/models/maxvit.py line 326: ``'pool_type': 'avg'`` in its TransformerBlock), as
well as timm's paper-style ``coatnet_0`` ... configurations, downsample with average pooling; ``pool="avg"``
gives that (TF "same" average pooling: a window cut by the border averages its valid entries). The attention
then runs on the pooled tokens, with its Q, K, V projections going from the old to the new width. Some public
re-implementations pool with stride 1 (no downsampling at all) or leave the relative bias out; neither is done
here.

Departures (any input size): the bias table is learned for a ``window`` (default 14 x 14, the 224-px grid of
CoAtNet's stage 3). Inputs up to that size read the exact offsets from the table's centre (a crop: the bias of
an offset does not depend on the input size, the translation-invariance the paper is after); along an axis
longer than the window the table is first resized bilinearly to (2H - 1), as the authors do when fine-tuning at
a higher resolution. Head width 32 as in the paper, so 2 heads at 64 channels. No CoAtNet model is registered:
its MBConv stages and the paper's rounded parameter counts (25 M for CoAtNet-0) leave too much unspecified to
match within 1 %.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import (DropPath, LayerNorm2d, Mlp, check_choice, check_divisible, check_positive_int, key_minus_query,
                      to_2tuple)
from ..registry import register_attention


class RelativePositionBias(nn.Module):
    """A learnable bias per head and 2D offset: forward(h, w) -> (heads, h * w, h * w), w_{i-j} at [:, i, j]."""

    def __init__(self, num_heads: int, window: int | tuple[int, int] = 14):
        super().__init__()
        self.window = to_2tuple(window)
        for i, v in enumerate(self.window):
            check_positive_int(f"window[{i}]", v)
        wh, ww = self.window
        self.table = nn.Parameter(torch.zeros(num_heads, 2 * wh - 1, 2 * ww - 1))
        nn.init.trunc_normal_(self.table, std=0.02)

    def forward(self, h: int, w: int) -> torch.Tensor:
        table = self.table
        th, tw = max(h, self.window[0]), max(w, self.window[1])  # half-extent of the table actually used
        if (th, tw) != self.window:
            table = F.interpolate(table[None], size=(2 * th - 1, 2 * tw - 1), mode="bilinear", align_corners=False)[0]
        dh = key_minus_query(h, th, table.device).t()  # (h, h): row of the table for offset i_h - j_h
        dw = key_minus_query(w, tw, table.device).t()
        bias = table[:, dh[:, None, :, None], dw[None, :, None, :]]  # (heads, h, w, h, w)
        return bias.reshape(table.shape[0], h * w, h * w)


class RelativeAttention(nn.Module):
    """Multi-head attention with a pre-softmax relative position bias: (N, L, C_in) on an h x w grid -> (N, L, C_out).

    The bias enters ``scaled_dot_product_attention`` as its additive ``attn_mask``.
    """

    def __init__(self, in_dim: int, out_dim: int, head_dim: int = 32, window=14, attn_drop: float = 0.0,
                 proj_drop: float = 0.0):
        super().__init__()
        check_positive_int("head_dim", head_dim)
        check_divisible("out_channels", out_dim, head_dim, "head_dim")
        self.num_heads, self.head_dim = out_dim // head_dim, head_dim
        self.qkv = nn.Linear(in_dim, out_dim * 3)
        self.rel_pos = RelativePositionBias(self.num_heads, window)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(out_dim, out_dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def _qkv(self, x: torch.Tensor):
        n, length, _ = x.shape
        return self.qkv(x).reshape(n, length, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)

    @torch.no_grad()
    def attention_map(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        """The softmax weights (N, heads, L, L), computed explicitly for inspection and plots."""
        q, k, _ = self._qkv(x)
        logits = q @ k.transpose(-2, -1) * self.head_dim ** -0.5 + self.rel_pos(*hw)
        return logits.softmax(dim=-1)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        n, length, _ = x.shape
        q, k, v = self._qkv(x)
        bias = self.rel_pos(*hw).to(q.dtype)[None]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=self.attn_drop if self.training else 0.0)
        return self.proj_drop(self.proj(y.transpose(1, 2).reshape(n, length, -1)))


@register_attention("coatnet_attn")
class CoAtTransformerBlock(nn.Module):
    """(N, C, H, W) -> (N, C_out, ceil(H / s), ceil(W / s)); the registered form is s = 1, C_out = C.

    Args:
        channels: C. out_channels: C_out (default C). stride: 1, or 2 for the downsampling block of a stage.
        head_dim: width of each head (paper: 32). window: size the relative bias table is learned for.
        mlp_ratio: FFN expansion (paper: 4). attn_drop, drop: dropout; drop_path: stochastic depth.
        pool: "max" (default) or "avg", the 2 x 2 pooling of the downsampling block (see the module docstring).
    """

    def __init__(self, channels: int, out_channels: int | None = None, stride: int = 1, head_dim: int = 32,
                 window: int | tuple[int, int] = 14, mlp_ratio: float = 4.0, attn_drop: float = 0.0,
                 drop: float = 0.0, drop_path: float = 0.0, pool: str = "max"):
        super().__init__()
        check_positive_int("channels", channels)
        out_channels = check_positive_int("out_channels", out_channels or channels)
        self.stride = check_choice("stride", stride, (1, 2))
        check_choice("pool", pool, ("max", "avg"))
        if stride == 1:
            self.pool = nn.Identity()
        elif pool == "max":
            self.pool = nn.MaxPool2d(2, 2, ceil_mode=True)
        else:  # ceil mode without padding: a window cut by the border averages its valid entries (TF "same")
            self.pool = nn.AvgPool2d(2, 2, ceil_mode=True)
        self.shortcut = nn.Conv2d(channels, out_channels, 1) if out_channels != channels else nn.Identity()
        self.norm1 = LayerNorm2d(channels)
        self.attn = RelativeAttention(channels, out_channels, head_dim, window, attn_drop, drop)
        self.norm2 = nn.LayerNorm(out_channels)
        self.mlp = Mlp(out_channels, int(out_channels * mlp_ratio), drop=drop)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.shortcut(self.pool(x))
        n, c, h, w = shortcut.shape
        y = self.pool(self.norm1(x)).flatten(2).transpose(1, 2)  # (N, h * w, C_in)
        t = shortcut.flatten(2).transpose(1, 2) + self.drop_path(self.attn(y, (h, w)))
        t = t + self.drop_path(self.mlp(self.norm2(t)))
        return t.transpose(1, 2).reshape(n, c, h, w)
