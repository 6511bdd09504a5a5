"""Res2Net (Gao, Cheng, Zhao, Zhang, Yang & Torr, TPAMI 2021, arXiv:1904.01169).

The Res2Net bottleneck replaces the 3x3 convolution of a ResNet bottleneck by a small hierarchy: the 1x1
convolution's output is split into s groups x_1 ... x_s of w channels each (w "width", s "scale"), and

    y_1 = x_1,   y_2 = K_2(x_2),   y_i = K_i(x_i + y_{i-1})  for 2 < i <= s,

with K_i a 3x3 conv-BN-ReLU; the concatenation [y_1, ..., y_s] goes through the final 1x1 convolution. Each
group sees a larger receptive field than the one before, so one block mixes several scales. ``base_width`` w is
given for the first stage's 64 planes (the paper's "26w" in Res2Net-50-26w-4s) and doubles with every stage.

As in the authors' res2net.py (Res2Net/Res2Net-PretrainedModels), the hierarchy is computed on groups 1 ... s-1
and the *last* group passes through (the paper's Fig. 2 lets the first one through; the order only relabels
groups). In the first block of every stage (``stype="stage"``) there is no hierarchy: each of the s-1 groups
gets its own strided 3x3 convolution, and the last group a 3x3 average pooling of the same stride (padding 1,
counting the padding as zeros, like ``nn.AvgPool2d``'s default that the pretrained weights were trained with).
Strides sit on the 3x3 convolutions, the ResNet "v1.5" choice of the authors' code; stem, stages, shortcuts and
head are our ResNet (``block="res2net"``). Variants from the authors' model table (README) are registered:
Res2Net-50 with 48w-2s, 26w-4s, 14w-8s, 26w-6s, 26w-8s, and Res2Net-101-26w-4s; each has the architecture of timm's
model of the same name (``res2net50_26w_4s`` ...), whose weights ``load_timm_weights`` maps onto ours.

``attn_layer`` sits after the last BN as in every ResNet here; ``conv_layer`` replaces the s-1 3x3 convolutions.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..layers import ConvNormAct, DropPath, check_positive_int
from ..registry import register_model
from .resnet import Bottleneck, ResNet, projection_shortcut, register_block


class Res2NetBottleneck(Bottleneck):
    """1x1 (w*s) -> hierarchical 3x3 convolutions on s groups -> 1x1 (4 * planes), plus shortcut.

    (N, in_ch, H, W) -> (N, 4 * width, ceil(H / stride), ceil(W / stride)); ``width`` is the stage's planes.
    """

    def __init__(self, in_ch: int, width: int, stride: int = 1, attn=None, drop_path: float = 0.0,
                 conv_layer=None, mid_attn=None, mid_layer=None, fuse=None, shortcut: str = "conv",
                 base_width: int = 26, scale: int = 4):
        nn.Module.__init__(self)
        check_positive_int("base_width", base_width)
        check_positive_int("scale", scale)
        if mid_layer is not None or mid_attn is not None:
            raise ValueError("the Res2Net block has its own hierarchical 3x3 unit: mid_layer and attn_site='mid' "
                             "do not apply")
        w = width * base_width // 64
        out_ch = width * self.expansion
        self.split, self.scale = w, scale
        self.stage_first = stride > 1 or in_ch != out_ch   # the authors' stype="stage"
        self.conv1 = ConvNormAct(in_ch, w * scale, 1)
        n = max(scale - 1, 1)
        self.convs = nn.ModuleList([conv_layer(w, w, 3, stride=stride) if conv_layer is not None
                                    else nn.Conv2d(w, w, 3, stride, 1, bias=False) for _ in range(n)])
        self.bns = nn.ModuleList([nn.BatchNorm2d(w) for _ in range(n)])
        self.pool = nn.AvgPool2d(3, stride, 1) if self.stage_first and scale > 1 else None
        self.conv3 = ConvNormAct(w * scale, out_ch, 1, act=None)
        self.attn = attn(out_ch) if attn else nn.Identity()
        self.shortcut = projection_shortcut(in_ch, out_ch, stride, shortcut)
        self.drop_path = DropPath(drop_path)
        self.fuse = fuse(out_ch) if fuse else None
        self.act = nn.ReLU(inplace=True)

    def hierarchy(self, x: torch.Tensor) -> torch.Tensor:
        """(N, w*s, H, W) -> (N, w*s, H', W'): y_i = K_i(x_i + y_{i-1}) on the first s-1 groups, the last passes."""
        xs = torch.split(x, self.split, 1)
        ys = []
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns)):
            inp = xs[i] if i == 0 or self.stage_first else xs[i] + ys[-1]
            ys.append(self.act(bn(conv(inp))))
        if self.scale > 1:
            ys.append(self.pool(xs[-1]) if self.pool is not None else xs[-1])
        return torch.cat(ys, 1)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(self.conv3(self.hierarchy(self.conv1(x))))


register_block("res2net", Res2NetBottleneck)


def res2net(layers: tuple[int, ...] = (3, 4, 6, 3), base_width: int = 26, scale: int = 4, **kwargs) -> ResNet:
    """Our ResNet with Res2Net bottlenecks of ``base_width`` x ``scale`` (at the first stage's 64 planes)."""
    return ResNet(block="res2net", layers=layers, block_kwargs=dict(base_width=base_width, scale=scale), **kwargs)


_VARIANTS = {"res2net50_48w_2s": (50, 48, 2), "res2net50_26w_4s": (50, 26, 4), "res2net50_14w_8s": (50, 14, 8),
             "res2net50_26w_6s": (50, 26, 6), "res2net50_26w_8s": (50, 26, 8), "res2net101_26w_4s": (101, 26, 4)}
for _name, (_depth, _w, _s) in _VARIANTS.items():
    register_model(_name, res2net, timm=_name, layers=(3, 4, 23 if _depth == 101 else 6, 3), base_width=_w, scale=_s)
