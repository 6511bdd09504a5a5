"""MnasNet-A1 and -B1 (Tan, Chen, Pang, Vasudevan, Sandler, Howard & Le, CVPR 2019, arXiv:1807.11626).

A reinforcement-learning controller searches mobile CNNs with the reward ACC(m) [LAT(m) / T]^w, the latency
LAT measured on a Pixel phone against a target T (w = -0.07), over a *factorised hierarchical* space: the
network is split into 7 blocks and each block picks its own operation, kernel, SE ratio, skip, width and number
of layers, so that different stages can differ (Sec. 4). The search gives MnasNet-A1 (Fig. 7, Table 1: 3.9 M
parameters, 312 M multiply-adds, 75.2 % top-1): MobileNetV2 inverted residuals of kernel 3 or 5, three stages
with squeeze-and-excitation (ratio 0.25), ReLU throughout. MnasNet-B1 is the model of the search space without SE
(the official ``mnasnet_models.py``; it is not in the paper's tables, which report A1-A3).

Rows from the official code (tensorflow/tpu, models/official/mnasnet/mnasnet_models.py, ``mnasnet_a1`` and
``mnasnet_b1``): stem 3x3/2 with 32 channels, a depthwise-separable first block without skip, a 1x1 head to 1280
channels, dropout 0.2. SE squeezes to max(1, int(0.25 C_in)) channels of the block's input width with a ReLU and a
sigmoid (``_call_se`` in mnasnet_model.py); here it is the registered ``se`` module (``attn_layer`` replaces it).

Padding and BatchNorm: the official code pads as TensorFlow's "SAME" with BatchNorm eps 1e-3; timm has only its
own PyTorch trainings of these networks (``semnasnet_100`` = A1, ``mnasnet_100`` = B1, padding k // 2, eps 1e-5),
and the registered models use those settings so that timm's weights give timm's logits. That is our departure
from the official code, chosen for the weights; ``padding="same", bn_eps=1e-3, bn_momentum=0.01`` is the
official network (same parameters and multiply-adds).
"""
from __future__ import annotations

from ..registry import register_model
from .efficientnet import MBConvNet, Row

MNASNET_A1 = (
    (Row("ds", 1, 3, 1, 1, 16, skip=False),),
    (Row("mb", 2, 3, 2, 6, 24),),
    (Row("mb", 3, 5, 2, 3, 40, se=0.25),),
    (Row("mb", 4, 3, 2, 6, 80),),
    (Row("mb", 2, 3, 1, 6, 112, se=0.25),),
    (Row("mb", 3, 5, 2, 6, 160, se=0.25),),
    (Row("mb", 1, 3, 1, 6, 320),),
)

MNASNET_B1 = (
    (Row("ds", 1, 3, 1, 1, 16, skip=False),),
    (Row("mb", 3, 3, 2, 3, 24),),
    (Row("mb", 3, 5, 2, 3, 40),),
    (Row("mb", 3, 5, 2, 6, 80),),
    (Row("mb", 2, 3, 1, 6, 96),),
    (Row("mb", 4, 5, 2, 6, 192),),
    (Row("mb", 1, 3, 1, 6, 320, skip=False),),
)

MNASNET = dict(act="relu", se_kwargs=dict(act="relu", gate="sigmoid"), padding="symmetric", bn_eps=1e-5,
               bn_momentum=0.1, drop_rate=0.2)


class MnasNet(MBConvNet):
    """The registered MnasNet models: ``MBConvNet`` built from the rows above (see the module docstring)."""


register_model("mnasnet_a1", MnasNet, timm="semnasnet_100", arch=MNASNET_A1, **MNASNET)
register_model("mnasnet_b1", MnasNet, timm="mnasnet_100", arch=MNASNET_B1, **MNASNET)
