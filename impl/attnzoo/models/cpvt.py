"""CPVT: conditional positional encodings for vision transformers (Chu et al., ICLR 2023, arXiv:2102.10882).

A ViT/DeiT adds a learned table of position embeddings, one vector per patch position, laid out for one input size:
other sizes need the table interpolated. CPVT generates the encoding from the tokens themselves. The **position
encoding generator** (PEG, Sec. 3.2, Fig. 2) reshapes the L = H * W patch tokens X (N, L, C) to their (C, H, W) grid
and adds a k x k depthwise convolution of it (zero-padded, k = 3):

    PEG(X) = X + DWConv_kxk(X),

so each token receives a code computed from its neighbourhood; the zero padding at the borders tells tokens where
they are, and the encoding follows the input to any size. The class token has no position and is left out
(the paper's Algorithm 1). CPVT is DeiT with the position table removed and one PEG after the first encoder block
("position 0", the paper's best place, Table 6); ``peg_positions`` takes several positions (-1: before the first
block), as in the paper's ablation.

CPVT-GAP (Sec. 4.3) also drops the class token: the final LayerNorm's tokens are averaged (global average pooling)
and fed to the head, as the authors' released PEG + GAP code does (Meituan-AutoML/Twins, gvt.py lines 305-384:
``PosCNN`` and ``CPVTV2.forward_features``).

Sizes: CPVT-Ti/S/B are DeiT-Ti/S/B (widths 192/384/768, 3/6/12 heads, 12 blocks, 16 x 16 patches; the paper's
Table 1 and Sec. 4.1). ``cpvt_*`` keep the class token, ``cpvt_*_gap`` pool.

Departures: the CPVT repository (Meituan-AutoML/CPVT) releases no DeiT-based code, only the PEG in the Twins
repository; we follow Algorithm 1 for the class token and Twins' ``PosCNN`` for the rest: a biased depthwise
convolution, initialised N(0, 2 / fan_out) with fan_out = k * k (per group), zero bias (``CPVTV2._init_weights``);
the other layers are initialised as DeiT's. Inputs whose sides are not multiples of the patch are zero-padded on the
right and bottom (the ViT patch embedding of this package); any size works, there is no table to resize.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..layers import TokenAttention, check_positive_int, tokens_to_grid
from ..registry import register_attention, register_model
from .vit import VisionTransformer


@register_attention("peg", layout="nlc")
class PositionEncodingGenerator(TokenAttention):
    """PEG: (N, L, C) tokens on an (H, W) grid -> X + DWConv_kxk(X), (N, L, C); maps (N, C, H, W) -> same.

    Args: channels, kernel_size (k, odd; 3 as the paper and the authors' code).
    """

    def __init__(self, channels: int, kernel_size: int = 3):
        super().__init__(channels)
        check_positive_int("kernel_size", kernel_size)
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (a centred, zero-padded window), got {kernel_size}")
        self.proj = nn.Conv2d(channels, channels, kernel_size, 1, kernel_size // 2, groups=channels)
        if not self.proj.weight.is_meta:
            nn.init.normal_(self.proj.weight, std=(2.0 / kernel_size ** 2) ** 0.5)
            nn.init.zeros_(self.proj.bias)

    def forward_tokens(self, x: torch.Tensor, hw: tuple[int, int] | None) -> torch.Tensor:
        grid = tokens_to_grid(x, hw).permute(0, 3, 1, 2)                    # (N, C, H, W)
        return x + self.proj(grid).flatten(2).transpose(1, 2)


class ConditionalPositionViT(VisionTransformer):
    """CPVT: (N, in_chans, H, W) -> (N, num_classes) logits; any H, W >= 1.

    Args: those of ``VisionTransformer`` (``img_size`` only checks the patch size: there is no position table), plus
        peg_positions: the blocks after which a PEG is applied (0: after the first; -1: before the first block).
        peg_kernel: the PEG's kernel size k. global_pool: no class token; the head reads the mean of the final
        normalised tokens (CPVT-GAP).
    """

    def __init__(self, *args, peg_positions=(0,), peg_kernel: int = 3, global_pool: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        del self.pos_embed
        self.global_pool = bool(global_pool)
        if self.global_pool:
            del self.cls_token
        depth = len(self.blocks)
        positions = tuple(peg_positions)
        if not positions or len(set(positions)) != len(positions) or any(
                isinstance(p, bool) or not isinstance(p, int) or not -1 <= p < depth for p in positions):
            raise ValueError(f"peg_positions must be distinct block indices in [-1, {depth - 1}] (-1: before the "
                             f"first block), got {peg_positions!r}")
        self.peg_positions = tuple(sorted(positions))
        self.pegs = nn.ModuleList(PositionEncodingGenerator(self.num_features, peg_kernel) for _ in positions)

    def _peg(self, i: int, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        """Apply the PEG of position ``i`` to the patch tokens (the class token, if any, passes unchanged)."""
        peg = self.pegs[self.peg_positions.index(i)]
        if self.global_pool:
            return peg(x, hw)
        return torch.cat([x[:, :1], peg(x[:, 1:], hw)], dim=1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, [1 +] L, D) normalised tokens (class token first unless ``global_pool``)."""
        x, hw = self.patch_embed(x)
        if not self.global_pool:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.pos_drop(x)
        if -1 in self.peg_positions:
            x = self._peg(-1, x, hw)
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.peg_positions:
                x = self._peg(i, x, hw)
        return self.norm(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.forward_features(x)
        return self.head(tokens.mean(dim=1) if self.global_pool else tokens[:, 0])


_VARIANTS = {"ti": dict(embed_dim=192, num_heads=3), "s": dict(embed_dim=384, num_heads=6),
             "b": dict(embed_dim=768, num_heads=12)}
for _size, _cfg in _VARIANTS.items():
    register_model(f"cpvt_{_size}", ConditionalPositionViT, img_size=224, patch_size=16, depth=12, **_cfg)
    register_model(f"cpvt_{_size}_gap", ConditionalPositionViT, img_size=224, patch_size=16, depth=12,
                   global_pool=True, **_cfg)
