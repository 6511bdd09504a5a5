"""Class-specific residual attention, CSRA (Zhu & Wu, "Residual Attention: A Simple but Effective Method for
Multi-Label Recognition", ICCV 2021, arXiv:2108.02456).

In multi-label recognition several objects of different classes occupy different regions, and global average
pooling blurs them together. CSRA is a classification head that gives every class its own spatial pooling.
With a feature map x_1..x_L (L = H W positions, C channels) and one classifier vector m_i per class:

    s_i(j) = m_i^T x_j / ||m_i||                       (class-i score at position j)
    base_i = (1 / L) sum_j s_i(j)                      (average pooling: the usual logit)
    att_i  = sum_j softmax_j(T s_i(j)) s_i(j)          (class-specific attention pooling, temperature T;
                                                        T -> infinity gives the max over positions)
    logit_i = base_i + lambda att_i                    (the "residual": attention added to the average).

Multi-head CSRA sums the logits of H such heads with different temperatures (the authors use T = 1, 2, ...,
H - 1 and infinity) and a shared lambda. The cost is one 1x1 convolution plus pooling.

What is registered: CSRA maps features to class logits, not to a tensor of the input's shape, so it is not
registered as an attention module (every registered attention is shape-preserving). The head is the class
``CSRA`` in this file; the models ``csra_resnet50`` and ``csra_resnet101`` are our ResNets (v1.5, as torchvision's,
which the authors use) with the average-pool + linear head replaced by CSRA:
``create_model("csra_resnet101", num_classes=80)`` -> (N, 80) logits, to be trained with a sigmoid
(binary cross-entropy) loss per class. Defaults: 4 heads, lambda = 0.5, 80 classes: the authors' MS-COCO
setting for ResNet-101 (their PASCAL VOC setting is 1 head, lambda = 0.1, 20 classes).

Departures: the max-pooling head is written with T = float("inf") (the authors' code uses the sentinel 99).
Pretrained ImageNet weights, which the paper starts from, are not downloaded.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from ..layers import check_positive_int
from ..models.resnet import DEPTHS, ResNet
from ..registry import register_model

# The authors' temperatures for H heads; inf means max pooling.
TEMPERATURES = {1: (1.0,), 2: (1.0, math.inf), 4: (1.0, 2.0, 4.0, math.inf), 6: (1.0, 2.0, 3.0, 4.0, 5.0, math.inf),
                8: (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, math.inf)}


class CSRA(nn.Module):
    """(N, C, H, W) features -> (N, num_classes) logits; multi-head class-specific residual attention.

    Args:
        channels: C. num_classes: number of labels. num_heads: H, one of 1, 2, 4, 6, 8 (the authors'
        temperature schedules), unless ``temperatures`` gives the temperatures explicitly. lam: lambda.
    """

    def __init__(self, channels: int, num_classes: int, num_heads: int = 1, lam: float = 0.1,
                 temperatures: tuple[float, ...] | None = None):
        super().__init__()
        check_positive_int("channels", channels)
        check_positive_int("num_classes", num_classes)
        if temperatures is None:
            if num_heads not in TEMPERATURES:
                raise ValueError(f"num_heads must be one of {sorted(TEMPERATURES)} (or pass temperatures), "
                                 f"got {num_heads!r}")
            temperatures = TEMPERATURES[num_heads]
        temperatures = tuple(float(t) for t in temperatures)
        if not temperatures or any(not t > 0 for t in temperatures):
            raise ValueError(f"temperatures must be positive, got {temperatures}")
        self.temperatures = temperatures
        self.num_classes = num_classes
        self.lam = lam
        self.classifier = nn.Conv2d(channels, len(temperatures) * num_classes, 1, bias=False)

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """s: (N, heads, num_classes, H*W), the class scores at every position, normalized by ||m_i||."""
        n = x.shape[0]
        w = self.classifier.weight
        s = self.classifier(x) / w.flatten(1).norm(dim=1)[None, :, None, None]
        return s.reshape(n, len(self.temperatures), self.num_classes, -1)

    def attention(self, x: torch.Tensor, head: int = 0) -> torch.Tensor:
        """The class-specific spatial weights of one head, (N, num_classes, H, W); for T = inf, the one-hot max."""
        s = self.scores(x)[:, head]
        t = self.temperatures[head]
        if math.isinf(t):
            a = torch.zeros_like(s).scatter_(-1, s.argmax(dim=-1, keepdim=True), 1.0)
        else:
            a = (t * s).softmax(dim=-1)
        return a.view(*s.shape[:2], *x.shape[2:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.scores(x)                                             # (N, heads, classes, L)
        t = torch.tensor(self.temperatures, device=s.device)
        is_max = torch.isinf(t)[:, None]                               # heads with T = inf: max pooling
        t_safe = torch.where(torch.isinf(t), torch.ones_like(t), t)[:, None, None]
        soft = ((t_safe * s).softmax(dim=-1) * s).sum(dim=-1)          # all heads at once
        att = torch.where(is_max, s.max(dim=-1).values, soft)  # max with indices: a cheaper backward than amax's
        return (s.mean(dim=-1) + self.lam * att).sum(dim=1)


class CSRAResNet(nn.Module):
    """(N, in_chans, H, W) -> (N, num_classes) multi-label logits: ResNet features, CSRA head.

    Args:
        depth: ResNet depth (18, 34, 50, 101, 152). num_classes, num_heads, lam: the CSRA head.
        in_chans, drop_path_rate: passed to the ResNet.
    """

    def __init__(self, depth: int = 101, num_classes: int = 80, num_heads: int = 4, lam: float = 0.5,
                 in_chans: int = 3, drop_path_rate: float = 0.0):
        super().__init__()
        if depth not in DEPTHS:
            raise ValueError(f"depth must be one of {sorted(DEPTHS)}, got {depth!r}")
        self.backbone = ResNet(**DEPTHS[depth], in_chans=in_chans, drop_path_rate=drop_path_rate)
        self.backbone.head = nn.Identity()  # replaced by CSRA
        self.num_features = self.backbone.num_features
        self.head = CSRA(self.num_features, num_classes, num_heads, lam)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


register_model("csra_resnet50", CSRAResNet, depth=50)
register_model("csra_resnet101", CSRAResNet, depth=101)
