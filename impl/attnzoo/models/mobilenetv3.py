"""MobileNetV3-Large and -Small (Howard et al., ICCV 2019, arXiv:1905.02244) as tables of ``MBConvNet`` rows.

A platform-aware search (MnasNet's, per block) followed by NetAdapt (per layer widths) finds the networks, then
the authors redesign by hand what the search left expensive: the stem has 16 channels instead of 32, the last
stage's 1x1 expansion moves after the global pooling (pooling first, then a 1x1 convolution to 1280/1024 channels
with no BatchNorm, so it runs on a 1x1 map), and the activation is hard-swish, h-swish(x) = x ReLU6(x + 3) / 6,
in the second half of the network (and the stem), ReLU elsewhere. The blocks are MobileNetV2's inverted residuals,
some with squeeze-and-excitation after the depthwise convolution:

    s = h-sigmoid(W2 ReLU(W1 mean_hw(v))),   h-sigmoid(x) = ReLU6(x + 3) / 6,

squeezing to a quarter of the *expanded* width rounded to a multiple of 8 (never below 90 %), as the authors'
TF-slim code (``nets/mobilenet/mobilenet_v3.py``: ``squeeze_excite`` with ``divisible_by=8, squeeze_factor=4``).
The SE here is the registered ``se`` module with these settings; ``attn_layer`` replaces it.

Rows: Table 1 (Large) and Table 2 (Small) of the paper, with their expansion widths as ratios of the block input
(72/16 = 4.5, 88/24 = 3.67, ... rounded back to the table's widths by ``make_divisible``). Settings of the official
code: TF "SAME" padding, BatchNorm eps 1e-3 and decay 0.997 (momentum 0.003 here), dropout 0.2 before the
classifier. This is timm's ``tf_mobilenetv3_large_100`` / ``tf_mobilenetv3_small_100`` (the authors' weights
ported), the registered twins; timm's own trainings ``mobilenetv3_large_100``/``_small_100`` are the same network
with ``padding="symmetric", bn_eps=1e-5, bn_momentum=0.1``. Departure: weights are initialised as EfficientNet's
code does (normal with std sqrt(2 / fan_out)), not slim's truncated normal of std 0.09 (no effect on loaded
weights).
"""
from __future__ import annotations

from ..registry import register_model
from .efficientnet import MBConvNet, Row

RE, HS = "relu", "hard_swish"

# Table 1: (operator, exp size, #out, SE, NL, s) -> Row(block, repeats, kernel, stride, exp size / input, out, se)
MOBILENETV3_LARGE = (
    (Row("ds", 1, 3, 1, 1, 16, act=RE),),
    (Row("mb", 1, 3, 2, 4, 24, act=RE), Row("mb", 1, 3, 1, 3, 24, act=RE)),
    (Row("mb", 3, 5, 2, 3, 40, se=0.25, act=RE),),
    (Row("mb", 1, 3, 2, 6, 80), Row("mb", 1, 3, 1, 2.5, 80), Row("mb", 2, 3, 1, 2.3, 80)),
    (Row("mb", 2, 3, 1, 6, 112, se=0.25),),
    (Row("mb", 3, 5, 2, 6, 160, se=0.25),),
    (Row("conv", 1, 1, 1, 1, 960, skip=False),),
)

# Table 2
MOBILENETV3_SMALL = (
    (Row("ds", 1, 3, 2, 1, 16, se=0.25, act=RE),),
    (Row("mb", 1, 3, 2, 4.5, 24, act=RE), Row("mb", 1, 3, 1, 3.67, 24, act=RE)),
    (Row("mb", 1, 5, 2, 4, 40, se=0.25), Row("mb", 2, 5, 1, 6, 40, se=0.25)),
    (Row("mb", 2, 5, 1, 3, 48, se=0.25),),
    (Row("mb", 3, 5, 2, 6, 96, se=0.25),),
    (Row("conv", 1, 1, 1, 1, 576, skip=False),),
)

MOBILENETV3 = dict(stem_width=16, head="pool_conv", act=HS, se_kwargs=dict(act="relu", gate="hard_sigmoid"),
                   se_from="mid", se_divisor=8, bn_momentum=0.003, drop_rate=0.2)


class MobileNetV3(MBConvNet):
    """The registered MobileNetV3 models: ``MBConvNet`` built from the rows above (see the module docstring)."""


register_model("mobilenetv3_large", MobileNetV3, timm="tf_mobilenetv3_large_100", arch=MOBILENETV3_LARGE,
               num_features=1280, **MOBILENETV3)
register_model("mobilenetv3_small", MobileNetV3, timm="tf_mobilenetv3_small_100", arch=MOBILENETV3_SMALL,
               num_features=1024, **MOBILENETV3)
