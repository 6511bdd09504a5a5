"""Global Context (GC) block (Cao, Xu, Lin, Wei & Hu, "GCNet: Non-local Networks Meet Squeeze-Excitation
Networks and Beyond", ICCV Workshops 2019, arXiv:1904.11492; extended as "Global Context Networks", TPAMI 2020).

The paper observes that the attention maps a non-local block computes are nearly the same for every query
position, so it computes one map for the whole image instead:

1. Context modelling (attention pooling): a 1x1 convolution W_k scores every position, a softmax over all H*W
   positions turns the scores into weights a_j, and the context is c = sum_j a_j x_j (one C-vector).
2. Transform: a bottleneck on that vector, W_v2 ReLU(LN(W_v1 c)), C -> C/r -> C with r = 16; LayerNorm inside the
   bottleneck eases optimization.
3. Fusion by broadcast addition: y_i = x_i + transform(c) at every position i.

It therefore costs like SE (one vector per image) but pools with a learned spatial attention instead of a plain
average, and adds instead of rescaling. ``pooling="avg"`` and ``fusion="mul"`` give the paper's ablations
(average pooling; SE-like sigmoid scaling). As in the authors' code (``reset_parameters``: ``last_zero_init`` of
both ``channel_add_conv`` and ``channel_mul_conv``) the last layer of the transform starts at zero for either
fusion: a new additive block is the identity, a new multiplicative one halves its input (sigmoid(0) = 1/2).

Placement: after the last 1x1 convolution of a bottleneck, before the residual addition (the paper's "after 1x1"
choice), i.e. the standard ``attn_layer`` slot, in every bottleneck of stages c3-c5 (the paper's default
"GC(c3-c5, r16)" setting, also in its released configurations): ``gc_resnet50`` has 13 GC blocks (r = 16) and
28.08 M parameters, the paper's ImageNet figure (GC blocks in all four stages would give 28.10 M).

Departures: the transform's two 1x1 convolutions act on a 1x1 map, so we write them as Linear layers on the
context vector (same parameters, same function); LayerNorm normalizes over the C/r channels as
LayerNorm([C/r, 1, 1]) does in the authors' code.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..layers import check_choice, reduced_channels
from ..models.resnet import register_resnet
from ..registry import register_attention


@register_attention("gc")
class GlobalContext(nn.Module):
    """(N, C, H, W) -> (N, C, H, W): x + T(sum_j softmax(W_k x)_j x_j).

    Args:
        channels: C. rd_ratio / rd_channels: bottleneck of the transform (paper: r = 16).
        pooling: "attn" (softmax attention pooling, the paper's choice) or "avg" (global average, as SE).
        fusion: "add" (broadcast addition, the paper's choice) or "mul" (x * sigmoid(T(c)), as SE).
    """

    def __init__(self, channels: int, rd_ratio: float = 1 / 16, rd_channels: int | None = None,
                 pooling: str = "attn", fusion: str = "add"):
        super().__init__()
        rd = reduced_channels(channels, rd_ratio, rd_channels)
        self.pooling = check_choice("pooling", pooling, ("attn", "avg"))
        self.fusion = check_choice("fusion", fusion, ("add", "mul"))
        self.conv_mask = nn.Conv2d(channels, 1, 1) if pooling == "attn" else None
        self.transform = nn.Sequential(nn.Linear(channels, rd), nn.LayerNorm(rd), nn.ReLU(inplace=True),
                                       nn.Linear(rd, channels))
        nn.init.zeros_(self.transform[-1].weight)
        nn.init.zeros_(self.transform[-1].bias)

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """Attention-pooling weights over positions, shape (N, H, W), summing to one per image."""
        n, _, h, w = x.shape
        if self.conv_mask is None:
            return x.new_full((n, h, w), 1.0 / (h * w))
        return self.conv_mask(x).flatten(1).softmax(dim=1).view(n, h, w)

    def context(self, x: torch.Tensor) -> torch.Tensor:
        """The global context vector c = sum_j a_j x_j, shape (N, C)."""
        a = self.weights(x).flatten(1)
        return torch.einsum("ncl,nl->nc", x.flatten(2), a.to(x.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.transform(self.context(x))[:, :, None, None].to(x.dtype)
        return x + t if self.fusion == "add" else x * torch.sigmoid(t)


register_resnet("gc_resnet50", 50, attn_layer="gc", attn_stages=(1, 2, 3))  # c3-c5
