"""Selective Kernel convolution and SKNet (Li, Wang, Hu & Yang, "Selective Kernel Networks", CVPR 2019,
arXiv:1903.06586).

A neuron's receptive field should depend on the input. An SK convolution runs M branches with different
receptive fields on the same input and lets the input choose, channel by channel, how to mix them:

1. Split: U_m = ReLU(BN(conv_m(X))), m = 1..M; the paper's SK[M=2] uses a 3x3 and a 5x5 grouped convolution,
   the 5x5 realised as a 3x3 with dilation 2 (same receptive field, fewer parameters).
2. Fuse: s = avgpool(sum_m U_m) (a C-vector), z = ReLU(BN(W s)) with d = max(C / r, L) units (r = 16, L = 32).
3. Select: a softmax across the branches for every channel, a_m = softmax_m(A_m z), and V = sum_m a_m * U_m.

SKNet-50 is ResNeXt-50 (32x4d) with the 3x3 grouped convolution of every bottleneck replaced by SK[M=2, G=32,
r=16, L=32]: bottleneck widths 128, 256, 512, 1024, outputs 256, 512, 1024, 2048 (Table 1 of the paper).
Registered as ``sknet50``: 27.5 M parameters and 4.47 GFLOPs in the paper (Table 2). ``sknet101`` has
(3, 4, 23, 3) units.

SKNet-101's fuse width, following the authors' prototxt: their models/sknet101.prototxt gives the fuse layer
(``B_fc1``) of the four stage-2 units (layers ``conv3_1/B_fc1`` ... ``conv3_4/B_fc1``, C = 256, at lines 1683,
2181, 2626, 3071) 16 outputs, i.e. C / 16 without the floor L = 32 that every other unit of SKNet-101 and all of
SKNet-50 use (sknet50.prototxt, ``conv3_1/B_fc1`` at line 1683: 32 outputs). We build SKNet-101 with those
widths (``min_rd=(32, 16, 32, 32)`` per stage) so that the authors' checkpoint has the same shapes; counting the
learnable parameters of their prototxt gives 48,686,760, which our ``sknet101`` matches exactly (48.69 M; the
paper's table says 48.9 M). ``sknet(min_rd=32)`` gives the uniform L = 32 of the paper's text (48,736,040
parameters). SKNet-50 matches its prototxt (27,479,784) as is.

Parameter count, and the known bug: several public re-implementations build the branches as dense (groups=1)
convolutions with ever larger kernels (e.g. 3, 5, 7) plus a separate linear layer per branch, which inflates an
SK unit by an order of magnitude (at C = 128, three dense branches alone give 459 k parameters against 22 k for
the paper's unit) and a "SKNet-50" far beyond 27.5 M. Here the branches are grouped (G = 32) 3x3 convolutions with dilations 1 and 2, the fuse layer is a
bias-free 1x1 conv + BN + ReLU and the select layer is one bias-free 1x1 conv producing M x C logits, as in the
authors' Caffe prototxt; SKNet-50 then has 27.48 M parameters.

As an attention module (``create_attention("sk", C)``) the unit maps C channels to C channels, stride 1.

Departures: downsampling follows the package's ResNet v1.5 convention (stride on the SK convolution; the
authors' ResNeXt-style Caffe model does the same); identical parameters.
"""
from __future__ import annotations

from functools import partial

import torch
import torch.nn as nn

from ..layers import ConvNormAct, PooledConv1x1, check_divisible, check_positive_int, check_train_batch, reduced_channels
from ..models.resnet import Bottleneck, ResNet, register_block
from ..registry import register_attention, register_model


@register_attention("sk")
class SelectiveKernel(nn.Module):
    """(N, C, H, W) -> (N, C_out, H / stride, W / stride): a selective-kernel convolution.

    Args:
        channels: C. out_channels: C_out (default C). stride: of every branch.
        dilations: one 3x3 branch per dilation (paper: (1, 2), i.e. 3x3 and "5x5").
        groups: of the branch convolutions (paper: 32). rd_ratio / min_rd: fuse width d = max(C_out r, L)
        (paper: r = 1/16, L = 32).

    The fuse layer's BatchNorm acts on the pooled (N, d, 1, 1) descriptor, so training needs a batch of at least
    2 (``min_train_batch``; a clear ValueError otherwise); eval mode works at batch 1.
    """

    min_train_batch = 2

    def __init__(self, channels: int, out_channels: int | None = None, stride: int = 1,
                 dilations: tuple[int, ...] = (1, 2), groups: int = 32, rd_ratio: float = 1 / 16, min_rd: int = 32):
        super().__init__()
        check_positive_int("channels", channels)
        out_channels = channels if out_channels is None else check_positive_int("out_channels", out_channels)
        check_positive_int("stride", stride)
        check_positive_int("groups", groups)
        check_divisible("channels", channels, groups, "groups")
        check_divisible("out_channels", out_channels, groups, "groups")
        if len(dilations) < 2 or any(check_positive_int("dilations[i]", d) is None for d in dilations):
            raise ValueError(f"dilations must list at least two positive integers, got {dilations!r}")
        rd = max(reduced_channels(out_channels, rd_ratio), check_positive_int("min_rd", min_rd))
        self.out_channels = out_channels
        self.branches = nn.ModuleList(ConvNormAct(channels, out_channels, 3, stride, groups=groups, dilation=d)
                                      for d in dilations)
        self.fuse = ConvNormAct(out_channels, rd, 1, conv_layer=partial(PooledConv1x1, bias=False))
        self.select = PooledConv1x1(rd, out_channels * len(dilations), bias=False)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([branch(x) for branch in self.branches], dim=1)  # (N, M, C, H, W)

    def _select(self, feats: torch.Tensor) -> torch.Tensor:
        n, m, c = feats.shape[:3]
        s = feats.sum(dim=1).mean(dim=(2, 3), keepdim=True)
        return self.select(self.fuse(s)).view(n, m, c).softmax(dim=1)

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """Selection weights a_m per channel, shape (N, M, C_out); they sum to one over the M branches."""
        check_train_batch(self, x)
        return self._select(self._split(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_train_batch(self, x)
        feats = self._split(x)
        a = self._select(feats)
        return (feats * a[..., None, None].to(feats.dtype)).sum(dim=1)


class SKBottleneck(Bottleneck):
    """ResNeXt bottleneck with an SK convolution in place of its grouped 3x3 (one "SK unit" of SKNet).

    ``width`` is the ResNet stage width (64, 128, 256, 512); the SK convolution runs at ``width * 2`` channels
    (32 groups of 4 at stage 1, the 32x4d setting) and the block outputs ``width * 4``.
    """

    width_factor = 2

    def mid_conv(self, channels: int, stride: int, conv_layer=None, mid_attn=None) -> nn.Module:
        if conv_layer is not None or mid_attn is not None:
            raise ValueError("SKNet's SK unit has its own branch convolutions: conv_layer / attn_site='mid' do not apply")
        return SelectiveKernel(channels, stride=stride)


# The ResNet skeleton (stem, four stages, head) takes its block type by name; SKNet only swaps the block.
register_block("sk", SKBottleneck)


class SKUnit:
    """``mid_layer`` for the ResNet skeleton: the SK convolution of a unit, with a fuse floor L per stage.

    Called as ``f(channels, stride)`` with the unit's width (128, 256, 512, 1024 in stages 0..3). A class rather
    than a closure so that models stay picklable.
    """

    STAGE_OF_WIDTH = {128: 0, 256: 1, 512: 2, 1024: 3}

    def __init__(self, min_rd: tuple[int, int, int, int]):
        self.min_rd = tuple(min_rd)

    def __call__(self, channels: int, stride: int) -> SelectiveKernel:
        return SelectiveKernel(channels, stride=stride, min_rd=self.min_rd[self.STAGE_OF_WIDTH[channels]])


def sknet(layers: tuple[int, ...] = (3, 4, 6, 3), min_rd: int | tuple[int, ...] = 32, **kwargs) -> ResNet:
    """SKNet: the ResNet skeleton with SK units (ResNeXt 32x4d widths) in every stage.

    ``min_rd``: the floor L of the fuse width d = max(C / 16, L), one value or one per stage (SKNet-101's
    prototxt: (32, 16, 32, 32)).
    """
    per_stage = (min_rd,) * 4 if isinstance(min_rd, int) and not isinstance(min_rd, bool) else tuple(min_rd)
    if len(per_stage) != 4 or any(check_positive_int("min_rd[i]", v) is None for v in per_stage):
        raise ValueError(f"min_rd must be a positive integer or one per stage (four), got {min_rd!r}")
    if kwargs.get("mid_layer") is not None or kwargs.get("conv_layer") is not None or kwargs.get("attn_site") == "mid":
        raise ValueError("SKNet's SK unit has its own branch convolutions: mid_layer / conv_layer / "
                         "attn_site='mid' do not apply")
    return ResNet(block="sk", layers=layers, mid_layer=SKUnit(per_stage), **kwargs)


register_model("sknet50", sknet, layers=(3, 4, 6, 3), timm="skresnext50_32x4d")
# the authors' sknet101.prototxt: fuse width 16 (C / 16, no floor) in the four stage-2 units
register_model("sknet101", sknet, layers=(3, 4, 23, 3), min_rd=(32, 16, 32, 32))
