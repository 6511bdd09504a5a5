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
it is registered here as ``coord_attn_mobilenetv2`` (3.95 M parameters, 310 M MAdds in the paper). The small
MobileNetV2 builder below follows the standard design (Sandler et al., 2018) with an attention slot; it lives in
this file because the package has no MobileNetV2 model yet.

Departures: none in the module. The non-linearity is h-swish as in the authors' code (the paper's text leaves it
open; the README notes h-swish works better than ReLU6).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..layers import ConvNormAct, check_positive_int, make_divisible
from ..registry import get_attn, register_attention, register_model


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


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand -> 3x3 depthwise -> [attention] -> 1x1 linear projection (+ x if shapes match)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, expand: int, attn=None):
        super().__init__()
        hidden = round(in_ch * expand)
        layers = [] if expand == 1 else [ConvNormAct(in_ch, hidden, 1, act="relu6")]
        layers.append(ConvNormAct(hidden, hidden, 3, stride, groups=hidden, act="relu6"))
        if attn is not None and expand != 1:  # the authors' code skips the first (expansion 1) block
            layers.append(attn(hidden))
        layers.append(ConvNormAct(hidden, out_ch, 1, act=None))
        self.conv = nn.Sequential(*layers)
        self.use_residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return x + y if self.use_residual else y


# (expansion t, output channels c, repeats n, first stride s) of MobileNetV2 (Sandler et al., 2018, Table 2)
MBV2_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                 (6, 320, 1, 1))


class MobileNetV2(nn.Module):
    """(N, in_chans, H, W) -> (N, num_classes); ``attn_layer`` goes after each depthwise convolution (t = 6)."""

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, width_mult: float = 1.0, attn_layer=None,
                 attn_kwargs: dict | None = None, drop_rate: float = 0.1):
        super().__init__()
        check_positive_int("num_classes", num_classes)
        check_positive_int("in_chans", in_chans)
        if not width_mult > 0:
            raise ValueError(f"width_mult must be positive, got {width_mult!r}")
        attn = get_attn(attn_layer, **(attn_kwargs or {}))
        in_ch = make_divisible(32 * width_mult, 8)
        blocks = [ConvNormAct(in_chans, in_ch, 3, 2, act="relu6")]
        for t, c, n, s in MBV2_SETTINGS:
            out_ch = make_divisible(c * width_mult, 8)
            for i in range(n):
                blocks.append(InvertedResidual(in_ch, out_ch, s if i == 0 else 1, t, attn))
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


register_model("coord_attn_mobilenetv2", MobileNetV2, attn_layer="coord_attn")
