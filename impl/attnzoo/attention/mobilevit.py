"""MobileViT block (Mehta & Rastegari, "MobileViT: Light-weight, General-purpose, and Mobile-friendly Vision
Transformer", ICLR 2022, arXiv:2110.02178).

The block lets a small CNN see globally without giving up the pixel grid. For a C-channel map X (H x W):

1. Local: a 3x3 conv (BN, SiLU) then a 1x1 conv to d channels: X_L (d x H x W).
2. Unfold: cut X_L into non-overlapping patches of P = h x w pixels (2 x 2); the pixels at the same position p
   inside every patch form one sequence of N = HW / P tokens, X_U (P x N x d).
3. Global: L pre-norm transformer layers on each of the P sequences (multi-head SDPA attention, FFN with SiLU),
   then a LayerNorm. A token attends to the same-position pixel of every other patch, and together with the
   3x3 conv that already mixed each patch, every pixel receives information from the whole image.
4. Fold back to d x H x W, project to C with a 1x1 conv (BN, SiLU), concatenate with the input X and fuse the
   2C channels with a 3x3 conv (BN, SiLU) back to C.

Models: MobileViT-XXS, -XS and -S (MobileNetV2 inverted residuals with SiLU and, in the last three stages, a
MobileViT block after the stride-2 MV2 block), registered as ``mobilevit_xxs``, ``mobilevit_xs``, ``mobilevit_s``;
widths, depths and 4 heads per attention as in the authors' ml-cvnets configuration.

Inputs whose sides are not multiples of the patch size: as in the authors' code (and timm), the map is resized
bilinearly to the next multiple before unfolding and back after folding (``odd_size="resize"``, the default, so
their checkpoints reproduce). ``odd_size="pad"`` is our alternative: zero-pad at the right and bottom, mask the
padded tokens out as keys (they never change the real pixels' outputs) and cut the padding off after folding,
so no pixel is interpolated.
Dropout is off by default (the authors train with 0.1 in the transformer). Defaults for the registered block at
64 channels: d = 96, FFN 192, 2 layers, 4 heads, 2 x 2 patches (MobileViT-XS's first MobileViT block, which
has exactly 64 input channels); in general d defaults to 1.5 C rounded to a multiple of the heads.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import (ConvNormAct, Mlp, MultiHeadSelfAttention, check_choice, check_positive_int, make_divisible,
                      to_2tuple)
from ..registry import register_attention, register_model
from ..timm import register_timm_rules


class TransformerLayer(nn.Module):
    """Pre-norm transformer layer on (B, N, d): x + MHSA(LN(x)), x + FFN(LN(x)) with a SiLU FFN."""

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, attn_drop: float = 0.0, drop: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = MultiHeadSelfAttention(dim, num_heads, attn_drop=attn_drop, proj_drop=drop)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, ffn_dim, act="silu", drop=drop)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), attn_bias=key_mask)
        return x + self.mlp(self.norm2(x))


@register_attention("mobilevit")
class MobileViTBlock(nn.Module):
    """(N, C, H, W) -> (N, C, H, W): local conv, unfold into patches, transformer over patches, fold, fuse.

    Args:
        channels: C. transformer_dim: d (default 1.5 C, a multiple of ``num_heads``). ffn_dim: FFN width
        (default 2 d). depth: L transformer layers. num_heads: attention heads (ml-cvnets: 4).
        patch_size: (h, w) of the unfolding patches (paper: 2 x 2). kernel_size: of the local and fusion convs.
        attn_drop, drop: dropout in attention and transformer. fusion: concatenate the input and fuse (paper).
        odd_size: "resize" (authors) or "pad" (masked zero padding) for sides not divisible by the patch size.
    """

    def __init__(self, channels: int, transformer_dim: int | None = None, ffn_dim: int | None = None,
                 depth: int = 2, num_heads: int = 4, patch_size: int | tuple[int, int] = 2, kernel_size: int = 3,
                 attn_drop: float = 0.0, drop: float = 0.0, fusion: bool = True, odd_size: str = "resize"):
        super().__init__()
        self.odd_size = check_choice("odd_size", odd_size, ("resize", "pad"))
        check_positive_int("channels", channels)
        check_positive_int("num_heads", num_heads)
        check_positive_int("depth", depth)
        check_positive_int("kernel_size", kernel_size)
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd to keep the spatial size, got {kernel_size}")
        d = transformer_dim or make_divisible(1.5 * channels, num_heads, min_value=num_heads)
        check_positive_int("transformer_dim", d)
        ffn_dim = check_positive_int("ffn_dim", ffn_dim or 2 * d)
        self.patch_size = to_2tuple(patch_size)
        for i, p in enumerate(self.patch_size):
            check_positive_int(f"patch_size[{i}]", p)
        self.local_rep = nn.Sequential(ConvNormAct(channels, channels, kernel_size, act="silu"),
                                       nn.Conv2d(channels, d, 1, bias=False))
        self.layers = nn.ModuleList([TransformerLayer(d, num_heads, ffn_dim, attn_drop, drop) for _ in range(depth)])
        self.norm = nn.LayerNorm(d)
        self.proj = ConvNormAct(d, channels, 1, act="silu")
        self.fusion = ConvNormAct(2 * channels, channels, kernel_size, act="silu") if fusion else None

    def unfold(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, tuple[int, int]]:
        """(B, d, H, W) -> patches (B * P, N, d), the key mask (or None) and the padded grid of patches."""
        b, d, h, w = x.shape
        ph, pw = self.patch_size
        nh, nw = math.ceil(h / ph), math.ceil(w / pw)
        pad_h, pad_w = nh * ph - h, nw * pw - w
        mask = None
        if (pad_h or pad_w) and self.odd_size == "resize":
            x = F.interpolate(x, size=(nh * ph, nw * pw), mode="bilinear", align_corners=False)
        elif pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
            valid = torch.zeros(nh * ph, nw * pw, dtype=torch.bool, device=x.device)
            valid[:h, :w] = True
            valid = valid.reshape(nh, ph, nw, pw).permute(1, 3, 0, 2).reshape(ph * pw, nh * nw)  # (P, N)
            valid = valid | ~valid.any(dim=1, keepdim=True)  # a pixel slot with no real token: unmask (it is dropped)
            mask = valid.repeat(b, 1)[:, None, None, :]  # (B * P, 1, 1, N) for SDPA, True = attend
        # (B, d, nh, ph, nw, pw) -> (B, ph, pw, nh, nw, d) -> (B * P, N, d)
        patches = x.reshape(b, d, nh, ph, nw, pw).permute(0, 3, 5, 2, 4, 1).reshape(b * ph * pw, nh * nw, d)
        return patches, mask, (nh, nw)

    def fold(self, patches: torch.Tensor, grid: tuple[int, int], hw: tuple[int, int]) -> torch.Tensor:
        """Inverse of ``unfold``: (B * P, N, d) -> (B, d, H, W)."""
        (nh, nw), (ph, pw) = grid, self.patch_size
        d = patches.shape[-1]
        b = patches.shape[0] // (ph * pw)
        x = patches.reshape(b, ph, pw, nh, nw, d).permute(0, 5, 3, 1, 4, 2).reshape(b, d, nh * ph, nw * pw)
        if self.odd_size == "resize" and tuple(x.shape[-2:]) != tuple(hw):
            return F.interpolate(x, size=tuple(hw), mode="bilinear", align_corners=False)
        return x[:, :, : hw[0], : hw[1]]

    @torch.no_grad()
    def attention_weights(self, x: torch.Tensor, layer: int = 0) -> tuple[torch.Tensor, tuple[int, int]]:
        """Softmax weights (B, P, heads, N, N) of transformer layer ``layer`` (padded keys masked), and the grid."""
        patches, mask, grid = self.unfold(self.local_rep(x))
        for blk in self.layers[:layer]:
            patches = blk(patches, mask)
        attn = self.layers[layer].attn
        bp, n, _ = patches.shape
        qkv = attn.qkv(self.layers[layer].norm1(patches)).reshape(bp, n, 3, attn.num_heads, attn.head_dim)
        q, k = qkv.permute(2, 0, 3, 1, 4)[:2]
        logits = q @ k.transpose(-2, -1) * attn.head_dim ** -0.5
        if mask is not None:
            logits = logits.masked_fill(~mask, float("-inf"))
        p = self.patch_size[0] * self.patch_size[1]
        return logits.softmax(dim=-1).reshape(bp // p, p, attn.num_heads, n, n), grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        patches, mask, grid = self.unfold(self.local_rep(x))
        for layer in self.layers:
            patches = layer(patches, mask)
        y = self.proj(self.fold(self.norm(patches), grid, (h, w)))
        return self.fusion(torch.cat([x, y], dim=1)) if self.fusion is not None else y


class InvertedResidual(nn.Module):
    """MobileNetV2 block with SiLU: 1x1 expand, 3x3 depthwise (stride), 1x1 project; residual when shapes match."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, expand_ratio: float = 4.0):
        super().__init__()
        hidden = make_divisible(round(in_ch * expand_ratio), 8)
        layers = [ConvNormAct(in_ch, hidden, 1, act="silu")] if expand_ratio != 1 else []
        layers += [ConvNormAct(hidden, hidden, 3, stride, groups=hidden, act="silu"),
                   ConvNormAct(hidden, out_ch, 1, act=None)]
        self.block = nn.Sequential(*layers)
        self.use_res = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.use_res else y


class MobileViT(nn.Module):
    """(N, in_chans, H, W) -> (N, num_classes); any H, W >= 1.

    Args:
        channels: stem, then the output width of the five stages. dims, depths: transformer width and depth of
        the MobileViT blocks in stages 3-5. expand_ratio: of the MV2 blocks. num_heads: per attention.
        last_exp: width of the final 1x1 conv is min(last_exp * channels[-1], 960).
    """

    def __init__(self, channels=(16, 32, 64, 96, 128, 160), dims=(144, 192, 240), depths=(2, 4, 3),
                 expand_ratio: float = 4.0, num_heads: int = 4, last_exp: int = 4, in_chans: int = 3,
                 num_classes: int = 1000, drop: float = 0.0):
        super().__init__()
        check_positive_int("num_classes", num_classes)
        c = channels
        self.stem = ConvNormAct(in_chans, c[0], 3, 2, act="silu")
        self.stages = nn.Sequential(
            InvertedResidual(c[0], c[1], 1, expand_ratio),
            nn.Sequential(InvertedResidual(c[1], c[2], 2, expand_ratio),
                          InvertedResidual(c[2], c[2], 1, expand_ratio), InvertedResidual(c[2], c[2], 1, expand_ratio)),
            *[nn.Sequential(InvertedResidual(c[i + 2], c[i + 3], 2, expand_ratio),
                            MobileViTBlock(c[i + 3], dims[i], 2 * dims[i], depths[i], num_heads, drop=drop))
              for i in range(3)],
        )
        exp = min(last_exp * c[-1], 960)
        self.conv_exp = ConvNormAct(c[-1], exp, 1, act="silu")
        self.num_features = exp
        self.head = nn.Linear(exp, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_exp(self.stages(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x).mean(dim=(2, 3)))


# timm's MobileViT (timm/models/mobilevit.py on byobnet.py): conv-norm-act units are ``<name>.conv`` and
# ``<name>.bn``; the first stage is a one-block list there and a single block here.
_TIMM_UNITS = {"conv1_1x1": "block.0", "conv2_kxk": "block.1", "conv3_1x1": "block.2", "conv_kxk": "local_rep.0",
               "conv_proj": "proj", "conv_fusion": "fusion", "final_conv": "conv_exp", "stem": "stem"}
register_timm_rules(MobileViT, renames=(
    (r"(^|\.)(\w+)\.(conv|bn)\.", lambda m: f"{m[1]}{_TIMM_UNITS.get(m[2], m[2])}.{'01'[m[3] == 'bn']}."),
    (r"^stages\.0\.0\.", "stages.0."), (r"\.conv_1x1\.", ".local_rep.1."), (r"\.transformer\.", ".layers."),
    (r"^head\.fc\.", "head."),
))

# ml-cvnets configuration (Table 4 / Fig. 1 of the paper): widths, transformer widths and depths.
register_model("mobilevit_xxs", MobileViT, timm="mobilevit_xxs", channels=(16, 16, 24, 48, 64, 80), dims=(64, 80, 96),
               expand_ratio=2.0)
register_model("mobilevit_xs", MobileViT, timm="mobilevit_xs", channels=(16, 32, 48, 64, 80, 96), dims=(96, 120, 144))
register_model("mobilevit_s", MobileViT, timm="mobilevit_s", channels=(16, 32, 64, 96, 128, 160), dims=(144, 192, 240))
