"""Outlook attention from VOLO (Yuan, Hou, Jiang, Feng & Yan, "VOLO: Vision Outlooker for Visual Recognition",
IEEE TPAMI 2023 (online 2022), arXiv:2106.13112).

Self-attention compares every token with every other one, which is coarse and quadratic. Outlook attention
instead aggregates a small K x K neighbourhood, and the weights are not computed from query-key products: the
centre token alone *predicts* them with one linear layer. For a token at (i, j) with features x_ij:

    A_ij = reshape(W_A x_ij)  in R^{K^2 x K^2}       (per head; row m says how output slot m mixes the window)
    V    = W_V x,  V_Delta(i,j) = the K^2 values of the K x K window centred at (i, j)
    Y_Delta(i,j) = softmax(A_ij / sqrt(d)) V_Delta(i,j)  (K^2 outputs, one per position of the window)
    Y_hw = sum over the windows that cover (h, w) of their output for (h, w)      ("fold")

then a linear projection. With stride s > 1 the windows are centred on every s-th token and the weights are
predicted from the s x s average-pooled tokens (the authors' code, used with K = 3, s = 2 in all VOLO models);
the outputs are still folded back to the full H x W grid, so the shape never changes. Windows are unfolded and
folded with ``F.unfold``/``F.fold``: no loop over pixels.

Departures:
* Any size: the right and bottom are padded so that exactly ceil(H / s) x ceil(W / s) windows exist (matching
  the ceil-mode average pooling), for every K, padding < K and s; the authors' code relies on K = 3,
  padding 1 for this. Tokens that no window reaches (possible only when s > K) get zero before projection.
* Stride 1 is not a departure: like the authors' ``OutlookAttention`` (sail-sg/volo, models/volo.py lines
  74-100: one unfold -> attend -> fold path for every stride, ``AvgPool2d(stride)`` being the identity at 1) we
  apply the same unfold and fold of the equations above; VOLO's models only use stride 2.
* Defaults for 64 channels: 2 heads (VOLO keeps heads 32 wide: 6 heads at 192 channels in VOLO-D1), K = 3,
  padding 1, stride 2, no bias in W_V, as in the Outlooker layers of VOLO-D1 to D5.

Model: ``volo_d1`` is VOLO-D1 as in the authors' code: a stem of three convolutions (stride 2) and a 4 x 4 patch
embedding (8 x 8 pixels per token, 192 channels), 4 Outlookers (6 heads, MLP ratio 3), a 2 x 2 patch merging to
384 channels, a learned position embedding, 14 transformer blocks (12 heads, MLP ratio 3, no qkv bias), 2 class
attention blocks (CaiT) with a class token, and the token-labelling head: logits = head(class token) + 0.5 *
max over tokens of aux_head(token), the authors' inference output. Departures of the model: it returns these
logits in training too (MixToken and the dense token-labelling targets belong to the training recipe, not
implemented here); any input size works (padding to a multiple of 8 pixels and of 2 tokens before the merging,
bicubic resizing of the position embedding). VOLO-D2...D5 are the same class with other widths (not registered).
"""
from __future__ import annotations

import math
import re

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import drop_path_rates, ConvNormAct, DropPath, Mlp, MultiHeadSelfAttention, check_divisible, check_positive_int, trunc_normal_init
from ..layers.patch_embed import pad_to_multiple
from ..layers.tokens import check_hw
from ..layers.tokens import TokenAttention
from ..registry import register_attention, register_model
from ..timm import register_timm_rules


@register_attention("outlook", layout="nlc")
class OutlookAttention(TokenAttention):
    """(N, L, C) -> (N, L, C), ``forward(x, hw=(H, W))``: dynamic K x K local aggregation predicted per token.

    Args:
        channels: C. num_heads: heads (C must be divisible by it). kernel_size: K. padding: window padding
        (0 <= padding < K; K // 2 centres the windows). stride: s, spacing of the window centres.
        qkv_bias: bias in the value projection. attn_drop, proj_drop: dropout on the weights and the output.
    """

    def __init__(self, channels: int, num_heads: int = 2, kernel_size: int = 3, padding: int = 1, stride: int = 2,
                 qkv_bias: bool = False, attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__(channels)
        check_positive_int("num_heads", num_heads)
        check_positive_int("kernel_size", kernel_size)
        check_positive_int("stride", stride)
        check_divisible("channels", channels, num_heads, "num_heads")
        if isinstance(padding, bool) or not isinstance(padding, int) or not 0 <= padding < kernel_size:
            raise ValueError(f"padding must be an integer in [0, kernel_size={kernel_size}), got {padding!r}")
        self.num_heads, self.kernel_size, self.padding, self.stride = num_heads, kernel_size, padding, stride
        self.head_dim = channels // num_heads
        self.scale = self.head_dim ** -0.5
        self.v = nn.Linear(channels, channels, bias=qkv_bias)
        self.attn = nn.Linear(channels, kernel_size ** 4 * num_heads)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(channels, channels)
        self.proj_drop = nn.Dropout(proj_drop)

    def _grid(self, h: int, w: int) -> tuple[int, int]:
        return math.ceil(h / self.stride), math.ceil(w / self.stride)

    def attention_weights(self, x: torch.Tensor, hw=None) -> torch.Tensor:
        """Softmax weights (N, heads, ceil(H/s) * ceil(W/s), K^2, K^2): one K^2 x K^2 matrix per window."""
        n, length, c = x.shape
        h, w = check_hw(hw, length)
        grid = x.reshape(n, h, w, c)
        if self.stride > 1:
            grid = F.avg_pool2d(grid.permute(0, 3, 1, 2), self.stride, self.stride, ceil_mode=True).permute(0, 2, 3, 1)
        kk = self.kernel_size ** 2
        logits = self.attn(grid).reshape(n, -1, self.num_heads, kk, kk).transpose(1, 2)
        return (logits * self.scale).softmax(dim=-1)

    def forward_tokens(self, x: torch.Tensor, hw=None) -> torch.Tensor:
        n, length, c = x.shape
        h, w = check_hw(hw, length)
        k, p, s = self.kernel_size, self.padding, self.stride
        oh, ow = self._grid(h, w)
        # Pad so that exactly oh x ow windows of size k, stride s start at -p (never negative padding, see docstring).
        pad_b, pad_r = max((oh - 1) * s + k - p - h, 0), max((ow - 1) * s + k - p - w, 0)
        hp, wp = h + p + pad_b, w + p + pad_r
        v = self.v(x).transpose(1, 2).reshape(n, c, h, w)
        v = F.pad(v, (p, pad_r, p, pad_b))
        cols = F.unfold(v, k, stride=s)  # (N, C * k^2, oh * ow)
        cols = cols.reshape(n, self.num_heads, self.head_dim, k * k, oh * ow).permute(0, 1, 4, 3, 2)
        attn = self.attn_drop(self.attention_weights(x, (h, w)))  # (N, heads, oh * ow, k^2, k^2)
        out = (attn @ cols).permute(0, 1, 4, 3, 2).reshape(n, c * k * k, oh * ow)
        out = F.fold(out, (hp, wp), k, stride=s)[:, :, p: p + h, p: p + w]
        return self.proj_drop(self.proj(out.flatten(2).transpose(1, 2)))


class Outlooker(nn.Module):
    """VOLO's first-stage layer on tokens: x + OA(LN(x)), then x + MLP(LN(x)) (MLP ratio 3 in VOLO)."""

    def __init__(self, dim: int, num_heads: int = 2, kernel_size: int = 3, padding: int = 1, stride: int = 2,
                 mlp_ratio: float = 3.0, drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = OutlookAttention(dim, num_heads, kernel_size, padding, stride)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, hw) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), hw=hw))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class ClassAttentionBlock(nn.Module):
    """CaiT's class attention: only the class token queries; cls <- cls + CA(LN(x)), cls <- cls + MLP(LN(cls))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 3.0):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.norm1 = nn.LayerNorm(dim)
        self.q = nn.Linear(dim, dim, bias=False)
        self.kv = nn.Linear(dim, 2 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, length, c = x.shape
        t = self.norm1(x)
        q = self.q(t[:, :1]).reshape(n, 1, self.num_heads, self.head_dim).transpose(1, 2)
        k, v = self.kv(t).reshape(n, length, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        cls = x[:, :1] + self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, 1, c))
        cls = cls + self.mlp(self.norm2(cls))
        return torch.cat([cls, x[:, 1:]], dim=1)


class VOLO(nn.Module):
    """(N, in_chans, H, W) -> (N, num_classes); any H, W >= 1.

    Args:
        layers: (outlookers, transformer blocks). embed_dims, num_heads: of the two stages. mlp_ratio: of all MLPs.
        stem_dim: width of the convolutional stem. img_size: resolution the position embedding is laid out for.
        num_class_blocks: class attention blocks at the end. drop_path_rate: stochastic depth, linear over blocks.
    """

    def __init__(self, layers=(4, 14), embed_dims=(192, 384), num_heads=(6, 12), mlp_ratio: float = 3.0,
                 stem_dim: int = 64, img_size: int = 224, num_class_blocks: int = 2, in_chans: int = 3,
                 num_classes: int = 1000, drop_path_rate: float = 0.0):
        super().__init__()
        check_positive_int("num_classes", num_classes)
        check_positive_int("img_size", img_size)
        self.stem = nn.Sequential(ConvNormAct(in_chans, stem_dim, 7, 2), ConvNormAct(stem_dim, stem_dim, 3),
                                  ConvNormAct(stem_dim, stem_dim, 3))
        self.patch_embed = nn.Conv2d(stem_dim, embed_dims[0], 4, 4)
        rates = drop_path_rates(drop_path_rate, sum(layers))
        self.outlookers = nn.ModuleList([Outlooker(embed_dims[0], num_heads[0], 3, 1, 2, mlp_ratio, rates[i])
                                         for i in range(layers[0])])
        self.downsample = nn.Conv2d(embed_dims[0], embed_dims[1], 2, 2)
        grid = max(img_size // 16, 1)
        self.pos_embed = nn.Parameter(torch.zeros(1, embed_dims[1], grid, grid))
        self.blocks = nn.ModuleList([_TransformerBlock(embed_dims[1], num_heads[1], mlp_ratio, rates[layers[0] + i])
                                     for i in range(layers[1])])
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dims[1]))
        self.class_blocks = nn.ModuleList([ClassAttentionBlock(embed_dims[1], num_heads[1], mlp_ratio)
                                           for _ in range(num_class_blocks)])
        self.norm = nn.LayerNorm(embed_dims[1])
        self.num_features = embed_dims[1]
        self.head = nn.Linear(embed_dims[1], num_classes)
        self.aux_head = nn.Linear(embed_dims[1], num_classes)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.apply(trunc_normal_init)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, 1 + L, D) normalized tokens, class token first."""
        x = self.patch_embed(self.stem(pad_to_multiple(x, 8)))
        n, c, h, w = x.shape
        t = x.flatten(2).transpose(1, 2)
        for blk in self.outlookers:
            t = blk(t, (h, w))
        x = F.pad(t.transpose(1, 2).reshape(n, c, h, w), (0, w % 2, 0, h % 2))
        x = self.downsample(x)
        pos = self.pos_embed
        if pos.shape[-2:] != x.shape[-2:]:
            pos = F.interpolate(pos, size=x.shape[-2:], mode="bicubic", align_corners=False)
        t = (x + pos).flatten(2).transpose(1, 2)
        for blk in self.blocks:
            t = blk(t)
        t = torch.cat([self.cls_token.expand(n, -1, -1), t], dim=1)
        for blk in self.class_blocks:
            t = blk(t)
        return self.norm(t)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.forward_features(x)
        return self.head(t[:, 0]) + 0.5 * self.aux_head(t[:, 1:]).amax(dim=1)


class _TransformerBlock(nn.Module):
    """Pre-norm block x + MHSA(LN(x)), x + MLP(LN(x)) without qkv bias (VOLO's second stage)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = MultiHeadSelfAttention(dim, num_heads, qkv_bias=False)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


def _from_timm(state: dict) -> dict:
    """Number timm's transformer blocks consecutively and make its (1, H, W, C) position embedding (1, C, H, W).

    timm splits VOLO's transformer blocks over several ``network`` entries after the downsample (VOLO-D1: 4, 8
    and 2 blocks in ``network.2`` to ``network.4``); ours are one list, in the same order.
    """
    pattern = re.compile(r"^network\.(\d+)\.(\d+)\.")
    found = {(int(m[1]), int(m[2])) for m in map(pattern.match, state) if m and int(m[1]) >= 2}
    index = {key: i for i, key in enumerate(sorted(found))}
    out = {}
    for key, value in state.items():
        m = pattern.match(key)
        if m and (int(m[1]), int(m[2])) in index:
            key = f"blocks.{index[int(m[1]), int(m[2])]}." + key[m.end():]
        out[key] = value.permute(0, 3, 1, 2) if key == "pos_embed" else value
    return out


# timm's VOLO (timm/models/volo.py): the stem and the 4 x 4 patch embedding are one PatchEmbed module, and the
# stages are one ``network`` list (outlookers, the patch-merging downsample, then the transformer blocks).
register_timm_rules(VOLO, renames=(
    (r"^patch_embed\.conv\.([036])\.", lambda m: f"stem.{'036'.index(m[1])}.0."),   # conv, BN, ReLU x 3
    (r"^patch_embed\.conv\.([147])\.", lambda m: f"stem.{'147'.index(m[1])}.1."),
    (r"^patch_embed\.proj\.", "patch_embed."),
    (r"^network\.0\.", "outlookers."), (r"^network\.1\.proj\.", "downsample."),
    (r"^post_network\.(\d+)\.attn\.", r"class_blocks.\1."), (r"^post_network\.", "class_blocks."),
), convert=_from_timm)

register_model("volo_d1", VOLO, timm="volo_d1_224", layers=(4, 14), embed_dims=(192, 384), num_heads=(6, 12))
