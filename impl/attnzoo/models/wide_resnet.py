"""Wide Residual Networks (Zagoruyko & Komodakis, BMVC 2016, arXiv:1605.07146).

Fewer, wider residual blocks instead of many thin ones. On CIFAR, WRN-d-k is a pre-activation ResNet whose three
groups of n = (d - 4) / 6 "basic-wide" blocks have 16k, 32k and 64k channels (k is the widening factor):

    conv3x3(3 -> 16) -> group(16k, n, /1) -> group(32k, n, /2) -> group(64k, n, /2) -> BN-ReLU -> pool -> fc
    block(x) = conv3x3(dropout(relu(bn(conv3x3(relu(bn(x))))))) + shortcut(x)

with dropout between the two convolutions as an option (the paper's "WRN-28-10-dropout" uses p = 0.3). As in
the authors' code (pytorch/resnet.py and models/wide-resnet.lua of szagoruyko/wide-residual-networks), when a
block changes the width its shortcut is a 1x1 convolution (stride 1 or 2, no BN) of the *pre-activated* input
relu(bn(x)), which the residual branch shares; otherwise it is the identity on x. Convolutions have no bias
(their ``DisableBias``); weights are He-normal with fan_out (their ``MSRinit``), classifier biases zero.
``layers=(n, n, n)`` and ``width=k`` give WRN-(6n+4)-k; the paper's CIFAR table (Table 5) lists WRN-40-4
(8.9M), WRN-16-8 (11.0M) and WRN-28-10 (36.5M), registered as ``wide_resnet40_4``, ``wide_resnet16_8``,
``wide_resnet28_10`` with 10 classes (CIFAR-10) by default. The authors pool with an 8x8 average on the 8x8
map of a 32x32 image; we average the whole last map, the same at 32x32 and defined for any input size.
``attn_layer`` goes on the residual branch after its last convolution, before the addition (the pre-activation
block has no BN after it), ``conv_layer`` replaces the 3x3 convolutions.

On ImageNet the paper widens ResNet-50's bottlenecks: WRN-50-2-bottleneck doubles the width of every 1x1-3x3
inner pair and keeps the block outputs (256 ... 2048). It is our ResNet with the "wide" block registered here
(``wide_resnet50_2``, 68.9M parameters as the authors' pretrained/README.md; ``wide_resnet101_2``), the
architecture of torchvision's and timm's models of the same names (whose weights load one to one). The authors'
ImageNet model is the fb.resnet.torch bottleneck, which has its stride on the 3x3 convolution as ours.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..layers import check_images, check_positive_int, conv_fan_out_init
from ..registry import get_attn, get_conv, register_model
from .resnet import Bottleneck, ResNet, register_block


class WideBottleneck(Bottleneck):
    """ResNet bottleneck whose 1x1 -> 3x3 inner pair is twice as wide (WRN-50-2); outputs ``4 * width`` as usual."""

    width_factor = 2


register_block("wide", WideBottleneck)


class WideBasic(nn.Module):
    """Pre-activation "basic-wide" block: BN-ReLU-conv3x3-[dropout]-BN-ReLU-conv3x3 (+ attention) + shortcut.

    (N, in_ch, H, W) -> (N, out_ch, ceil(H / stride), ceil(W / stride)).
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, drop_rate: float = 0.0, attn=None, conv_layer=None):
        super().__init__()
        conv = conv_layer or (lambda i, o, k, stride=1, groups=1: nn.Conv2d(i, o, k, stride, k // 2, bias=False))
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.conv1 = conv(in_ch, out_ch, 3, stride=stride)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.dropout = nn.Dropout(drop_rate)
        self.conv2 = conv(out_ch, out_ch, 3)
        self.attn = attn(out_ch) if attn is not None else nn.Identity()
        self.act = nn.ReLU()
        self.shortcut = (nn.Conv2d(in_ch, out_ch, 1, stride, bias=False)
                         if in_ch != out_ch or stride != 1 else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.act(self.bn1(x))
        y = self.conv1(pre)
        y = self.attn(self.conv2(self.dropout(self.act(self.bn2(y)))))
        return y + (x if self.shortcut is None else self.shortcut(pre))


class WideResNet(nn.Module):
    """CIFAR WRN-(6n+4)-k: (N, in_chans, H, W) -> (N, num_classes); the paper's 32x32 inputs, any H, W >= 1.

    Args:
        layers: blocks per group (three; n each gives depth 6n + 4). width: the widening factor k.
        drop_rate: dropout between the two convolutions of every block (paper: 0.3 with dropout, else 0).
        attn_layer / attn_kwargs: attention on each residual branch, after its last convolution.
        conv_layer / conv_kwargs: a registered conv (or factory) for the 3x3 convolutions of the blocks.
    """

    def __init__(self, layers: tuple[int, ...] = (4, 4, 4), width: int = 10, num_classes: int = 10,
                 in_chans: int = 3, drop_rate: float = 0.0, attn_layer=None, attn_kwargs: dict | None = None,
                 conv_layer=None, conv_kwargs: dict | None = None):
        super().__init__()
        layers = tuple(layers)
        if len(layers) != 3:
            raise ValueError(f"layers must give the blocks of the three groups, got {layers!r}")
        for i, n in enumerate(layers):
            check_positive_int(f"layers[{i}]", n)
        check_positive_int("width", width)
        check_positive_int("num_classes", num_classes)
        check_positive_int("in_chans", in_chans)
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate!r}")
        attn = get_attn(attn_layer, **(attn_kwargs or {}))
        conv = get_conv(conv_layer, **(conv_kwargs or {}))
        self.stem = nn.Conv2d(in_chans, 16, 3, padding=1, bias=False)
        groups, in_ch = [], 16
        for g, (n, base) in enumerate(zip(layers, (16, 32, 64))):
            out_ch = base * width
            groups.append(nn.Sequential(*[WideBasic(in_ch if b == 0 else out_ch, out_ch, 2 if g > 0 and b == 0 else 1,
                                                    drop_rate, attn, conv) for b in range(n)]))
            in_ch = out_ch
        self.stages = nn.Sequential(*groups)
        self.norm = nn.BatchNorm2d(in_ch)
        self.act = nn.ReLU()
        self.num_features = in_ch
        self.head = nn.Linear(in_ch, num_classes)
        conv_fan_out_init(self)
        nn.init.zeros_(self.head.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_chans, H, W) -> (N, 64k, ceil(H/4), ceil(W/4)), after the final BN-ReLU."""
        check_images("WideResNet", x)
        return self.act(self.norm(self.stages(self.stem(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x).mean(dim=(2, 3)))


for _depth, _layers in ((50, (3, 4, 6, 3)), (101, (3, 4, 23, 3))):
    register_model(f"wide_resnet{_depth}_2", ResNet, timm=f"wide_resnet{_depth}_2", block="wide", layers=_layers)
for _depth, _k in ((40, 4), (16, 8), (28, 10)):
    _n = (_depth - 4) // 6
    register_model(f"wide_resnet{_depth}_{_k}", WideResNet, layers=(_n, _n, _n), width=_k)
