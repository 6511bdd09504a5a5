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

The blocks are the MBConv family's shared ones (``attnzoo.layers.mbconv``): the first row (t = 1) a
``DepthwiseSeparable`` block, the others ``MBConv`` inverted residuals, with PyTorch's symmetric padding, ReLU6 and
BatchNorm eps 1e-5 (timm's and torchvision's trainings); the module names are timm's (``conv_stem``, ``blocks.<row>.
<i>``, ``conv_head``, ``classifier``), so timm's weights load without renaming. Weights He-normal with fan-out
(torchvision's and timm's PyTorch init), zero classifier bias.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..layers import check_images, check_positive_int, check_repeats, conv_fan_out_init, create_act, make_divisible
from ..layers.head import pooled_logits
from ..layers.mbconv import DepthwiseSeparable, MBConv, conv2d
from ..registry import get_attn, get_conv, register_model
from ..timm import register_timm_rules

# (expansion t, output channels c, repeats n, first stride s) of MobileNetV2 (Sandler et al., 2018, Table 2)
MBV2_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                 (6, 320, 1, 1))


class MobileNetV2(nn.Module):
    """(N, in_chans, H, W) -> (N, num_classes); ``attn_layer`` goes after each depthwise convolution (t = 6),
    ``conv_layer`` replaces the blocks' convolutions (expand, depthwise, project); ``repeats`` gives the blocks of
    each row of Table 2 (the paper's by default; fewer build a shallower network of the same widths)."""

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, width_mult: float = 1.0, attn_layer=None,
                 attn_kwargs: dict | None = None, drop_rate: float = 0.1, conv_layer=None,
                 conv_kwargs: dict | None = None, repeats: tuple[int, ...] = tuple(r[2] for r in MBV2_SETTINGS)):
        super().__init__()
        repeats = check_repeats("repeats", repeats, len(MBV2_SETTINGS))
        check_positive_int("num_classes", num_classes)
        check_positive_int("in_chans", in_chans)
        if not width_mult > 0:
            raise ValueError(f"width_mult must be positive, got {width_mult!r}")
        attn = get_attn(attn_layer, **(attn_kwargs or {}))
        conv = get_conv(conv_layer, **(conv_kwargs or {}))
        common = dict(act="relu6", padding="symmetric", conv_layer=conv, pw_conv_layer=conv)
        in_ch = make_divisible(32 * width_mult, 8)
        self.conv_stem = conv2d(in_chans, in_ch, 3, 2, padding="symmetric")
        self.bn1, self.act1 = nn.BatchNorm2d(in_ch), create_act("relu6")
        rows = []
        for (t, c, _, s), n in zip(MBV2_SETTINGS, repeats):
            out_ch, blocks = make_divisible(c * width_mult, 8), []
            for i in range(n):
                stride = s if i == 0 else 1
                if t == 1:  # the authors' code has no attention in the first (expansion 1) block
                    blocks.append(DepthwiseSeparable(in_ch, out_ch, 3, stride, **common))
                else:
                    blocks.append(MBConv(in_ch, out_ch, round(in_ch * t), 3, stride, attn=attn, **common))
                in_ch = out_ch
            rows.append(nn.Sequential(*blocks))
        self.blocks = nn.Sequential(*rows)
        self.num_features = make_divisible(1280 * width_mult, 8) if width_mult > 1.0 else 1280
        self.conv_head = conv2d(in_ch, self.num_features, 1, padding="symmetric")
        self.bn2, self.act2 = nn.BatchNorm2d(self.num_features), create_act("relu6")
        self.dropout = nn.Dropout(drop_rate)
        self.classifier = nn.Linear(self.num_features, num_classes)
        conv_fan_out_init(self, zero_bias=True)
        nn.init.zeros_(self.classifier.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_chans, H, W) -> (N, num_features, ceil(H/32), ceil(W/32)) after the last 1x1 conv-BN-ReLU6."""
        check_images(type(self).__name__, x)
        x = self.blocks(self.act1(self.bn1(self.conv_stem(x))))
        return self.act2(self.bn2(self.conv_head(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pooled_logits(self.forward_features(x), self.classifier, self.dropout)


# timm's MobileNetV2 (timm/models/efficientnet.py, _efficientnet_blocks.py) has our module names: no renames.
register_timm_rules(MobileNetV2, renames=())

for _width in (0.35, 0.5, 0.75, 1.0, 1.4):
    _name = f"mobilenetv2_{round(_width * 100):03d}"
    register_model(_name, MobileNetV2, timm=_name, width_mult=_width, drop_rate=0.2)
