"""Atrous spatial pyramid pooling (ASPP): DeepLab (Chen, Papandreou, Kokkinos, Murphy & Yuille, TPAMI 2018,
arXiv:1606.00915) and its DeepLabv3 form (Chen, Papandreou, Schroff & Adam, arXiv:1706.05587).

A 3x3 convolution with dilation (atrous rate) r samples the input every r pixels: its receptive field is
2r + 1 pixels wide at the cost of a plain 3x3 convolution. ASPP runs several such convolutions in parallel on the
same map, so every output position sees context at several scales.

``aspp`` (DeepLabv3, the form everyone uses; the default of this file):

    y_0 = ReLU(BN(W_0 * x))                               1x1 branch
    y_r = ReLU(BN(W_r *_r x)),  r in rates                3x3 atrous branches (rates 6, 12, 18 at output stride 16;
                                                          double them, 12, 24, 36, at output stride 8)
    y_p = ReLU(BN(W_p GAP(x))) broadcast to H x W         image pooling: global context
    y   = Dropout(ReLU(BN(W_proj [y_0, y_r..., y_p])))    1x1 projection of the concatenation

all branches with ``out_channels`` (256) filters. Defaults follow the authors' TensorFlow code
(``research/deeplab/model.py``: 256 filters, BN in every branch, the 1x1 projection, dropout with keep
probability 0.9 after it). Upsampling the pooled 1x1 branch bilinearly gives a constant map, so we broadcast it.

``aspp_v2`` (the catalogued TPAMI paper, "ASPP-L"): four parallel 3x3 atrous convolutions at rates 6, 12, 18, 24,
each predicting ``out_channels`` class scores, fused by summation. ``hidden_channels=None`` is the paper's
ResNet-101 model (one 3x3 convolution with bias per branch, as in its released Caffe prototxt);
``hidden_channels=1024`` is its VGG-16 model (fc6: 3x3 atrous -> ReLU -> dropout 0.5, fc7: 1x1 -> ReLU -> dropout
0.5, fc8: 1x1 to the scores, per branch).

Departures: BatchNorm keeps PyTorch's momentum and epsilon (the TF code uses decay 0.9997, epsilon 1e-5); TF's
image pooling averages with a fixed kernel equal to the training crop's feature size, global at that size, which
we compute as a global average at every size (as torchvision and most ports do). The image-pooling branch has a
BatchNorm on a pooled (N, C, 1, 1) descriptor, so ``aspp`` trains with batches of 2 or more (eval: any batch).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..layers import ConvNormAct, check_positive_int, check_positive_ints, check_train_batch
from ..registry import register_block


@register_block("aspp")
class ASPP(nn.Module):
    """DeepLabv3 ASPP: (N, C_in, H, W) -> (N, C_out, H, W).

    Args:
        in_channels: C_in. out_channels: C_out, the width of every branch (paper: 256).
        rates: atrous rates of the 3x3 branches (paper: 6, 12, 18 at output stride 16; 12, 24, 36 at 8).
        image_pooling: add the global-average-pooling branch (paper: yes).
        drop: dropout after the projection (authors' code: 0.1, i.e. keep probability 0.9).
    """

    def __init__(self, in_channels: int, out_channels: int = 256, rates=(6, 12, 18), image_pooling: bool = True,
                 drop: float = 0.1):
        super().__init__()
        check_positive_int("in_channels", in_channels)
        check_positive_int("out_channels", out_channels)
        rates = check_positive_ints("rates", rates)
        self.rates = rates
        self.convs = nn.ModuleList([ConvNormAct(in_channels, out_channels, 1)] +
                                   [ConvNormAct(in_channels, out_channels, 3, dilation=r) for r in rates])
        self.pool = ConvNormAct(in_channels, out_channels, 1) if image_pooling else None
        branches = len(self.convs) + (1 if image_pooling else 0)
        self.project = ConvNormAct(branches * out_channels, out_channels, 1)
        self.drop = nn.Dropout(drop)
        self.min_train_batch = 2 if image_pooling else 1

    def branches(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The (N, C_out, H, W) output of every branch, in the order 1x1, rates..., image pooling."""
        outs = [conv(x) for conv in self.convs]
        if self.pool is not None:
            check_train_batch(self, x)
            outs.append(self.pool(x.mean(dim=(2, 3), keepdim=True)).expand(-1, -1, x.shape[2], x.shape[3]))
        return outs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.project(torch.cat(self.branches(x), dim=1)))


@register_block("aspp_v2")
class ASPPv2(nn.Module):
    """DeepLab-v2 ASPP-L: sum over rates of per-branch class scores. (N, C_in, H, W) -> (N, C_out, H, W).

    Args:
        in_channels: C_in. out_channels: C_out, the number of classes each branch predicts.
        rates: atrous rates (paper: 6, 12, 18, 24).
        hidden_channels: None, one 3x3 atrous convolution per branch (the ResNet-101 model); 1024, the VGG-16
            model's fc6 (3x3 atrous) and fc7 (1x1) of that width with ReLU and dropout ``drop``, then fc8 (1x1).
    """

    def __init__(self, in_channels: int, out_channels: int = 21, rates=(6, 12, 18, 24),
                 hidden_channels: int | None = None, drop: float = 0.5):
        super().__init__()
        check_positive_int("in_channels", in_channels)
        check_positive_int("out_channels", out_channels)
        rates = check_positive_ints("rates", rates)
        if hidden_channels is not None:
            check_positive_int("hidden_channels", hidden_channels)
        self.rates = rates
        self.branches = nn.ModuleList([self._branch(in_channels, out_channels, r, hidden_channels, drop)
                                       for r in rates])

    @staticmethod
    def _branch(cin: int, cout: int, rate: int, hidden: int | None, drop: float) -> nn.Module:
        if hidden is None:
            return nn.Conv2d(cin, cout, 3, padding=rate, dilation=rate)
        return nn.Sequential(ConvNormAct(cin, hidden, 3, dilation=rate, norm=False), nn.Dropout(drop),
                             ConvNormAct(hidden, hidden, 1, norm=False), nn.Dropout(drop), nn.Conv2d(hidden, cout, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([branch(x) for branch in self.branches]).sum(dim=0)
