"""DilateFormer: multi-scale dilated transformer (Jiao et al., IEEE TMM 2023, arXiv:2302.01791).

Observation (Sec. 3.1): in the shallow layers of a ViT, global attention is local and sparse, so attending to every
patch is redundant there. **Multi-scale dilated attention** (MSDA, Sec. 3.2, Eq. 1-3) keeps softmax attention but lets
each query attend only to a k x k neighbourhood sampled with a dilation r around it (sliding-window dilated attention,
SWDA), and gives different groups of heads different dilations:

    SWDA(Q, K, V, r)_i = softmax(q_i K_r^T / sqrt(d)) V_r,   K_r, V_r: the k x k keys / values at i + r * (-1, 0, 1)^2
    h_g = SWDA(Q_g, K_g, V_g, r_g)   for the head groups g = 1..n (channels split in n groups, dilation r_g)
    MSDA(X) = Linear(Concat(h_1, ..., h_n)).

DilateFormer (Sec. 3.3, Fig. 2) is a four-stage pyramid: an overlapping convolutional stem (four 3 x 3 convolutions,
strides 1, 2, 1, 2, BatchNorm and GELU between them), MSDA blocks in stages 1-2 and global multi-head self-attention
blocks in stages 3-4, a 3 x 3 stride-2 convolution with BatchNorm doubling the width between stages, and before
every block a conditional position embedding (a depthwise 3 x 3 convolution added to the map, CPVT's PEG). Blocks are
pre-norm, x = x + Attn(LN(x)); x = x + MLP(LN(x)); LayerNorm, average pooling and a linear head end the network.

Follows the authors' code (JIAOJIAYUASD/dilateformer, models/dilateformer.py): the variants ``dilateformer_tiny``
(C = 72, depths 2-2-6-2), ``dilateformer_small`` (72, 3-5-8-3) and ``dilateformer_base`` (96, 4-8-10-3), heads
3-6-12-24 (head width 24 / 32), kernel 3, dilations (1, 2, 3), MLP ratio 4, Q/K/V biases, LayerNorm eps 1e-6, stem
width 16-32-64, the first third of the channels of Q, K and V attending with dilation 1, the next with 2, the last
with 3; the neighbourhood is zero-padded at the border (``nn.Unfold`` with padding r (k - 1) / 2), so border queries
also see zero keys (logit 0) with zero values, as there. Drop-path rate 0.1 from the authors' ``dist_train.sh``.
Initialisation as there: truncated-normal (std 0.02) linear layers, PyTorch's default for the convolutions,
MSDA's Q/K/V projection included (a 1 x 1 convolution there, a linear layer here: same numbers, same default init).
On the same weights ours gives the logits of the authors' definition (checked while writing this file, at 224 x 224
and 61 x 45, to 1e-6). Sizes (ours, 1000 classes): 17.24 M / 24.06 M / 47.43 M parameters for T / S / B, 3.16 GMACs
for T at 224 x 224 (the paper's table was not checked here, so the catalogue entry carries no ``reported:`` figures).

Departures: the authors' model accepts only its ``img_size``; ours takes any input of at least one pixel (there is no
position table; the convolutions pad, maps of odd size are halved to ceil(H / 2)). The attention runs in
``F.scaled_dot_product_attention`` (each query against its k^2 gathered keys) instead of explicit matmuls.

The mechanism alone is registered as the token attention ``dilateformer_msda`` ((N, C, H, W) -> same). With
``num_heads=None`` it takes the fewest heads, at least one per dilation, that divide the channels (3 for DilateFormer's
72-channel first stage); when the heads are not a multiple of the number of dilations (the authors' code requires one),
the groups are as equal as possible, the smaller dilations getting the extra heads, so any width works.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import (ConvNormAct, DropPath, Mlp, MultiHeadSelfAttention, TokenAttention, check_divisible, check_hw,
                      check_images, check_positive_int, check_positive_ints, drop_path_rates, trunc_normal_init)
from ..registry import register_attention, register_model


def split_heads(num_heads: int, groups: int) -> tuple[int, ...]:
    """Heads per dilation group: as equal as possible, the first groups one more where they cannot be equal."""
    base, extra = divmod(num_heads, groups)
    return tuple(base + (i < extra) for i in range(groups))


@register_attention("dilateformer_msda", layout="nlc")
class MultiScaleDilatedAttention(TokenAttention):
    """(N, L, C) tokens on an H x W grid -> same, ``forward(x, hw=(H, W))``; (N, C, H, W) maps -> same.

    Multi-scale dilated attention: Q, K, V = X W (one linear layer, 3C outputs); the heads are split in
    ``len(dilations)`` groups, group g attends from each position to the ``kernel_size`` x ``kernel_size``
    neighbourhood sampled with dilation ``dilations[g]`` (zero-padded at the border); the groups' outputs are
    concatenated and projected.

    Args:
        channels: C. num_heads: heads of C / num_heads channels (default: the fewest, at least one per dilation,
            that divide C; DilateFormer passes 3 / 6 per stage). dilations: one per head group (DilateFormer: 1, 2, 3).
        kernel_size: k, odd (3). qkv_bias: biases in Q, K, V (True in DilateFormer). attn_drop: dropout on the weights.
    """

    def __init__(self, channels: int, num_heads: int | None = None, dilations=(1, 2, 3), kernel_size: int = 3,
                 qkv_bias: bool = True, attn_drop: float = 0.0):
        super().__init__(channels)
        self.dilations = check_positive_ints("dilations", dilations)
        self.kernel_size = check_positive_int("kernel_size", kernel_size)
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (a neighbourhood centred on the query), got {kernel_size}")
        groups = len(self.dilations)
        if num_heads is None:
            num_heads = next((h for h in range(groups, channels + 1) if channels % h == 0), None)
            if num_heads is None:
                raise ValueError(f"channels={channels} cannot give one head to each of the {groups} dilations")
        check_positive_int("num_heads", num_heads)
        check_divisible("channels", channels, num_heads, "num_heads")
        if num_heads < groups:
            raise ValueError(f"num_heads={num_heads} must be at least the number of dilations ({groups}): "
                             f"each dilation is attended by its own heads")
        self.num_heads = num_heads
        self.head_dim = channels // num_heads
        self.group_heads = split_heads(num_heads, groups)
        self.attn_drop = attn_drop
        self.qkv = nn.Linear(channels, 3 * channels, bias=qkv_bias)
        self.proj = nn.Linear(channels, channels)
        trunc_normal_init(self.proj)

    def _neighbours(self, kv: torch.Tensor, heads: int, dilation: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 2, c, H, W) keys and values of one group -> the k x k neighbours of every position at ``dilation``,
        (N * heads, L, k^2, d) each (zero-padded at the border, as ``nn.Unfold`` with padding r (k - 1) / 2)."""
        n, _, c, h, w = kv.shape
        kk = self.kernel_size ** 2
        pad = dilation * (self.kernel_size - 1) // 2
        kv = F.unfold(kv.reshape(n * 2, c, h, w), self.kernel_size, dilation, pad)  # (2N, c * k^2, L)
        kv = kv.reshape(n, 2, heads, self.head_dim, kk, h * w).permute(1, 0, 2, 5, 4, 3).contiguous()
        k, v = kv.reshape(2, n * heads, h * w, kk, self.head_dim)  # contiguous: SDPA's fused CPU kernel needs it
        return k, v

    def _groups(self, x: torch.Tensor, hw):
        """Yield (heads, dilation, q (N * heads, L, 1, d), k, v (N * heads, L, k^2, d)) per head group for (N, L, C)
        tokens on the grid ``hw``."""
        h, w = check_hw(hw, x.shape[1])
        n, length, c = x.shape
        qkv = self.qkv(x)                                                # (N, L, 3C): Q, K, V, each group-major
        kv = qkv[..., c:].transpose(1, 2).reshape(n, 2, c, h, w)          # K and V as maps, for the unfold
        start = 0
        for heads, dilation in zip(self.group_heads, self.dilations):
            width = heads * self.head_dim
            q = qkv[..., start:start + width].reshape(n, length, heads, self.head_dim).transpose(1, 2)
            q = q.reshape(n * heads, length, 1, self.head_dim)
            yield (heads, dilation, q, *self._neighbours(kv[:, :, start:start + width], heads, dilation))
            start += width

    def forward_tokens(self, x: torch.Tensor, hw: tuple[int, int] | None) -> torch.Tensor:
        n, length, _ = x.shape
        outs = []
        for heads, _, q, k, v in self._groups(x, hw):
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
            outs.append(out.reshape(n, heads, length, self.head_dim).transpose(1, 2).reshape(n, length, -1))
        return self.proj(torch.cat(outs, dim=-1))

    @torch.no_grad()
    def attention_map(self, x: torch.Tensor, hw) -> list[torch.Tensor]:
        """The softmax weights of every head group, (N, heads_g, L, k^2) each (neighbours in raster order of the
        k x k kernel), computed explicitly for inspection and plots."""
        n, length, _ = x.shape
        maps = []
        for heads, _, q, k, _ in self._groups(x, hw):
            attn = (q @ k.transpose(-2, -1) * self.head_dim ** -0.5).softmax(dim=-1)  # (N * heads, L, 1, k^2)
            maps.append(attn.reshape(n, heads, length, -1))
        return maps

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, num_heads={self.num_heads}, dilations={self.dilations}, "
                f"kernel_size={self.kernel_size}, heads_per_dilation={self.group_heads}")


class DilateBlock(nn.Module):
    """(N, C, H, W) -> same: x = x + DWConv3x3(x) (position embedding); then on the tokens
    x = x + Attn(LN(x)); x = x + MLP(LN(x)), Attn being MSDA (``dilations`` given) or global multi-head attention."""

    def __init__(self, dim: int, num_heads: int, dilations=None, kernel_size: int = 3, mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0,
                 cpe: bool = True):
        super().__init__()
        self.pos_embed = nn.Conv2d(dim, dim, 3, padding=1, groups=dim) if cpe else None
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.local = dilations is not None
        if self.local:
            self.attn = MultiScaleDilatedAttention(dim, num_heads, dilations, kernel_size, qkv_bias, attn_drop)
        else:
            self.attn = MultiHeadSelfAttention(dim, num_heads, qkv_bias, attn_drop)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pos_embed is not None:
            x = x + self.pos_embed(x)
        n, c, h, w = x.shape
        t = x.flatten(2).transpose(1, 2)
        y = self.norm1(t)
        t = t + self.drop_path(self.attn(y, hw=(h, w)) if self.local else self.attn(y))
        t = t + self.drop_path(self.mlp(self.norm2(t)))
        return t.transpose(1, 2).reshape(n, c, h, w)


class DilateStage(nn.Module):
    """(N, C, H, W) -> (N, 2C, ceil(H/2), ceil(W/2)) (or unchanged in the last stage): blocks, then the merging
    3 x 3 stride-2 convolution with BatchNorm."""

    def __init__(self, dim: int, depth: int, downsample: bool, drop_paths: list[float], **block_kwargs):
        super().__init__()
        self.blocks = nn.Sequential(*[DilateBlock(dim, drop_path=r, **block_kwargs) for r in drop_paths])
        self.downsample = ConvNormAct(dim, 2 * dim, 3, 2, act=None, bias=True) if downsample else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(self.blocks(x))


class DilateFormer(nn.Module):
    """(N, in_chans, H, W) -> (N, num_classes) logits; any H, W >= 1.

    Args:
        embed_dim: width of stage 1 (doubled per stage). depths, num_heads: blocks and heads per stage.
        dilations, kernel_size: MSDA's (1, 2, 3) and 3. dilated_stages: which stages use MSDA (the others global
        attention; the paper: the first two). mlp_ratio, qkv_bias: as named. stem_width: width of the stem's first
        convolution (16; then 2x and 4x). cpe: the per-block depthwise-convolution position embedding.
        drop_rate, attn_drop_rate: dropout in the MLPs / on attention weights. drop_path_rate: linear over all blocks.
    """

    def __init__(self, embed_dim: int = 72, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), dilations=(1, 2, 3),
                 kernel_size: int = 3, dilated_stages=(True, True, False, False), mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, stem_width: int = 16, cpe: bool = True, num_classes: int = 1000,
                 in_chans: int = 3, drop_rate: float = 0.0, attn_drop_rate: float = 0.0, drop_path_rate: float = 0.1):
        super().__init__()
        depths = check_positive_ints("depths", depths)
        num_heads = check_positive_ints("num_heads", num_heads)
        dilated_stages = tuple(bool(s) for s in dilated_stages)
        if not len(depths) == len(num_heads) == len(dilated_stages):
            raise ValueError(f"depths, num_heads and dilated_stages need one entry per stage, got {depths!r}, "
                             f"{num_heads!r} and {dilated_stages!r}")
        for name, value in dict(embed_dim=embed_dim, stem_width=stem_width, num_classes=num_classes,
                                in_chans=in_chans).items():
            check_positive_int(name, value)
        self.stem = nn.Sequential(
            ConvNormAct(in_chans, stem_width, 3, 1, act="gelu"),
            ConvNormAct(stem_width, 2 * stem_width, 3, 2, act="gelu"),
            ConvNormAct(2 * stem_width, 4 * stem_width, 3, 1, act="gelu"),
            nn.Conv2d(4 * stem_width, embed_dim, 3, 2, 1, bias=False))
        rates = drop_path_rates(drop_path_rate, sum(depths))
        self.stages = nn.ModuleList()
        for i, (depth, heads, dilated) in enumerate(zip(depths, num_heads, dilated_stages)):
            start = sum(depths[:i])
            self.stages.append(DilateStage(
                embed_dim * 2 ** i, depth, i < len(depths) - 1, rates[start:start + depth], num_heads=heads,
                dilations=dilations if dilated else None, kernel_size=kernel_size, mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias, drop=drop_rate, attn_drop=attn_drop_rate, cpe=cpe))
        self.num_features = embed_dim * 2 ** (len(depths) - 1)
        self.norm = nn.LayerNorm(self.num_features, eps=1e-6)
        self.head = nn.Linear(self.num_features, num_classes)
        self.apply(trunc_normal_init)
        for m in self.modules():  # MSDA's Q/K/V is a 1 x 1 convolution in the authors' code: PyTorch's default init
            if isinstance(m, MultiScaleDilatedAttention):
                m.qkv.reset_parameters()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, num_features, ceil(H/32), ceil(W/32)), the last stage's map (before the norm)."""
        check_images("DilateFormer", x)
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.forward_features(x).flatten(2).transpose(1, 2))
        return self.head(x.mean(dim=1))


_VARIANTS = {
    "tiny": dict(embed_dim=72, depths=(2, 2, 6, 2)),
    "small": dict(embed_dim=72, depths=(3, 5, 8, 3)),
    "base": dict(embed_dim=96, depths=(4, 8, 10, 3)),
}
for _size, _cfg in _VARIANTS.items():
    register_model(f"dilateformer_{_size}", DilateFormer, num_heads=(3, 6, 12, 24), **_cfg)
