"""SegFormer (Xie et al., NeurIPS 2021, arXiv:2105.15203): the Mix Transformer encoder and the all-MLP decoder.

**Mix Transformer (MiT) encoder.** A four-stage pyramid (strides 4, 8, 16, 32) like PVT (``models.pvt``), with three
changes (Sec. 3.1): *overlapping* patch merging (a K x K stride-S convolution with padding K // 2: 7/4 for the first
stage, 3/2 after; then a LayerNorm); PVT's spatial-reduction attention (``pvt_sra``, reused here: one
implementation); and **no position tables** -- position comes from a 3 x 3 depthwise convolution inside the
feed-forward network (Mix-FFN, Eq. 3):

    x_out = MLP(GELU(Conv_{3x3, depthwise}(MLP(x_in)))) + x_in,

so the encoder takes any input size without resampling anything. Each stage ends with a LayerNorm; the four maps
(N, C_i, ceil(H / 4 / 2^i), ceil(W / 4 / 2^i)) are the features for the decoder. For ImageNet classification (how the
encoders are pre-trained) the last map is averaged over positions and fed to a linear head.

**All-MLP decoder** (Sec. 3.2, Eq. 4): each level is projected to C channels by a linear layer, upsampled bilinearly
to 1/4 resolution, the four are concatenated (deepest first, as the authors' code) and fused by a 1 x 1 conv + BN +
ReLU, then dropout (p = 0.1, channel-wise as mmseg's decode heads) and a 1 x 1 classifier give per-pixel logits at
1/4 of the input resolution, (N, num_classes, ceil(H / 4), ceil(W / 4)); the authors' mmseg pipeline upsamples them
to the image for the loss and at test time.

Sizes (NVlabs/SegFormer, mix_transformer.py and local_configs): widths (32, 64, 160, 256) for B0 and
(64, 128, 320, 512) for B1-B5, heads (1, 2, 5, 8), reduction ratios (8, 4, 2, 1), MLP ratio 4, depths B0/B1
(2, 2, 2, 2), B2 (3, 4, 6, 3), B3 (3, 4, 18, 3), B4 (3, 8, 27, 3), B5 (3, 6, 40, 3); decoder width 256 for B0/B1 and
768 for B2-B5; LayerNorm eps 1e-6 in the blocks and stage ends, 1e-5 in the patch merging and SRA (PyTorch's
default, as the authors). ``segformer_b*`` default to ADE20K's 150 classes.

**timm.** timm has no MiT, but its PVT v2 (``pvt_v2_b*``, the same authors' follow-up) is the same encoder with a
classification head (token mean of the last, normalized map; linear), and differs from MiT only in the MLP ratios
of B0-B4: PVT v2 uses (8, 8, 4, 4), MiT 4 everywhere. B5 uses 4 in both, so ``mit_b5`` and ``pvt_v2_b5`` are the same
architecture and ``mit_b5`` loads timm's weights one to one (parity-tested); ``mlp_ratios=(8, 8, 4, 4)`` turns any
``mit_b*`` into the corresponding PVT v2. The authors released MiT's ImageNet weights but not its classification
head's code; the head here is PVT v2's.

Sizes of input: any size on which every stage's reduction convolution has one window (29 x 29 and up for the released
models; a ValueError names it otherwise). Departures: none in the computation; attention runs in
``F.scaled_dot_product_attention``; drop_path_rate defaults to 0 (the authors' configs train with 0.1).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import check_images, ConvNormAct, check_positive_int
from ..layers.drop import stage_drop_path_rates
from ..registry import register_model
from ..timm import register_timm_rules
from .pvt import Block, PatchEmbed, TokenStage, check_pyramid, stage_outputs


class MixFFN(nn.Module):
    """Mix-FFN: Linear -> 3x3 depthwise conv on the token grid -> GELU -> Linear; (N, L, C) tokens, grid ``hw``.
    The blocks are PVT's (``models.pvt.Block``: SRA, LayerNorms with eps 1e-6) with this feed-forward network."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        x = self.fc1(x)
        n, _, c = x.shape
        x = self.dwconv(x.transpose(1, 2).reshape(n, c, *hw)).flatten(2).transpose(1, 2)
        return self.drop(self.fc2(self.drop(self.act(x))))


class MiTStage(TokenStage):
    """Overlapping patch merging (``models.pvt.PatchEmbed`` with padding P // 2), blocks with Mix-FFN, LayerNorm:
    (N, C_in, H, W) -> (N, D, ceil(H / S), ceil(W / S))."""

    def __init__(self, in_chans: int, dim: int, patch_size: int, stride: int, depth_rates: list[float],
                 num_heads: int, mlp_ratio: float, sr_ratio: int, qkv_bias: bool, drop: float, attn_drop: float):
        super().__init__()
        self.patch_embed = PatchEmbed(in_chans, dim, patch_size, stride, patch_size // 2)
        self.blocks = nn.ModuleList([Block(dim, num_heads, mlp_ratio, sr_ratio, qkv_bias, drop, attn_drop, r, MixFFN)
                                     for r in depth_rates])
        self.norm = nn.LayerNorm(dim, eps=1e-6)


def _mit_init(m: nn.Module) -> None:
    """The authors' init: truncated normal (std 0.02) linear weights, zero biases; conv weights N(0, 2 / fan_out)
    with fan_out = k * k * C_out / groups."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Conv2d):
        fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
        nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
        if m.bias is not None:
            nn.init.zeros_(m.bias)


class MixVisionTransformer(nn.Module):
    """MiT encoder with an ImageNet head: (N, in_chans, H, W) -> (N, num_classes) logits (num_classes=0: no head;
    ``forward_features`` gives the four maps).

    Args:
        embed_dims, num_heads, mlp_ratios, sr_ratios, depths: per stage (4 entries). qkv_bias: Q/KV biases.
        drop_rate: dropout in the blocks and before the head; attn_drop_rate; drop_path_rate: stochastic depth
        rising linearly over all blocks (the authors' rule).
    """

    def __init__(self, in_chans: int = 3, num_classes: int = 1000, embed_dims=(32, 64, 160, 256),
                 num_heads=(1, 2, 5, 8), mlp_ratios=(4, 4, 4, 4), sr_ratios=(8, 4, 2, 1), depths=(2, 2, 2, 2),
                 qkv_bias: bool = True, drop_rate: float = 0.0, attn_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0):
        super().__init__()
        depths, embed_dims, num_heads, sr_ratios, mlp_ratios = check_pyramid(depths, embed_dims, num_heads,
                                                                             sr_ratios, mlp_ratios)
        check_positive_int("in_chans", in_chans)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f"num_classes must be a non-negative integer (0: no head), got {num_classes!r}")
        self.sr_ratios = sr_ratios
        self.min_input_size = next(s for s in range(1, 4097) if all(g >= r for g, r in zip(self.grids(s), sr_ratios)))
        rates = stage_drop_path_rates(drop_path_rate, depths)
        self.stages = nn.ModuleList([
            MiTStage(in_chans if i == 0 else embed_dims[i - 1], embed_dims[i], 7 if i == 0 else 3, 4 if i == 0 else 2,
                     rates[i], num_heads[i], mlp_ratios[i], sr_ratios[i], qkv_bias, drop_rate, attn_drop_rate)
            for i in range(4)])
        self.embed_dims = embed_dims
        self.num_features = embed_dims[-1]
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dims[-1], num_classes) if num_classes else None
        self.apply(_mit_init)

    @staticmethod
    def grids(size: int) -> list[int]:
        """The four stages' grid sides for an input side ``size``: ceil(size / 4), then halved (rounding up)."""
        sides = [-(-size // 4)]
        for _ in range(3):
            sides.append(-(-sides[-1] // 2))
        return sides

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(N, C, H, W) -> the four normalized stage maps (N, C_i, H_i, W_i), strides 4, 8, 16, 32 (rounded up)."""
        check_images(f"MiT with sr_ratios={self.sr_ratios}", x, self.min_input_size, "one reduction window per stage")
        return stage_outputs(self.stages, x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x)[-1].mean(dim=(2, 3))
        return x if self.head is None else self.head(self.head_drop(x))


class AllMLPDecoder(nn.Module):
    """SegFormer's decode head: four maps (strides 4-32) -> (N, num_classes, H_1, W_1) logits at the first map's size.

    Per level a linear layer to ``decoder_dim``, bilinear upsampling (corners not aligned) to the first map, concat
    (deepest first), 1x1 conv + BN + ReLU to ``decoder_dim``, Dropout2d, 1x1 classifier.
    """

    def __init__(self, in_dims, decoder_dim: int, num_classes: int, dropout: float = 0.1):
        super().__init__()
        self.linear_c = nn.ModuleList([nn.Linear(c, decoder_dim) for c in in_dims])
        self.linear_fuse = ConvNormAct(len(in_dims) * decoder_dim, decoder_dim, 1)
        self.dropout = nn.Dropout2d(dropout)
        self.linear_pred = nn.Conv2d(decoder_dim, num_classes, 1)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        size = feats[0].shape[-2:]
        levels = []
        for f, linear in zip(feats, self.linear_c):
            y = linear(f.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(f.shape[0], -1, *f.shape[-2:])
            if y.shape[-2:] != size:
                y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
            levels.append(y)
        return self.linear_pred(self.dropout(self.linear_fuse(torch.cat(levels[::-1], dim=1))))


class SegFormer(nn.Module):
    """(N, in_chans, H, W) images -> (N, num_classes, ceil(H / 4), ceil(W / 4)) per-pixel logits (``output_stride``).

    Args: the MiT encoder's (see ``MixVisionTransformer``), decoder_dim (256 for B0/B1, 768 for B2-B5),
    decoder_dropout (0.1), num_classes (150, ADE20K).
    """

    output_stride = 4

    def __init__(self, num_classes: int = 150, in_chans: int = 3, embed_dims=(32, 64, 160, 256),
                 num_heads=(1, 2, 5, 8), mlp_ratios=(4, 4, 4, 4), sr_ratios=(8, 4, 2, 1), depths=(2, 2, 2, 2),
                 decoder_dim: int = 256, decoder_dropout: float = 0.1, qkv_bias: bool = True,
                 drop_rate: float = 0.0, attn_drop_rate: float = 0.0, drop_path_rate: float = 0.0):
        super().__init__()
        check_positive_int("num_classes", num_classes)
        check_positive_int("decoder_dim", decoder_dim)
        self.encoder = MixVisionTransformer(in_chans, 0, embed_dims, num_heads, mlp_ratios, sr_ratios, depths,
                                            qkv_bias, drop_rate, attn_drop_rate, drop_path_rate)
        self.decode_head = AllMLPDecoder(self.encoder.embed_dims, decoder_dim, num_classes, decoder_dropout)
        self.decode_head.apply(_mit_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode_head(self.encoder.forward_features(x))


# timm's PyramidVisionTransformerV2: the first patch embedding sits at the top, the later ones are the stages'
# ``downsample``; everything else has our names.
register_timm_rules(MixVisionTransformer, renames=((r"^patch_embed\.", "stages.0.patch_embed."),
                                                   (r"^stages\.(\d)\.downsample\.", r"stages.\1.patch_embed.")))

_WIDE = (64, 128, 320, 512)
_VARIANTS = {
    "b0": dict(embed_dims=(32, 64, 160, 256), depths=(2, 2, 2, 2), decoder_dim=256),
    "b1": dict(embed_dims=_WIDE, depths=(2, 2, 2, 2), decoder_dim=256),
    "b2": dict(embed_dims=_WIDE, depths=(3, 4, 6, 3), decoder_dim=768),
    "b3": dict(embed_dims=_WIDE, depths=(3, 4, 18, 3), decoder_dim=768),
    "b4": dict(embed_dims=_WIDE, depths=(3, 8, 27, 3), decoder_dim=768),
    "b5": dict(embed_dims=_WIDE, depths=(3, 6, 40, 3), decoder_dim=768),
}
for _size, _cfg in _VARIANTS.items():
    _encoder = {k: v for k, v in _cfg.items() if k != "decoder_dim"}
    register_model(f"mit_{_size}", MixVisionTransformer, timm="pvt_v2_b5" if _size == "b5" else None, **_encoder)
    register_model(f"segformer_{_size}", SegFormer, **_cfg)
