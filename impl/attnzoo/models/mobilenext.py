"""MobileNeXt (Zhou, Hou, Chen, Feng & Yan, ECCV 2020, arXiv:2007.02269): the sandglass block.

MobileNetV2's inverted residual joins thin tensors by its shortcut and filters only the wide, expanded one. The
sandglass block flips it: the shortcut joins the *wide* tensors, and the depthwise convolutions sit at both wide
ends, while two pointwise convolutions reduce and re-expand the channels in the middle:

    x (C) -> dw3x3 -> BN -> ReLU6 -> 1x1 (C / t) -> BN -> 1x1 (C') -> BN -> ReLU6 -> dw3x3 (stride s) -> BN -> + x

(the first 1x1 is linear, Sec. 3.2: no activation at the thin bottleneck). The reduced width is C / t, but never
below C' / 6 (then ceil(C' / 6) rounded to a multiple of 16). Network (Table 2): a 3x3/2 stem to 32 channels and
the rows (t, c, n, s) = (2, 96, 1, 2), (6, 144, 1, 1), (6, 192, 3, 2), (6, 288, 3, 2), (6, 384, 4, 1),
(6, 576, 4, 2), (6, 960, 3, 1), (6, 1280, 1, 1), then global average pooling, dropout 0.2 and a linear classifier.

Follows the authors' PyTorch model (yitu-opensource/MobileNeXt, codebase/models/mnext.py, the code their
zhoudaquan/rethinking_bottleneck_design README points to), whose first block of a row is one of four forms:

* expansion t = 2 (first row) and the single-block stride-1 rows (144 and 1280): the full sandglass without the
  shortcut (the widths differ);
* other rows' first blocks change the width: only the two 1x1 convolutions, then (where s = 2) the strided
  depthwise convolution, no first depthwise convolution and no shortcut;
* every other block keeps its width: the full sandglass with the shortcut.

Widths are rounded to multiples of 8 (``make_divisible``); the last 1280 channels are kept below width 1. He
fan-out normal weights, N(0, 0.01) for the classifier. ``identity_ratio`` is the paper's identity tensor multiplier
(Sec. 3.3): only the first round(ratio * C) channels get the shortcut (1.0, the default, as the released models).
``attn_layer`` goes after the last BN of every sandglass block, before the shortcut, where the authors' EfficientNet
based MobileNeXt puts SE (efficient_mnext/model.py); ``conv_layer`` replaces the depthwise 3x3 convolutions.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from ..layers import check_images, ConvNormAct, check_positive_int, check_repeats, make_divisible
from ..registry import get_attn, get_conv, register_model

# (expansion t, output channels c, repeats n, first stride s): Table 2 of the paper / mnext.py's cfgs
MNEXT_SETTINGS = ((2, 96, 1, 2), (6, 144, 1, 1), (6, 192, 3, 2), (6, 288, 3, 2), (6, 384, 4, 1), (6, 576, 4, 2),
                  (6, 960, 3, 1), (6, 1280, 1, 1))


class SandglassBlock(nn.Module):
    """(N, C_in, H, W) -> (N, C_out, ceil(H/s), ceil(W/s)); see the module docstring for its forms.

    ``first_dw``: the depthwise convolution at the input (absent in a width-changing row start);
    ``last_dw``: the depthwise convolution at the output (absent in a stride-1 width-changing row start).
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int, reduction: int, first_dw: bool = True,
                 last_dw: bool = True, identity_ratio: float = 1.0, attn=None, conv_layer=None):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride!r}")
        if stride == 2 and not last_dw:
            raise ValueError("a strided sandglass block needs its last depthwise convolution")
        mid = in_ch // reduction
        if mid < out_ch / 6:
            mid = make_divisible(math.ceil(out_ch / 6), 16)
        layers = []
        if first_dw:
            layers.append(ConvNormAct(in_ch, in_ch, 3, groups=in_ch, act="relu6", conv_layer=conv_layer))
        layers += [ConvNormAct(in_ch, mid, 1, act=None), ConvNormAct(mid, out_ch, 1, act="relu6")]
        if last_dw:
            layers.append(ConvNormAct(out_ch, out_ch, 3, stride, groups=out_ch, act=None, conv_layer=conv_layer))
        self.conv = nn.Sequential(*layers)
        self.attn = attn(out_ch) if attn is not None else nn.Identity()
        self.mid_channels = mid
        shortcut = first_dw and last_dw and stride == 1 and in_ch == out_ch
        self.identity_channels = int(round(in_ch * identity_ratio)) if shortcut else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.attn(self.conv(x))
        k = self.identity_channels
        if k == 0:
            return y
        if k == y.shape[1]:
            return y + x
        return torch.cat([y[:, :k] + x[:, :k], y[:, k:]], 1)


class MobileNeXt(nn.Module):
    """(N, in_chans, H, W) -> (N, num_classes); ``width_mult`` scales every width but the last 1280 (below 1),
    ``repeats`` gives the blocks of each row of Table 2 (the paper's by default; fewer build a shallower network)."""

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, width_mult: float = 1.0,
                 identity_ratio: float = 1.0, drop_rate: float = 0.2, attn_layer=None, attn_kwargs: dict | None = None,
                 conv_layer=None, conv_kwargs: dict | None = None,
                 repeats: tuple[int, ...] = tuple(r[2] for r in MNEXT_SETTINGS)):
        super().__init__()
        repeats = check_repeats("repeats", repeats, len(MNEXT_SETTINGS))
        check_positive_int("num_classes", num_classes)
        check_positive_int("in_chans", in_chans)
        if not width_mult > 0:
            raise ValueError(f"width_mult must be positive, got {width_mult!r}")
        if not 0 < identity_ratio <= 1:
            raise ValueError(f"identity_ratio must be in (0, 1], got {identity_ratio!r}")
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate!r}")
        attn = get_attn(attn_layer, **(attn_kwargs or {}))
        conv = get_conv(conv_layer, **(conv_kwargs or {}))
        ch = make_divisible(32 * width_mult, 8)
        blocks = [ConvNormAct(in_chans, ch, 3, 2, act="relu6")]
        for (t, c, rows, s), n in zip(MNEXT_SETTINGS, repeats):
            out = 1280 if c == 1280 and width_mult < 1 else make_divisible(c * width_mult, 8)
            keep = t == 2 or (rows == 1 and s == 1)   # the full sandglass at a width change (Table 2's rows)
            blocks.append(SandglassBlock(ch, out, s, t, first_dw=keep or ch == out, last_dw=keep or s == 2 or ch == out,
                                         identity_ratio=identity_ratio, attn=attn, conv_layer=conv))
            ch = out
            for _ in range(n - 1):
                blocks.append(SandglassBlock(ch, ch, 1, t, identity_ratio=identity_ratio, attn=attn, conv_layer=conv))
        self.features = nn.Sequential(*blocks)
        self.num_features = ch
        self.head = nn.Sequential(nn.Dropout(drop_rate), nn.Linear(ch, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and not m.weight.is_meta:
                nn.init.normal_(m.weight, 0, math.sqrt(2.0 / (m.kernel_size[0] * m.kernel_size[1] * m.out_channels)))
            elif isinstance(m, nn.Linear) and not m.weight.is_meta:
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_chans, H, W) -> (N, num_features, ceil(H/32), ceil(W/32))."""
        check_images("MobileNeXt", x)
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x).mean((2, 3)))


# README of zhoudaquan/rethinking_bottleneck_design: MobileNeXt-0.35 ... -1.40 (Table 5 of the paper)
for _width in (0.35, 0.5, 0.75, 1.0, 1.4):
    register_model(f"mobilenext_{round(_width * 100):03d}", MobileNeXt, width_mult=_width)
