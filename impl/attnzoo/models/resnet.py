"""ResNet (He, Zhang, Ren & Sun, CVPR 2016, arXiv:1512.03385), with an ``attn_layer`` slot in every block.

Basic blocks (two 3x3 convs) for ResNet-18/34, bottlenecks (1x1 -> 3x3 -> 1x1, expansion 4) for ResNet-50+.
Downsampling follows torchvision's "ResNet v1.5": the stride sits on the bottleneck's 3x3 convolution rather than
on its first 1x1 as in the paper. Parameters and output shapes are unchanged; the 3x3 convolutions of downsampling blocks then
run at the higher resolution, so ResNet-50 costs 4.1 rather than the paper's 3.9 GMACs. We keep v1.5
because it is what torchvision's and timm's ResNet-50 (our reference for parity and speed) use. Projection shortcuts (option B) when shape changes.

Attention modules are inserted on the residual branch after the last BatchNorm, before the addition: where
SE (Fig. 3 of arXiv:1709.01507) and CBAM (Fig. 3 of arXiv:1807.06521) put them. Variants are data: see ``register_resnet``.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from ..layers import ConvNormAct, DropPath, check_choice, check_positive_int
from ..registry import get_attn, register_model


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_ch: int, width: int, stride: int = 1, attn: Callable | None = None, drop_path: float = 0.0):
        super().__init__()
        out_ch = width * self.expansion
        self.conv1 = ConvNormAct(in_ch, width, 3, stride)
        self.conv2 = ConvNormAct(width, out_ch, 3, act=None)
        self.attn = attn(out_ch) if attn else nn.Identity()
        self.shortcut = projection_shortcut(in_ch, out_ch, stride)
        self.drop_path = DropPath(drop_path)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.attn(self.conv2(self.conv1(x)))
        return self.act(self.drop_path(y) + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (``mid_conv``) -> 1x1 expand. Subclasses change ``width_factor`` (the 3x3's width as a
    multiple of the stage width) and ``mid_conv`` (e.g. SKNet's selective-kernel unit)."""

    expansion = 4
    width_factor = 1

    def __init__(self, in_ch: int, width: int, stride: int = 1, attn: Callable | None = None, drop_path: float = 0.0):
        super().__init__()
        mid, out_ch = width * self.width_factor, width * self.expansion
        self.conv1 = ConvNormAct(in_ch, mid, 1)
        self.conv2 = self.mid_conv(mid, stride)
        self.conv3 = ConvNormAct(mid, out_ch, 1, act=None)
        self.attn = attn(out_ch) if attn else nn.Identity()
        self.shortcut = projection_shortcut(in_ch, out_ch, stride)
        self.drop_path = DropPath(drop_path)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.attn(self.conv3(self.conv2(self.conv1(x))))
        return self.act(self.drop_path(y) + self.shortcut(x))

    def mid_conv(self, channels: int, stride: int) -> nn.Module:
        return ConvNormAct(channels, channels, 3, stride)


def projection_shortcut(in_ch: int, out_ch: int, stride: int) -> nn.Module:
    """Identity when shapes match, else a strided 1x1 convolution + BatchNorm (the paper's option B)."""
    if stride == 1 and in_ch == out_ch:
        return nn.Identity()
    return ConvNormAct(in_ch, out_ch, 1, stride, act=None)


BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


def register_block(name: str, block_cls: type[nn.Module]) -> None:
    """Make a residual block type available to ``ResNet(block=name)`` (e.g. SKNet's SK unit).

    The class takes ``(in_ch, width, stride, attn, drop_path)`` and has an ``expansion`` attribute.
    """
    if name in BLOCKS:
        raise ValueError(f"ResNet block {name!r} is already registered")
    BLOCKS[name] = block_cls


class ResNet(nn.Module):
    """(N, in_chans, H, W) -> (N, num_classes) logits; any H, W >= 1.

    Args:
        block: "basic" or "bottleneck". layers: blocks per stage (4 stages, widths 64, 128, 256, 512).
        attn_layer: attention for every block (registry name, callable ``f(channels)``, or None).
        attn_kwargs: extra arguments for it. drop_path_rate: stochastic depth, linear over blocks.
    """

    def __init__(self, block: str = "bottleneck", layers: tuple[int, ...] = (3, 4, 6, 3), num_classes: int = 1000,
                 in_chans: int = 3, attn_layer=None, attn_kwargs: dict | None = None, drop_path_rate: float = 0.0):
        super().__init__()
        block_cls = BLOCKS[check_choice("block", block, BLOCKS)]
        if len(layers) != 4 or any(check_positive_int("layers[i]", n) is None for n in layers):
            raise ValueError(f"layers must be four positive integers, got {layers!r}")
        check_positive_int("num_classes", num_classes)
        check_positive_int("in_chans", in_chans)
        attn = get_attn(attn_layer, **(attn_kwargs or {}))
        self.stem = nn.Sequential(ConvNormAct(in_chans, 64, 7, 2), nn.MaxPool2d(3, 2, 1))
        rates = torch.linspace(0, drop_path_rate, sum(layers)).tolist()
        stages, in_ch, i = [], 64, 0
        for s, (n, width) in enumerate(zip(layers, (64, 128, 256, 512))):
            blocks = []
            for b in range(n):
                stride = 2 if s > 0 and b == 0 else 1
                blocks.append(block_cls(in_ch, width, stride, attn, rates[i]))
                in_ch, i = width * block_cls.expansion, i + 1
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.num_features = in_ch
        self.head = nn.Linear(in_ch, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_chans, H, W) -> (N, num_features, ceil(H/32), ceil(W/32))."""
        return self.stages(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x).mean(dim=(2, 3)))


DEPTHS = {
    18: dict(block="basic", layers=(2, 2, 2, 2)),
    34: dict(block="basic", layers=(3, 4, 6, 3)),
    50: dict(block="bottleneck", layers=(3, 4, 6, 3)),
    101: dict(block="bottleneck", layers=(3, 4, 23, 3)),
    152: dict(block="bottleneck", layers=(3, 8, 36, 3)),
}


def register_resnet(name: str, depth: int, **kwargs) -> None:
    """Register a ResNet variant as data, e.g. ``register_resnet("eca_resnet50", 50, attn_layer="eca")``.

    Papers that plug their attention into ResNet call this from their own file.
    """
    register_model(name, ResNet, **DEPTHS[check_choice("depth", depth, DEPTHS)], **kwargs)


for _depth in DEPTHS:
    register_resnet(f"resnet{_depth}", _depth)
register_resnet("se_resnet50", 50, attn_layer="se")
register_resnet("cbam_resnet50", 50, attn_layer="cbam")
