"""EfficientNet B0-B7 (Tan & Le, ICML 2019, arXiv:1905.11946), and ``MBConvNet``, the MBConv family's network.

EfficientNet-B0 is a searched mobile network of MBConv blocks (MobileNetV2's inverted residual with
squeeze-and-excitation and the SiLU/"swish" activation; the paper's Table 1). Compound scaling grows it with one
coefficient phi: depth d = alpha^phi, width w = beta^phi and resolution r = gamma^phi, with alpha = 1.2,
beta = 1.1, gamma = 1.15 found by grid search at phi = 1 under alpha * beta^2 * gamma^2 ~ 2 (Eq. 3), so FLOPs grow
about 2^phi. The released B1-B7 round these to (w, d, resolution, dropout) =
(1.0, 1.1, 240, 0.2), (1.1, 1.2, 260, 0.3), (1.2, 1.4, 300, 0.3), (1.4, 1.8, 380, 0.4), (1.6, 2.2, 456, 0.4),
(1.8, 2.6, 528, 0.5), (2.0, 3.1, 600, 0.5) (the official efficientnet_builder.py); a row of Table 1 with n layers
gets ceil(d n) blocks, and every width c (stem, blocks, the 1280-channel head) becomes 8 * round(w c / 8) without
losing more than 10 % (round_filters/round_repeats there).

Settings from the official TensorFlow code (tensorflow/tpu, models/official/efficientnet): "SAME" padding,
BatchNorm with eps 1e-3 and momentum 0.99 (PyTorch's 0.01), SE squeezing to max(1, int(0.25 C_in)) channels of
the block's *input* width with a SiLU inside and a sigmoid gate, stochastic depth rising linearly with the block
index to 0.2 (``drop_connect_rate * i / n_blocks``), dropout before the classifier, and their initialisation
(convs normal with std sqrt(2 / fan_out), the classifier uniform in +-1/sqrt(classes)). This is timm's
``tf_efficientnet_b*`` (the authors' weights ported), the registered twin. timm's own ``efficientnet_b*`` trainings
are the same network with PyTorch padding and eps 1e-5: ``padding="symmetric", bn_eps=1e-5, bn_momentum=0.1``.

``MBConvNet`` builds every paper of the family from a table of rows (``Row``), the way the papers write them:
stem (3x3 conv, stride 2) -> stages of blocks (``attnzoo.layers.mbconv``) -> head (a 1x1 conv to
``num_features`` channels, then pooling; or, as MobileNetV3, pooling first). ``attn_layer`` fills every block's
attention slot where the paper has SE (a row's ``se`` > 0); with the registered ``se`` module it gets the paper's
reduction and activations (``se_kwargs``, ``se_from``, ``se_divisor``), any other registered attention its own
defaults on the block's expanded width plus ``attn_kwargs``; ``conv_layer`` replaces the blocks' k x k
convolutions.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from ..layers import check_images, check_choice, check_positive_int, create_act, make_divisible
from ..layers.head import pooled_logits
from ..layers.mbconv import ConvBnAct, DepthwiseSeparable, FusedMBConv, MBConv, conv2d
from ..registry import get_attn, get_conv, register_model
from ..timm import register_timm_rules

BLOCKS = ("ds", "mb", "fused", "conv")


@dataclass(frozen=True)
class Row:
    """``repeats`` blocks of one kind; the first has ``stride`` (and takes the previous width), the rest stride 1.

    block: "ds" (depthwise separable), "mb" (MBConv), "fused" (Fused-MBConv), "conv" (conv-BN-act).
    expansion: hidden width / input width (MBConv, Fused-MBConv). se: SE ratio (0 = no attention in this row).
    act: the row's activation (None: the model's). skip: residual where the shapes allow it.
    """

    block: str
    repeats: int
    kernel: int
    stride: int
    expansion: float
    channels: int
    se: float = 0.0
    act: str | None = None
    skip: bool = True


# EfficientNet-B0 (Tan & Le, 2019, Table 1): stages 2-8 of the table, one row each (stage 1 is the stem).
EFFICIENTNET_B0 = (
    (Row("ds", 1, 3, 1, 1, 16, se=0.25),),
    (Row("mb", 2, 3, 2, 6, 24, se=0.25),),
    (Row("mb", 2, 5, 2, 6, 40, se=0.25),),
    (Row("mb", 3, 3, 2, 6, 80, se=0.25),),
    (Row("mb", 3, 5, 1, 6, 112, se=0.25),),
    (Row("mb", 4, 5, 2, 6, 192, se=0.25),),
    (Row("mb", 1, 3, 1, 6, 320, se=0.25),),
)


def _stages(arch, depths, widths) -> tuple[tuple[Row, ...], ...]:
    """The table with ``depths``/``widths`` (one per stage, or None) replacing the repeats/channels of its rows."""
    arch = tuple(tuple(stage) for stage in arch)
    for name, values in (("depths", depths), ("widths", widths)):
        if values is None:
            continue
        values = tuple(values)
        if not 0 < len(values) <= len(arch) or any(len(s) != 1 for s in arch[:len(values)]):
            raise ValueError(f"{name} needs one entry per single-row stage (at most {len(arch)}), got {values!r}")
        for i, v in enumerate(values):
            check_positive_int(f"{name}[{i}]", v)
        field = "repeats" if name == "depths" else "channels"
        arch = tuple((Row(**{**s[0].__dict__, field: v}),) for s, v in zip(arch, values))
    for stage in arch:
        for row in stage:
            check_choice("block", row.block, BLOCKS)
    return arch


class MBConvNet(nn.Module):
    """(N, in_chans, H, W) -> (N, num_classes): stem -> stages of MBConv-family blocks -> head.

    Args:
        arch: stages, each a tuple of ``Row``s (the paper's table). depths/widths: per-stage repeats/channels
            replacing the table's (single-row stages; fewer entries keep only the first stages).
        width, depth: compound-scaling multipliers (channels rounded to multiples of 8, repeats ceil(d n)).
        stem_width, num_features: stem and head widths before ``width``. head: "conv" (1x1 conv + BN + act, then
            pooling) or "pool_conv" (pooling, then a 1x1 conv with bias + act: MobileNetV3).
        act: activation of the stem, head and rows without their own.
        attn_layer: the attention in the blocks of rows with ``se`` > 0 (a registered name, a callable or None).
        se_kwargs: the paper's settings of the registered ``se`` (used only when ``attn_layer="se"``).
        se_from: "in" (SE width from the block's input) or "mid" (from its expanded width). se_divisor: round the
            SE width to multiples of it (1: floor, as the TF code's int()). attn_kwargs: override any of these.
        conv_layer: replaces the blocks' k x k convolutions (a registered conv name or a callable).
        padding: "same" (TensorFlow) or "symmetric" (PyTorch). bn_eps, bn_momentum: BatchNorm settings.
        drop_rate: dropout before the classifier, or a mapping {(width, depth): rate} giving each scale its own
            (EfficientNet's B0-B7, which then differ only in width and depth). drop_path_rate: stochastic depth of
            block i of n is drop_path_rate * i / n.
    """

    def __init__(self, arch=EFFICIENTNET_B0, num_classes: int = 1000, in_chans: int = 3, width: float = 1.0,
                 depth: float = 1.0, depths=None, widths=None, stem_width: int = 32, num_features: int = 1280,
                 head: str = "conv", act: str = "silu", attn_layer="se", attn_kwargs: dict | None = None,
                 se_kwargs: dict | None = None, se_from: str = "in", se_divisor: int = 1, conv_layer=None,
                 padding: str = "same", bn_eps: float = 1e-3, bn_momentum: float = 0.01, drop_rate=0.2,
                 drop_path_rate: float = 0.0):
        super().__init__()
        check_positive_int("num_classes", num_classes)
        check_positive_int("in_chans", in_chans)
        check_positive_int("se_divisor", se_divisor)
        check_choice("head", head, ("conv", "pool_conv"))
        check_choice("se_from", se_from, ("in", "mid"))
        check_choice("padding", padding, ("same", "symmetric"))
        if not (width > 0 and depth > 0):
            raise ValueError(f"width and depth must be positive, got {width!r} and {depth!r}")
        if isinstance(drop_rate, dict):
            if (width, depth) not in drop_rate:
                raise ValueError(f"drop_rate has no rate for width={width}, depth={depth}: pass a number")
            drop_rate = drop_rate[(width, depth)]
        if not (0 <= drop_rate < 1 and 0 <= drop_path_rate < 1):
            raise ValueError(f"drop_rate and drop_path_rate must be in [0, 1), got {drop_rate!r}, {drop_path_rate!r}")
        stages = _stages(arch, depths, widths)
        self._se = dict(kwargs={**(se_kwargs or {}), **(attn_kwargs or {})}, frm=se_from, divisor=se_divisor,
                        paper=attn_layer == "se")
        self._attn = attn_layer
        self._attn_factory = get_attn(attn_layer, **({} if attn_layer == "se" else (attn_kwargs or {})))
        norm = dict(bn_eps=bn_eps, bn_momentum=bn_momentum, padding=padding)
        convs = get_conv(conv_layer)

        in_ch = make_divisible(stem_width * width, 8)
        self.conv_stem = conv2d(in_chans, in_ch, 3, 2, padding=padding)
        self.bn1, self.act1 = nn.BatchNorm2d(in_ch, eps=bn_eps, momentum=bn_momentum), create_act(act)
        rows = [(i, row, math.ceil(row.repeats * depth)) for i, stage in enumerate(stages) for row in stage]
        total, index = sum(n for _, _, n in rows), 0
        blocks: list[list[nn.Module]] = [[] for _ in stages]
        for stage, row, n in rows:
            out_ch = make_divisible(row.channels * width, 8)
            for j in range(n):
                blocks[stage].append(self._block(row, in_ch, out_ch, row.stride if j == 0 else 1, row.act or act,
                                                 drop_path_rate * index / total, convs, norm))
                in_ch, index = out_ch, index + 1
        self.blocks = nn.Sequential(*[nn.Sequential(*b) for b in blocks])
        self.head_type = head
        self.num_features = make_divisible(num_features * width, 8)
        if head == "conv":
            self.conv_head = conv2d(in_ch, self.num_features, 1, padding=padding)
            self.bn2 = nn.BatchNorm2d(self.num_features, eps=bn_eps, momentum=bn_momentum)
        else:
            self.conv_head = nn.Conv2d(in_ch, self.num_features, 1, bias=True)
        self.act2 = create_act(act)
        self.dropout = nn.Dropout(drop_rate)
        self.classifier = nn.Linear(self.num_features, num_classes)
        self.apply(_init_tf)

    def _block(self, row: Row, in_ch: int, out_ch: int, stride: int, act: str, drop_path: float, convs, norm):
        attn = self._attn_for(in_ch, make_divisible(in_ch * row.expansion, 8), row.se) if row.se > 0 else None
        common = dict(kernel_size=row.kernel, stride=stride, act=act, attn=attn, skip=row.skip, drop_path=drop_path,
                      conv_layer=convs, **norm)
        if row.block == "ds":
            return DepthwiseSeparable(in_ch, out_ch, **common)
        if row.block == "conv":
            return ConvBnAct(in_ch, out_ch, **common)
        mid = make_divisible(in_ch * row.expansion, 8)
        return (MBConv if row.block == "mb" else FusedMBConv)(in_ch, out_ch, mid, **common)

    def _attn_for(self, in_ch: int, mid_ch: int, ratio: float):
        """The attention factory of one block: the paper's SE width for ``se``, else the attention's own defaults."""
        if self._attn_factory is None or not self._se["paper"]:
            return self._attn_factory
        kwargs = dict(self._se["kwargs"])
        if "rd_ratio" not in kwargs and "rd_channels" not in kwargs:
            base = (in_ch if self._se["frm"] == "in" else mid_ch) * ratio
            divisor = self._se["divisor"]
            kwargs["rd_channels"] = make_divisible(base, divisor) if divisor > 1 else max(1, int(base))
        return get_attn(self._attn, **kwargs)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> the map before pooling: (N, num_features, H/32, W/32) for ``head="conv"``, else the
        last block's output."""
        check_images(type(self).__name__, x)
        x = self.blocks(self.act1(self.bn1(self.conv_stem(x))))
        if self.head_type == "conv":
            x = self.act2(self.bn2(self.conv_head(x)))
        return x

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        after_pool = self.head_type == "pool_conv"
        return pooled_logits(x, self.classifier, self.dropout, self.conv_head if after_pool else None, self.act2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _init_tf(m: nn.Module) -> None:
    """The official TF initialisation: convs N(0, 2 / fan_out) with fan_out = k^2 C_out / groups, the classifier
    uniform in +-1/sqrt(out_features), zero biases, BatchNorm (1, 0)."""
    if isinstance(m, nn.Conv2d):
        fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
        nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Linear):
        bound = 1.0 / math.sqrt(m.out_features)
        nn.init.uniform_(m.weight, -bound, bound)
        nn.init.zeros_(m.bias)


# timm's EfficientNet and MobileNetV3 (timm/models/efficientnet.py, mobilenetv3.py) use our names, but for the SE's
# two 1x1 convs (timm's SqueezeExcite in _efficientnet_blocks.py), which are fc1/fc2 of our registered ``se``.
register_timm_rules(MBConvNet, renames=((r"\.se\.conv_reduce\.", ".se.fc1."), (r"\.se\.conv_expand\.", ".se.fc2.")))

# (width w, depth d, dropout) of B0-B7 (official efficientnet_builder.py; resolutions in the catalogue entry)
EFFICIENTNET_SCALING = {"b0": (1.0, 1.0, 0.2), "b1": (1.0, 1.1, 0.2), "b2": (1.1, 1.2, 0.3), "b3": (1.2, 1.4, 0.3),
                        "b4": (1.4, 1.8, 0.4), "b5": (1.6, 2.2, 0.4), "b6": (1.8, 2.6, 0.5), "b7": (2.0, 3.1, 0.5)}
EFFICIENTNET_DROPOUT = {(w, d): rate for w, d, rate in EFFICIENTNET_SCALING.values()}
EFFICIENTNET_SE = dict(act="silu", gate="sigmoid")
for _v, (_w, _d, _) in EFFICIENTNET_SCALING.items():
    register_model(f"efficientnet_{_v}", MBConvNet, timm=f"tf_efficientnet_{_v}", arch=EFFICIENTNET_B0,
                   depths=tuple(s[0].repeats for s in EFFICIENTNET_B0), width=_w, depth=_d,
                   drop_rate=EFFICIENTNET_DROPOUT, drop_path_rate=0.2, se_kwargs=EFFICIENTNET_SE)
