"""Polarized self-attention (Liu, Liu, Fan & Huang, "Polarized Self-Attention: Towards High-quality Pixel-wise
Regression", arXiv:2107.00782, 2021; journal version "... Pixel-wise Mapping", Neurocomputing 2022).

PSA is designed for dense prediction (keypoint heatmaps, segmentation masks), where resolution matters. Each of
its two branches collapses the tensor completely along one axis while keeping the other axis at full
resolution ("polarized filtering"), and ends in a sigmoid (the "enhancement" non-linearity):

* Channel-only branch: W_q (1x1, C -> 1) gives one logit per position, a softmax over the H W positions turns it
  into a pooling distribution, and W_v (1x1, C -> C/2) features are pooled with it: a C/2 vector. W_z (1x1,
  C/2 -> C), LayerNorm over the C channels and a sigmoid give the channel weights
      A_ch = sigmoid(LN(W_z( W_v(X) softmax_HW(W_q(X))^T )))    (C x 1 x 1).
* Spatial-only branch: W_q (1x1, C -> C/2) is globally average-pooled and turned into a softmax over its C/2
  channels; this distribution mixes the C/2 channels of W_v(X) (1x1, C -> C/2) at every position:
      A_sp = sigmoid( softmax_C/2(GAP(W_q(X)))^T W_v(X) )      (1 x H x W).

Two layouts, both registered ((N, C, H, W) -> (N, C, H, W)):

* ``polarized_parallel``:   PSA_p(X) = A_ch(X) * X + A_sp(X) * X;
* ``polarized_sequential``: PSA_s(X) = A_sp(Y) * Y with Y = A_ch(X) * X.

The channel weights use the full C-channel resolution internally (C/2), the spatial ones the full H x W; no
size-dependent parameter, so any H, W works. The paper's results are on pose estimation and segmentation
networks, which the package does not have, so no parameter figure is checked here.

Departures: we follow the paper's equations, including the LayerNorm in the channel branch; the authors'
released code has variants that differ (e.g. without LayerNorm).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..layers import check_positive_int, reduced_channels
from ..registry import register_attention


class PolarizedChannel(nn.Module):
    """(N, C, H, W) -> (N, C, 1, 1) channel weights of the channel-only branch."""

    def __init__(self, channels: int, inner: int):
        super().__init__()
        self.wq = nn.Conv2d(channels, 1, 1)
        self.wv = nn.Conv2d(channels, inner, 1)
        self.wz = nn.Conv2d(inner, channels, 1)
        self.ln = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pool = self.wq(x).flatten(2).softmax(dim=-1)  # (N, 1, HW): a distribution over positions
        z = self.wv(x).flatten(2) @ pool.transpose(1, 2)  # (N, C/2, 1)
        z = self.wz(z.unsqueeze(-1)).flatten(1)  # (N, C)
        return torch.sigmoid(self.ln(z))[:, :, None, None]


class PolarizedSpatial(nn.Module):
    """(N, C, H, W) -> (N, 1, H, W) spatial weights of the spatial-only branch."""

    def __init__(self, channels: int, inner: int):
        super().__init__()
        self.wq = nn.Conv2d(channels, inner, 1)
        self.wv = nn.Conv2d(channels, inner, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mix = self.wq(x).mean(dim=(2, 3)).softmax(dim=-1)  # (N, C/2): a distribution over channels
        v = self.wv(x)
        return torch.sigmoid(torch.einsum("nc,nchw->nhw", mix.to(v.dtype), v)).unsqueeze(1)


class _PolarizedBase(nn.Module):
    def __init__(self, channels: int, rd_ratio: float = 1 / 2, rd_channels: int | None = None):
        super().__init__()
        check_positive_int("channels", channels)
        inner = reduced_channels(channels, rd_ratio, rd_channels)
        self.channel = PolarizedChannel(channels, inner)
        self.spatial = PolarizedSpatial(channels, inner)


@register_attention("polarized_parallel")
class PolarizedSelfAttentionParallel(_PolarizedBase):
    """(N, C, H, W) -> (N, C, H, W): A_ch(x) * x + A_sp(x) * x.

    Args: channels: C. rd_ratio / rd_channels: internal width of W_v (and of the spatial W_q) (paper: C/2).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.channel(x) + x * self.spatial(x)


@register_attention("polarized_sequential")
class PolarizedSelfAttentionSequential(_PolarizedBase):
    """(N, C, H, W) -> (N, C, H, W): y = A_ch(x) * x, then A_sp(y) * y.

    Args: channels: C. rd_ratio / rd_channels: internal width of W_v (and of the spatial W_q) (paper: C/2).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x * self.channel(x)
        return y * self.spatial(y)
