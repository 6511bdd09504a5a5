"""SimAM (Yang, Zhang, Li & Xie, "SimAM: A Simple, Parameter-Free Attention Module for Convolutional Neural
Networks", ICML 2021, PMLR 139:11863-11874; no arXiv version).

Inspired by spatial suppression in neuroscience, SimAM gives every neuron (one value of one channel at one
position) its own weight, a full 3D attention map, without any learned parameter. For a target neuron t of a
channel whose other M = H W - 1 neurons are x_i, the paper defines an energy that is low when a linear map can
separate t from the rest of its channel. With binary targets and a regularizer lambda the minimal energy has a
closed form; using the channel's mean mu and variance sigma^2 (over all H W positions, divided by M) it is

    e_t* = 4 (sigma^2 + lambda) / ((t - mu)^2 + 2 sigma^2 + 2 lambda).

A neuron that stands out from its channel has low energy and so is important; the weight is 1 / e_t*:

    1 / e_t* = (t - mu)^2 / (4 (sigma^2 + lambda)) + 1/2,       y = sigmoid(1 / E) * x   (element-wise).

The sigmoid bounds the weights to (0.62, 1) and keeps the map monotone in the distance to the channel mean.

Defaults and placement: lambda = 1e-4 as in the paper and the authors' module. The authors' ImageNet runs use
lambda = 0.1 (their README's --attention_param 0.1), so ``simam_resnet50`` uses 0.1. In their ResNet the module
sits inside each bottleneck right after the 3x3 convolution, before its BatchNorm (not after the last BatchNorm
as SE does); ``simam_resnet50`` follows that placement. Parameters equal ResNet-50's (25.56 M).

Departures: for a 1x1 map (M = 0) the variance is undefined; we divide by max(M, 1), so every weight is
sigmoid(1/2) there, instead of the NaN the formula gives.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..layers import check_positive_int
from ..models.resnet import register_resnet
from ..registry import register_attention


@register_attention("simam")
class SimAM(nn.Module):
    """(N, C, H, W) -> (N, C, H, W): x * sigmoid(1 / E), no parameters.

    Args:
        channels: C (only validated). e_lambda: the energy's regularizer lambda (paper: 1e-4; ImageNet code: 0.1).
    """

    def __init__(self, channels: int, e_lambda: float = 1e-4):
        super().__init__()
        check_positive_int("channels", channels)
        if isinstance(e_lambda, bool) or not isinstance(e_lambda, (int, float)) or not e_lambda > 0:
            raise ValueError(f"e_lambda must be a positive number, got {e_lambda!r}")
        self.e_lambda = float(e_lambda)

    def inverse_energy(self, x: torch.Tensor) -> torch.Tensor:
        """1 / e_t* for every neuron, shape of x."""
        m = max(x.shape[-2] * x.shape[-1] - 1, 1)
        d = (x - x.mean(dim=(2, 3), keepdim=True)).square()
        var = d.sum(dim=(2, 3), keepdim=True) / m
        return d / (4 * (var + self.e_lambda)) + 0.5

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """The 3D attention sigmoid(1 / E), shape of x."""
        return torch.sigmoid(self.inverse_energy(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weights(x)

    def extra_repr(self) -> str:
        return f"e_lambda={self.e_lambda}"


# SimAM right after the 3x3 convolution of every bottleneck, before its BatchNorm (the authors' code), lambda 0.1.
register_resnet("simam_resnet50", 50, attn_layer="simam", attn_kwargs={"e_lambda": 0.1}, attn_site="mid")
