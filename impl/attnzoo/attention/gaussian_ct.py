"""Gaussian Context Transformer (GCT) (Ruan, Wang, Zheng, Zheng & Zheng, CVPR 2021; no arXiv version).

Registered as ``gaussian_ct`` (the name ``gct`` is the Gated Channel Transformation of Yang et al., 2020).

The authors' earlier study of SE and LCT (``lct``) found that a channel's gate falls the further its pooled
context lies from the mean of all channels. Instead of learning that relation they fix it with a Gaussian:

1. Global context: z_c = mean_{h,w} x_c.
2. Normalization across channels: z^_c = (z_c - mean_c z) / sqrt(var_c z + eps).
3. Gaussian excitation: g_c = exp(-z^_c^2 / (2 c^2)), y_c = g_c x_c.

A channel whose context is typical (z^ = 0) passes unchanged (g = 1); outliers in either direction are damped.
GCT-B0 fixes the standard deviation c (no parameters at all); GCT-B1 learns it (``gaussian_ct_b1``: one scalar
per block, stored as c and used through c^2 so its sign is irrelevant). In a ResNet the block sits where SE
sits (``gaussian_ct_resnet50``, ``gaussian_ct_b1_resnet50``).

Known bug this avoids: widely copied re-implementations compute exp(-z^2 / 2 * c), i.e. a Gaussian of standard
deviation 1 / sqrt(c), not c, so their "c = 2" is a much narrower Gaussian than the paper's. Here c is the
standard deviation, exactly as in the equation above.

Departures: c defaults to 2. We could not check this value or the exact parametrization of the learnable c in
GCT-B1 against the paper's text; the scalar-per-block form is our choice.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..layers import check_positive_int
from ..models.resnet import register_resnet
from ..registry import register_attention


@register_attention("gaussian_ct")
class GaussianContextTransformer(nn.Module):
    """(N, C, H, W) -> (N, C, H, W): x * exp(-standardize_c(avgpool(x))^2 / (2 c^2)).

    Args:
        channels: C (the module has no per-channel parameters; C is checked only).
        c: standard deviation of the Gaussian. learnable: learn c (GCT-B1) instead of fixing it (GCT-B0).
        eps: added to the variance across channels.
    """

    def __init__(self, channels: int, c: float = 2.0, learnable: bool = False, eps: float = 1e-5):
        super().__init__()
        check_positive_int("channels", channels)
        if not c > 0:
            raise ValueError(f"c (the Gaussian's standard deviation) must be positive, got {c!r}")
        self.eps = eps
        if learnable:
            self.c = nn.Parameter(torch.tensor(float(c)))
        else:
            self.register_buffer("c", torch.tensor(float(c)), persistent=False)

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """The per-channel gate g in (0, 1], shape (N, C, 1, 1)."""
        z = x.float().mean(dim=(2, 3), keepdim=True)
        z_hat = (z - z.mean(dim=1, keepdim=True)) / (z.var(dim=1, correction=0, keepdim=True) + self.eps).sqrt()
        return torch.exp(-z_hat.square() / (2 * self.c.float().square() + 1e-12)).to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weights(x)


register_attention("gaussian_ct_b1", GaussianContextTransformer, learnable=True)
register_resnet("gaussian_ct_resnet50", 50, attn_layer="gaussian_ct")
register_resnet("gaussian_ct_b1_resnet50", 50, attn_layer="gaussian_ct_b1")
