"""ResNet (He, Zhang, Ren & Sun, CVPR 2016, arXiv:1512.03385), the skeleton most attention papers plug into.

Basic blocks (two 3x3 convs) for ResNet-18/34, bottlenecks (1x1 -> 3x3 -> 1x1, expansion 4) for ResNet-50+.
Downsampling follows torchvision's "ResNet v1.5": the stride sits on the bottleneck's 3x3 convolution rather than
on its first 1x1 as in the paper. Parameters and output shapes are unchanged; the 3x3 convolutions of
downsampling blocks then run at the higher resolution, so ResNet-50 costs 4.1 rather than the paper's 3.9 GMACs.
We keep v1.5 because it is what torchvision's and timm's ResNet-50 (our reference for parity and speed) use.
Projection shortcuts (option B) when the shape changes. ``stem="deep"`` and ``shortcut="avg"`` give the
"ResNet-D" tweaks of Bag of Tricks (He et al., CVPR 2019, arXiv:1812.01187), as in timm's ``resnet50d``.
``stem="cifar"`` is the 32x32 variant of the common CIFAR training code (kuangliu/pytorch-cifar): one 3x3/1
conv-BN-ReLU and no max pool, so the stages see 32, 16, 8 and 4 pixels (``resnet18_cifar``...). It is not the
paper's own CIFAR ResNet (ResNet-20/32/56/110: three stages of 16, 32 and 64 channels, Section 4.2), but it is
what CIFAR comparisons of attention modules usually train (11.17 M parameters and 0.56 GMACs for ResNet-18).

Where a paper's module sits is data, so that each paper's ResNet is one ``register_resnet`` line:

====================  =================================================================================  ============
argument              where                                                                              papers
====================  =================================================================================  ============
``attn_layer``        ``attn_site="residual"`` (default): on the residual branch after its last BN,      SE, CBAM, ECA
                      before the addition (Fig. 3 of SE and of CBAM)
                      ``attn_site="mid"``: right after the spatial (3x3) convolution, before its BN       SimAM
                      ``attn_site="stage_end"``: after the last block of a stage                          BAM
                      ``attn_site="pre_conv"``: in front of every convolution (stem, blocks, shortcuts)   GCT
``attn_stages``       which of the four stages get the attention (default all)                           GC, BAM
``attn_kwargs``       the attention's arguments: one dict, or four (one per stage)                       ECA
``conv_layer``        replaces every spatial convolution (a ``conv`` kind: CondConv, DO-Conv, ...);       -
                      the BN and activation after it stay
``mid_layer``         replaces the bottleneck's whole 3x3 conv-BN-act unit: ``f(channels, stride)``       CoT, SCNet,
                      (a unit with an ``out_channels`` attribute sets the last 1x1 conv's input width)   EPSANet,
                                                                                                         SlimConv
``fuse_layer``        replaces ``residual + shortcut`` by ``fuse(residual, shortcut)`` (``f(channels)``   AFF, iAFF
                      or a registered block), in the stages listed by ``fuse_stages``
``attn_connect``      chains the residual-site attentions: each is built as ``attn(channels,            DCANet
                      prev_channels=...)`` (None for the first) and called as ``attn.forward_connected(
                      x, prev) -> (y, state)`` with the previous attention's state (blocks without one
                      pass it on)
====================  =================================================================================  ============
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from ..layers import ConvNormAct, DropPath, check_choice, check_positive_int, conv_fan_out_init, drop_path_rates
from ..registry import get_attn, get_block, get_conv, register_model
from ..timm import register_timm_rules

ATTN_SITES = ("residual", "mid", "stage_end", "pre_conv")


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN(-ReLU) units and a shortcut; ``attn`` after the second BN, ``fuse`` instead of the add."""

    expansion = 1

    def __init__(self, in_ch: int, width: int, stride: int = 1, attn: Callable | None = None, drop_path: float = 0.0,
                 conv_layer: Callable | None = None, mid_attn: Callable | None = None, mid_layer=None,
                 fuse: Callable | None = None, shortcut: str = "conv"):
        super().__init__()
        if mid_layer is not None:
            raise ValueError("mid_layer replaces a bottleneck's 3x3 unit; basic blocks (ResNet-18/34) have none")
        out_ch = width * self.expansion
        self.conv1 = ConvNormAct(in_ch, width, 3, stride, conv_layer=conv_layer, post_conv=mid_attn)
        self.conv2 = ConvNormAct(width, out_ch, 3, act=None, conv_layer=conv_layer)
        self.attn = attn(out_ch) if attn else nn.Identity()
        self.shortcut = projection_shortcut(in_ch, out_ch, stride, shortcut)
        self.drop_path = DropPath(drop_path)
        self.fuse = fuse(out_ch) if fuse else None
        self.act = nn.ReLU(inplace=True)

    def body(self, x: torch.Tensor) -> torch.Tensor:
        """The residual branch up to its attention."""
        return self.conv2(self.conv1(x))

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(self.body(x))

    def merge(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """act(residual + shortcut(x)), or the fuse layer instead of the addition."""
        y, s = self.drop_path(y), self.shortcut(x)
        return self.act(self.fuse(y, s) if self.fuse is not None else y + s)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.merge(x, self.residual(x))

    def forward_connected(self, x: torch.Tensor, prev):
        """``attn_connect``: the attention also takes the previous attention's state and returns its own."""
        if isinstance(self.attn, nn.Identity):
            return self.forward(x), prev
        y, state = self.attn.forward_connected(self.body(x), prev)
        return self.merge(x, y), state


class Bottleneck(BasicBlock):
    """1x1 reduce -> 3x3 (``mid_conv``) -> 1x1 expand. Subclasses change ``width_factor`` (the 3x3's width as a
    multiple of the stage width) and ``mid_conv`` (e.g. SKNet's selective-kernel unit)."""

    expansion = 4
    width_factor = 1

    def __init__(self, in_ch: int, width: int, stride: int = 1, attn: Callable | None = None, drop_path: float = 0.0,
                 conv_layer: Callable | None = None, mid_attn: Callable | None = None, mid_layer=None,
                 fuse: Callable | None = None, shortcut: str = "conv"):
        nn.Module.__init__(self)
        mid, out_ch = width * self.width_factor, width * self.expansion
        self.conv1 = ConvNormAct(in_ch, mid, 1)
        if mid_layer is not None:  # its ``out_channels``, if any, may differ from ``mid`` (SlimConv: 3/4 of it)
            self.conv2 = mid_layer(mid, stride)
        else:
            self.conv2 = self.mid_conv(mid, stride, conv_layer, mid_attn)
        self.conv3 = ConvNormAct(getattr(self.conv2, "out_channels", mid), out_ch, 1, act=None)
        self.attn = attn(out_ch) if attn else nn.Identity()
        self.shortcut = projection_shortcut(in_ch, out_ch, stride, shortcut)
        self.drop_path = DropPath(drop_path)
        self.fuse = fuse(out_ch) if fuse else None
        self.act = nn.ReLU(inplace=True)

    def body(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(self.conv2(self.conv1(x)))

    def mid_conv(self, channels: int, stride: int, conv_layer: Callable | None = None,
                 mid_attn: Callable | None = None) -> nn.Module:
        return ConvNormAct(channels, channels, 3, stride, conv_layer=conv_layer, post_conv=mid_attn)


def projection_shortcut(in_ch: int, out_ch: int, stride: int, kind: str = "conv") -> nn.Module:
    """Identity when shapes match; else a strided 1x1 conv + BN (``"conv"``, the paper's option B) or, for
    ResNet-D (``"avg"``), a 2x2 average pooling (ceil mode, padding excluded) and a 1x1 conv + BN."""
    if stride == 1 and in_ch == out_ch:
        return nn.Identity()
    if kind == "avg":
        pool = nn.AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False) if stride > 1 else nn.Identity()
        conv, norm, _ = ConvNormAct(in_ch, out_ch, 1, act=None)
        return nn.Sequential(pool, conv, norm)
    return ConvNormAct(in_ch, out_ch, 1, stride, act=None)


def make_stem(kind: str, in_chans: int) -> nn.Sequential:
    """``"default"``: 7x7/2 conv-BN-ReLU + 3x3/2 max pool. ``"deep"`` (ResNet-C/D): three 3x3 convs (32, 32, 64).
    ``"cifar"``: one 3x3/1 conv-BN-ReLU, no pooling (32x32 inputs)."""
    if kind == "cifar":
        return nn.Sequential(ConvNormAct(in_chans, 64, 3))
    if kind == "deep":
        return nn.Sequential(ConvNormAct(in_chans, 32, 3, 2), ConvNormAct(32, 32, 3), ConvNormAct(32, 64, 3),
                             nn.MaxPool2d(3, 2, 1))
    return nn.Sequential(ConvNormAct(in_chans, 64, 7, 2), nn.MaxPool2d(3, 2, 1))


BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


def register_block(name: str, block_cls: type[nn.Module]) -> None:
    """Make a residual block type available to ``ResNet(block=name)`` (e.g. SKNet's SK unit).

    The class takes the arguments of ``Bottleneck`` and has an ``expansion`` attribute.
    """
    if name in BLOCKS:
        raise ValueError(f"ResNet block {name!r} is already registered")
    BLOCKS[name] = block_cls


def _per_stage(name: str, kwargs) -> list[dict]:
    """``kwargs`` for all four stages: one dict (or None) for all, or a sequence of four dicts."""
    if kwargs is None or isinstance(kwargs, dict):
        return [dict(kwargs or {})] * 4
    if len(kwargs) != 4 or not all(isinstance(k, dict) for k in kwargs):
        raise ValueError(f"{name} must be a dict or four dicts (one per stage), got {kwargs!r}")
    return [dict(k) for k in kwargs]


def _stages(name: str, stages) -> frozenset[int]:
    stages = tuple(stages)
    if not all(isinstance(s, int) and 0 <= s < 4 for s in stages):
        raise ValueError(f"{name} must list stage indices in 0..3, got {stages!r}")
    return frozenset(stages)


class ResNet(nn.Module):
    """(N, in_chans, H, W) -> (N, num_classes) logits; any H, W >= 1.

    Args:
        block: "basic", "bottleneck" or a block added with ``register_block``. layers: blocks per stage (4 stages,
        widths 64, 128, 256, 512). stem: "default", "deep" or "cifar". shortcut: "conv" or "avg" (see the module doc).
        attn_layer / attn_kwargs / attn_site / attn_stages: the attention, its arguments (a dict, or one dict per
        stage), where and in which stages (module doc). conv_layer / conv_kwargs: the spatial convolution (a conv name
        or callable) and its arguments (a dict, or one dict per stage, e.g. PyConv's kernel pyramids).
        mid_layer: ``f(channels, stride)`` replacing the bottleneck 3x3 unit. fuse_layer / fuse_stages: a block
        name or ``f(channels)`` called as ``fuse(residual, shortcut)`` instead of the addition.
        drop_path_rate: stochastic depth, linear over blocks. block_kwargs: further arguments of the block (e.g.
        Res2Net's ``base_width`` and ``scale``). attn_connect: chain the attentions (DCANet; module doc).
    """

    def __init__(self, block: str = "bottleneck", layers: tuple[int, ...] = (3, 4, 6, 3), num_classes: int = 1000,
                 in_chans: int = 3, attn_layer=None, attn_kwargs: dict | tuple[dict, ...] | None = None,
                 attn_site: str = "residual",
                 attn_stages: tuple[int, ...] = (0, 1, 2, 3), conv_layer=None,
                 conv_kwargs: dict | tuple[dict, ...] | None = None,
                 mid_layer: Callable | None = None, fuse_layer=None, fuse_stages: tuple[int, ...] = (0, 1, 2, 3),
                 stem: str = "default", shortcut: str = "conv", drop_path_rate: float = 0.0,
                 block_kwargs: dict | None = None, attn_connect: bool = False):
        super().__init__()
        block_cls = BLOCKS[check_choice("block", block, BLOCKS)]
        if len(layers) != 4 or any(check_positive_int("layers[i]", n) is None for n in layers):
            raise ValueError(f"layers must be four positive integers, got {layers!r}")
        check_positive_int("num_classes", num_classes)
        check_positive_int("in_chans", in_chans)
        check_choice("attn_site", attn_site, ATTN_SITES)
        check_choice("stem", stem, ("default", "deep", "cifar"))
        check_choice("shortcut", shortcut, ("conv", "avg"))
        attn = [get_attn(attn_layer, **kw) for kw in _per_stage("attn_kwargs", attn_kwargs)]
        attn_stages, fuse_stages = _stages("attn_stages", attn_stages), _stages("fuse_stages", fuse_stages)
        conv = [get_conv(conv_layer, **kw) for kw in _per_stage("conv_kwargs", conv_kwargs)]
        fuse = get_block_or_callable(fuse_layer)
        self.stem = make_stem(stem, in_chans)
        if attn_connect and (attn[0] is None or attn_site != "residual"):
            raise ValueError("attn_connect chains residual-site attentions: it needs an attn_layer and "
                             f"attn_site='residual', got {attn_layer!r} at {attn_site!r}")
        self.attn_connect = attn_connect
        rates = drop_path_rates(drop_path_rate, sum(layers))
        stages, in_ch, i, prev_ch = [], 64, 0, None
        for s, (n, width) in enumerate(zip(layers, (64, 128, 256, 512))):
            here = attn[s] if s in attn_stages else None
            blocks = []
            for b in range(n):
                stride = 2 if s > 0 and b == 0 else 1
                if attn_connect and here is not None:  # built knowing the width of the state it receives
                    here = _connected(attn[s], prev_ch)
                    prev_ch = width * block_cls.expansion
                blocks.append(block_cls(in_ch, width, stride, here if attn_site == "residual" else None, rates[i],
                                        conv_layer=conv[s], mid_attn=here if attn_site == "mid" else None,
                                        mid_layer=mid_layer, fuse=fuse if s in fuse_stages else None,
                                        shortcut=shortcut, **(block_kwargs or {})))
                in_ch, i = width * block_cls.expansion, i + 1
            if here is not None and attn_site == "stage_end":
                blocks.append(here(in_ch))
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        if attn[0] is not None and attn_site == "pre_conv":
            _attend_before_convs(self, attn, attn_stages)
        self.num_features = in_ch
        self.head = nn.Linear(in_ch, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        conv_fan_out_init(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_chans, H, W) -> (N, num_features, ceil(H/32), ceil(W/32)); with the CIFAR stem
        ceil(H/8), ceil(W/8)."""
        if not self.attn_connect:
            return self.stages(self.stem(x))
        x, prev = self.stem(x), None
        for stage in self.stages:
            for block in stage:
                x, prev = block.forward_connected(x, prev)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x).mean(dim=(2, 3)))


def _connected(factory: Callable, prev_channels: int | None) -> Callable:
    """``factory`` building a chained attention that receives a state ``prev_channels`` wide (None: the first)."""
    return lambda channels: factory(channels, prev_channels=prev_channels)


def get_block_or_callable(layer) -> Callable | None:
    """A fuse layer: a registered block name (built as ``block(channels, channels)``) or ``f(channels)``."""
    if isinstance(layer, str):
        factory = get_block(layer)
        return lambda channels: factory(channels, channels)
    if layer is not None and not callable(layer):
        raise ValueError(f"fuse_layer must be a registered block name, a callable or None, got {layer!r}")
    return layer


def _attend_before_convs(model: ResNet, attn: list[Callable], stages: frozenset[int]) -> None:
    """Put ``attn(in_channels)`` in front of every convolution: of the stem (if stage 0 is listed) and of the
    blocks and shortcuts of the listed stages. The conv becomes ``nn.Sequential(attn, conv)``."""
    units = [(0, m) for m in model.stem.modules() if isinstance(m, ConvNormAct)] if 0 in stages else []
    units += [(s, m) for s, stage in enumerate(model.stages) if s in stages
              for m in stage.modules() if isinstance(m, ConvNormAct)]
    for s, unit in units:
        conv = unit[0]
        unit[0] = nn.Sequential(attn[s](conv.in_channels), conv)


DEPTHS = {
    18: dict(block="basic", layers=(2, 2, 2, 2)),
    34: dict(block="basic", layers=(3, 4, 6, 3)),
    50: dict(block="bottleneck", layers=(3, 4, 6, 3)),
    101: dict(block="bottleneck", layers=(3, 4, 23, 3)),
    152: dict(block="bottleneck", layers=(3, 8, 36, 3)),
}


def register_resnet(name: str, depth: int, timm: str | None = None, **kwargs) -> None:
    """Register a ResNet variant as data, e.g. ``register_resnet("eca_resnet50", 50, attn_layer="eca")``.

    Papers that plug their module into ResNet call this from their own file; ``timm`` names the twin, if any.
    """
    register_model(name, ResNet, timm=timm, **DEPTHS[check_choice("depth", depth, DEPTHS)], **kwargs)


def _timm_renames(model: ResNet) -> tuple:
    """timm's ResNet (timm/models/resnet.py, skresnet.py) -> ours; depends on the stem."""
    deep = len(model.stem) > 2  # default: conv + max pool; cifar: one conv
    stem = ((r"^conv1\.([036])\.", lambda m: f"stem.{'036'.index(m[1])}.0."),    # deep stem: conv, BN, act x 3,
            (r"^conv1\.([14])\.", lambda m: f"stem.{'14'.index(m[1])}.1."),      # the third BN is timm's bn1
            (r"^bn1\.", "stem.2.1.")) if deep else ((r"^conv1\.", "stem.0.0."), (r"^bn1\.", "stem.0.1."))
    return stem + (
        (r"^layer(\d)\.", lambda m: f"stages.{int(m[1]) - 1}."),
        (r"\.conv2\.paths\.(\d+)\.conv\.", r".conv2.branches.\1.0."),           # SK unit
        (r"\.conv2\.paths\.(\d+)\.bn\.", r".conv2.branches.\1.1."),
        (r"\.conv2\.attn\.fc_reduce\.", ".conv2.fuse.0."), (r"\.conv2\.attn\.bn\.", ".conv2.fuse.1."),
        (r"\.conv2\.attn\.fc_select\.", ".conv2.select."),
        (r"\.conv(\d)\.conv\.", r".conv\1.0."), (r"\.conv(\d)\.bn\.", r".conv\1.1."),   # ConvNormAct-style
        (r"\.conv(\d)\.(weight|bias)$", r".conv\1.0.\2"), (r"\.bn(\d)\.", r".conv\1.1."),
        (r"\.downsample\.", ".shortcut."), (r"\.se\.", ".attn."), (r"^fc\.", "head."),
    )


register_timm_rules(ResNet, renames=_timm_renames)


for _depth in DEPTHS:
    register_resnet(f"resnet{_depth}", _depth, timm=f"resnet{_depth}")
register_resnet("resnet50d", 50, stem="deep", shortcut="avg", timm="resnet50d")
register_resnet("se_resnet50", 50, attn_layer="se", timm="seresnet50")
register_resnet("cbam_resnet50", 50, attn_layer="cbam")
for _depth in (18, 34, 50, 101):
    register_resnet(f"resnet{_depth}_cifar", _depth, stem="cifar")
