"""MixConv: mixed depthwise convolutional kernels (Tan & Le, BMVC 2019, arXiv:1907.09595).

A depthwise convolution uses one kernel size for all channels. MixConv splits the C channels into g groups and
gives group i its own kernel size, so one layer sees several receptive fields:

    x = [x_1, ..., x_g] (split along channels),    y = concat_i DWConv_{k_i}(x_i).

The paper's rules (Section 3): group i has kernel size 2i + 1, starting at 3x3 (a 4-group MixConv uses 3, 5, 7,
9), and the channels are split equally. The authors' code (tensorflow/tpu ``models/official/mnasnet/mixnet/
custom_layers.py``) gives the remainder of an uneven split to the first group (``_split_channels``, lines 33-36),
and MixNet's block strings list the kernel sizes explicitly (``k3.5.7`` in ``mixnet_builder.py``).

Here ``kernel_size`` follows the paper's rule when it is an int: k gives sizes (3, 5, ..., k) (and 1 gives a
single 1x1 group), so ``create_conv("mixconv", C, C, 7, groups=C)`` is the 3-group MixConv 3/5/7 the paper
compares with a vanilla 7x7 depthwise convolution. A list gives the sizes directly, as in MixNet's block strings;
``kernel_sizes=`` does the same when the caller's ``kernel_size`` is fixed (a backbone passing 3, where MixConv
would otherwise be a single 3x3 group): ``create_model("resnet50", conv_layer="mixconv",
conv_kwargs={"kernel_sizes": (3, 5)})``.

Beyond depthwise: the authors' ``GroupedConv2D`` (lines 48-85) applies the same split to regular convolutions
(MixNet's grouped 1x1 expand/project convolutions): input and output channels are both split equally and each
pair of groups is joined by a dense convolution of its own kernel size. ``groups=1`` gives exactly that;
``groups == in_channels`` is MixConv proper (each split depthwise, channel multiplier C_out / C_in); any other
``groups`` divides every split's convolution into that many groups (it must divide every split).

Named options from the paper and code: ``split="exponential"`` is the paper's other channel partition (Section
3: halves, 32 channels over 4 groups -> 16, 8, 4, 4; not in the released code); ``dilated=True`` is the
released ``MixConv(dilated=True)`` (lines 116-127): at stride 1 a k x k kernel becomes a 3x3 kernel with dilation
(k - 1) / 2, the same receptive field with 9 taps.

Padding is "same" (``dilation * (k - 1) // 2``, symmetric as in PyTorch; TensorFlow's "same" pads strided
convolutions asymmetrically, which shifts the sampling grid by one pixel but not the output shape).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from ..layers import check_choice, check_divisible, check_positive_int
from ..registry import register_conv

SPLITS = ("equal", "exponential")


def mixconv_kernel_sizes(kernel_size: int | Sequence[int]) -> tuple[int, ...]:
    """The paper's kernel sizes: an int k -> (3, 5, ..., k) (1 -> (1,)); a sequence is taken as given."""
    sizes = tuple(kernel_size) if isinstance(kernel_size, (list, tuple)) else None
    if sizes is None:
        k = check_positive_int("kernel_size", kernel_size)
        if k % 2 == 0:
            raise ValueError(f"kernel_size must be odd (MixConv's groups use 3, 5, ..., k), got {k}")
        sizes = (1,) if k == 1 else tuple(range(3, k + 1, 2))
    if not sizes:
        raise ValueError("kernel_sizes must list at least one kernel size")
    for k in sizes:
        check_positive_int("each kernel size", k)
        if k % 2 == 0:
            raise ValueError(f"kernel sizes must be odd so that every group stays centred, got {sizes}")
    return sizes


def split_channels(channels: int, num_groups: int, split: str = "equal") -> list[int]:
    """Channels per group. "equal": C // g each, the remainder to the first group (the authors'
    ``_split_channels``); "exponential": C/2, C/4, ..., the last group taking what is left (paper Section 3)."""
    check_choice("split", split, SPLITS)
    if split == "equal":
        sizes = [channels // num_groups] * num_groups
        sizes[0] += channels - sum(sizes)
    else:
        sizes = [channels >> (i + 1) for i in range(num_groups - 1)]
        sizes.append(channels - sum(sizes))
    if min(sizes) < 1:
        raise ValueError(f"cannot split {channels} channels into {num_groups} non-empty groups ({split}): {sizes}")
    return sizes


@register_conv("mixconv")
class MixConv2d(nn.Module):
    """(N, C_in, H, W) -> (N, C_out, ceil(H / s), ceil(W / s)): channel groups convolved with kernels 3, 5, 7, ...

    Args:
        in_channels, out_channels, stride, dilation, bias: as ``nn.Conv2d``.
        kernel_size: an odd int k (groups of sizes 3, 5, ..., k) or a list of odd sizes, one per group.
        groups: ``in_channels`` for MixConv's depthwise form; 1 for the authors' ``GroupedConv2D`` (a dense
            convolution per channel group); otherwise each group's convolution is split into ``groups`` groups.
        kernel_sizes: overrides ``kernel_size`` (for backbones that always pass 3).
        split: "equal" (the authors' code) or "exponential" (the paper's alternative).
        dilated: at stride 1, replace each k x k kernel by a 3x3 kernel with dilation (k - 1) / 2 (released code).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | Sequence[int] = 3, stride: int = 1,
                 groups: int = 1, dilation: int = 1, bias: bool = False,
                 kernel_sizes: Sequence[int] | None = None, split: str = "equal", dilated: bool = False):
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels), ("stride", stride),
                            ("groups", groups), ("dilation", dilation)):
            check_positive_int(name, value)
        if dilated and dilation != 1:
            raise ValueError("dilated=True sets each group's dilation itself; leave dilation at 1")
        sizes = mixconv_kernel_sizes(kernel_size if kernel_sizes is None else kernel_sizes)
        depthwise = groups == in_channels
        in_splits = split_channels(in_channels, len(sizes), split)
        if depthwise:
            check_divisible("out_channels", out_channels, in_channels, "in_channels (depthwise: groups=in_channels)")
            out_splits = [c * (out_channels // in_channels) for c in in_splits]
        else:
            check_divisible("in_channels", in_channels, groups, "groups")
            check_divisible("out_channels", out_channels, groups, "groups")
            out_splits = split_channels(out_channels, len(sizes), split)
            bad = [(i, o) for i, o in zip(in_splits, out_splits) if i % groups or o % groups]
            if bad:
                raise ValueError(f"groups={groups} must divide the channels of every kernel group; the {split} split "
                                 f"gives (in, out) = {list(zip(in_splits, out_splits))}")
        self.in_channels, self.out_channels, self.stride, self.groups = in_channels, out_channels, stride, groups
        self.kernel_sizes, self.in_splits, self.out_splits = sizes, tuple(in_splits), tuple(out_splits)
        self.convs = nn.ModuleList()
        for k, c_in, c_out in zip(sizes, in_splits, out_splits):
            d = dilation
            if dilated and stride == 1 and k > 3:
                d, k = (k - 1) // 2, 3
            self.convs.append(nn.Conv2d(c_in, c_out, k, stride, d * (k - 1) // 2, d,
                                        groups=c_in if depthwise else groups, bias=bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.convs) == 1:
            return self.convs[0](x)
        parts = torch.split(x, self.in_splits, dim=1)
        return torch.cat([conv(part) for conv, part in zip(self.convs, parts)], dim=1)

    def extra_repr(self) -> str:
        return f"kernel_sizes={self.kernel_sizes}, in_splits={self.in_splits}, out_splits={self.out_splits}"
