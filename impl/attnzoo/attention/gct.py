"""Gated Channel Transformation (GCT) (Yang, Zhu, Wu & Yang, CVPR 2020, arXiv:1909.11519).

GCT is light enough (3C parameters) to be placed before every convolution, not once per block. With x_c the
c-th channel:

1. Global context embedding: s_c = alpha_c ||x_c||_2 (an l2 norm over H x W, with a trainable scale alpha).
2. Channel normalization: s^_c = sqrt(C) s_c / ||s||_2 = s_c / sqrt(mean_c s_c^2), which makes the channels
   compete: raising one channel's embedding lowers everybody else's normalized value.
3. Gating adaptation: y_c = x_c (1 + tanh(gamma_c s^_c + beta_c)).

gamma and beta start at zero, so a new GCT is the identity; a positive gamma_c makes channel c compete with the
others, a negative one makes it cooperate. ``mode="l1"`` uses the l1 embedding the paper also studies.

Placement (``gct_resnet50``): a GCT in front of every convolution of the network (stem, the three convolutions
of every bottleneck and the projection shortcuts), as in the authors' PyTorch ResNet-50: ``attn_site="pre_conv"`` of
the ResNet makes each convolution ``nn.Sequential(GCT, conv)``.

Departures: none in the module (eps = 1e-5 inside both square roots, as in the authors' code).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..layers import check_choice, check_positive_int
from ..models.resnet import register_resnet
from ..registry import register_attention


@register_attention("gct")
class GatedChannelTransform(nn.Module):
    """(N, C, H, W) -> (N, C, H, W): x * (1 + tanh(gamma * normalize(alpha * ||x||) + beta)).

    Args:
        channels: C. eps: numerical guard in the norms. mode: "l2" (paper's default) or "l1".
    """

    def __init__(self, channels: int, eps: float = 1e-5, mode: str = "l2"):
        super().__init__()
        check_positive_int("channels", channels)
        self.mode = check_choice("mode", mode, ("l2", "l1"))
        self.eps = eps
        self.alpha = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.beta = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """The multiplicative gate 1 + tanh(...), shape (N, C, 1, 1), values in (0, 2)."""
        xf = x.float()
        if self.mode == "l2":
            s = (xf.square().sum(dim=(2, 3), keepdim=True) + self.eps).sqrt() * self.alpha
            s_hat = s / (s.square().mean(dim=1, keepdim=True) + self.eps).sqrt()
        else:
            s = xf.abs().sum(dim=(2, 3), keepdim=True) * self.alpha
            s_hat = s / (s.abs().mean(dim=1, keepdim=True) + self.eps)
        return (1 + torch.tanh(self.gamma * s_hat + self.beta)).to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weights(x)


# A GCT in front of every convolution of the network: stem, the three of every bottleneck, the projection
# shortcuts (the authors' PyTorch ResNet-50).
register_resnet("gct_resnet50", 50, attn_layer="gct", attn_site="pre_conv")
