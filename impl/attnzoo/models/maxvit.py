"""MaxViT: multi-axis vision transformer (Tu et al., ECCV 2022, arXiv:2204.01697).

**Multi-axis attention** (Sec. 3.1, registered alone as ``maxvit_block_attn`` and ``maxvit_grid_attn``): full
self-attention over an H x W map costs O((HW)^2); MaxViT splits it into two sparse forms of fixed window P x P
(P = G = 7 at 224 px):

* **block attention** (local): the map is cut into (H/P) x (W/P) non-overlapping P x P windows,
  ``(H, W, C) -> (H/P x W/P, P x P, C)``, and attention runs inside each window;
* **grid attention** (dilated, global): a fixed G x G grid with stride (H/G, W/G),
  ``(H, W, C) -> (G x G, H/G x W/G, C)`` swapped so that each window holds the G x G tokens spaced H/G apart;
  attention inside each of these windows mixes tokens across the whole map.

Both are plain softmax attention with a relative position bias per head (a (2P-1) x (2P-1) table indexed by the key's
offset from the query, the authors' ``attention_utils`` convention), run in ``F.scaled_dot_product_attention``. Heads
of 32 channels.

**MaxViT block** (Fig. 2): MBConv (pre-BatchNorm, 1x1 expansion x4, BN, GELU, 3x3 depthwise, BN, GELU,
squeeze-excitation with 1/4 of the output width and SiLU, 1x1 projection; strided in the first block of a stage,
whose shortcut is a 2x2 average pool and a 1x1 convolution), then block attention + MLP, then grid attention + MLP
(pre-LayerNorm, MLP x4, GELU). A stem of two 3x3 convolutions (stride 2, then 1), four stages at strides 4 to 32, and
a head: global average pool, LayerNorm, a hidden linear layer with tanh ("pre-logits"), the classifier.

Sizes (the paper's Table 1 and the authors' README): MaxViT-T widths (64, 128, 256, 512), blocks (2, 2, 5, 2), stem
64; S (96, 192, 384, 768), (2, 2, 5, 2), 64; B (96, 192, 384, 768), (2, 6, 14, 2), 64; L (128, 256, 512, 1024),
(2, 6, 14, 2), 128. timm's ``maxvit_*_tf_224`` carry the authors' TensorFlow weights and load one to one.

Follows the authors' code (google-research/maxvit, maxvit/models/maxvit.py): TensorFlow "SAME" padding (the extra
row/column of a strided convolution at the bottom/right), GELU with the tanh approximation (TF's default in their
code), BatchNorm eps 1e-3 and momentum 0.01 (TF's 0.99), LayerNorm eps 1e-5, heads interleaved in the fused QKV
projection (q, k, v for head 0 first: timm's ``head_first=False``), window P = img_size // 32 (7 at 224, 12 at 384,
16 at 512, as the authors' configurations). The shortcut's average pool excludes padding (TF's "SAME" pooling; it
acts on odd maps only, where timm counts the zeros).

Departure: any input size works. The authors' code (and timm's) raise an error when a feature map is not a multiple
of the window; here the normalised map is zero-padded at the bottom/right to whole windows, the padded tokens are
masked out as keys (``attn_mask`` -inf) and cropped after the attention. At sizes whose maps are multiples of P at
every stage (224, and img_size multiples of 32 * P generally) nothing is padded and the result is the authors'.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import (DropPath, Mlp, TokenAttention, check_choice, check_hw, check_positive_int, check_stages,
                      stage_drop_path_rates, make_divisible, to_2tuple, tokens_to_grid)
from ..layers.mbconv import conv2d
from ..registry import register_attention, register_model
from ..timm import register_timm_rules
from ..attention.se import SqueezeExcite
from .swin import key_offset_index


def gelu_tanh() -> nn.Module:
    return nn.GELU(approximate="tanh")


def partition(x: torch.Tensor, size: tuple[int, int], kind: str) -> torch.Tensor:
    """(N, H, W, C) with H, W multiples of ``size`` -> (N * windows, P_h * P_w, C).

    "block": contiguous P x P windows; "grid": windows of the G x G tokens spaced (H/G, W/G) apart."""
    n, h, w, c = x.shape
    p, q = size
    if kind == "block":
        x = x.view(n, h // p, p, w // q, q, c).permute(0, 1, 3, 2, 4, 5)
    else:
        x = x.view(n, p, h // p, q, w // q, c).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(-1, p * q, c)


def unpartition(x: torch.Tensor, size: tuple[int, int], hw: tuple[int, int], kind: str) -> torch.Tensor:
    """The inverse of ``partition``: (N * windows, P_h * P_w, C) -> (N, H, W, C)."""
    (p, q), (h, w), c = size, hw, x.shape[-1]
    if kind == "block":
        x = x.view(-1, h // p, w // q, p, q, c).permute(0, 1, 3, 2, 4, 5)
    else:
        x = x.view(-1, h // p, w // q, p, q, c).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(-1, h, w, c)


@register_attention("maxvit_block_attn", layout="nlc", axis="block")
class PartitionAttention(TokenAttention):
    """Multi-head attention within MaxViT's block (local) or grid (dilated global) windows, with a relative position
    bias: (N, L, C) tokens on an (H, W) grid -> same ((N, C, H, W) maps -> same).

    Args: channels; axis ("block" or "grid"); window (P, 7: the 224-px configuration); dim_head (32, the paper);
    bias (on the QKV and output projections, True). Maps that are not multiples of P are zero-padded at the
    bottom/right and the padded keys masked (see the module docstring).
    """

    def __init__(self, channels: int, axis: str = "block", window=7, dim_head: int = 32, bias: bool = True):
        super().__init__(channels)
        self.axis = check_choice("axis", axis, ("block", "grid"))
        self.window = tuple(check_positive_int("window", p) for p in to_2tuple(window))
        check_positive_int("dim_head", dim_head)
        if channels % dim_head:
            raise ValueError(f"channels={channels} must be a multiple of dim_head={dim_head} (heads of dim_head)")
        self.num_heads, self.dim_head = channels // dim_head, dim_head
        self.qkv = nn.Linear(channels, 3 * channels, bias=bias)
        self.rel_pos = RelativePositionBias(self.window, self.num_heads)
        self.proj = nn.Linear(channels, channels, bias=bias)

    def forward_tokens(self, x: torch.Tensor, hw: tuple[int, int] | None) -> torch.Tensor:
        hw = check_hw(hw, x.shape[1])
        return self.forward_grid(tokens_to_grid(x, hw)).flatten(1, 2)

    def forward_grid(self, x: torch.Tensor) -> torch.Tensor:
        """(N, H, W, C) channels-last map -> same."""
        n, h, w, c = x.shape
        (p, q), kind = self.window, self.axis
        pad_h, pad_w = -h % p, -w % q
        bias = self.rel_pos().unsqueeze(0)                                   # (1, heads, L, L)
        if pad_h or pad_w:
            x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
            valid = torch.zeros(1, h + pad_h, w + pad_w, 1, dtype=torch.bool, device=x.device)
            valid[:, :h, :w] = True
            keys = partition(valid, self.window, kind)[:, None, None, :, 0]  # (windows, 1, 1, L)
            mask = torch.where(keys, bias, float("-inf"))                    # (windows, heads, L, L)
            bias = mask.expand(n, *mask.shape).flatten(0, 1)
        windows = partition(x, self.window, kind)
        length = windows.shape[1]
        q_, k, v = self.qkv(windows).view(-1, length, 3, self.num_heads, self.dim_head).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q_, k, v, attn_mask=bias.to(q_.dtype))
        y = self.proj(y.transpose(1, 2).reshape(-1, length, c))
        return unpartition(y, self.window, (h + pad_h, w + pad_w), kind)[:, :h, :w]


register_attention("maxvit_grid_attn", PartitionAttention, layout="nlc", axis="grid")


class RelativePositionBias(nn.Module):
    """A learned bias per head and 2D offset of the key from the query within a P_h x P_w window:
    forward() -> (heads, L, L) with [h, i, j] = table[h, y_j - y_i + P_h - 1, x_j - x_i + P_w - 1]."""

    def __init__(self, window: tuple[int, int], num_heads: int):
        super().__init__()
        self.window = window
        self.relative_position_bias_table = nn.Parameter(torch.zeros(num_heads, 2 * window[0] - 1, 2 * window[1] - 1))
        if not self.relative_position_bias_table.is_meta:
            nn.init.normal_(self.relative_position_bias_table, std=0.02)

    def forward(self) -> torch.Tensor:
        table = self.relative_position_bias_table
        return table.flatten(1)[:, key_offset_index(self.window, table.device)]


class PartitionBlock(nn.Module):
    """x + attn(LN(x)), then x + MLP(LN(x)) on an (N, H, W, C) channels-last map, attention in block or grid windows."""

    def __init__(self, dim: int, kind: str, window, dim_head: int, mlp_ratio: float, drop: float, drop_path: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-5)
        self.attn = PartitionAttention(dim, kind, window, dim_head)
        self.norm2 = nn.LayerNorm(dim, eps=1e-5)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act=gelu_tanh, drop=drop)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn.forward_grid(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


def batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)


class BNAct(nn.BatchNorm2d):
    """BatchNorm (TF's eps and momentum), then the tanh-approximated GELU."""

    def __init__(self, channels: int):
        super().__init__(channels, eps=1e-3, momentum=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(super().forward(x), approximate="tanh")


class MBConv(nn.Module):
    """MaxViT's MBConv: (N, C_in, H, W) -> (N, C_out, ceil(H/s), ceil(W/s)), pre-norm, residual."""

    def __init__(self, in_dim: int, out_dim: int, stride: int, expand_ratio: float = 4.0, se_ratio: float = 0.25,
                 drop_path: float = 0.0):
        super().__init__()
        mid = make_divisible(out_dim * expand_ratio)
        self.shortcut = nn.Sequential()
        if stride > 1:
            self.shortcut.add_module("pool", nn.AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False))
        if stride > 1 and in_dim != out_dim:
            self.shortcut.add_module("expand", nn.Conv2d(in_dim, out_dim, 1))
        self.pre_norm = batch_norm(in_dim)
        self.conv1_1x1 = nn.Conv2d(in_dim, mid, 1, bias=False)
        self.norm1 = BNAct(mid)
        self.conv2_kxk = conv2d(mid, mid, 3, stride, groups=mid, padding="same")
        self.norm2 = BNAct(mid)
        self.se = SqueezeExcite(mid, rd_channels=int(out_dim * se_ratio), act="silu")
        self.conv3_1x1 = nn.Conv2d(mid, out_dim, 1)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm2(self.conv2_kxk(self.norm1(self.conv1_1x1(self.pre_norm(x)))))
        return self.shortcut(x) + self.drop_path(self.conv3_1x1(self.se(y)))


class MaxViTBlock(nn.Module):
    """MBConv, block attention, grid attention: (N, C_in, H, W) -> (N, C_out, H', W')."""

    def __init__(self, in_dim: int, out_dim: int, stride: int, window, dim_head: int, mlp_ratio: float,
                 drop: float, drop_path: float):
        super().__init__()
        self.conv = MBConv(in_dim, out_dim, stride, drop_path=drop_path)
        self.attn_block = PartitionBlock(out_dim, "block", window, dim_head, mlp_ratio, drop, drop_path)
        self.attn_grid = PartitionBlock(out_dim, "grid", window, dim_head, mlp_ratio, drop, drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x).permute(0, 2, 3, 1)
        return self.attn_grid(self.attn_block(x)).permute(0, 3, 1, 2)


class MaxViTStage(nn.Module):
    def __init__(self, in_dim: int, dim: int, depth: int, window, dim_head: int, mlp_ratio: float, drop: float,
                 drop_paths: list[float]):
        super().__init__()
        self.blocks = nn.Sequential(*[MaxViTBlock(in_dim if i == 0 else dim, dim, 2 if i == 0 else 1, window,
                                                  dim_head, mlp_ratio, drop, drop_paths[i]) for i in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


class Stem(nn.Module):
    """3x3 conv stride 2 ("SAME"), BN, GELU, 3x3 conv: (N, 3, H, W) -> (N, C, ceil(H/2), ceil(W/2))."""

    def __init__(self, in_chans: int, width: int):
        super().__init__()
        self.conv1 = conv2d(in_chans, width, 3, 2, bias=True, padding="same")
        self.norm1 = BNAct(width)
        self.conv2 = conv2d(width, width, 3, 1, bias=True, padding="same")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.norm1(self.conv1(x)))


class Head(nn.Module):
    """Average pool, LayerNorm, linear + tanh (pre-logits), dropout, classifier: (N, C, H, W) -> (N, classes)."""

    def __init__(self, dim: int, hidden: int, num_classes: int, drop: float):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=1e-5)
        self.pre_logits = nn.Sequential()
        self.pre_logits.add_module("fc", nn.Linear(dim, hidden))
        self.pre_logits.add_module("act", nn.Tanh())
        self.drop = nn.Dropout(drop)
        self.fc = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(self.pre_logits(self.norm(x.mean(dim=(2, 3))))))


class MaxViT(nn.Module):
    """(N, in_chans, H, W) -> (N, num_classes) logits.

    Args:
        embed_dims, depths: widths and MaxViT blocks of the 4 stages. stem_width (64). head_hidden_size: the
            pre-logits width (the last stage's width if None, as the authors). img_size: sets the window P = G =
            img_size // 32 (7 at 224). dim_head (32), mlp_ratio (4), drop_rate, drop_path_rate (linear over all
            blocks).
    """

    def __init__(self, embed_dims=(64, 128, 256, 512), depths=(2, 2, 5, 2), stem_width: int = 64,
                 head_hidden_size: int | None = None, img_size=224, dim_head: int = 32, mlp_ratio: float = 4.0,
                 in_chans: int = 3, num_classes: int = 1000, drop_rate: float = 0.0, drop_path_rate: float = 0.0):
        super().__init__()
        depths, embed_dims = check_stages(depths, embed_dims)
        check_positive_int("num_classes", num_classes)
        window = tuple(s // 32 for s in to_2tuple(img_size))
        if min(window) < 1:
            raise ValueError(f"img_size must be at least 32 (the window is img_size // 32), got {img_size!r}")
        self.window = window
        self.stem = Stem(in_chans, stem_width)
        rates = stage_drop_path_rates(drop_path_rate, depths)
        dims_in = (stem_width,) + embed_dims[:3]
        self.stages = nn.Sequential(*[
            MaxViTStage(dims_in[i], embed_dims[i], depths[i], window, dim_head, mlp_ratio, drop_rate,
                        rates[i]) for i in range(4)])
        self.num_features = embed_dims[-1]
        self.head = Head(embed_dims[-1], head_hidden_size or embed_dims[-1], num_classes, drop_rate)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, C_4, H / 32, W / 32) (rounded up)."""
        return self.stages(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


# timm's MaxxVit (maxvit_*_tf_*): the same names; timm's shortcut pool has no parameters and its one-hot lookup
# buffers are not persistent.
register_timm_rules(MaxViT, renames=())

_VARIANTS = {
    "tiny": dict(embed_dims=(64, 128, 256, 512), depths=(2, 2, 5, 2), stem_width=64),
    "small": dict(embed_dims=(96, 192, 384, 768), depths=(2, 2, 5, 2), stem_width=64),
    "base": dict(embed_dims=(96, 192, 384, 768), depths=(2, 6, 14, 2), stem_width=64),
    "large": dict(embed_dims=(128, 256, 512, 1024), depths=(2, 6, 14, 2), stem_width=128),
}
for _name, _cfg in _VARIANTS.items():
    register_model(f"maxvit_{_name}_tf_224", MaxViT, timm=f"maxvit_{_name}_tf_224", **_cfg)
