"""Triplet attention (Misra, Nalamada, Arasanipalai & Hou, "Rotate to Attend: Convolutional Triplet Attention
Module", WACV 2021, arXiv:2010.03045).

CBAM-style spatial gates look at one plane of the (C, H, W) tensor at a time. Triplet attention runs the same
cheap gate on all three planes by turning the tensor so that a different axis becomes the "channel" axis:

* branch C-W: view x as (H, C, W); Z-pool over H gives a 2 x C x W map;
* branch C-H: view x as (W, H, C); Z-pool over W gives a 2 x H x C map;
* branch H-W: the plain (C, H, W); Z-pool over C gives a 2 x H x W map (the CBAM spatial gate).

Z-pool stacks the max and the mean over the collapsed axis. Each branch convolves its 2-channel map with a
k x k kernel (k = 7), BatchNorm, sigmoid, multiplies the turned tensor by the result and turns it back; the
output is the plain average of the three branches,

    y = (1/3) * (x * s_cw + x * s_ch + x * s_hw),   s_* = sigmoid(BN(conv_k(ZPool(turned x)))).

There is no channel reduction and no MLP: each branch has 2 k^2 + 2 parameters (300 in total for k = 7),
whatever C is. The paper's triplet_resnet50 puts one module on every bottleneck's residual branch after the last
BatchNorm, as CBAM does (the authors' MODELS/resnet.py); it is registered here.

Departures: the paper speaks of rotations by 90 degrees; like the authors' code we use axis permutations, which
differ from rotations only by a flip that the learned k x k kernel absorbs. The authors' ResNet initializes the
BatchNorm scale of the H-W branch to zero (a habit inherited from their CBAM code); we keep the default
initialization (scale one), which only changes the starting point of training.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..layers import SpatialGate, check_positive_int
from ..models.resnet import register_resnet
from ..registry import register_attention


@register_attention("triplet")
class TripletAttention(nn.Module):
    """(N, C, H, W) -> (N, C, H, W): the average of three Z-pool gates on the C-W, C-H and H-W planes.

    Args:
        channels: C (only validated: the module's size does not depend on it).
        kernel_size: k of the three k x k gate convolutions (paper: 7; the authors also trained k = 3).
        no_spatial: drop the H-W branch and average the two cross-dimension branches (paper's ablation).
        norm: BatchNorm after each gate convolution (paper and code: yes).
    """

    def __init__(self, channels: int, kernel_size: int = 7, no_spatial: bool = False, norm: bool = True):
        super().__init__()
        check_positive_int("channels", channels)
        def z_pool_gate():  # the authors' Z-pool order [max; mean] and BatchNorm momentum 0.01
            return SpatialGate(kernel_size, norm, max_first=True, norm_momentum=0.01)

        self.gate_cw = z_pool_gate()
        self.gate_ch = z_pool_gate()
        self.gate_hw = None if no_spatial else z_pool_gate()

    def weights(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The three gates, each broadcastable to x: 'cw' (N, C, 1, W), 'ch' (N, C, H, 1), 'hw' (N, 1, H, W)."""
        out = {
            "cw": self.gate_cw(x.transpose(1, 2)).transpose(1, 2),  # pooled over H
            "ch": self.gate_ch(x.permute(0, 3, 2, 1)).permute(0, 3, 2, 1),  # pooled over W
        }
        if self.gate_hw is not None:
            out["hw"] = self.gate_hw(x)  # pooled over C
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gates = list(self.weights(x).values())
        return x * (sum(gates) / len(gates))


register_resnet("triplet_resnet50", 50, attn_layer="triplet")
