"""SlimConv: Reducing Channel Redundancy in Convolutional Neural Networks by Features Recombining (Qiu, Chen, Liu,
Zhang & Zeng, TIP 2021, arXiv:2003.07469).

SlimConv replaces a 3x3 convolution by three steps that compress the channels before convolving them:

1. Reconstruct. SE-like weights w = sigmoid(W_2 ReLU(BN(W_1 GAP(x)))) (C -> C/32 -> C) rescale x twice: once as
   they are and once flipped along the channels, w_f[i] = w[C-1-i]. Each rescaled map is folded in two by
   adding its channel halves:  t = (w x)[:C/2] + (w x)[C/2:],   b = (w_f x)[:C/2] + (w_f x)[C/2:]   (N, C/2, H, W).
2. Transform. The top part goes through a 3x3 convolution + BN (C/2 -> C/2); the bottom part, cheaper, through a
   1x1 convolution + BN + ReLU (C/2 -> C/4) and a 3x3 convolution + BN (C/4 -> C/4).
3. Fuse. The two results are concatenated: (N, 3C/4, H', W').

The output is therefore narrower than the input (by k = 4/3) and carries its own BatchNorms, and the gate has a
BatchNorm on a pooled (N, C/32, 1, 1) vector: SlimConv does not fit the ``conv`` contract (a drop-in for an
``nn.Conv2d`` of any output width), so it is a ``block``. ``create_block("slimconv", C, C_out)`` builds the general
form with the bottom path C_out // 3 wide and the top path the rest; C_out = 3C/4 (the default) is the paper's.

In a ResNet bottleneck it replaces the 3x3 conv-BN, followed by the ReLU, and the next 1x1 convolution takes the
3C/4 channels (the authors' SC-ResNet.py, whose Bottleneck is torchvision's with ``conv2 = slim_conv_3x3(width)`` and
``conv3 = conv1x1(width // 2 + width // 4, 4 planes)``): ``sc_resnet50``, 16.76 M parameters as in the authors'
README (Sc-ResNet-50, k = 4/3; 2.65 GFLOPs by the DMCP counter). The released code implements only k = 4/3;
the README's k = 8/3 model is not in it and is not registered here.

Defaults are the released code's: reduction 32 in the gate (C // 32, no bias before its BN, a bias after), no bias
in the transform convolutions. Departure: none in the computation; the gate's hidden width is at least 1
(the code's C // 32 is 0 for C < 32, an empty layer).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..layers import ConvNormAct, check_positive_int, check_train_batch, reduced_channels
from ..models.resnet import register_resnet
from ..registry import register_block


@register_block("slimconv")
class SlimConv(nn.Module):
    """(N, C, H, W) -> (N, C_out, ceil(H/s), ceil(W/s)): reweight, flip, fold, convolve the two halves, concatenate.

    Args:
        in_channels: C, even. out_channels: C_out (default 3C/4, the paper's k = 4/3): the cheap path gets
            C_out // 3 channels, the 3x3 path the rest. stride, groups, dilation: of the two 3x3 convolutions
            (groups must divide both paths' widths; ResNeXt). rd_ratio: the gate's reduction (code: 1/32).
    """

    min_train_batch = 2  # BatchNorm on the pooled gate vector

    def __init__(self, in_channels: int, out_channels: int | None = None, stride: int = 1, groups: int = 1,
                 dilation: int = 1, rd_ratio: float = 1 / 32):
        super().__init__()
        check_positive_int("in_channels", in_channels)
        if in_channels % 2:
            raise ValueError(f"SlimConv folds the channels in two: in_channels must be even, got {in_channels}")
        out_channels = 3 * in_channels // 4 if out_channels is None else out_channels
        check_positive_int("out_channels", out_channels)
        if out_channels < 3:
            raise ValueError(f"out_channels must be at least 3 (two paths, 2:1), got {out_channels}")
        for name, value in (("stride", stride), ("groups", groups), ("dilation", dilation)):
            check_positive_int(name, value)
        half, cheap = in_channels // 2, out_channels // 3
        top = out_channels - cheap
        for name, width in (("in_channels / 2", half), ("the 3x3 path", top), ("the cheap path", cheap)):
            if width % groups:
                raise ValueError(f"groups={groups} must divide {name} ({width})")
        self.in_channels, self.out_channels = in_channels, out_channels
        rd = reduced_channels(in_channels, rd_ratio)
        self.gate = nn.Sequential(ConvNormAct(in_channels, rd, 1), nn.Conv2d(rd, in_channels, 1), nn.Sigmoid())
        self.top = ConvNormAct(half, top, 3, stride, groups, dilation, act=None)
        self.cheap = nn.Sequential(ConvNormAct(half, cheap, 1),
                                   ConvNormAct(cheap, cheap, 3, stride, groups, dilation, act=None))

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """The channel weights w, shape (N, C, 1, 1)."""
        return self.gate(x.mean(dim=(2, 3), keepdim=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_train_batch(self, x)
        w = self.weights(x)
        t, b = (x * w).chunk(2, dim=1), (x * w.flip(1)).chunk(2, dim=1)
        return torch.cat([self.top(t[0] + t[1]), self.cheap(b[0] + b[1])], dim=1)


def slim_unit(channels: int, stride: int) -> nn.Module:
    """``mid_layer`` of the ResNet skeleton: SlimConv (C -> 3C/4) then ReLU, as the authors' bottleneck."""
    unit = nn.Sequential(SlimConv(channels, stride=stride), nn.ReLU(inplace=True))
    unit.out_channels = unit[0].out_channels  # the bottleneck's last 1x1 convolution takes this width
    return unit


register_resnet("sc_resnet50", 50, mid_layer=slim_unit)
