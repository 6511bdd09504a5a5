"""ConvNeXt (Liu, Mao, Wu, Feichtenhofer, Darrell & Xie, CVPR 2022, arXiv:2201.03545).

A ResNet modernised step by step toward the Swin Transformer's design: a "patchify" stem (4x4 convolution,
stride 4, then LayerNorm), stage depths 3:3:9:3 (3:3:27:3 for S/B/L), separate downsampling layers between
stages (LayerNorm, then a 2x2 convolution of stride 2), and an inverted-bottleneck block

    x + gamma * pwconv2(GELU(pwconv1(LN(dwconv7x7(x)))))

with one normalization and one activation per block, a 7x7 depthwise convolution first, a 4x wider hidden
layer, and a learnable per-channel "layer scale" gamma initialised to 1e-6 (the paper's Sec. 2 and App. A;
the value comes from CaiT). Global average pooling, a LayerNorm and a linear classifier end the network.

As in the authors' code (facebookresearch/ConvNeXt, models/convnext.py lines 15-50), the block runs its
LayerNorm and both 1x1 convolutions as ``nn.LayerNorm``/``nn.Linear`` on a channels-last (N, H, W, C) view;
the stem and the downsampling layers normalise channels-first maps (their ``LayerNorm(data_format=
"channels_first")``, lines 119-143; ours is the shared ``layers.LayerNorm2d``, the same function).
``layer_scale_init_value <= 0`` removes the layer scale, as theirs does. Stochastic depth rises linearly
over all blocks from 0 to ``drop_path_rate`` (their line 86). Weights: truncated normal (std 0.02), zero
biases; ``head_init_scale`` multiplies the classifier's initial weights and biases (their lines 99-106).

Sizes (Table 1 / the released code): T (96, 192, 384, 768) x (3, 3, 9, 3); S the same widths x (3, 3, 27, 3);
B (128, 256, 512, 1024) and L (192, 384, 768, 1536) x (3, 3, 27, 3).

Input sizes: each strided convolution (4x4/4 then three 2x2/2) drops the rows and columns that do not fill
a whole window, as the authors' and timm's ``nn.Conv2d`` without padding do, so any input of at least
32 x 32 pixels works (an H x W image ends as a floor(H/32) x floor(W/32) map); smaller ones are a ValueError.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..layers import (check_images, DropPath, LayerNorm2d, Mlp, check_positive_int, check_stages, stage_drop_path_rates,
                      layer_scale)
from ..registry import register_model
from ..timm import register_timm_rules

MIN_INPUT = 32  # the product of the strides: 4 (stem) x 2 x 2 x 2


class ConvNeXtBlock(nn.Module):
    """7x7 depthwise conv -> LayerNorm -> Linear(C, 4C) -> GELU -> Linear(4C, C) -> layer scale, plus shortcut."""

    def __init__(self, dim: int, drop_path: float = 0.0, layer_scale_init_value: float = 1e-6,
                 mlp_ratio: float = 4.0, kernel_size: int = 7):
        super().__init__()
        self.conv_dw = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(mlp_ratio * dim), act="gelu")
        self.gamma = layer_scale(dim, layer_scale_init_value) if layer_scale_init_value > 0 else None
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.mlp(self.norm(self.conv_dw(x).permute(0, 2, 3, 1)))  # channels-last for LN and the 1x1 convs
        if self.gamma is not None:
            y = y * self.gamma
        return x + self.drop_path(y.permute(0, 3, 1, 2))


class ConvNeXtStage(nn.Module):
    """Downsampling (LayerNorm2d + 2x2 conv of stride 2; none in the first stage, the stem does it) and blocks."""

    def __init__(self, in_dim: int, dim: int, depth: int, rates: list[float], layer_scale_init_value: float,
                 downsample: bool):
        super().__init__()
        self.downsample = (nn.Sequential(LayerNorm2d(in_dim, eps=1e-6), nn.Conv2d(in_dim, dim, 2, 2))
                           if downsample else nn.Identity())
        self.blocks = nn.Sequential(*[ConvNeXtBlock(dim, r, layer_scale_init_value) for r in rates])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


class ConvNeXt(nn.Module):
    """(N, in_chans, H, W) -> (N, num_classes) logits, for H, W >= 32.

    Args:
        depths: blocks per stage (four). dims: channels per stage (four).
        drop_path_rate: stochastic depth of the last block (linear from 0 over all blocks).
        layer_scale_init_value: initial layer scale gamma (1e-6); <= 0 disables layer scale.
        head_init_scale: factor on the classifier's initial weights and biases (1 in the paper's IN-1k training).
    """

    def __init__(self, in_chans: int = 3, num_classes: int = 1000, depths=(3, 3, 9, 3), dims=(96, 192, 384, 768),
                 drop_path_rate: float = 0.0, layer_scale_init_value: float = 1e-6, head_init_scale: float = 1.0):
        super().__init__()
        check_positive_int("in_chans", in_chans)
        check_positive_int("num_classes", num_classes)
        depths, dims = check_stages(depths, dims)
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {drop_path_rate!r}")
        self.stem = nn.Sequential(nn.Conv2d(in_chans, dims[0], 4, 4), LayerNorm2d(dims[0], eps=1e-6))
        rates = stage_drop_path_rates(drop_path_rate, depths)
        self.stages = nn.Sequential(*[ConvNeXtStage(dims[max(i - 1, 0)], dims[i], depths[i], rates[i],
                                                    layer_scale_init_value, downsample=i > 0) for i in range(4)])
        self.num_features = dims[-1]
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.head = nn.Linear(dims[-1], num_classes)
        self.apply(self._init_weights)
        with torch.no_grad():
            self.head.weight.mul_(head_init_scale)
            self.head.bias.mul_(head_init_scale)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> the last stage's (N, dims[-1], H', W') map (before pooling)."""
        check_images("ConvNeXt", x, MIN_INPUT, f"it downsamples by {MIN_INPUT} without padding")
        return self.stages(self.stem(x))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(x.mean((-2, -1))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# timm's ConvNeXt (timm/models/convnext.py) uses the same names for stem, stages and blocks; its head is a
# NormMlpClassifierHead whose norm (a LayerNorm2d before the flatten, the same numbers) and fc are ours.
register_timm_rules(ConvNeXt, renames=((r"^head\.norm\.", "norm."), (r"^head\.fc\.", "head.")))

_VARIANTS = {
    "convnext_tiny": dict(depths=(3, 3, 9, 3), dims=(96, 192, 384, 768)),
    "convnext_small": dict(depths=(3, 3, 27, 3), dims=(96, 192, 384, 768)),
    "convnext_base": dict(depths=(3, 3, 27, 3), dims=(128, 256, 512, 1024)),
    "convnext_large": dict(depths=(3, 3, 27, 3), dims=(192, 384, 768, 1536)),
}
for _name, _cfg in _VARIANTS.items():
    register_model(_name, ConvNeXt, timm=_name, **_cfg)
