"""PyramidNet (Han, Kim & Kim, CVPR 2017, arXiv:1610.02915): residual networks that widen at every unit.

A ResNet doubles its width only where it halves the resolution; a pyramidal network instead adds the same number
of channels at every residual unit ("additive" widening, Eq. 2 of the paper). With N units in all, a start width
D_0 and the widening factor alpha, unit k (k = 1 ... N) has

    D_k = round(D_0 + k * alpha / N)        (16 + alpha at the end on CIFAR, 64 + alpha on ImageNet)

channels (times 4 at a bottleneck's output). The pyramidal residual unit (Fig. 6(d)) is pre-activation-like but
starts with a BN, has no ReLU before its first convolution and ends with a BN:

    basic:       BN - conv3x3 - BN - ReLU - conv3x3 - BN
    bottleneck:  BN - conv1x1 - BN - ReLU - conv3x3 - BN - ReLU - conv1x1(4 D_k) - BN

and its shortcut is an identity whose missing channels are zeros (Fig. 5(b)): x is zero-padded from C_in to C_out
channels, after a 2x2 average pooling where the unit downsamples (stride 2 in its 3x3 convolution).

CIFAR models (Sec. 4): a 3x3 convolution to 16 channels and a BN (no ReLU), three stages of n units at 32, 16 and
8 pixels, then BN-ReLU, global average pooling and a linear classifier; depth 6n + 2 with basic units, 9n + 2
with bottlenecks. ImageNet: ResNet's stem (7x7/2 conv to 64, BN, ReLU, 3x3/2 max pool) and four stages of
bottlenecks, (3, 24, 36, 3) for PyramidNet-200. The registered variants are the tables of the authors' README
(github.com/jhkim89/PyramidNet; Tables 4 and 5 of the paper): additive PyramidNet-110 with alpha 48, 84, 270
(basic units), -164 (alpha 48) and -272 (alpha 200) with bottlenecks, and the ImageNet PyramidNet-200 with
alpha 300 (its alpha = 450 model is ``alpha=450, drop_rate=0.5``; the README's other bottleneck rows are
``layers=(n, n, n), alpha=...``: few variants are registered, as every one costs test time).

Follows the authors' Torch code (addpyramidnet.lua) and their PyTorch port (dyhan0920/PyramidNet-PyTorch):
widths accumulate D_0 + alpha/N unit by unit and round half up (Lua's floor(x + 0.5)); bias-free convolutions
with He-normal fan-out weights, BN weights 1 and biases 0, a zero classifier bias. The Lua CIFAR script's
``alpha`` is per stage (its alpha = 16 is the paper's 48); ours is the paper's total. Departures: the average
pooling of a downsampling shortcut uses ``ceil_mode`` so that odd sizes give the ceil(H/2) rows of the strided
convolution (identical to the authors' at even sizes, where theirs would fail at odd ones); the last map is
averaged globally at any size (the authors' 8x8 / 7x7 pooling at 32 / 224 pixels). Only the additive widening is
implemented (the multiplicative one of mulpyramidnet.lua is not).

Options: ``attn_layer`` attends to each unit's residual branch after its last BN, before the addition (where SE
and CBAM sit in a ResNet); ``conv_layer`` replaces the units' 3x3 convolutions.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import check_images, check_choice, check_positive_int, check_positive_ints, conv_fan_out_init
from ..registry import get_attn, get_conv, register_model

BLOCKS = ("basic", "bottleneck")
STEMS = ("cifar", "imagenet")


def pyramid_widths(start: int, alpha: float, layers: tuple[int, ...]) -> list[int]:
    """The widths D_k of all units: ``start`` plus alpha / N per unit, accumulated and rounded half up."""
    step, width, out = alpha / sum(layers), float(start), []
    for _ in range(sum(layers)):
        width += step
        out.append(int(math.floor(width + 0.5)))
    return out


class PyramidBlock(nn.Module):
    """A pyramidal residual unit: (N, C_in, H, W) -> (N, C_out, ceil(H/s), ceil(W/s)), C_out = D or 4 D.

    Residual branch as in the module docstring [-> attention]; shortcut: [2x2 average pool] and zero channels.
    """

    def __init__(self, in_ch: int, width: int, stride: int = 1, block: str = "basic", attn=None, conv_layer=None):
        super().__init__()
        check_choice("block", block, BLOCKS)
        self.out_channels = width * (4 if block == "bottleneck" else 1)
        if self.out_channels < in_ch:
            raise ValueError(f"a pyramidal unit never narrows: {in_ch} -> {self.out_channels} channels")

        def conv3x3(cin: int, cout: int, s: int) -> nn.Module:
            if conv_layer is not None:
                return conv_layer(cin, cout, 3, stride=s)
            return nn.Conv2d(cin, cout, 3, s, 1, bias=False)

        if block == "basic":
            layers = [nn.BatchNorm2d(in_ch), conv3x3(in_ch, width, stride), nn.BatchNorm2d(width), nn.ReLU(),
                      conv3x3(width, width, 1), nn.BatchNorm2d(width)]
        else:
            layers = [nn.BatchNorm2d(in_ch), nn.Conv2d(in_ch, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                      conv3x3(width, width, stride), nn.BatchNorm2d(width), nn.ReLU(),
                      nn.Conv2d(width, self.out_channels, 1, bias=False), nn.BatchNorm2d(self.out_channels)]
        self.residual = nn.Sequential(*layers)
        self.attn = attn(self.out_channels) if attn is not None else nn.Identity()
        self.pool = nn.AvgPool2d(2, 2, ceil_mode=True) if stride == 2 else nn.Identity()
        self.extra = self.out_channels - in_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.pool(x)
        if self.extra:
            shortcut = F.pad(shortcut, (0, 0, 0, 0, 0, self.extra))  # zero channels after the input's
        return self.attn(self.residual(x)) + shortcut


class PyramidNet(nn.Module):
    """(N, in_chans, H, W) -> (N, num_classes).

    Args:
        layers: units per stage ((n, n, n) on CIFAR, (3, 24, 36, 3) for the ImageNet PyramidNet-200).
        alpha: the widening factor (channels added over all units). block: "basic" or "bottleneck".
        stem: "cifar" (3x3 conv to 16, BN; stages at strides 1, 2, 2) or "imagenet" (7x7/2 conv to 64, BN, ReLU,
        3x3/2 max pool; stages at strides 1, 2, 2, 2). drop_rate: dropout before the classifier.
        attn_layer / attn_kwargs: attention on each unit's residual branch. conv_layer / conv_kwargs: the 3x3
        convolutions of the units.
    """

    def __init__(self, layers: tuple[int, ...] = (18, 18, 18), alpha: float = 48, block: str = "basic",
                 stem: str = "cifar", num_classes: int = 10, in_chans: int = 3, drop_rate: float = 0.0,
                 attn_layer=None, attn_kwargs: dict | None = None, conv_layer=None, conv_kwargs: dict | None = None):
        super().__init__()
        layers = check_positive_ints("layers", layers)
        check_positive_int("num_classes", num_classes)
        check_positive_int("in_chans", in_chans)
        check_choice("block", block, BLOCKS)
        check_choice("stem", stem, STEMS)
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or alpha < 0:
            raise ValueError(f"alpha must be a non-negative number, got {alpha!r}")
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate!r}")
        attn = get_attn(attn_layer, **(attn_kwargs or {}))
        conv = get_conv(conv_layer, **(conv_kwargs or {}))
        start = 16 if stem == "cifar" else 64
        if stem == "cifar":
            self.stem = nn.Sequential(nn.Conv2d(in_chans, start, 3, 1, 1, bias=False), nn.BatchNorm2d(start))
        else:
            self.stem = nn.Sequential(nn.Conv2d(in_chans, start, 7, 2, 3, bias=False), nn.BatchNorm2d(start),
                                      nn.ReLU(), nn.MaxPool2d(3, 2, 1))
        widths = iter(pyramid_widths(start, alpha, layers))
        ch, stages = start, []
        for i, n in enumerate(layers):
            units = []
            for j in range(n):
                unit = PyramidBlock(ch, next(widths), 2 if i > 0 and j == 0 else 1, block, attn, conv)
                units.append(unit)
                ch = unit.out_channels
            stages.append(nn.Sequential(*units))
        self.stages = nn.Sequential(*stages)
        self.norm = nn.Sequential(nn.BatchNorm2d(ch), nn.ReLU())
        self.num_features = ch
        self.drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(ch, num_classes)
        conv_fan_out_init(self)
        nn.init.zeros_(self.head.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_chans, H, W) -> (N, num_features, H', W') after the final BN-ReLU."""
        check_images("PyramidNet", x)
        return self.norm(self.stages(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.forward_features(x).mean((2, 3))))


# CIFAR (README tables of jhkim89/PyramidNet; paper Table 4): depth 6n + 2 (basic) or 9n + 2 (bottleneck).
for _depth, _alpha in ((110, 48), (110, 84), (110, 270)):
    _n = (_depth - 2) // 6
    register_model(f"pyramidnet{_depth}_a{_alpha}", PyramidNet, layers=(_n, _n, _n), alpha=_alpha)
for _depth, _alpha in ((164, 48), (272, 200)):
    _n = (_depth - 2) // 9
    register_model(f"pyramidnet{_depth}_a{_alpha}_bottleneck", PyramidNet, layers=(_n, _n, _n), alpha=_alpha,
                   block="bottleneck")
# ImageNet (README; paper Table 5): PyramidNet-200 with alpha 300 (alpha 450 with dropout 0.5 is drop_rate=0.5).
register_model("pyramidnet200_a300_imagenet", PyramidNet, layers=(3, 24, 36, 3), alpha=300, block="bottleneck",
               stem="imagenet", num_classes=1000)
