"""ShiftViT (Wang et al., AAAI 2022, arXiv:2201.10801).

Is attention what makes vision transformers work? ShiftViT replaces every attention layer of a Swin-like
hierarchical transformer by a **shift operation** with zero parameters and zero FLOPs (Sec. 3.1, Fig. 1): of the C
channels, four groups of g = C / n_div channels (gamma = 4 / n_div = 1/3 of them by default) move one pixel left,
right, up and down respectively, with zeros entering at the border they move away from; the other channels are
unchanged. A block is then (Fig. 2b)

    x <- Shift(x);   x <- x + MLP(Norm(x)),

so all spatial mixing comes from the shifts and the stacking of blocks, and all channel mixing from the MLP.

The network (Sec. 3.2) follows Swin: a 4 x 4 stride-4 patch embedding with a normalization, four stages at strides
4, 8, 16, 32 joined by patch merging (normalization, then a 2 x 2 stride-2 convolution doubling the width), a final
normalization, global average pooling and a linear classifier. Because the shift costs nothing, the "regular"
models spend the attention's budget on depth (MLP ratio 2, more blocks); the "light" models keep Swin's depths.

Follows the authors' released code (microsoft/SPACH, models/shiftvit.py and models/registry.py): channels-first
maps, the normalization is GroupNorm with one group (normalizing each sample over C, H, W: what the authors use to
"approximate LayerNorm" on (N, C, H, W)), 1 x 1 convolutions with GELU in the MLP (here linear layers on the
channels, same weights), truncated-normal (std 0.02) init of linear and convolution weights; the variants
``shiftvit_{light,r2}_{tiny,small,base}`` with their depths, MLP ratios, n_div (12, or 16 for the base models, which
shift a quarter of the channels) and drop-path rates. Odd sizes: the strided convolutions floor as there, so any
image of at least 32 x 32 pixels works.

The shift alone is registered as the attention ``shiftvit_shift`` ((N, C, H, W) -> same, no parameters).
"""
from __future__ import annotations

import functools

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import DropPath, Mlp, check_positive_int, check_stages, drop_path_rates, trunc_normal_init
from ..registry import register_attention, register_model


def shift_channels(x: torch.Tensor, n_div: int) -> torch.Tensor:
    """(N, C, H, W) -> same: channel groups [0, g), [g, 2g), [2g, 3g), [3g, 4g) (g = C // n_div) move one pixel
    left, right, up, down (zeros enter where they leave), the rest stay. Slicing and padding only."""
    g = x.shape[1] // n_div
    left, right, up, down, rest = torch.split(x, [g, g, g, g, x.shape[1] - 4 * g], dim=1)
    return torch.cat([F.pad(left[..., 1:], (0, 1)), F.pad(right[..., :-1], (1, 0)),
                      F.pad(up[..., 1:, :], (0, 0, 0, 1)), F.pad(down[..., :-1, :], (0, 0, 1, 0)), rest], dim=1)


@register_attention("shiftvit_shift")
class Shift(nn.Module):
    """ShiftViT's shift operation, (N, C, H, W) -> same with four groups of C // n_div channels shifted by one pixel
    (left, right, up, down) and zero-filled. No parameters.

    Args:
        channels: C (at least n_div, so that each group has a channel). n_div: 1 / (group share); 12 in ShiftViT-T/S
            (a third of the channels shift), 16 in ShiftViT-B.
    """

    def __init__(self, channels: int, n_div: int = 12):
        super().__init__()
        self.channels = check_positive_int("channels", channels)
        self.n_div = check_positive_int("n_div", n_div)
        if n_div < 4 or channels < n_div:
            raise ValueError(f"ShiftViT shifts four groups of channels // n_div channels: need n_div >= 4 and "
                             f"channels >= n_div, got channels={channels}, n_div={n_div}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return shift_channels(x, self.n_div)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, n_div={self.n_div} (shifted: {4 * (self.channels // self.n_div)})"


class ShiftBlock(nn.Module):
    """(N, C, H, W) -> same: x = Shift(x); x = x + MLP(GN1(x))."""

    def __init__(self, dim: int, n_div: int, mlp_ratio: float, drop: float, drop_path: float):
        super().__init__()
        self.shift = Shift(dim, n_div)
        self.norm = nn.GroupNorm(1, dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.shift(x)
        return x + self.drop_path(self.mlp(self.norm(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2))


class ShiftViT(nn.Module):
    """(N, in_chans, H, W) -> (N, num_classes) logits; any H, W >= 32.

    Args:
        embed_dim: C of stage 1 (doubled at every stage). depths: blocks per stage (four). n_div: the shifted share
        is 4 / n_div. mlp_ratio: MLP width / C. patch_size: P of the embedding (4). drop_rate: dropout after the
        embedding and in the MLPs. drop_path_rate: stochastic depth, rising linearly over all blocks.
    """

    def __init__(self, in_chans: int = 3, num_classes: int = 1000, embed_dim: int = 96,
                 depths: tuple[int, ...] = (2, 2, 6, 2), n_div: int = 12, mlp_ratio: float = 4.0,
                 patch_size: int = 4, drop_rate: float = 0.0, drop_path_rate: float = 0.0):
        super().__init__()
        for name, value in dict(in_chans=in_chans, num_classes=num_classes, embed_dim=embed_dim,
                                patch_size=patch_size).items():
            check_positive_int(name, value)
        dims = tuple(embed_dim * 2 ** i for i in range(4))
        depths, _ = check_stages(depths, dims)
        self.min_size = patch_size * 8
        self.patch_embed = nn.Sequential(nn.Conv2d(in_chans, embed_dim, patch_size, patch_size),
                                         nn.GroupNorm(1, embed_dim), nn.Dropout(drop_rate))
        rates = drop_path_rates(drop_path_rate, sum(depths))
        stages, start = [], 0
        for i, depth in enumerate(depths):
            blocks = [ShiftBlock(dims[i], n_div, mlp_ratio, drop_rate, rates[start + j]) for j in range(depth)]
            if i < 3:  # patch merging at the end of stages 1-3, as the authors' BasicLayer
                blocks += [nn.GroupNorm(1, dims[i]), nn.Conv2d(dims[i], dims[i + 1], 2, 2, bias=False)]
            stages.append(nn.Sequential(*blocks))
            start += depth
        self.stages = nn.Sequential(*stages)
        self.num_features = dims[-1]
        self.norm = nn.GroupNorm(1, self.num_features)
        self.head = nn.Linear(self.num_features, num_classes)
        self.apply(functools.partial(trunc_normal_init, types=(nn.Linear, nn.Conv2d)))  # every weight, as there

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, 8C, H / 32, W / 32) normalized map (floored)."""
        if x.shape[-2] < self.min_size or x.shape[-1] < self.min_size:
            raise ValueError(f"ShiftViT needs images of at least {self.min_size}x{self.min_size} pixels (one token "
                             f"after the last patch merging), got {x.shape[-2]}x{x.shape[-1]}")
        return self.norm(self.stages(self.patch_embed(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x).mean(dim=(2, 3)))


_VARIANTS = {  # models/registry.py of microsoft/SPACH
    "shiftvit_light_tiny": dict(embed_dim=96, depths=(2, 2, 6, 2), mlp_ratio=4.0, n_div=12, drop_path_rate=0.2),
    "shiftvit_r2_tiny": dict(embed_dim=96, depths=(6, 8, 18, 6), mlp_ratio=2.0, n_div=12, drop_path_rate=0.2),
    "shiftvit_light_small": dict(embed_dim=96, depths=(2, 2, 18, 2), mlp_ratio=4.0, n_div=12, drop_path_rate=0.4),
    "shiftvit_r2_small": dict(embed_dim=96, depths=(10, 18, 36, 10), mlp_ratio=2.0, n_div=12, drop_path_rate=0.4),
    "shiftvit_light_base": dict(embed_dim=128, depths=(2, 2, 18, 2), mlp_ratio=4.0, n_div=16, drop_path_rate=0.5),
    "shiftvit_r2_base": dict(embed_dim=128, depths=(10, 18, 36, 10), mlp_ratio=2.0, n_div=16, drop_path_rate=0.6),
}
for _name, _cfg in _VARIANTS.items():
    register_model(_name, ShiftViT, **_cfg)
