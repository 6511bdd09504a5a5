"""GhostNet (Han, Wang, Tian, Guo, Xu & Xu, CVPR 2020, arXiv:1911.11907).

A MobileNetV3-like network whose bottlenecks are built from Ghost modules (``attnzoo.convs.ghost``): the first
Ghost module expands (with ReLU), a depthwise convolution of stride 2 (and BN, no activation) sits between the two
where the block downsamples, an optional SE module follows, and the second Ghost module projects without ReLU.
The shortcut is the identity, or a depthwise convolution of the block's kernel and stride, BN, 1x1 convolution
and BN where the shape changes (as the authors' ghostnet_pytorch/ghostnet.py; the paper's Fig. 3 draws only the
stride-1/stride-2 layouts). Table 1 gives the 16 bottlenecks (kernel, expansion, output, SE, stride); after them a
1x1 conv-BN-ReLU to 960 channels, global average pooling, a 1x1 convolution (with bias) to 1280 and ReLU *on
the pooled vector*, dropout 0.2 and the classifier.

SE is the registered ``se`` module with the authors' settings: reduction to ``make_divisible(C / 4, 4)`` channels,
ReLU, a hard-sigmoid gate relu6(x + 3) / 6 (their ``hard_sigmoid``). ``attn_layer`` / ``attn_kwargs`` put any
other registered attention in the same slots (the blocks Table 1 marks), ``attn_layer=None`` removes them.
Widths scale with ``width`` (0.5, 1.0, 1.3 in Table 7), rounded to multiples of 4 as the authors do; 1280
stays. ``ghostnet_050``, ``ghostnet_100`` and ``ghostnet_130`` have the architecture of timm's models of the
same names, whose weights ``load_timm_weights`` maps onto ours (our module names are theirs, except the SE's
``fc1``/``fc2``).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..convs.ghost import GhostModule
from ..layers import check_images, check_positive_int, check_repeats, make_divisible
from ..layers.head import pooled_logits
from ..registry import create_attention, get_attn, register_model
from ..timm import register_timm_rules

# Table 1: (depthwise kernel, expansion width, output width, SE, stride), grouped by stage as the authors' cfgs
GHOSTNET_CFGS = (
    ((3, 16, 16, False, 1),), ((3, 48, 24, False, 2),), ((3, 72, 24, False, 1),), ((5, 72, 40, True, 2),),
    ((5, 120, 40, True, 1),), ((3, 240, 80, False, 2),),
    ((3, 200, 80, False, 1), (3, 184, 80, False, 1), (3, 184, 80, False, 1), (3, 480, 112, True, 1),
     (3, 672, 112, True, 1)),
    ((5, 672, 160, True, 2),),
    ((5, 960, 160, False, 1), (5, 960, 160, True, 1), (5, 960, 160, False, 1), (5, 960, 160, True, 1)),
)


class GhostSE:
    """The authors' SE as a factory ``f(channels)``: the registered ``se`` with C -> make_divisible(C/4, 4) -> C and
    a hard-sigmoid gate. A class rather than a closure so that models stay picklable."""

    def __call__(self, channels: int) -> nn.Module:
        return create_attention("se", channels, rd_channels=make_divisible(channels * 0.25, 4), gate="hard_sigmoid")


class GhostBottleneck(nn.Module):
    """Ghost module (expand, ReLU) [-> depthwise k x k / 2 + BN] [-> SE] -> Ghost module (project) + shortcut.

    (N, in_ch, H, W) -> (N, out_ch, ceil(H / stride), ceil(W / stride)).
    """

    def __init__(self, in_ch: int, mid_ch: int, out_ch: int, kernel_size: int = 3, stride: int = 1, attn=None):
        super().__init__()
        self.ghost1 = GhostModule(in_ch, mid_ch, relu=True)
        if stride > 1:
            self.conv_dw = nn.Conv2d(mid_ch, mid_ch, kernel_size, stride, kernel_size // 2, groups=mid_ch, bias=False)
            self.bn_dw = nn.BatchNorm2d(mid_ch)
        else:
            self.conv_dw, self.bn_dw = nn.Identity(), nn.Identity()
        self.se = attn(mid_ch) if attn is not None else nn.Identity()
        self.ghost2 = GhostModule(mid_ch, out_ch, relu=False)
        if in_ch == out_ch and stride == 1:
            self.shortcut = nn.Identity()
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, in_ch, kernel_size, stride, kernel_size // 2, groups=in_ch, bias=False),
                nn.BatchNorm2d(in_ch), nn.Conv2d(in_ch, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.ghost2(self.se(self.bn_dw(self.conv_dw(self.ghost1(x)))))
        return y + self.shortcut(x)


class ConvBnAct(nn.Module):
    """1x1 conv-BN-ReLU (the authors' and timm's names)."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.act1 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act1(self.bn1(self.conv(x)))


class GhostNet(nn.Module):
    """(N, in_chans, H, W) -> (N, num_classes); any H, W >= 1 (the last map is ceil(H/32) x ceil(W/32)).

    Args:
        width: width multiplier. drop_rate: dropout before the classifier (0.2).
        attn_layer / attn_kwargs: the attention in the SE slots: "se" without ``attn_kwargs`` is the authors' SE,
        None removes it, any other registered name (or factory ``f(channels)``) replaces it.
        depths: bottlenecks of each stage (Table 1's by default); fewer keep the first ones of the stage.
    """

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, width: float = 1.0, drop_rate: float = 0.2,
                 attn_layer="se", attn_kwargs: dict | None = None,
                 depths: tuple[int, ...] = tuple(len(stage) for stage in GHOSTNET_CFGS)):
        super().__init__()
        depths = check_repeats("depths", depths, len(GHOSTNET_CFGS))
        if any(d > len(stage) for d, stage in zip(depths, GHOSTNET_CFGS)):
            raise ValueError(f"depths can keep at most Table 1's bottlenecks per stage "
                             f"{tuple(len(s) for s in GHOSTNET_CFGS)}, got {depths!r}")
        check_positive_int("num_classes", num_classes)
        check_positive_int("in_chans", in_chans)
        if not width > 0:
            raise ValueError(f"width must be positive, got {width!r}")
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate!r}")
        attn = GhostSE() if attn_layer == "se" and attn_kwargs is None else get_attn(attn_layer, **(attn_kwargs or {}))
        ch = make_divisible(16 * width, 4)
        self.conv_stem = nn.Conv2d(in_chans, ch, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(ch)
        self.act1 = nn.ReLU()
        stages = []
        for cfg, depth in zip(GHOSTNET_CFGS, depths):
            blocks = []
            for k, exp, c, se, s in cfg[:depth]:
                out = make_divisible(c * width, 4)
                blocks.append(GhostBottleneck(ch, make_divisible(exp * width, 4), out, k, s, attn if se else None))
                ch = out
            stages.append(nn.Sequential(*blocks))
        last = make_divisible(960 * width, 4)
        stages.append(nn.Sequential(ConvBnAct(ch, last)))
        self.blocks = nn.Sequential(*stages)
        self.conv_head = nn.Conv2d(last, 1280, 1)
        self.act2 = nn.ReLU()
        self.num_features = 1280
        self.head_drop = nn.Dropout(drop_rate)
        self.classifier = nn.Linear(1280, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_chans, H, W) -> (N, 960 * width, ceil(H/32), ceil(W/32))."""
        check_images("GhostNet", x)
        return self.blocks(self.act1(self.bn1(self.conv_stem(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pooled_logits(self.forward_features(x), self.classifier, self.head_drop, self.conv_head, self.act2)


# timm's GhostNet (timm/models/ghostnet.py) has the authors' names, which are ours; its SE calls its 1x1s
# conv_reduce / conv_expand.
register_timm_rules(GhostNet, renames=((r"\.se\.conv_reduce\.", ".se.fc1."), (r"\.se\.conv_expand\.", ".se.fc2.")))

for _width in (0.5, 1.0, 1.3):
    _name = f"ghostnet_{round(_width * 100):03d}"
    register_model(_name, GhostNet, timm=_name, width=_width)
