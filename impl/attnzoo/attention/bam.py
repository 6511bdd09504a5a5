"""BAM: Bottleneck Attention Module (Park, Woo, Lee & Kweon, BMVC 2018, arXiv:1807.06514).

BAM builds one 3D attention map M(F) of the same shape as its input F (C x H x W) from two cheap branches
computed side by side and broadcast to C x H x W:

* channel branch: M_c = BN(MLP(avgpool(F))), a bottleneck MLP C -> C/r -> C (r = 16) on the pooled vector;
* spatial branch: M_s = BN(f_1x1(f_3x3,d(f_3x3,d(f_1x1(F))))), a 1x1 reduction to C/r channels, two 3x3
  convolutions with dilation d = 4 (a large receptive field at little cost) and a 1x1 projection to one map.

They are summed and squashed, M = sigmoid(M_c + M_s), and applied residually: F' = F + F * M, so that a
freshly initialized module never suppresses a feature to zero.

Placement: not in every residual block but once per "bottleneck" of the network, where the spatial size is
about to drop: after stages 1, 2 and 3 of a ResNet (before the downsampling of stages 2, 3, 4). The model
``bam_resnet50`` inserts three BAMs there (on 256, 512, 1024 channels), as in the paper's ImageNet model and the
authors' code (their ``bam1``, ``bam2``, ``bam3``).

Departures:
* The authors' released ``bam.py`` combines the branches with a product, 1 + sigmoid(M_c * M_s); we follow the
  paper's equations (a sum inside the sigmoid). Parameters are identical.
* The authors' code puts BatchNorm + ReLU after every intermediate layer of both branches and none at the end;
  we keep those intermediate BN + ReLU (the paper's equations omit the activations but the text describes a
  BN'd MLP and BN'd convolutions) and add the final BN of each branch that the paper's equations show. Our
  convolutions followed by BatchNorm have no bias, theirs (MODELS/bam.py lines 31-39) all have one. Per module
  the difference is 2C - 3 C/16 + 1 parameters (+2C for the channel branch's final BN, +2 for the spatial one's,
  -3 C/16 - 1 for the biases): 465, 929 and 1,857 for C = 256, 512, 1024, so the three BAMs of
  ``bam_resnet50`` have 3,251 more parameters than the authors' (out of 25.9 M).
* BatchNorm on a pooled (N, C) vector needs a batch of more than one sample in training mode (as in the paper).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..layers import ConvNormAct, PooledConv1x1, check_positive_int, check_train_batch, reduced_channels
from ..models.resnet import register_resnet
from ..registry import register_attention


class BAMChannel(nn.Module):
    """(N, C, H, W) -> (N, C, 1, 1) logits: BN(MLP(avgpool(x)))."""

    def __init__(self, channels: int, rd: int):
        super().__init__()
        self.fc1 = PooledConv1x1(channels, rd)
        self.norm1 = nn.BatchNorm2d(rd)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = PooledConv1x1(rd, channels)
        self.norm2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x.mean(dim=(2, 3), keepdim=True)
        return self.norm2(self.fc2(self.act(self.norm1(self.fc1(z)))))


class BAMSpatial(nn.Module):
    """(N, C, H, W) -> (N, 1, H, W) logits: 1x1 reduce, ``num_dilated`` dilated 3x3 convs, 1x1 to one map, BN."""

    def __init__(self, channels: int, rd: int, dilation: int = 4, num_dilated: int = 2):
        super().__init__()
        layers = [ConvNormAct(channels, rd, 1)]
        layers += [ConvNormAct(rd, rd, 3, dilation=dilation) for _ in range(num_dilated)]
        layers += [ConvNormAct(rd, 1, 1, act=None)]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


@register_attention("bam")
class BAM(nn.Module):
    """(N, C, H, W) -> (N, C, H, W): x + x * sigmoid(M_c(x) + M_s(x)). Trains with batches of 2 or more (the
    channel branch's BatchNorm sees one value per channel and sample).

    Args:
        channels: C. rd_ratio / rd_channels: width of both branches (paper: C / 16).
        dilation: dilation of the spatial branch's 3x3 convolutions (paper: 4).
        num_dilated: how many dilated convolutions (paper: 2).
    """

    def __init__(self, channels: int, rd_ratio: float = 1 / 16, rd_channels: int | None = None,
                 dilation: int = 4, num_dilated: int = 2):
        super().__init__()
        rd = reduced_channels(channels, rd_ratio, rd_channels)
        check_positive_int("dilation", dilation)
        check_positive_int("num_dilated", num_dilated)
        self.channel = BAMChannel(channels, rd)
        self.spatial = BAMSpatial(channels, rd, dilation, num_dilated)

    min_train_batch = 2

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """The 3D attention map M(x) = sigmoid(M_c + M_s), shape (N, C, H, W)."""
        check_train_batch(self, x)
        return torch.sigmoid(self.channel(x) + self.spatial(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + x * self.weights(x)


# One BAM at the end of stages 1-3, before the next stage downsamples (where the authors' code calls bam1..bam3).
register_resnet("bam_resnet50", 50, attn_layer="bam", attn_site="stage_end", attn_stages=(0, 1, 2))
