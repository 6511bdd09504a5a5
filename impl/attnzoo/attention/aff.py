"""Attentional feature fusion (Dai, Gieseke, Oehmcke, Wu & Barnard, "Attentional Feature Fusion", WACV 2021,
arXiv:2009.14082).

Networks fuse features by adding them (ResNet shortcuts, FPN, U-Net skips) or concatenating them. AFF replaces the
plain sum X + Y with a soft, per-element choice between the two inputs, computed by a multi-scale channel
attention module (MS-CAM):

    L(X) = BN(PWConv2(ReLU(BN(PWConv1(X)))))            local context, one value per channel *and* position,
    G(X) = BN(PWConv2'(ReLU(BN(PWConv1'(GAP(X))))))     global context, one value per channel (SE-like),
    M(X) = sigmoid(L(X) + G(X)),                        MS-CAM(X) = X * M(X).

PWConv1 reduces C to C/r, PWConv2 restores C. The two fusion modules are

    AFF(X, Y)  = M(X + Y) * X + (1 - M(X + Y)) * Y,
    iAFF(X, Y) = M2(Z) * X + (1 - M2(Z)) * Y   with   Z = M1(X + Y) * X + (1 - M1(X + Y)) * Y,

i.e. iAFF replaces the crude initial integration X + Y by a first attentional fusion.

What is in this file:

* ``ms_cam`` (registered attention, (N, C, H, W) -> (N, C, H, W)): MS-CAM(X) = X * M(X), r = 4 by default (the
  authors' code default for MS-CAM).
* ``aff`` and ``iaff`` (registered blocks, two inputs): ``create_block("aff", C, C)(x, y)`` maps two
  (N, C, H, W) tensors to one; the gate weights ``x``.
* ``aff_resnet50`` / ``iaff_resnet50``: the authors' ImageNet ResNet-50 (MXNet ``model/classification.py``,
  ``AFFResNet`` with ``start_layer=3`` as in ``params/imagenet/*/aff_resnet50.log``): ResNet-D stem
  (``deep_stem=True``, three 3x3 convolutions) and average-pool shortcuts (``avg_down=True``); the shortcut
  additions of stages 3 and 4 are replaced by AFF / iAFF (``_make_layer`` turns stages below ``start_layer`` into
  ``DirectAddFuse``), with x = the residual branch and y = the shortcut, r = 16, followed by the block's ReLU
  (``model/block.py``, ``AFFBottleneck``). Built so: 30.37 M and 35.17 M parameters (paper: 30.3 M and 35.1 M, within 0.3 %).

Departures and options:

* The authors' AFF (MXNet ``ASKCFuse`` in ``model/fusion.py``, line 108, and their PyTorch port) returns
  2 M X + 2 (1 - M) Y, twice the paper's equation (it keeps the scale of the plain sum X + Y). The trained models
  use it, so ``scale=2.0`` is the default; ``scale=1.0`` is the paper's equation. Their iAFF has no such factor.
* The authors zero-initialise the last BatchNorm of every bottleneck (``last_gamma=True``), a training choice
  that does not change the architecture; our ResNet keeps PyTorch's default initialisation.
* Their PyTorch iAFF re-uses the first global branch in the second stage (``global_att`` twice; ``global_att2``
  is never used); their MXNet code, used for the paper, uses two distinct MS-CAMs, as we do.
* MS-CAM's global branch has a BatchNorm on the pooled (N, C, 1, 1) descriptor, so AFF, iAFF and ``ms_cam``
  train with batches of 2 or more (a clear ValueError at batch 1 in training mode).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from functools import partial

from ..layers import ConvNormAct, PooledConv1x1, check_train_batch, reduced_channels
from ..models.resnet import register_resnet
from ..registry import register_attention, register_block


def _context(channels: int, rd: int, pooled: bool = False) -> nn.Sequential:
    """PWConv -> BN -> ReLU -> PWConv -> BN, convolutions with bias as in the authors' code (``pooled``: for the
    (N, C, 1, 1) descriptor of the global branch, computed as matrix products)."""
    conv = PooledConv1x1 if pooled else None
    return nn.Sequential(ConvNormAct(channels, rd, 1, bias=True, conv_layer=conv),
                         ConvNormAct(rd, channels, 1, act=None, bias=True, conv_layer=conv))


@register_attention("ms_cam")
class MSCAM(nn.Module):
    """(N, C, H, W) -> (N, C, H, W): x * sigmoid(L(x) + G(x)), local (per position) plus global channel context.

    Args:
        channels: C. rd_ratio / rd_channels: bottleneck width C/r of both branches (code default r = 4).
    """

    def __init__(self, channels: int, rd_ratio: float = 1 / 4, rd_channels: int | None = None):
        super().__init__()
        rd = reduced_channels(channels, rd_ratio, rd_channels)
        self.local_att = _context(channels, rd)
        self.global_att = _context(channels, rd, pooled=True)

    min_train_batch = 2

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """M(x) = sigmoid(L(x) + G(x)), shape of x."""
        check_train_batch(self, x)
        return torch.sigmoid(self.local_att(x) + self.global_att(x.mean(dim=(2, 3), keepdim=True)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weights(x)


def _same_width(name: str, in_channels: int, out_channels: int | None) -> None:
    if out_channels is not None and out_channels != in_channels:
        raise ValueError(f"{name} fuses two maps of the same width: out_channels={out_channels} must equal "
                         f"in_channels={in_channels}")


@register_block("aff")
class AFF(nn.Module):
    """Attentional feature fusion of two (N, C, H, W) tensors: scale * (M(x + y) * x + (1 - M(x + y)) * y).

    Call as ``aff(x, y)``. Args: channels: C (out_channels, if given, must equal it). rd_ratio / rd_channels:
    MS-CAM width. scale: 2 (authors' code and trained models, default) or 1 (the paper's equation).
    """

    min_train_batch = 2

    def __init__(self, channels: int, out_channels: int | None = None, rd_ratio: float = 1 / 4,
                 rd_channels: int | None = None, scale: float = 2.0):
        super().__init__()
        _same_width("aff", channels, out_channels)
        self.cam = MSCAM(channels, rd_ratio, rd_channels)
        self.scale = float(scale)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        check_train_batch(self, x)
        w = self.cam.weights(x + y)
        out = y + w * (x - y)  # = w x + (1 - w) y
        return out * self.scale if self.scale != 1.0 else out


@register_block("iaff")
class IAFF(nn.Module):
    """Iterative attentional feature fusion of two (N, C, H, W) tensors (two MS-CAMs). Call as ``iaff(x, y)``.

    Args: channels: C (out_channels, if given, must equal it). rd_ratio / rd_channels: width of both MS-CAMs.
    """

    min_train_batch = 2

    def __init__(self, channels: int, out_channels: int | None = None, rd_ratio: float = 1 / 4,
                 rd_channels: int | None = None):
        super().__init__()
        _same_width("iaff", channels, out_channels)
        self.cam1 = MSCAM(channels, rd_ratio, rd_channels)
        self.cam2 = MSCAM(channels, rd_ratio, rd_channels)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        check_train_batch(self, x)
        w1 = self.cam1.weights(x + y)
        z = y + w1 * (x - y)
        w2 = self.cam2.weights(z)
        return y + w2 * (x - y)


# The authors' ImageNet models: ResNet-D stem and shortcuts, attentional fusion in stages 3 and 4 only, r = 16.
_AUTHORS_RESNET = dict(stem="deep", shortcut="avg", fuse_stages=(2, 3))
register_resnet("aff_resnet50", 50, fuse_layer=partial(AFF, rd_ratio=1 / 16), **_AUTHORS_RESNET)
register_resnet("iaff_resnet50", 50, fuse_layer=partial(IAFF, rd_ratio=1 / 16), **_AUTHORS_RESNET)
