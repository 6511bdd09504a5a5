"""EfficientNetV2-S/M/L (Tan & Le, ICML 2021, arXiv:2104.00298) as ``MBConvNet`` rows.

EfficientNetV2 searches for training speed as well as accuracy and size. Depthwise convolutions are slow on
accelerators at high resolution, so the early stages use **Fused-MBConv**: the 1x1 expansion and the 3x3
depthwise convolution of MBConv fused into one regular 3x3 convolution (with expansion 1, a single 3x3
convolution with a residual), then the 1x1 projection. The later stages keep MBConv with squeeze-and-excitation.
Compared with EfficientNet the search prefers small expansion ratios (1, 4) early, 3x3 kernels only (more layers
make up the receptive field) and drops EfficientNet's last stride-1 stage in V2-S (Table 4). V2-M and V2-L scale
V2-S (compound scaling, with the largest evaluation size capped at 480 and layers added mostly to stages 5 and
6; Sec. 4.2), and are the released configurations.

Rows (the official ``effnetv2_configs.py``, google/automl/efficientnetv2; Table 4 for V2-S): every stage has
kernel 3; stage 0 is a Fused-MBConv with expansion 1 (a conv-BN-SiLU with a residual), stages 1-2 Fused-MBConv
with expansion 4, stage 3 MBConv 4 with SE, stages 4-6 MBConv 6 with SE (V2-S has no stage 6). Depths and widths:

    S: (2, 4, 4, 6, 9, 15),     (24, 48, 64, 128, 160, 256),        stem 24, dropout 0.2
    M: (3, 5, 5, 7, 14, 18, 5), (24, 48, 80, 160, 176, 304, 512),   stem 24, dropout 0.3
    L: (4, 7, 7, 10, 19, 25, 7), (32, 64, 96, 192, 224, 384, 640),  stem 32, dropout 0.4

and a 1x1 head to 1280 channels. Settings of the official code: SiLU, SE squeezing to max(1, int(0.25 C_in)) of
the block's input width (SiLU inside, sigmoid gate; the registered ``se`` module, replaceable by ``attn_layer``),
TF "SAME" padding, BatchNorm eps 1e-3 and momentum 0.9 (PyTorch's 0.1), stochastic depth up to 0.2 (survival
probability 0.8), the EfficientNet initialisation. This is timm's ``tf_efficientnetv2_s/m/l`` (the authors'
ImageNet-1k weights ported), the registered twins.
"""
from __future__ import annotations

from ..registry import register_model
from .efficientnet import MBConvNet, Row

# The seven stage types of the V2 family; each variant sets the depths and widths (repeats and channels: 0, 0).
EFFICIENTNETV2 = (
    (Row("conv", 0, 3, 1, 1, 0),),
    (Row("fused", 0, 3, 2, 4, 0),),
    (Row("fused", 0, 3, 2, 4, 0),),
    (Row("mb", 0, 3, 2, 4, 0, se=0.25),),
    (Row("mb", 0, 3, 1, 6, 0, se=0.25),),
    (Row("mb", 0, 3, 2, 6, 0, se=0.25),),
    (Row("mb", 0, 3, 1, 6, 0, se=0.25),),
)

EFFICIENTNETV2_VARIANTS = {
    "s": dict(depths=(2, 4, 4, 6, 9, 15), widths=(24, 48, 64, 128, 160, 256), stem_width=24, drop_rate=0.2),
    "m": dict(depths=(3, 5, 5, 7, 14, 18, 5), widths=(24, 48, 80, 160, 176, 304, 512), stem_width=24, drop_rate=0.3),
    "l": dict(depths=(4, 7, 7, 10, 19, 25, 7), widths=(32, 64, 96, 192, 224, 384, 640), stem_width=32, drop_rate=0.4),
}


class EfficientNetV2(MBConvNet):
    """The registered EfficientNetV2 models: ``MBConvNet`` built from the rows above (see the module docstring)."""


for _v, _cfg in EFFICIENTNETV2_VARIANTS.items():
    register_model(f"efficientnetv2_{_v}", EfficientNetV2, timm=f"tf_efficientnetv2_{_v}", arch=EFFICIENTNETV2,
                   act="silu", se_kwargs=dict(act="silu", gate="sigmoid"), bn_momentum=0.1, drop_path_rate=0.2,
                   **_cfg)
