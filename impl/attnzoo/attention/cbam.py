"""CBAM: Convolutional Block Attention Module (Woo, Park, Lee & Kweon, ECCV 2018, arXiv:1807.06521).

Channel attention: M_c = sigmoid(MLP(avgpool(x)) + MLP(maxpool(x))), a shared bottleneck MLP (ratio 16).
Spatial attention: M_s = sigmoid(BN(conv7x7([max_c(x); mean_c(x)]))).
The two are applied in sequence, channel first: x' = M_c(x) * x, y = M_s(x') * x'.

We follow the authors' code (Jongchan/attention-module, MODELS/cbam.py) where it differs from the paper, so that
their checkpoints load (after renaming keys; their MLP is ``nn.Linear``, ours 1x1 convolutions of the same
shape up to two singleton axes) and give the same outputs:

* the spatial descriptors are stacked as [max; mean] (their ``ChannelPool``, cbam.py line 70); the paper's Eq. 3
  writes [mean; max], the same function with the 7x7 kernel's two input channels swapped. Loading their weights
  into the paper's order runs without error but computes something else, hence this layout;
* the 7x7 convolution has no bias and is followed by BatchNorm with eps 1e-5 and momentum 0.01 (their
  ``BasicConv``, cbam.py line 11); the paper has the convolution only: ``spatial_norm=False`` gives Eq. 3;
* that BatchNorm's scale starts at 0 (their ResNet sets every ``SpatialGate`` BatchNorm weight to zero,
  MODELS/model_resnet.py lines 134-136), so a fresh spatial gate is sigmoid(0) = 1/2 everywhere and learns
  to depart from it; ``spatial_zero_init=False`` keeps PyTorch's default scale of 1.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..layers import PooledConv1x1, SpatialGate, create_act, reduced_channels
from ..registry import register_attention


class ChannelGate(nn.Module):
    """(N, C, H, W) -> (N, C, 1, 1) weights from average- and max-pooled descriptors through one shared MLP."""

    def __init__(self, channels: int, rd_ratio: float = 1 / 16, rd_channels: int | None = None, act: str = "relu"):
        super().__init__()
        rd = reduced_channels(channels, rd_ratio, rd_channels)
        self.mlp = nn.Sequential(PooledConv1x1(channels, rd), create_act(act), PooledConv1x1(rd, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # max with indices (the official code's max pooling): amax's backward builds a full-size equality mask
        mx = x.flatten(2).max(dim=2).values[:, :, None, None]
        pooled = torch.cat([x.mean(dim=(2, 3), keepdim=True), mx], dim=0)
        avg, mx = self.mlp(pooled).chunk(2, dim=0)  # one MLP call for both descriptors
        return torch.sigmoid(avg + mx)


@register_attention("cbam")
class CBAM(nn.Module):
    """(N, C, H, W) -> (N, C, H, W): channel gate, then spatial gate.

    Args:
        channels: C. rd_ratio / rd_channels: channel MLP bottleneck (paper: 1/16).
        kernel_size: spatial convolution size (paper: 7). spatial_norm: BatchNorm after it (official code).
        spatial_zero_init: start that BatchNorm's scale at 0 (official code) rather than 1.
        use_spatial: False leaves only the channel gate (the paper's channel-only ablation).
    """

    def __init__(self, channels: int, rd_ratio: float = 1 / 16, rd_channels: int | None = None,
                 kernel_size: int = 7, spatial_norm: bool = True, spatial_zero_init: bool = True,
                 use_spatial: bool = True):
        super().__init__()
        self.channel = ChannelGate(channels, rd_ratio, rd_channels)
        # the authors' layout: [max; mean] descriptors, BatchNorm momentum 0.01 (SpatialGate's defaults)
        self.spatial = SpatialGate(kernel_size, spatial_norm) if use_spatial else None
        if self.spatial is not None and spatial_norm and spatial_zero_init:
            nn.init.zeros_(self.spatial.norm.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self.channel(x)
        if self.spatial is not None:
            x = x * self.spatial(x)
        return x
