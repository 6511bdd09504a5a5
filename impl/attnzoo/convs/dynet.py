"""DyNet: Dynamic Convolution for Accelerating Convolutional Neural Networks (Zhang, Zhang, Wang & Zhong, arXiv 2020,
https://arxiv.org/abs/2004.10694).

Idea (Section 3): the kernels of a trained convolution are strongly correlated, and several of them cooperate to
produce one feature that ignores nuisances (pose, lighting). If each output kernel is instead *generated* from the
input as a mix of several fixed kernels, one dynamic kernel can do the work of those correlated ones, so a thinner
dynamic layer replaces a wider static one (Dy-mobile, Dy-ResNet: fewer FLOPs at about the same accuracy).

A dynamic layer of ``C_out`` outputs owns ``C_out * g_t`` fixed kernels ``w_t^i`` (the paper's weight
``[C_out x g_t, C_in, k, k]``; ``g_t``, the group size, is 6 in every network of the paper). Two modules:

* coefficient prediction (Section 3.2, Fig. 3): global average pooling of the input, a fully connected layer and a
  sigmoid give ``C_out * g_t`` coefficients ``eta_t^i`` in (0, 1), one per fixed kernel;
* dynamic generation (Eq. 1): the dynamic kernel of output ``t`` is ``w~_t = sum_i eta_t^i w_t^i``.

The output is ``O~_t = w~_t (*) x``. Training in batches (Eq. 2) may instead convolve with all fixed kernels and mix
the feature maps, ``O~_t = sum_i eta_t^i (w_t^i (*) x)``; the two are equal. ``forward`` always fuses the kernels
(one per example, applied through ``layers.dynamic.per_sample_conv2d``: one grouped convolution with the batch folded
into the channels, no loop over the batch), which costs one plain ``C_in -> C_out`` convolution plus the tiny mix;
``feature_fusion`` computes the paper's training form and serves as the reference in the tests.

Sources: the authors released no code. Read were Sections 3.2-3.3 and Tables 1-6 of the paper's text (the
OpenReview/ICLR 2020 submission text: the method sections; the arXiv abstract for the headline numbers).
Defaults and departures:

* ``group_size=6``: Section 3.3 ("we set the hyper-parameter g_t as 6 for all of them"); Table 5 ablates 2/4/6.
* ``hidden_ratio=None``: one fully connected layer (Fig. 3, the Dy-mobile form). Dy-ResNet18/50 use "two linear
  layers" whose first has ``C_in / 4`` outputs (Section 3.3): ``hidden_ratio=0.25``. The text does not name the
  activation between the two; we use ReLU (an assumption).
* In the paper one coefficient module serves all the dynamic convolutions of a building block, fed by the block's
  input. As a drop-in for one ``nn.Conv2d`` each module here owns its coefficient prediction from its own input;
  a block that shares coefficients passes ``coefficients=`` (shape ``(N, C_out, g_t)``) to ``forward``.
* Initialisation is not given in the paper: each fixed kernel starts as an ``nn.Conv2d`` kernel of its own
  (fan-in ``C_in / groups * k * k``), the fully connected layers as ``nn.Linear``.
* ``bias`` (default False; the paper's convolutions are followed by batch normalization) is a static per-output
  bias, not mixed.

Dy-mobile / Dy-ResNet-50 are not registered as models: the paper gives only their MFLOPs (Table 1) and draws their
blocks in Fig. 4, which the text does not spell out layer by layer (which convolutions are dynamic, the widths).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import check_conv_args, check_positive_int
from ..layers.dynamic import per_sample_conv2d
from ..registry import register_conv


@register_conv("dynet")
class DyNetConv2d(nn.Module):
    """A drop-in for ``nn.Conv2d`` with same padding: (N, C_in, H, W) -> (N, C_out, ceil(H / s), ceil(W / s)),
    each example convolved with its own kernels ``w~_t = sum_i eta_t^i(x) w_t^i``.

    Args:
        in_channels, out_channels, kernel_size, stride, groups, dilation: as ``nn.Conv2d`` ("same" padding
            ``dilation * (kernel_size - 1) // 2``).
        group_size: g_t, the fixed kernels mixed into each dynamic kernel (paper: 6).
        hidden_ratio: None for the paper's single fully connected coefficient layer (Fig. 3); a fraction of C_in
            for two linear layers with a ReLU between (Dy-ResNet: 0.25).
        bias: a static bias per output channel.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, groups: int = 1,
                 dilation: int = 1, group_size: int = 6, hidden_ratio: float | None = None, bias: bool = False):
        super().__init__()
        check_conv_args(in_channels, out_channels, kernel_size, stride, groups, dilation)
        check_positive_int("group_size", group_size)
        if hidden_ratio is not None and not (isinstance(hidden_ratio, (int, float)) and hidden_ratio > 0):
            raise ValueError(f"hidden_ratio must be None or a positive number, got {hidden_ratio!r}")
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.stride, self.groups, self.dilation = stride, groups, dilation
        self.padding = dilation * (kernel_size - 1) // 2
        self.group_size, self.hidden_ratio = group_size, hidden_ratio
        # fixed kernels w_t^i = weight[t, i]: the paper's [C_out x g_t, C_in, k, k]
        self.weight = nn.Parameter(torch.empty(out_channels, group_size, in_channels // groups, kernel_size,
                                               kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        num_coefficients = out_channels * group_size
        if hidden_ratio is None:
            self.coefficients_fc = nn.Linear(in_channels, num_coefficients)
        else:
            hidden = max(1, round(in_channels * hidden_ratio))
            self.coefficients_fc = nn.Sequential(nn.Linear(in_channels, hidden), nn.ReLU(inplace=True),
                                                 nn.Linear(hidden, num_coefficients))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Each fixed kernel as a fresh ``nn.Conv2d`` kernel (Kaiming-uniform, a = sqrt(5), fan-in C_in/g k k)."""
        bound = 1.0 / math.sqrt(self.weight.shape[2] * self.kernel_size * self.kernel_size)
        nn.init.uniform_(self.weight, -bound, bound)

    def coefficients(self, x: torch.Tensor) -> torch.Tensor:
        """Coefficient prediction: eta = sigmoid(FC(GAP(x))), shape (N, C_out, g_t)."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"DyNetConv2d expects (N, {self.in_channels}, H, W) inputs, got {tuple(x.shape)}")
        eta = torch.sigmoid(self.coefficients_fc(x.mean(dim=(2, 3))))
        return eta.view(x.shape[0], self.out_channels, self.group_size)

    def kernels(self, coefficients: torch.Tensor) -> torch.Tensor:
        """Dynamic generation (Eq. 1): w~_t = sum_i eta_t^i w_t^i, shape (N, C_out, C_in / g, k, k)."""
        return torch.einsum("nti,tichw->ntchw", coefficients, self.weight)

    def _checked_coefficients(self, x: torch.Tensor, coefficients: torch.Tensor | None) -> torch.Tensor:
        if coefficients is None:
            return self.coefficients(x)
        expected = (x.shape[0], self.out_channels, self.group_size)
        if tuple(coefficients.shape) != expected:
            raise ValueError(f"coefficients must have shape (N, C_out, g_t) = {expected}, "
                             f"got {tuple(coefficients.shape)}")
        return coefficients

    def forward(self, x: torch.Tensor, coefficients: torch.Tensor | None = None) -> torch.Tensor:
        eta = self._checked_coefficients(x, coefficients)
        bias = None if self.bias is None else self.bias.expand(x.shape[0], -1)
        return per_sample_conv2d(x, self.kernels(eta), bias, self.stride, self.padding, self.dilation, self.groups)

    def feature_fusion(self, x: torch.Tensor, coefficients: torch.Tensor | None = None) -> torch.Tensor:
        """The paper's training form (Eq. 2): convolve with all C_out g_t fixed kernels, then sum_i eta_t^i O_t^i."""
        eta = self._checked_coefficients(x, coefficients)
        fixed = self.weight.flatten(0, 1)                                   # (C_out g_t, C_in / g, k, k), t-major
        o = F.conv2d(x, fixed, None, self.stride, self.padding, self.dilation, self.groups)
        o = o.view(x.shape[0], self.out_channels, self.group_size, o.shape[-2], o.shape[-1])
        y = (eta[..., None, None] * o).sum(dim=2)
        return y if self.bias is None else y + self.bias.view(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"groups={self.groups}, dilation={self.dilation}, group_size={self.group_size}, "
                f"hidden_ratio={self.hidden_ratio}, bias={self.bias is not None}")
