"""Contextual Transformer (CoT) block (Li, Yao, Pan & Mei, "Contextual Transformer Networks for Visual
Recognition", IEEE TPAMI 2023 (online 2022), arXiv:2107.12292).

Local self-attention builds each attention weight from one isolated query-key pair. CoT first gives the keys
their context, then lets query and contextual key together predict a local aggregation kernel:

    K1 = ReLU(BN(GroupConv_{k x k}(X)))                       static context: the keys see their k x k neighbours
    A  = GN(W_theta ReLU(BN(W_delta [X ; K1])))                 two 1x1 convs on query || key: for every pixel a
                                                                k x k kernel per group of channels (C / 8 groups)
    K2 = SiLU(BN( sum_{k x k window} A (.) (BN(W_v X)) ))        dynamic context: the values aggregated locally
    Y  = split-attention fusion of K1 and K2                     softmax over the 2 branches per channel (ResNeSt)

The local aggregation (the authors' CUDA ``aggregation_zeropad``) is written with ``F.unfold``: channel c uses
kernel group c mod (C / 8), as in that kernel. Kernel weights are not softmax-normalized (GroupNorm instead),
following the official code.

CoTNet replaces every 3x3 convolution of ResNet's bottlenecks with a CoT block; where the convolution had
stride 2, a 3x3 average pooling of stride 2 precedes the block (official code). ``cotnet50`` is our ResNet-50
with this replacement (registered from this file, built by swapping ``conv2`` of each bottleneck).

Departures: none in the block (note that, as in the official code, the fusion MLP has a BatchNorm on the pooled
(N, C, 1, 1) descriptor, so training mode needs a batch of at least 2; evaluation works for any batch). The
default for 64 channels follows the official CotLayer (group conv with 4 groups, 8 channels sharing a kernel,
C/2 hidden width, split-attention width max(C/2, 32)). Any H, W works (zero padding at borders, like the CUDA
kernel). The CoT block's 3x3 convolutions and the aggregation keep the stride 1, as in the official code.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import PooledConv1x1, check_divisible, check_positive_int, check_train_batch
from ..models.resnet import register_resnet
from ..registry import register_attention


def local_aggregation(v: torch.Tensor, kernels: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Per-pixel dynamic k x k filtering: v (N, C, H, W), kernels (N, G, k*k, H, W), channel c uses group c % G."""
    n, c, h, w = v.shape
    g = kernels.shape[1]
    cols = F.unfold(v, kernel_size, padding=kernel_size // 2).reshape(n, c // g, g, kernel_size ** 2, h, w)
    return (cols * kernels.unsqueeze(1)).sum(dim=3).reshape(n, c, h, w)


@register_attention("cot")
class CoTAttention(nn.Module):
    """(N, C, H, W) -> (N, C, H, W): Contextual Transformer block.

    Args:
        channels: C (divisible by ``key_groups`` and ``share_planes``). kernel_size: k of the key context and
        of the local aggregation (paper: 3). key_groups: groups of the k x k key convolution (official: 4).
        share_planes: channels sharing one dynamic kernel (official: 8). factor: reduction of the embedding
        (official: 2). radix_reduction: width of the fusion MLP is max(2C / radix_reduction, 32) (official: 4).
    """

    def __init__(self, channels: int, kernel_size: int = 3, key_groups: int = 4, share_planes: int = 8,
                 factor: int = 2, radix_reduction: int = 4):
        super().__init__()
        for name, value in dict(channels=channels, kernel_size=kernel_size, key_groups=key_groups,
                                share_planes=share_planes, factor=factor, radix_reduction=radix_reduction).items():
            check_positive_int(name, value)
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd to keep the spatial size, got {kernel_size}")
        check_divisible("channels", channels, key_groups, "key_groups")
        check_divisible("channels", channels, share_planes, "share_planes")
        self.kernel_size = kernel_size
        self.groups = channels // share_planes
        hidden = max(channels // factor, 1)
        self.key_embed = nn.Sequential(
            nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2, groups=key_groups, bias=False),
            nn.BatchNorm2d(channels), nn.ReLU(inplace=True))
        self.embed = nn.Sequential(
            nn.Conv2d(2 * channels, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, kernel_size ** 2 * self.groups, 1),
            nn.GroupNorm(self.groups, kernel_size ** 2 * self.groups))
        self.value = nn.Sequential(nn.Conv2d(channels, channels, 1, bias=False), nn.BatchNorm2d(channels))
        self.bn = nn.BatchNorm2d(channels)
        self.act = nn.SiLU(inplace=True)
        attn_chs = max(channels * 2 // radix_reduction, 32)
        self.se = nn.Sequential(PooledConv1x1(channels, attn_chs), nn.BatchNorm2d(attn_chs), nn.ReLU(inplace=True),
                                PooledConv1x1(attn_chs, 2 * channels))

    def kernels(self, x: torch.Tensor, k1: torch.Tensor | None = None) -> torch.Tensor:
        """The dynamic kernels (N, C / share_planes, k*k, H, W) predicted from the query and contextual key."""
        k1 = self.key_embed(x) if k1 is None else k1
        n, _, h, w = x.shape
        return self.embed(torch.cat([x, k1], dim=1)).reshape(n, self.groups, self.kernel_size ** 2, h, w)

    min_train_batch = 2  # the fusion MLP has a BatchNorm on the pooled (N, C, 1, 1) descriptor

    def branch_weights(self, k2: torch.Tensor, k1: torch.Tensor) -> torch.Tensor:
        """Softmax fusion weights (N, 2, C, 1, 1) for the dynamic (K2) and static (K1) contexts, in that order."""
        check_train_batch(self, k1)
        n, c = k1.shape[:2]
        z = (k2 + k1).mean(dim=(2, 3), keepdim=True)
        return self.se(z).reshape(n, c, 2).transpose(1, 2).softmax(dim=1)[..., None, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k1 = self.key_embed(x)
        k2 = local_aggregation(self.value(x), self.kernels(x, k1), self.kernel_size)
        k2 = self.act(self.bn(k2))
        a = self.branch_weights(k2, k1)
        return a[:, 0] * k2 + a[:, 1] * k1


def cot_unit(channels: int, stride: int) -> nn.Module:
    """CoTNet's replacement of a bottleneck's 3x3 unit: a CoT block, after a 3x3/2 average pooling where the
    convolution had stride 2 (official code)."""
    pool = nn.AvgPool2d(3, 2, padding=1) if stride > 1 else nn.Identity()
    return nn.Sequential(pool, CoTAttention(channels))


register_resnet("cotnet50", 50, mid_layer=cot_unit)
