"""DenseNet (Huang, Liu, van der Maaten & Weinberger, CVPR 2017, arXiv:1608.06993).

Inside a dense block every layer receives the channel-wise concatenation of the block input and of all earlier
layers' outputs, and adds k new channels (the growth rate k):

    x_l = H_l([x_0, x_1, ..., x_{l-1}]),   H_l = BN-ReLU-conv1x1(4k) - BN-ReLU-conv3x3(k)   ("DenseNet-B")

so a block of L layers on C_0 channels ends with C_0 + L k channels. Between blocks a transition layer
BN-ReLU-conv1x1-avgpool2x2 halves the resolution and, with compression theta = 0.5, the channels ("-C").
After the last block: BN-ReLU, global average pooling, a linear classifier.

ImageNet DenseNet-BC (Table 1): 7x7/2 convolution to 2k channels, BN-ReLU, 3x3/2 max pooling, four blocks of
(6, 12, 24, 16) layers for DenseNet-121, (6, 12, 32, 32) for -169, (6, 12, 48, 32) for -201 (k = 32) and
(6, 12, 36, 24) with k = 48 for -161; the architecture of timm's and torchvision's ``densenet*``, whose weights
``load_timm_weights`` maps one to one (our module names are theirs). CIFAR DenseNet-BC (Table 2): a 3x3
convolution to 2k channels and three blocks of (L - 4) / 6 layers each, registered for (L, k) = (100, 12),
(250, 24) and (190, 40) with 10 classes. All follow the authors' models/densenet.lua (liuzhuang13/DenseNet):
bias-free convolutions, He-normal weights with fan_out (``ConvInit``), BN weights 1, zero classifier bias.
The authors pool the last map with a 7x7 (ImageNet) or 8x8 (CIFAR) average, i.e. globally at 224 / 32 pixels; we
average globally at every size. Memory-efficient (checkpointed) concatenation is not implemented.

Options beyond the paper's defaults: ``drop_rate`` puts dropout on each layer's k new channels (the paper uses
dropout after the convolutions only on CIFAR without augmentation; timm's ``proj_drop_rate``); ``attn_layer``
attends to each block's concatenated output, before its transition (DenseNet has no residual branch, so this is
the place that sees every layer's features); ``conv_layer`` replaces the 3x3 convolutions of the dense layers.

Input sizes: the ImageNet stem and three transitions (floor halving) need H, W >= 29; CIFAR models need >= 4.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import check_images, check_choice, check_positive_int, conv_fan_out_init
from ..registry import get_attn, get_conv, register_model
from ..timm import register_timm_rules


class DenseLayer(nn.Module):
    """BN-ReLU-conv1x1(bn_size * k)-BN-ReLU-conv3x3(k): a list of (N, C_i, H, W) maps -> (N, k, H, W)."""

    def __init__(self, in_ch: int, growth_rate: int, bn_size: int = 4, drop_rate: float = 0.0, conv_layer=None):
        super().__init__()
        mid = bn_size * growth_rate
        self.norm1 = nn.BatchNorm2d(in_ch)
        self.act1 = nn.ReLU()
        self.conv1 = nn.Conv2d(in_ch, mid, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(mid)
        self.act2 = nn.ReLU()
        self.conv2 = (conv_layer(mid, growth_rate, 3) if conv_layer is not None
                      else nn.Conv2d(mid, growth_rate, 3, padding=1, bias=False))
        self.drop = nn.Dropout(drop_rate)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = torch.cat(features, 1)
        return self.drop(self.conv2(self.act2(self.norm2(self.conv1(self.act1(self.norm1(x)))))))


class DenseBlock(nn.ModuleDict):
    """``num_layers`` dense layers: (N, C, H, W) -> (N, C + num_layers * k, H, W) [-> attention]."""

    def __init__(self, num_layers: int, in_ch: int, growth_rate: int, bn_size: int = 4, drop_rate: float = 0.0,
                 attn=None, conv_layer=None):
        super().__init__()
        for i in range(num_layers):
            self[f"denselayer{i + 1}"] = DenseLayer(in_ch + i * growth_rate, growth_rate, bn_size, drop_rate,
                                                    conv_layer)
        if attn is not None:
            self["attn"] = attn(in_ch + num_layers * growth_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for name, layer in self.items():
            if name != "attn":
                features.append(layer(features))
        out = torch.cat(features, 1)
        return self["attn"](out) if "attn" in self else out


class Transition(nn.Sequential):
    """BN-ReLU-conv1x1-avgpool2x2: (N, C, H, W) -> (N, C_out, floor(H/2), floor(W/2))."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__(OrderedDict(norm=nn.BatchNorm2d(in_ch), act=nn.ReLU(),
                                     conv=nn.Conv2d(in_ch, out_ch, 1, bias=False), pool=nn.AvgPool2d(2, 2)))


class DenseNet(nn.Module):
    """(N, in_chans, H, W) -> (N, num_classes).

    Args:
        growth_rate: k. block_config: layers per dense block. bn_size: width of the 1x1 bottleneck in units of k
        (4, "DenseNet-B"). compression: theta of the transitions (0.5, "-C"). stem: "imagenet" (7x7/2 conv,
        BN-ReLU, 3x3/2 max pool) or "cifar" (one 3x3 conv). drop_rate: dropout on each layer's new channels.
        attn_layer / attn_kwargs: attention on each block's output. conv_layer / conv_kwargs: the 3x3 convolutions.
    """

    def __init__(self, growth_rate: int = 32, block_config: tuple[int, ...] = (6, 12, 24, 16), num_classes: int = 1000,
                 in_chans: int = 3, bn_size: int = 4, compression: float = 0.5, stem: str = "imagenet",
                 drop_rate: float = 0.0, attn_layer=None, attn_kwargs: dict | None = None, conv_layer=None,
                 conv_kwargs: dict | None = None):
        super().__init__()
        for name, value in (("growth_rate", growth_rate), ("num_classes", num_classes), ("in_chans", in_chans),
                            ("bn_size", bn_size)):
            check_positive_int(name, value)
        block_config = tuple(block_config)
        if not block_config:
            raise ValueError("block_config must list at least one dense block")
        for i, n in enumerate(block_config):
            check_positive_int(f"block_config[{i}]", n)
        if not 0.0 < compression <= 1.0:
            raise ValueError(f"compression must be in (0, 1], got {compression!r}")
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate!r}")
        self.stem_type = check_choice("stem", stem, ("imagenet", "cifar"))
        attn = get_attn(attn_layer, **(attn_kwargs or {}))
        conv = get_conv(conv_layer, **(conv_kwargs or {}))
        ch = 2 * growth_rate
        if stem == "imagenet":
            layers = OrderedDict(conv0=nn.Conv2d(in_chans, ch, 7, 2, 3, bias=False), norm0=nn.BatchNorm2d(ch),
                                 act0=nn.ReLU(), pool0=nn.MaxPool2d(3, 2, 1))
        else:
            layers = OrderedDict(conv0=nn.Conv2d(in_chans, ch, 3, padding=1, bias=False))
        for i, n in enumerate(block_config):
            layers[f"denseblock{i + 1}"] = DenseBlock(n, ch, growth_rate, bn_size, drop_rate, attn, conv)
            ch += n * growth_rate
            if i < len(block_config) - 1:
                layers[f"transition{i + 1}"] = Transition(ch, int(ch * compression))
                ch = int(ch * compression)
        layers["norm5"] = nn.BatchNorm2d(ch)
        layers["act5"] = nn.ReLU()
        self.features = nn.Sequential(layers)
        self.num_features = ch
        self.head = nn.Linear(ch, num_classes)
        # the smallest input whose map survives the stem (/4, ceil) and the transitions (/2, floor)
        halvings = 2 ** (len(block_config) - 1)
        self.min_size = 4 * (halvings - 1) + 1 if stem == "imagenet" else halvings
        conv_fan_out_init(self)
        nn.init.zeros_(self.head.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_chans, H, W) -> (N, num_features, H', W') after the final BN-ReLU."""
        check_images("DenseNet", x, self.min_size, f"the {self.stem_type} stem and every transition floor the map")
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.adaptive_avg_pool2d(self.forward_features(x), 1).flatten(1))


# timm's DenseNet (timm/models/densenet.py, torchvision's layout) has our names; its BatchNormAct2d holds the
# activation inside the norm (no parameters), its classifier is ``classifier``.
register_timm_rules(DenseNet, renames=((r"^classifier\.", "head."),))

for _depth, _k, _blocks in ((121, 32, (6, 12, 24, 16)), (169, 32, (6, 12, 32, 32)), (201, 32, (6, 12, 48, 32)),
                            (161, 48, (6, 12, 36, 24))):
    register_model(f"densenet{_depth}", DenseNet, timm=f"densenet{_depth}", growth_rate=_k, block_config=_blocks)
for _depth, _k in ((100, 12), (250, 24), (190, 40)):
    _n = (_depth - 4) // 6
    register_model(f"densenet_bc{_depth}_{_k}", DenseNet, growth_rate=_k, block_config=(_n, _n, _n), stem="cifar",
                   num_classes=10)
