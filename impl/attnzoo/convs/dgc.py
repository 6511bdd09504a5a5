"""DGC: dynamic group convolution (Su, Fang, Kang, Hu, Pietikainen & Liu, ECCV 2020, arXiv:2007.04242).

A group convolution cuts every output group off from most input channels, permanently. DGC keeps the cost of a
group convolution with H groups ("heads") but lets each head choose, for every image, which input channels it
reads. Head h owns a kernel W_h (C_out / H output channels, all C_in inputs) and a saliency generator

    s_h(x) = ReLU(W_2^h ReLU(W_1^h GAP(x)) + b_2^h) in R_{>=0}^{C_in}                      (paper, Sec. 3)

Of the C_in saliencies the smallest ``inactive`` are set to zero, the others kept as they are (the "unbiased"
gate of the paper), and the head convolves the gated input:

    y_h = W_h * (s~_h(x) . x),     y = the H heads' outputs, interleaved as the authors' code       (Sec. 3)

``inactive`` grows during training from 0 to round(C_in (1 - gate_factor)) (gate_factor: the fraction of input
channels each head keeps, 1/4 by default): 0 before 1/12 of training, then linearly until 3/4 of it
(``DynamicMultiHeadConv.forward`` of zhuogege1943/dgc, ``layers.py``). Set the progress of a whole network with
``set_progress(model, epoch / epochs)``; the last value used in training is kept (also in the state dict), so
evaluation runs with the trained sparsity. The mean saliency of every head is the Lasso term the authors add to
the loss (``lasso_loss``, summed over the heads as the code does; ``dgc_lasso_loss(model)`` sums it over a
network after a forward pass).

Faithful to the authors' code (``layers.py``): saliency generator ``fc1`` without bias, C_in -> C_in / r, with
r = 16 halved to 8 below 80 input channels; ``fc2`` with bias initialised to 1 (He-normal weights for both);
4 heads; the channels at or below the k-th smallest saliency are zeroed; head outputs interleaved
(``out.view(b, heads, c / heads, h, w).transpose(1, 2)``). All heads run as ONE grouped convolution over the
H gated copies of the input, as in the authors' code; no loop over the batch.

Departures, for a drop-in ``nn.Conv2d``: the authors' layer starts with its own BN and ReLU (their ResNet and
DenseNet are pre-activation); ``pre_act=True`` adds them, the default (False) does not, since a post-activation
host feeds the layer a ReLU output already. ``heads`` defaults to the contract's ``groups`` when that is above 1
(DGC replaces a group convolution of that many groups), else 4. The authors' ``global_progress`` class variable
becomes a per-module ``progress`` (set by ``set_progress``). The DGC networks of the paper (pre-activation ResNet,
CondenseNet-style DenseNet) are not registered.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from ..layers import check_conv_args, check_positive_int
from ..registry import register_conv


@register_conv("dgc")
class DynamicGroupConv2d(nn.Module):
    """(N, C_in, H, W) -> (N, C_out, ceil(H / s), ceil(W / s)); each of H heads reads its own input channels per image.

    Args:
        in_channels, out_channels, kernel_size, stride, dilation: as ``nn.Conv2d`` ("same" padding). groups: the
            group convolution replaced; sets ``heads`` if above 1. bias: a static output bias (ours; code: none).
        heads: H (code: 4). squeeze_rate: r of the saliency generator (code: 16, halved below 80 inputs).
        gate_factor: fraction of input channels each head keeps at the end of training (code: 0.25).
        pre_act: the authors' BN + ReLU at the start of the layer.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, groups: int = 1,
                 dilation: int = 1, bias: bool = False, heads: int | None = None, squeeze_rate: int = 16,
                 gate_factor: float = 0.25, pre_act: bool = False):
        super().__init__()
        check_conv_args(in_channels, out_channels, kernel_size, stride, groups, dilation)
        heads = heads if heads is not None else (groups if groups > 1 else 4)
        check_positive_int("heads", heads)
        check_positive_int("squeeze_rate", squeeze_rate)
        if out_channels % heads:
            raise ValueError(f"out_channels={out_channels} must be divisible by heads={heads}")
        if not 0 < gate_factor <= 1:
            raise ValueError(f"gate_factor must be in (0, 1], got {gate_factor!r}")
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.stride, self.dilation, self.padding = stride, dilation, dilation * (kernel_size - 1) // 2
        self.heads, self.gate_factor = heads, gate_factor
        rate = squeeze_rate // 2 if in_channels < 80 else squeeze_rate
        hidden = max(1, in_channels // max(1, rate))
        self.pre_act = nn.Sequential(nn.BatchNorm2d(in_channels), nn.ReLU(inplace=True)) if pre_act else nn.Identity()
        self.fc1 = nn.Parameter(torch.empty(heads, hidden, in_channels))         # per head, no bias
        self.fc2 = nn.Parameter(torch.empty(heads, in_channels, hidden))
        self.fc2_bias = nn.Parameter(torch.ones(heads, in_channels))
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))  # heads stacked
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.progress = 0.0
        self.inactive_channels = 0
        self.lasso_loss: torch.Tensor | None = None
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """He-normal (fan-in) for the saliency layers, fc2 bias 1 (code); kernel as a conv's He-normal fan-out."""
        nn.init.normal_(self.fc1, 0.0, math.sqrt(2.0 / self.fc1.shape[2]))
        nn.init.normal_(self.fc2, 0.0, math.sqrt(2.0 / self.fc2.shape[2]))
        nn.init.ones_(self.fc2_bias)
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")

    def target_inactive(self, progress: float) -> int:
        """Channels each head drops at training progress p in [0, 1] (authors' schedule)."""
        full = self.in_channels * (1 - self.gate_factor)
        if progress >= 3 / 4:
            return round(full)
        if progress > 1 / 12:
            return round(full * 3 / 2 * (progress - 1 / 12))
        return 0

    def saliency(self, x: torch.Tensor) -> torch.Tensor:
        """s_h(x) >= 0 for every head and input channel, shape (N, H, C_in) (x after ``pre_act``)."""
        hidden = torch.relu(torch.einsum("nc,hdc->nhd", x.mean(dim=(2, 3)), self.fc1))
        return torch.relu(torch.einsum("nhd,hcd->nhc", hidden, self.fc2) + self.fc2_bias)

    def gates(self, saliency: torch.Tensor) -> torch.Tensor:
        """Zero the ``inactive_channels`` smallest saliencies of each head (and ties), keep the rest unchanged."""
        k = self.inactive_channels
        if k <= 0:
            return saliency
        kth = saliency.detach().kthvalue(k, dim=2, keepdim=True).values
        return torch.where(saliency.detach() <= kth, torch.zeros_like(saliency), saliency)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.inactive_channels = self.target_inactive(self.progress)
        x = self.pre_act(x)
        n, c, h, w = x.shape
        s = self.saliency(x)
        self.lasso_loss = s.mean(dim=(0, 2)).sum()          # the code: each head's mask.mean(), summed
        gated = (x.unsqueeze(1) * self.gates(s)[..., None, None]).reshape(n, self.heads * c, h, w)
        y = nn.functional.conv2d(gated, self.weight, None, self.stride, self.padding, self.dilation, self.heads)
        y = y.view(n, self.heads, self.out_channels // self.heads, *y.shape[-2:]).transpose(1, 2)
        y = y.reshape(n, self.out_channels, *y.shape[-2:])
        return y if self.bias is None else y + self.bias.view(1, -1, 1, 1)

    def get_extra_state(self) -> dict:
        return {"progress": self.progress, "inactive_channels": self.inactive_channels}

    def set_extra_state(self, state: dict) -> None:
        self.progress, self.inactive_channels = state["progress"], state["inactive_channels"]

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"heads={self.heads}, gate_factor={self.gate_factor}, inactive_channels={self.inactive_channels}")


def set_progress(model: nn.Module, progress: float) -> int:
    """Set the training progress (epoch / epochs, in [0, 1]) of every DGC layer; returns how many were set."""
    if not 0 <= progress <= 1:
        raise ValueError(f"progress must be in [0, 1], got {progress!r}")
    layers = [m for m in model.modules() if isinstance(m, DynamicGroupConv2d)]
    for m in layers:
        m.progress = float(progress)
        m.inactive_channels = m.target_inactive(progress)
    return len(layers)


def dgc_lasso_loss(model: nn.Module) -> torch.Tensor:
    """Sum of the mean saliencies of every DGC layer after a forward pass (the authors' Lasso term)."""
    losses = [m.lasso_loss for m in model.modules() if isinstance(m, DynamicGroupConv2d) and m.lasso_loss is not None]
    if not losses:
        raise ValueError("no DGC layer has run a forward pass yet")
    return torch.stack(losses).sum()
