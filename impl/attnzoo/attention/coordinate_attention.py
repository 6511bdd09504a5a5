"""Coordinate attention (Hou, Zhou & Feng, "Coordinate Attention for Efficient Mobile Network Design", CVPR 2021,
arXiv:2103.02907).

SE squeezes each channel to a single number and so forgets *where* a feature was. Coordinate attention squeezes
along one axis at a time instead, keeping the other one:

    z^h_c(i) = mean_j x_c(i, j)   (one value per row i),     z^w_c(j) = mean_i x_c(i, j)   (one per column j).

Both strips are concatenated along the spatial axis and go through one shared 1x1 convolution C -> C' with
BatchNorm and a non-linearity, f = act(BN(F1([z^h, z^w]))), with C' = max(8, C / r) and r = 32. f is split back
into its row part f^h (C' x H) and column part f^w (C' x W), and two 1x1 convolutions C' -> C give the gates

    g^h = sigmoid(F_h(f^h)) (C x H x 1),   g^w = sigmoid(F_w(f^w)) (C x 1 x W),
    y_c(i, j) = x_c(i, j) g^h_c(i) g^w_c(j).

So each channel gets a separable 2D map: an object that covers some rows and columns gets those rows and
columns amplified, which is why the paper reports larger gains on detection and segmentation than on
classification. Pooling is adaptive (a mean), so any H, W works.

Backbone: the paper's main ImageNet model is MobileNetV2 with one block inside every inverted residual with
expansion 6, right after the depthwise 3x3 convolution and before the linear projection (authors' mbv2_ca.py);
it is registered here as ``coord_attn_mobilenetv2`` (3.95 M parameters, 310 M MAdds in the paper), built from
``attnzoo.models.mobilenetv2.MobileNetV2`` through its ``attn_layer`` slot.

Departures: none in the module. The non-linearity is h-swish as in the authors' code (the paper's text leaves it
open; the README notes h-swish works better than ReLU6).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..layers import ConvNormAct, check_positive_int
from ..models.mobilenetv2 import MobileNetV2
from ..registry import register_attention, register_model


@register_attention("coord_attn")
class CoordAttention(nn.Module):
    """(N, C, H, W) -> (N, C, H, W): x * g^h (per row) * g^w (per column), both per channel.

    Args:
        channels: C. reduction: r, the shared 1x1 convolution has max(min_channels, C // r) outputs (paper: 32).
        min_channels: lower bound of that width (paper's code: 8). act: its non-linearity (code: h-swish).
    """

    def __init__(self, channels: int, reduction: int = 32, min_channels: int = 8, act: str = "hard_swish"):
        super().__init__()
        check_positive_int("channels", channels)
        check_positive_int("reduction", reduction)
        check_positive_int("min_channels", min_channels)
        mid = max(min_channels, channels // reduction)
        self.encode = ConvNormAct(channels, mid, 1, act=act, bias=True)  # conv (with bias, as in the code), BN, act
        self.conv_h = nn.Conv2d(mid, channels, 1)
        self.conv_w = nn.Conv2d(mid, channels, 1)

    def weights(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The row gate g^h (N, C, H, 1) and the column gate g^w (N, C, 1, W)."""
        h, w = x.shape[-2:]
        z_h = x.mean(dim=3, keepdim=True)  # (N, C, H, 1)
        z_w = x.mean(dim=2, keepdim=True).transpose(2, 3)  # (N, C, W, 1)
        f_h, f_w = self.encode(torch.cat([z_h, z_w], dim=2)).split([h, w], dim=2)
        return torch.sigmoid(self.conv_h(f_h)), torch.sigmoid(self.conv_w(f_w.transpose(2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g_h, g_w = self.weights(x)
        return x * g_h * g_w


register_model("coord_attn_mobilenetv2", MobileNetV2, attn_layer="coord_attn")
