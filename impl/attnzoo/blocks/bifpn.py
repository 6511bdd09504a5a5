"""BiFPN fusion node (Tan, Pang & Le, "EfficientDet: Scalable and Efficient Object Detection", CVPR 2020,
arXiv:1911.09070).

A feature pyramid fuses maps of different resolutions, and they do not contribute equally. Every node of EfficientDet's
bidirectional FPN (BiFPN) resizes its inputs to its own level and sums them with one learned, non-negative weight per
input, normalised without a softmax ("fast normalised fusion"), then applies swish, a depthwise-separable 3x3
convolution and BatchNorm:

    w_i = ReLU(v_i),   O = sum_i w_i / (eps + sum_j w_j) * Resize(I_i),   eps = 1e-4
    out = BN(SepConv3x3(swish(O)))

Input convention: ``forward(inputs)`` takes a list of (N, C_i, H_i, W_i) maps; the first one is the node's own level
and sets the output size (N, C_out, H_0, W_0) (in the BiFPN every node lists its own level first). The others are
resized as the authors' code does (``efficientdet_arch.py``, ``resample_feature_map``): an input with C_i != C_out
first goes through a 1x1 convolution + BN; a larger map is max-pooled with stride s = ceil(H_i / H_0) and kernel
s + 1, TF "SAME" padding; a smaller one is upsampled with nearest-neighbour interpolation to exactly H_0 x W_0.
Where SAME pooling does not land on H_0 x W_0 (pyramid sizes that are not successive halvings) we resize the
pooled map to it by nearest interpolation, which the authors' code does not need. ``weighting`` chooses
``"fast"`` (the paper), ``"softmax"`` (the paper's softmax-based fusion baseline) or ``"sum"`` (plain FPN sum).

Defaults follow the authors' code: weights initialised to 1, separable convolution with a bias on the pointwise part,
BatchNorm with momentum 0.01 and epsilon 1e-3, swish before the convolution. Not included: a whole BiFPN layer
(eight such nodes wired top-down then bottom-up) and EfficientDet itself; ``fused(inputs)`` returns O.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import ConvNormAct, check_choice, check_positive_int, create_act
from ..registry import register_block


def _same_max_pool(x: torch.Tensor, stride: tuple[int, int]) -> torch.Tensor:
    """Max pooling with kernel stride + 1 and TensorFlow's "SAME" padding: output ceil(H / s) x ceil(W / s)."""
    pads = []
    for size, s in zip(reversed(x.shape[-2:]), reversed(stride)):  # width first, as F.pad wants
        total = max((-(-size // s) - 1) * s + s + 1 - size, 0)
        pads += [total // 2, total - total // 2]
    x = F.pad(x, pads, value=float("-inf"))
    return F.max_pool2d(x, (stride[0] + 1, stride[1] + 1), stride)


def resize_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """An input of a BiFPN node brought to the node's size: SAME max pooling down, nearest interpolation up."""
    (h, w), (th, tw) = x.shape[-2:], size
    if h > th and w > tw:
        x = _same_max_pool(x, ((h - 1) // th + 1, (w - 1) // tw + 1))
    elif h > th or w > tw:
        raise ValueError(f"a BiFPN input of size {h}x{w} is larger than the node ({th}x{tw}) along one axis only")
    return x if tuple(x.shape[-2:]) == (th, tw) else F.interpolate(x, size=(th, tw), mode="nearest")


@register_block("bifpn_fusion")
class BiFPNFusion(nn.Module):
    """list of (N, C_i, H_i, W_i) -> (N, C_out, H_0, W_0): weighted sum of the resized inputs, swish, SepConv, BN.

    Args:
        in_channels: C_i, one int for all inputs or one per input. out_channels: C_out (the BiFPN width).
        num_inputs: inputs of the node (BiFPN: 2 top-down, 3 bottom-up), when ``in_channels`` is an int.
        weighting: "fast" (paper), "softmax" or "sum". eps: the fast fusion's epsilon (1e-4). act: before the conv.
    """

    def __init__(self, in_channels: int | Sequence[int], out_channels: int, num_inputs: int = 2,
                 weighting: str = "fast", eps: float = 1e-4, act: str = "swish"):
        super().__init__()
        check_positive_int("out_channels", out_channels)
        if isinstance(in_channels, int):
            in_channels = [in_channels] * check_positive_int("num_inputs", num_inputs)
        self.in_channels = [check_positive_int(f"in_channels[{i}]", c) for i, c in enumerate(in_channels)]
        if len(self.in_channels) < 2:
            raise ValueError(f"a fusion node takes at least 2 inputs, got {len(self.in_channels)}")
        self.weighting = check_choice("weighting", weighting, {"fast", "softmax", "sum"})
        self.eps = float(eps)
        self.resample = nn.ModuleList([nn.Identity() if c == out_channels else ConvNormAct(c, out_channels, 1,
                                                                                          act=None, bias=True)
                                       for c in self.in_channels])
        self.edge_weights = nn.Parameter(torch.ones(len(self.in_channels))) if weighting != "sum" else None
        self.act = create_act(act)
        self.conv_dw = nn.Conv2d(out_channels, out_channels, 3, padding=1, groups=out_channels, bias=False)
        self.conv_pw = nn.Conv2d(out_channels, out_channels, 1)
        self.bn = nn.BatchNorm2d(out_channels, eps=1e-3, momentum=0.01)

    def weights(self) -> torch.Tensor:
        """The normalised fusion weights, one per input (they sum to ~1; exactly 1 for softmax)."""
        if self.edge_weights is None:
            return torch.ones(len(self.in_channels), device=self.conv_pw.weight.device)
        if self.weighting == "softmax":
            return self.edge_weights.softmax(dim=0)
        w = F.relu(self.edge_weights)
        return w / (w.sum() + self.eps)

    def fused(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        """O = sum_i w_i Resize(I_i): (N, C_out, H_0, W_0), before the activation and the convolution."""
        if len(inputs) != len(self.in_channels):
            raise ValueError(f"this fusion node takes {len(self.in_channels)} inputs, got {len(inputs)}")
        size = tuple(inputs[0].shape[-2:])
        maps = torch.stack([resize_to(r(x), size) for r, x in zip(self.resample, inputs)])
        return (maps * self.weights().to(maps.dtype).view(-1, 1, 1, 1, 1)).sum(dim=0)

    def forward(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.bn(self.conv_pw(self.conv_dw(self.act(self.fused(inputs)))))

    def example_inputs(self, n: int, h: int, w: int, device=None) -> tuple[list[torch.Tensor]]:
        """A list of maps of this node's widths: its own level (h x w), the next coarser one, then finer ones."""
        sizes = [(h, w), (-(-h // 2), -(-w // 2))] + [(2 * h, 2 * w)] * (len(self.in_channels) - 2)
        return ([torch.randn(n, c, *s, device=device) for c, s in zip(self.in_channels, sizes)],)
