"""Linear Context Transform (LCT) block (Ruan, Wen, Zheng & Zheng, AAAI 2020, arXiv:1909.03834).

The authors inspect trained SE blocks and find that the gate a channel receives mostly depends on how far its
pooled context lies from that of the other channels (a roughly negative, monotone relation), which the SE
bottleneck MLP learns only approximately and at a cost of 2C^2/r weights. LCT keeps just that relation:

1. Global context aggregation: z_c = mean_{h,w} x_c (as in SE).
2. Normalization inside groups: the C channels are split into G groups and each z_c is standardized with the
   mean and standard deviation of its own group, z^_c = (z_c - mu_g) / sqrt(sigma_g^2 + eps), so that a channel
   is compared with related channels only.
3. Linear transform per channel and gate: a_c = sigmoid(w_c z^_c + b_c), y_c = a_c x_c.

That is 2C parameters per block: exactly GroupNorm applied to the pooled (N, C, 1, 1) context, followed by a
sigmoid, which is how it is computed here (``F.group_norm``). In a ResNet the block sits where SE sits
(``lct_resnet50``).

Departures: the group count is a hyperparameter the paper ablates; we default to G = 16 (the channel counts of
ResNet stages are all multiples of 16). w and b start at 1 and 0 (plain standardization), our choice.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import check_divisible, check_positive_int
from ..models.resnet import register_resnet
from ..registry import register_attention


@register_attention("lct")
class LinearContextTransform(nn.Module):
    """(N, C, H, W) -> (N, C, H, W): x * sigmoid(w * groupnorm(avgpool(x)) + b).

    Args:
        channels: C. groups: G, number of channel groups normalized separately (C must be divisible by G).
        eps: added to the group variance.
    """

    def __init__(self, channels: int, groups: int = 16, eps: float = 1e-5):
        super().__init__()
        check_positive_int("channels", channels)
        check_positive_int("groups", groups)
        check_divisible("channels", channels, groups, "groups")
        if channels // groups < 2:
            raise ValueError(f"each of the groups={groups} must hold at least 2 of the channels={channels} "
                             "(a group of one channel has no variance to normalize by)")
        self.groups, self.eps = groups, eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """The per-channel gate a, shape (N, C, 1, 1)."""
        z = x.float().mean(dim=(2, 3), keepdim=True)
        gate = torch.sigmoid(F.group_norm(z, self.groups, self.weight.float(), self.bias.float(), self.eps))
        return gate.to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weights(x)


register_resnet("lct_resnet50", 50, attn_layer="lct")
