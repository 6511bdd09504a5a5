"""Receptive Field Block (Liu, Huang & Wang, "Receptive Field Block Net for Accurate and Fast Object Detection",
ECCV 2018, arXiv:1711.07767).

In human vision the receptive field of a neuron grows with its eccentricity. RFB imitates this with an
Inception-like block: each branch first widens its receptive field with a convolution of growing size (1x1, 3x3,
5x5 as two 3x3) and then samples it with a 3x3 dilated convolution whose rate grows with that size, so that larger
kernels look further out. The branches are concatenated, mixed by a 1x1 convolution and added to a 1x1 shortcut:

    y = ReLU(s * W_lin [b_0(x), b_1(x), b_2(x)] + W_short x)

Every convolution is conv -> BN (-> ReLU, none after the dilated convolutions, W_lin and W_short). Two blocks, with
the branch widths of the authors' code (``models/RFB_Net_vgg.py``):

* ``rfb`` (``BasicRFB``): inner width w = C_in / 8; branch 0: 1x1 (2w) -> 3x3 dilation v; branch 1: 1x1 (w) ->
  3x3 (2w) -> 3x3 dilation v + 1; branch 2: 1x1 (w) -> 3x3 (3w/2) -> 3x3 (2w) -> 3x3 dilation 2v + 1; all branch
  outputs 2w wide, so W_lin maps 6w -> C_out. ``visual`` (v) sets the rates (v = 1: rates 1, 2, 3; v = 2: rates 2,
  3, 5, which RFB Net 300 uses in all its RFB blocks; RFB Net 512 uses v = 1 for its 256-channel block).
* ``rfb_s`` (``BasicRFB_a``, RFB-s on conv4_3, more, smaller branches like the smaller receptive fields of the
  retina's centre): w = C_in / 4; branch 0: 1x1 -> 3x3; branch 1: 1x1 -> 3x1 -> 3x3 dilation 3; branch 2: 1x1 ->
  1x3 -> 3x3 dilation 3; branch 3: 1x1 (w/2) -> 1x3 (3w/4) -> 3x1 (w) -> 3x3 dilation 5; W_lin maps 4w -> C_out.

The shortcut scale s defaults to 1.0, the value every RFB of the released RFB Net uses (the classes' own default
is 0.1: pass ``scale=0.1``). ``stride=2`` downsamples as the authors' extra layers do (``rfb`` only: the authors'
RFB-s puts no stride on two of its branches, so it cannot downsample; we refuse it).

Departure: BatchNorm keeps PyTorch's momentum 0.1 (the authors' BasicConv uses 0.01, a training setting); the
parameter names are ours (ConvNormAct indices instead of ``conv``/``bn``), the tensors are the same.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..layers import ConvNormAct, check_positive_int
from ..registry import register_block


def _branch(*units) -> nn.Sequential:
    """Units (in, out, kernel, stride, dilation); ReLU after all but the last."""
    last = len(units) - 1
    return nn.Sequential(*[ConvNormAct(cin, cout, k, stride=s, dilation=d, act=None if i == last else "relu")
                           for i, (cin, cout, k, s, d) in enumerate(units)])


class _RFBBase(nn.Module):
    """Branches -> concat -> W_lin, plus the shortcut scaled by ``scale``, then ReLU."""

    def _finish(self, in_channels: int, out_channels: int, branch_width: int, stride: int, scale: float) -> None:
        self.ConvLinear = ConvNormAct(branch_width, out_channels, 1, act=None)
        self.shortcut = ConvNormAct(in_channels, out_channels, 1, stride=stride, act=None)
        self.relu = nn.ReLU()
        self.scale = float(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.ConvLinear(torch.cat([branch(x) for branch in self.branches], dim=1))
        return self.relu(out * self.scale + self.shortcut(x))


def _inner(name: str, in_channels: int, out_channels: int, divisor: int) -> int:
    """Inner width w = in_channels // divisor; the narrowest branch convolution has w // 4 (RFB-s) or w // 2."""
    check_positive_int("in_channels", in_channels)
    check_positive_int("out_channels", out_channels)
    if in_channels < 16:
        raise ValueError(f"{name} needs in_channels >= 16 (inner width in_channels // {divisor}), got {in_channels}")
    return in_channels // divisor


@register_block("rfb")
class RFB(_RFBBase):
    """(N, C_in, H, W) -> (N, C_out, ceil(H / stride), ceil(W / stride)): three branches with rates v, v+1, 2v+1.

    Args: in_channels (at least 16). out_channels. stride: 1 or 2. scale: shortcut scale s (code: 1.0 in the network).
    visual: v (RFB Net 300: 2).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, scale: float = 1.0, visual: int = 2):
        super().__init__()
        w = _inner("rfb", in_channels, out_channels, 8)
        check_positive_int("stride", stride)
        v = check_positive_int("visual", visual)
        self.branches = nn.ModuleList([
            _branch((in_channels, 2 * w, 1, stride, 1), (2 * w, 2 * w, 3, 1, v)),
            _branch((in_channels, w, 1, 1, 1), (w, 2 * w, 3, stride, 1), (2 * w, 2 * w, 3, 1, v + 1)),
            _branch((in_channels, w, 1, 1, 1), (w, w // 2 * 3, 3, 1, 1), (w // 2 * 3, 2 * w, 3, stride, 1),
                    (2 * w, 2 * w, 3, 1, 2 * v + 1)),
        ])
        self.rates = (v, v + 1, 2 * v + 1)
        self._finish(in_channels, out_channels, 6 * w, stride, scale)


@register_block("rfb_s")
class RFBs(_RFBBase):
    """(N, C_in, H, W) -> (N, C_out, H, W): RFB-s, four branches (rates 1, 3, 3, 5) with 1x3 / 3x1 convolutions.

    Args: in_channels (at least 16). out_channels. scale: shortcut scale s (the network: 1.0).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, scale: float = 1.0):
        super().__init__()
        w = _inner("rfb_s", in_channels, out_channels, 4)
        if stride != 1:
            raise ValueError(f"rfb_s supports stride=1 only (the authors' RFB-s strides two of its four branches), "
                             f"got {stride!r}")
        self.branches = nn.ModuleList([
            _branch((in_channels, w, 1, 1, 1), (w, w, 3, 1, 1)),
            _branch((in_channels, w, 1, 1, 1), (w, w, (3, 1), 1, 1), (w, w, 3, 1, 3)),
            _branch((in_channels, w, 1, 1, 1), (w, w, (1, 3), 1, 1), (w, w, 3, 1, 3)),
            _branch((in_channels, w // 2, 1, 1, 1), (w // 2, w // 4 * 3, (1, 3), 1, 1), (w // 4 * 3, w, (3, 1), 1, 1),
                    (w, w, 3, 1, 5)),
        ])
        self.rates = (1, 3, 3, 5)
        self._finish(in_channels, out_channels, 4 * w, 1, scale)
