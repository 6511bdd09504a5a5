"""MobileNet V1 (Howard, Zhu, Chen, Kalenichenko, Wang, Weyand, Andreetto & Adam, arXiv:1704.04861, 2017).

Every convolution after the stem is factorised into a depthwise 3x3 convolution (one filter per channel) and a
pointwise 1x1 convolution that mixes channels, each followed by BN and the activation:

    cost(standard) = D_K^2 M N D_F^2   ->   cost(separable) = D_K^2 M D_F^2 + M N D_F^2   (Eq. 5),

8-9x fewer multiply-adds for 3x3 kernels. The body (Table 1): a 3x3/2 convolution to 32 channels, then 13
depthwise-separable blocks of widths 64, 128, 128, 256, 256, 512 (x6), 1024, 1024 with stride 2 at the second,
fourth, sixth and twelfth; global average pooling and one linear classifier. Table 1 lists the last depthwise
convolution with stride 2, which would reduce the 7x7 map before the 7x7 pooling; the authors' TF-slim code
(``mobilenet_v1.py``, ``MOBILENETV1_CONV_DEFS``) and every released model use stride 1 there, as we do.

The width multiplier alpha scales every layer (the paper's 1.0, 0.75, 0.5, 0.25; registered as ``mobilenetv1_100``
... ``mobilenetv1_025``), rounded to a multiple of 8 as timm does; for these four multipliers this equals slim's
``max(int(d * alpha), 8)``. The resolution multiplier is the input size. As in the slim code (and timm), the
activation is ReLU6 (the paper says ReLU; ``act="relu"`` gives it), and ``drop_rate`` is dropout before the
classifier (slim's default keeps 99.9 %). ``mobilenetv1_100`` has the architecture of timm's model of the same
name, whose weights ``load_timm_weights`` maps one to one (our module names are timm's).

``attn_layer`` goes after each depthwise convolution (BN and activation), before the pointwise one, where
MobileNetV2/V3 and Coordinate Attention put theirs; ``conv_layer`` replaces the depthwise convolutions
(called with ``groups`` = channels).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..layers import check_images, check_positive_int, create_act, make_divisible, conv_fan_out_init
from ..layers.head import pooled_logits
from ..registry import get_attn, get_conv, register_model
from ..timm import register_timm_rules

# (output channels, stride) of the 13 depthwise-separable blocks, grouped as timm groups them (by stride)
MBV1_STAGES = (((64, 1),), ((128, 2), (128, 1)), ((256, 2), (256, 1)), ((512, 2),) + ((512, 1),) * 5,
               ((1024, 2), (1024, 1)))


class DepthwiseSeparable(nn.Module):
    """3x3 depthwise conv-BN-act [-> attention] -> 1x1 pointwise conv-BN-act.

    (N, in_ch, H, W) -> (N, out_ch, ceil(H / stride), ceil(W / stride)).
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, act: str = "relu6", attn=None, conv_layer=None):
        super().__init__()
        self.conv_dw = (conv_layer(in_ch, in_ch, 3, stride=stride, groups=in_ch) if conv_layer is not None
                        else nn.Conv2d(in_ch, in_ch, 3, stride, 1, groups=in_ch, bias=False))
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.act1 = create_act(act)
        self.se = attn(in_ch) if attn is not None else nn.Identity()
        self.conv_pw = nn.Conv2d(in_ch, out_ch, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.act2 = create_act(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.se(self.act1(self.bn1(self.conv_dw(x))))
        return self.act2(self.bn2(self.conv_pw(x)))


class MobileNetV1(nn.Module):
    """(N, in_chans, H, W) -> (N, num_classes); any H, W >= 1 (the map is ceil(H/32) x ceil(W/32)).

    Args:
        width_mult: alpha. act: "relu6" (the authors' code) or "relu" (the paper's text). drop_rate: dropout
        before the classifier. attn_layer / attn_kwargs: attention after each depthwise convolution.
        conv_layer / conv_kwargs: a registered conv (or factory) for the depthwise convolutions.
    """

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, width_mult: float = 1.0, act: str = "relu6",
                 drop_rate: float = 0.0, attn_layer=None, attn_kwargs: dict | None = None, conv_layer=None,
                 conv_kwargs: dict | None = None):
        super().__init__()
        check_positive_int("num_classes", num_classes)
        check_positive_int("in_chans", in_chans)
        if not width_mult > 0:
            raise ValueError(f"width_mult must be positive, got {width_mult!r}")
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate!r}")
        create_act(act)
        attn = get_attn(attn_layer, **(attn_kwargs or {}))
        conv = get_conv(conv_layer, **(conv_kwargs or {}))
        ch = make_divisible(32 * width_mult, 8)
        self.conv_stem = nn.Conv2d(in_chans, ch, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(ch)
        self.act1 = create_act(act)
        stages = []
        for stage in MBV1_STAGES:
            blocks = []
            for c, s in stage:
                out = make_divisible(c * width_mult, 8)
                blocks.append(DepthwiseSeparable(ch, out, s, act, attn, conv))
                ch = out
            stages.append(nn.Sequential(*blocks))
        self.blocks = nn.Sequential(*stages)
        self.num_features = ch
        self.head_drop = nn.Dropout(drop_rate)
        self.classifier = nn.Linear(ch, num_classes)
        conv_fan_out_init(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_chans, H, W) -> (N, num_features, ceil(H/32), ceil(W/32))."""
        check_images("MobileNetV1", x)
        return self.blocks(self.act1(self.bn1(self.conv_stem(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pooled_logits(self.forward_features(x), self.classifier, self.head_drop)


# timm's MobileNet V1 (an EfficientNet built from "dsa" blocks, timm/models/efficientnet.py) has our names; its
# BatchNormAct2d holds the activation (no parameters).
register_timm_rules(MobileNetV1, renames=())

for _alpha in (1.0, 0.75, 0.5, 0.25):
    _name = f"mobilenetv1_{round(_alpha * 100):03d}"
    register_model(_name, MobileNetV1, timm=_name if _alpha == 1.0 else None, width_mult=_alpha)
