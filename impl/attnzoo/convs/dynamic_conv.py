"""Dynamic convolution: attention over convolution kernels (Chen, Dai, Liu, Chen, Yuan & Liu, CVPR 2020,
arXiv:1912.03458).

A dynamic convolution owns K kernels W_1 ... W_K (and biases b_1 ... b_K) of the shape of the convolution it
replaces. For every example x, a squeeze-and-excitation branch gives K attention weights that sum to one,

    z = FC_2(ReLU(FC_1(GAP(x)))),   pi_k(x) = exp(z_k / tau) / sum_j exp(z_j / tau)        (paper, Sec. 3)

and the example is convolved with its own aggregated kernel

    y = (sum_k pi_k(x) W_k) * x + sum_k pi_k(x) b_k                                           (paper, Sec. 3)

The first FC reduces the width by 4 and K = 4 (the paper's settings). The temperature tau starts large, so that all
kernels are used almost equally and all train, and is annealed from 30 to 1 over the first 10 epochs (paper,
"temperature annealing"); ``temperature_schedule`` and ``set_temperature`` do this for a whole network. A freshly
built module has ``temperature = 30``, the start of training; a trained model runs at 1.

Differences from CondConv (``convs/condconv.py``): a softmax (weights on the simplex) instead of independent sigmoids,
a two-layer attention branch instead of one linear layer, and the temperature.

All N per-example kernels run as one grouped convolution (``layers.per_sample_conv2d``), no loop over the batch.

The authors released no code for this paper; what the paper leaves open is our choice and said here:
``hidden = max(1, C_in // 4)`` (``reduction``); the K kernels are each initialised on their own with He-normal
(fan-out, as the host ResNet/MobileNetV2 initialise a plain convolution), the attention branch as ``nn.Linear``;
the biases start at zero.

Backbones, K = 4 (the paper says "every convolution layer but the first"; the parameter counts of its ImageNet
table say which):

* ``dy_mobilenetv2_{100,075,050,035}``: every convolution of the inverted residual blocks (expand, depthwise,
  project) is dynamic, the stem and the last 1x1 convolution (to 1280 channels) stay static. With that placement
  our counts meet the paper's (x1.0: 11.15 M vs 11.1 M, 310 M vs 312.9 M MACs; x0.75: 7.01 M vs 7.0 M), while a
  dynamic last 1x1 convolution would add 1.2 M parameters at x1.0 (12.4 M). x0.5 and x0.35 give 3.95 M and 2.69 M
  against the paper's 4.0 M and 2.8 M, so only x1.0 and x0.75 carry ``reported:``.
* ``dy_resnet18``: every 3x3 convolution is dynamic (ResNet's ``conv_layer``), the 7x7 stem and the 1x1 projection
  shortcuts stay static. 44.9 M parameters and 1.86 GMACs against the paper's 42.7 M and 1.85 G; the paper's
  static ResNet-18 is also listed at 11.1 M where torchvision/timm's has 11.7 M, so its ResNet counts follow a
  convention about 5 % below ours and no ``reported:`` parameter figure is checked for it.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from ..layers import check_conv_args, check_positive_int, per_sample_conv2d
from ..models.mobilenetv2 import MobileNetV2
from ..models.resnet import register_resnet
from ..registry import register_conv, register_model


@register_conv("dynamic_conv")
class DynamicConv2d(nn.Module):
    """(N, C_in, H, W) -> (N, C_out, ceil(H / s), ceil(W / s)) with a per-example kernel sum_k pi_k(x) W_k.

    Args:
        in_channels, out_channels, kernel_size, stride, groups, dilation: as ``nn.Conv2d`` ("same" padding
            ``dilation * (k - 1) // 2``). bias: K biases aggregated like the kernels (as in the paper).
        num_kernels: K (paper: 4). reduction: width reduction of the attention's first FC (paper: 4).
        temperature: tau of the softmax (paper: 30 at the start of training, annealed to 1).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, groups: int = 1,
                 dilation: int = 1, bias: bool = False, num_kernels: int = 4, reduction: int = 4,
                 temperature: float = 30.0):
        super().__init__()
        check_conv_args(in_channels, out_channels, kernel_size, stride, groups, dilation)
        check_positive_int("num_kernels", num_kernels)
        check_positive_int("reduction", reduction)
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.stride, self.groups, self.dilation = stride, groups, dilation
        self.padding = dilation * (kernel_size - 1) // 2
        self.num_kernels = num_kernels
        self.temperature = check_temperature(temperature)
        hidden = max(1, in_channels // reduction)
        self.attention = nn.Sequential(nn.Linear(in_channels, hidden), nn.ReLU(inplace=True),
                                       nn.Linear(hidden, num_kernels))
        self.weight = nn.Parameter(torch.empty(num_kernels, out_channels, in_channels // groups, kernel_size,
                                               kernel_size))
        self.bias = nn.Parameter(torch.zeros(num_kernels, out_channels)) if bias else None
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Each kernel as ResNet/MobileNetV2 initialise a plain convolution (He-normal, fan-out); biases zero."""
        for kernel in self.weight:
            nn.init.kaiming_normal_(kernel, mode="fan_out", nonlinearity="relu")
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """z = FC_2(ReLU(FC_1(GAP(x)))), shape (N, K): the attention before the tempered softmax."""
        return self.attention(x.mean(dim=(2, 3)))

    def kernel_attention(self, x: torch.Tensor) -> torch.Tensor:
        """pi(x) = softmax(z / tau), shape (N, K); every row sums to 1."""
        return torch.softmax(self.logits(x) / self.temperature, dim=1)

    def kernels(self, attention: torch.Tensor) -> torch.Tensor:
        """The aggregated kernels sum_k pi_k W_k, shape (N, C_out, C_in / g, k, k)."""
        return (attention @ self.weight.flatten(1)).view(attention.shape[0], *self.weight.shape[1:])

    def forward(self, x: torch.Tensor, attention: torch.Tensor | None = None) -> torch.Tensor:
        n = x.shape[0]
        if attention is None:
            attention = self.kernel_attention(x)
        elif attention.shape != (n, self.num_kernels):
            raise ValueError(f"attention must have shape (N, K) = ({n}, {self.num_kernels}), "
                             f"got {tuple(attention.shape)}")
        bias = attention @ self.bias if self.bias is not None else None
        return per_sample_conv2d(x, self.kernels(attention), bias, self.stride, self.padding, self.dilation,
                                 self.groups)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"groups={self.groups}, dilation={self.dilation}, num_kernels={self.num_kernels}, "
                f"temperature={self.temperature}, bias={self.bias is not None}")


def check_temperature(tau) -> float:
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not tau > 0 or math.isinf(tau):
        raise ValueError(f"temperature must be a positive finite number, got {tau!r}")
    return float(tau)


def temperature_schedule(epoch: float, start: float = 30.0, end: float = 1.0, epochs: float = 10.0) -> float:
    """The paper's annealing: tau falls linearly from ``start`` to ``end`` over the first ``epochs``, then stays."""
    if epochs <= 0:
        raise ValueError(f"epochs must be positive, got {epochs!r}")
    return end + (start - end) * max(0.0, 1.0 - epoch / epochs)


def set_temperature(model: nn.Module, temperature: float) -> int:
    """Set tau of every ``DynamicConv2d`` in ``model``; returns how many were set."""
    tau, count = check_temperature(temperature), 0
    for m in model.modules():
        if isinstance(m, DynamicConv2d):
            m.temperature, count = tau, count + 1
    return count


for _width in (0.35, 0.5, 0.75, 1.0):
    register_model(f"dy_mobilenetv2_{round(_width * 100):03d}", MobileNetV2, width_mult=_width, drop_rate=0.2,
                   conv_layer="dynamic_conv")
register_resnet("dy_resnet18", 18, conv_layer="dynamic_conv")
