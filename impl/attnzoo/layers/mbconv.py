"""The MBConv family's blocks (MobileNetV2/V3, MnasNet, EfficientNet V1/V2) and TensorFlow's "SAME" padding.

Four blocks, each ``(N, C_in, H, W) -> (N, C_out, ceil(H/s), ceil(W/s))``, with a residual (and stochastic depth)
when ``skip`` and the shapes allow it (stride 1, C_in = C_out):

=====================  ========================================================================================
``DepthwiseSeparable``  k x k depthwise -> BN -> act -> [attn] -> 1x1 -> BN (MobileNetV1's unit; the first
                        block, expansion 1, of MnasNet, EfficientNet and MobileNetV3).
``MBConv``              1x1 expand (t x C_in) -> BN -> act -> k x k depthwise -> BN -> act -> [attn] -> 1x1
                        linear projection -> BN (the inverted residual of MobileNetV2, Sandler et al. 2018).
``FusedMBConv``         k x k expand -> BN -> act -> [attn] -> 1x1 linear projection -> BN (EfficientNetV2's
                        Fused-MBConv, Tan & Le 2021: the expansion and the depthwise conv fused into one).
``ConvBnAct``           k x k -> BN -> act (Fused-MBConv with expansion 1, and MobileNetV3's last 1x1 layer).
=====================  ========================================================================================

The attribute names are timm's (``conv_pw``, ``bn1``, ``conv_dw``, ``se``, ``conv_pwl``...), so timm's weights map
one to one. ``attn`` is a factory ``f(channels) -> module`` for the block's attention slot (the papers' SE), built
on the expanded width; ``conv_layer`` (``f(in, out, k, stride=, groups=)``, e.g. ``registry.get_conv(...)``)
replaces the block's k x k convolution (the depthwise one, or the fused expansion), padding included;
``pw_conv_layer`` (same signature) replaces the 1x1 convolutions of ``DepthwiseSeparable`` and ``MBConv`` (as
DY-MobileNetV2 makes every convolution of a block dynamic).

``padding="same"`` pads as TensorFlow's "SAME" (the official code of all four papers): the output has
ceil(H/s) rows and, where the total padding is odd, the extra row/column goes at the bottom/right; it depends on
the input size, so a strided convolution pads in ``forward``. ``padding="symmetric"`` is PyTorch's
``padding=k // 2`` (timm's and torchvision's own trainings): the same for stride 1, one pixel shifted for stride 2.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .create_act import create_act
from .drop import DropPath
from .helpers import check_choice

PADDINGS = ("same", "symmetric")


class Conv2dSame(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow's "SAME" padding for any stride: pads ``max((ceil(H/s) - 1) s + d (k - 1) + 1
    - H, 0)`` rows, half (rounded down) at the top and the rest at the bottom; columns likewise."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s, d in zip(x.shape[-2:], self.kernel_size, self.stride, self.dilation):
            total = max((-(-size // s) - 1) * s + d * (k - 1) + 1 - size, 0)
            pads = [total // 2, total - total // 2] + pads  # F.pad lists the last dimension first
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def conv2d(in_ch: int, out_ch: int, kernel_size: int, stride: int = 1, groups: int = 1, bias: bool = False,
           padding: str = "same") -> nn.Conv2d:
    """A convolution keeping ceil(H/s) x ceil(W/s) with ``padding`` "same" (TF) or "symmetric" (PyTorch).

    Stride 1 with an odd kernel pads the same both ways, so it is a plain ``nn.Conv2d`` either way.
    """
    check_choice("padding", padding, PADDINGS)
    if padding == "same" and (stride > 1 or kernel_size % 2 == 0):
        return Conv2dSame(in_ch, out_ch, kernel_size, stride, 0, groups=groups, bias=bias)
    return nn.Conv2d(in_ch, out_ch, kernel_size, stride, kernel_size // 2, groups=groups, bias=bias)


class _Block(nn.Module):
    """Shared by the blocks: the norm's settings, the residual with stochastic depth."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, skip: bool, drop_path: float, bn_eps: float,
                 bn_momentum: float, padding: str):
        super().__init__()
        self.has_skip = skip and stride == 1 and in_ch == out_ch
        self.drop_path = DropPath(drop_path) if self.has_skip and drop_path > 0 else nn.Identity()
        self._bn = dict(eps=bn_eps, momentum=bn_momentum)
        self._padding = padding

    def make_norm(self, channels: int) -> nn.BatchNorm2d:
        return nn.BatchNorm2d(channels, **self._bn)

    def make_conv(self, in_ch: int, out_ch: int, k: int, stride: int = 1, groups: int = 1,
                  conv_layer=None) -> nn.Module:
        if conv_layer is not None:
            return conv_layer(in_ch, out_ch, k, stride=stride, groups=groups)
        return conv2d(in_ch, out_ch, k, stride, groups, padding=self._padding)

    def residual(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(y) if self.has_skip else y


class DepthwiseSeparable(_Block):
    """k x k depthwise -> BN -> act -> [attn] -> 1x1 -> BN (-> act if ``pw_act``) (+ x)."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3, stride: int = 1, act: str = "relu",
                 attn: Callable[[int], nn.Module] | None = None, skip: bool = True, pw_act: bool = False,
                 drop_path: float = 0.0, bn_eps: float = 1e-5, bn_momentum: float = 0.1, padding: str = "same",
                 conv_layer=None, pw_conv_layer=None):
        super().__init__(in_ch, out_ch, stride, skip, drop_path, bn_eps, bn_momentum, padding)
        self.conv_dw = self.make_conv(in_ch, in_ch, kernel_size, stride, in_ch, conv_layer)
        self.bn1, self.act1 = self.make_norm(in_ch), create_act(act)
        self.se = attn(in_ch) if attn is not None else nn.Identity()
        self.conv_pw = self.make_conv(in_ch, out_ch, 1, conv_layer=pw_conv_layer)
        self.bn2, self.act2 = self.make_norm(out_ch), create_act(act if pw_act else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.se(self.act1(self.bn1(self.conv_dw(x))))
        return self.residual(x, self.act2(self.bn2(self.conv_pw(y))))


class MBConv(_Block):
    """1x1 expand to ``mid_ch`` -> BN -> act -> k x k depthwise -> BN -> act -> [attn] -> 1x1 -> BN (+ x)."""

    def __init__(self, in_ch: int, out_ch: int, mid_ch: int, kernel_size: int = 3, stride: int = 1,
                 act: str = "relu", attn: Callable[[int], nn.Module] | None = None, skip: bool = True,
                 drop_path: float = 0.0, bn_eps: float = 1e-5, bn_momentum: float = 0.1, padding: str = "same",
                 conv_layer=None, pw_conv_layer=None):
        super().__init__(in_ch, out_ch, stride, skip, drop_path, bn_eps, bn_momentum, padding)
        self.conv_pw = self.make_conv(in_ch, mid_ch, 1, conv_layer=pw_conv_layer)
        self.bn1, self.act1 = self.make_norm(mid_ch), create_act(act)
        self.conv_dw = self.make_conv(mid_ch, mid_ch, kernel_size, stride, mid_ch, conv_layer)
        self.bn2, self.act2 = self.make_norm(mid_ch), create_act(act)
        self.se = attn(mid_ch) if attn is not None else nn.Identity()
        self.conv_pwl = self.make_conv(mid_ch, out_ch, 1, conv_layer=pw_conv_layer)
        self.bn3 = self.make_norm(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act1(self.bn1(self.conv_pw(x)))
        y = self.se(self.act2(self.bn2(self.conv_dw(y))))
        return self.residual(x, self.bn3(self.conv_pwl(y)))


class FusedMBConv(_Block):
    """k x k expand to ``mid_ch`` (strided) -> BN -> act -> [attn] -> 1x1 -> BN (+ x)."""

    def __init__(self, in_ch: int, out_ch: int, mid_ch: int, kernel_size: int = 3, stride: int = 1,
                 act: str = "silu", attn: Callable[[int], nn.Module] | None = None, skip: bool = True,
                 drop_path: float = 0.0, bn_eps: float = 1e-5, bn_momentum: float = 0.1, padding: str = "same",
                 conv_layer=None):
        super().__init__(in_ch, out_ch, stride, skip, drop_path, bn_eps, bn_momentum, padding)
        self.conv_exp = self.make_conv(in_ch, mid_ch, kernel_size, stride, 1, conv_layer)
        self.bn1, self.act1 = self.make_norm(mid_ch), create_act(act)
        self.se = attn(mid_ch) if attn is not None else nn.Identity()
        self.conv_pwl = self.make_conv(mid_ch, out_ch, 1)
        self.bn2 = self.make_norm(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.se(self.act1(self.bn1(self.conv_exp(x))))
        return self.residual(x, self.bn2(self.conv_pwl(y)))


class ConvBnAct(_Block):
    """k x k conv -> BN -> act (+ x if ``skip``); ``attn`` is accepted for a uniform interface and must be None."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3, stride: int = 1, act: str = "relu",
                 attn=None, skip: bool = False, drop_path: float = 0.0, bn_eps: float = 1e-5,
                 bn_momentum: float = 0.1, padding: str = "same", conv_layer=None):
        super().__init__(in_ch, out_ch, stride, skip, drop_path, bn_eps, bn_momentum, padding)
        if attn is not None:
            raise ValueError("ConvBnAct has no attention slot (no paper of the family puts one there)")
        self.conv = self.make_conv(in_ch, out_ch, kernel_size, stride, 1, conv_layer)
        self.bn1, self.act1 = self.make_norm(out_ch), create_act(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.residual(x, self.act1(self.bn1(self.conv(x))))
