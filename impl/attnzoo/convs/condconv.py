"""CondConv: conditionally parameterized convolutions (Yang, Bender, Le & Ngiam, NeurIPS 2019, arXiv:1904.04971).

A CondConv layer owns E expert kernels W_1 ... W_E of the shape of the convolution it replaces. For every example
x a routing function gives E weights in (0, 1),

    r(x) = sigmoid(GAP(x) R + b),        R in R^{C_in x E}            (paper, Section 3)

and the example is convolved with its own kernel, the weighted sum of the experts:

    y = (r_1(x) W_1 + ... + r_E(x) W_E) * x                          (paper, Section 3)

which equals the mixture of E convolutions sum_i r_i (W_i * x) but costs one convolution plus the cheap kernel
mix. Capacity (parameters) grows with E while the multiply-adds barely do.

All N per-example kernels are applied in ONE grouped convolution: the batch is folded into the channels,
(N, C, H, W) -> (1, N C, H, W), the kernels are stacked to (N C_out, C_in / g, k, k), and ``groups = g N``
keeps every example with its own kernel. No Python loop over the batch (the authors' TensorFlow layer loops over
the examples: ``condconv_layers.py`` ``CondConv2D.call``, lines 207-222 of tensorflow/tpu
``models/official/efficientnet/condconv/condconv_layers.py``).

Faithful to the authors' code (tensorflow/tpu, ``models/official/efficientnet``):

* routing: global average pooling, a dense layer with bias, sigmoid (``efficientnet_model.py`` lines 205-209 and
  343-344); the dense layer starts as Keras' default (Glorot-uniform weights, zero bias).
* experts: each initialised on its own like a plain convolution of the EfficientNet code, N(0, 2 / fan_out) with
  fan_out = k * k * C_out / g (``conv_kernel_initializer``, ``efficientnet_model.py`` lines 61-82;
  ``get_condconv_initializer``, ``condconv_layers.py`` lines 30-58); expert biases start at zero.
* default E = 8, the paper's headline CondConv-EfficientNet-B0 (``efficientnet-condconv-b0-8e``).

One difference in where routing happens: in the authors' EfficientNet the routing weights are computed once per
MBConv block, from the block's input, and shared by its expand, depthwise and project convolutions
(``efficientnet_model.py`` lines 342-353). As a drop-in for one ``nn.Conv2d`` each CondConv module has its own
routing function (the per-layer form of the paper's r(x)); a block that wants to share routing calls
``conv(x, routing_weights=r)`` with r from one module's ``routing_weights``.

Parameter layout: ``weight`` is (E, C_out, C_in / g, k, k). timm's ``CondConv2d`` keeps the same numbers flattened
as (E, C_out C_in / g k k) and the authors' layer as (E, k k C_in C_out) in TensorFlow's HWIO order; use
``load_timm_condconv`` and ``weight_from_tensorflow`` to convert.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import check_conv_args, check_positive_int
from ..registry import register_conv


@register_conv("condconv")
class CondConv2d(nn.Module):
    """(N, C_in, H, W) -> (N, C_out, ceil(H / s), ceil(W / s)) with a per-example kernel sum_i r_i(x) W_i.

    Args:
        in_channels, out_channels, kernel_size, stride, groups, dilation: as ``nn.Conv2d`` ("same" padding
            ``dilation * (k - 1) // 2``). bias: E expert biases mixed like the kernels.
        num_experts: E (paper's default model: 8; the authors also release 4).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, groups: int = 1,
                 dilation: int = 1, bias: bool = False, num_experts: int = 8):
        super().__init__()
        check_conv_args(in_channels, out_channels, kernel_size, stride, groups, dilation)
        check_positive_int("num_experts", num_experts)
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.stride, self.groups, self.dilation = stride, groups, dilation
        self.padding = dilation * (kernel_size - 1) // 2
        self.num_experts = num_experts
        self.weight = nn.Parameter(torch.empty(num_experts, out_channels, in_channels // groups, kernel_size,
                                               kernel_size))
        self.bias = nn.Parameter(torch.empty(num_experts, out_channels)) if bias else None
        self.routing = nn.Linear(in_channels, num_experts)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Experts ~ N(0, 2 / fan_out), fan_out = k k C_out / g, each on its own; routing Glorot-uniform, bias 0."""
        fan_out = self.kernel_size * self.kernel_size * self.out_channels // self.groups
        nn.init.normal_(self.weight, 0.0, math.sqrt(2.0 / fan_out))
        if self.bias is not None:
            nn.init.zeros_(self.bias)
        nn.init.xavier_uniform_(self.routing.weight)
        nn.init.zeros_(self.routing.bias)

    def routing_weights(self, x: torch.Tensor) -> torch.Tensor:
        """r(x) = sigmoid(GAP(x) R + b), shape (N, E)."""
        return torch.sigmoid(self.routing(x.mean(dim=(2, 3))))

    def kernels(self, routing_weights: torch.Tensor) -> torch.Tensor:
        """The per-example kernels sum_i r_i W_i, shape (N, C_out, C_in / g, k, k)."""
        mixed = routing_weights @ self.weight.flatten(1)
        return mixed.view(routing_weights.shape[0], *self.weight.shape[1:])

    def forward(self, x: torch.Tensor, routing_weights: torch.Tensor | None = None) -> torch.Tensor:
        n, c, h, w = x.shape
        if routing_weights is None:
            routing_weights = self.routing_weights(x)
        elif routing_weights.shape != (n, self.num_experts):
            raise ValueError(f"routing_weights must have shape (N, E) = ({n}, {self.num_experts}), "
                             f"got {tuple(routing_weights.shape)}")
        kernel = self.kernels(routing_weights).reshape(n * self.out_channels, c // self.groups, self.kernel_size,
                                                       self.kernel_size)
        bias = (routing_weights @ self.bias).reshape(-1) if self.bias is not None else None
        # the batch folded into the channels: example i only meets its own kernel through groups = g * N
        y = F.conv2d(x.reshape(1, n * c, h, w), kernel, bias, self.stride, self.padding, self.dilation,
                     self.groups * n)
        return y.view(n, self.out_channels, y.shape[-2], y.shape[-1])

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"groups={self.groups}, dilation={self.dilation}, num_experts={self.num_experts}, "
                f"bias={self.bias is not None}")


@torch.no_grad()
def load_timm_condconv(module: CondConv2d, timm_conv: nn.Module, routing_fn: nn.Linear | None = None) -> CondConv2d:
    """Copy the experts of a ``timm.layers.CondConv2d`` (and, if given, the ``nn.Linear`` routing layer of its
    timm block, e.g. ``CondConvResidual.routing_fn``) into ``module``; returns ``module``.

    timm stores expert i as row i of an (E, C_out * C_in/g * k * k) matrix, the row-major flattening of our
    (C_out, C_in/g, k, k) kernel, so the mapping is a reshape: ``ours.weight[i] = timm.weight[i].view(C_out,
    C_in/g, k, k)``; biases are (E, C_out) in both.
    """
    if timm_conv.weight.shape != (module.num_experts, module.weight[0].numel()):
        raise ValueError(f"timm weight of shape {tuple(timm_conv.weight.shape)} does not fit experts of shape "
                         f"{tuple(module.weight.shape)}")
    if (timm_conv.bias is None) != (module.bias is None):
        raise ValueError("both modules must have an expert bias, or neither")
    module.weight.copy_(timm_conv.weight.view_as(module.weight))
    if module.bias is not None:
        module.bias.copy_(timm_conv.bias)
    if routing_fn is not None:
        module.routing.load_state_dict(routing_fn.state_dict())
    return module


def weight_from_tensorflow(kernel: torch.Tensor, out_channels: int, in_channels: int, kernel_size: int,
                           depthwise: bool = False) -> torch.Tensor:
    """The authors' ``condconv_kernel`` (E, k k C_in C_out), TensorFlow HWIO order, as our (E, C_out, C_in, k, k).

    ``depthwise=True`` converts ``DepthwiseCondConv2D``'s (E, k k C_in m) kernel (channel multiplier
    m = C_out / C_in, output channel c m + j) to our depthwise layout (E, C_out, 1, k, k).
    """
    e, k = kernel.shape[0], kernel_size
    if depthwise:
        m = out_channels // in_channels
        return kernel.reshape(e, k, k, in_channels, m).permute(0, 3, 4, 1, 2).reshape(e, out_channels, 1, k, k)
    return kernel.reshape(e, k, k, in_channels, out_channels).permute(0, 4, 3, 1, 2).contiguous()
