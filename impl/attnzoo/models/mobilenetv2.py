"""MobileNetV2 (Sandler, Howard, Zhu, Zhmoginov & Chen, CVPR 2018, arXiv:1801.04381), with an attention slot.

Inverted residual blocks: a 1x1 convolution expands a thin input t times, a 3x3 depthwise convolution filters it,
and a linear 1x1 projection (no activation) returns to a thin output; the shortcut joins the thin ends. Settings
are the paper's Table 2. ``attn_layer`` puts an attention module after each depthwise convolution of the blocks
with expansion 6, where Coordinate Attention (arXiv:2103.02907) places it. ``conv_layer`` (a registered conv
name or factory, with ``conv_kwargs``) replaces the three convolutions of every block (expand, depthwise,
project), keeping the stem and the last 1x1 convolution plain, as DY-MobileNetV2 (Dynamic Convolution, arXiv:1912.03458).

Width multipliers (the paper's 0.35, 0.5, 0.75, 1.0 and 1.4) scale every layer, rounded to a multiple of 8 without
losing more than 10 %; below 1.0 the last 1x1 convolution keeps its 1280 channels (Sec. 4 of the paper, "Trade-off
hyper parameters", and ``finegrain_classification_mode`` in the authors' TF-slim code). Registered as
``mobilenetv2_035`` ... ``mobilenetv2_140`` with dropout 0.2 before the classifier (keep probability 0.8 in the slim
training scope); each has the architecture of timm's model of the same name, whose weights ``load_timm_weights``
maps onto ours.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..layers import ConvNormAct, check_positive_int, make_divisible
from ..registry import get_attn, get_conv, register_model
from ..timm import register_timm_rules


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand -> 3x3 depthwise -> [attention] -> 1x1 linear projection (+ x if shapes match)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, expand: int, attn=None, conv_layer=None):
        super().__init__()
        hidden = round(in_ch * expand)
        layers = [] if expand == 1 else [ConvNormAct(in_ch, hidden, 1, act="relu6", conv_layer=conv_layer)]
        layers.append(ConvNormAct(hidden, hidden, 3, stride, groups=hidden, act="relu6", conv_layer=conv_layer))
        if attn is not None and expand != 1:  # the authors' code skips the first (expansion 1) block
            layers.append(attn(hidden))
        layers.append(ConvNormAct(hidden, out_ch, 1, act=None, conv_layer=conv_layer))
        self.conv = nn.Sequential(*layers)
        self.use_residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return x + y if self.use_residual else y


# (expansion t, output channels c, repeats n, first stride s) of MobileNetV2 (Sandler et al., 2018, Table 2)
MBV2_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                 (6, 320, 1, 1))


class MobileNetV2(nn.Module):
    """(N, in_chans, H, W) -> (N, num_classes); ``attn_layer`` goes after each depthwise convolution (t = 6),
    ``conv_layer`` replaces the blocks' convolutions."""

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, width_mult: float = 1.0, attn_layer=None,
                 attn_kwargs: dict | None = None, drop_rate: float = 0.1, conv_layer=None,
                 conv_kwargs: dict | None = None):
        super().__init__()
        check_positive_int("num_classes", num_classes)
        check_positive_int("in_chans", in_chans)
        if not width_mult > 0:
            raise ValueError(f"width_mult must be positive, got {width_mult!r}")
        attn = get_attn(attn_layer, **(attn_kwargs or {}))
        conv = get_conv(conv_layer, **(conv_kwargs or {}))
        in_ch = make_divisible(32 * width_mult, 8)
        blocks = [ConvNormAct(in_chans, in_ch, 3, 2, act="relu6")]
        for t, c, n, s in MBV2_SETTINGS:
            out_ch = make_divisible(c * width_mult, 8)
            for i in range(n):
                blocks.append(InvertedResidual(in_ch, out_ch, s if i == 0 else 1, t, attn, conv))
                in_ch = out_ch
        self.num_features = make_divisible(1280 * width_mult, 8) if width_mult > 1.0 else 1280
        blocks.append(ConvNormAct(in_ch, self.num_features, 1, act="relu6"))
        self.features = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.Dropout(drop_rate), nn.Linear(self.num_features, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


def _timm_renames() -> tuple:
    """timm's MobileNetV2 (timm/models/efficientnet.py, _efficientnet_blocks.py) -> ours.

    timm groups the blocks by row of Table 2 (``blocks.<row>.<i>``), ours are one list after the stem; its
    first row (t = 1) is a depthwise-separable block (``conv_dw``, ``conv_pw``), the others are inverted
    residuals (``conv_pw`` expands, ``conv_dw``, ``conv_pwl`` projects).
    """
    first = [1]
    for _, _, n, _ in MBV2_SETTINGS:
        first.append(first[-1] + n)
    separable = {"conv_dw": "0.0", "bn1": "0.1", "conv_pw": "1.0", "bn2": "1.1"}
    inverted = {"conv_pw": "0.0", "bn1": "0.1", "conv_dw": "1.0", "bn2": "1.1", "conv_pwl": "2.0", "bn3": "2.1"}

    def block(m) -> str:
        row, i, unit = int(m[1]), int(m[2]), m[3]
        units = separable if MBV2_SETTINGS[row][0] == 1 else inverted
        return f"features.{first[row] + i}.conv.{units.get(unit, unit)}."

    return ((r"^blocks\.(\d+)\.(\d+)\.(\w+)\.", block),
            (r"^conv_stem\.", "features.0.0."), (r"^bn1\.", "features.0.1."),
            (r"^conv_head\.", f"features.{first[-1]}.0."), (r"^bn2\.", f"features.{first[-1]}.1."),
            (r"^classifier\.", "head.1."))


register_timm_rules(MobileNetV2, renames=_timm_renames())

for _width in (0.35, 0.5, 0.75, 1.0, 1.4):
    _name = f"mobilenetv2_{round(_width * 100):03d}"
    register_model(_name, MobileNetV2, timm=_name, width_mult=_width, drop_rate=0.2)
