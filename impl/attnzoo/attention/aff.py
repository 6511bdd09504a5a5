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
* ``AFF`` and ``IAFF`` (not registered: they take two inputs): ``AFF(channels, rd_ratio=1/4)(x, y)`` and
  ``IAFF(channels, rd_ratio=1/4)(x, y)`` map two (N, C, H, W) tensors to one; the gate weights ``x``.
* ``aff_resnet50`` / ``iaff_resnet50``: ResNet-50 whose shortcut additions are replaced by AFF / iAFF, with
  x = the residual branch and y = the shortcut, r = 16, followed by the block's ReLU (authors' ImageNet blocks).

Departures:

* The authors' AFF (MXNet ``ASKCFuse`` and their PyTorch port) returns 2 M X + 2 (1 - M) Y, twice the paper's
  equation (it keeps the scale of the plain sum X + Y); ``scale=2.0`` gives that, the default 1.0 is the paper.
  Their iAFF has no such factor.
* Their PyTorch iAFF re-uses the first global branch in the second stage (``global_att`` twice; ``global_att2``
  is never used); their MXNet code, used for the paper, uses two distinct MS-CAMs, as we do.
* Parameter counts: built as in the authors' MXNet ResNet-50 (one MS-CAM per bottleneck, C = 4 x width,
  r = 16, 1x1 convolutions with bias, BatchNorm), AFF-ResNet-50 has 30.68 M and iAFF-ResNet-50 35.81 M
  parameters, vs. 30.3 M and 35.1 M in the paper's ImageNet table (1.3 % and 2.0 % more). We could not find which
  detail of the trained models accounts for the difference, so no figure is recorded as matched.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..layers import ConvNormAct, check_choice, reduced_channels
from ..models.resnet import DEPTHS, Bottleneck, ResNet
from ..registry import register_attention, register_model


def _context(channels: int, rd: int) -> nn.Sequential:
    """PWConv -> BN -> ReLU -> PWConv -> BN, convolutions with bias as in the authors' code."""
    return nn.Sequential(ConvNormAct(channels, rd, 1, bias=True), ConvNormAct(rd, channels, 1, act=None, bias=True))


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
        self.global_att = _context(channels, rd)

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """M(x) = sigmoid(L(x) + G(x)), shape of x."""
        return torch.sigmoid(self.local_att(x) + self.global_att(x.mean(dim=(2, 3), keepdim=True)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weights(x)


class AFF(nn.Module):
    """Attentional feature fusion of two (N, C, H, W) tensors: scale * (M(x + y) * x + (1 - M(x + y)) * y).

    Call as ``aff(x, y)``. Args: channels: C. rd_ratio / rd_channels: MS-CAM width. scale: 1 (paper) or 2 (code).
    """

    def __init__(self, channels: int, rd_ratio: float = 1 / 4, rd_channels: int | None = None, scale: float = 1.0):
        super().__init__()
        self.cam = MSCAM(channels, rd_ratio, rd_channels)
        self.scale = float(scale)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        w = self.cam.weights(x + y)
        out = y + w * (x - y)  # = w x + (1 - w) y
        return out * self.scale if self.scale != 1.0 else out


class IAFF(nn.Module):
    """Iterative attentional feature fusion of two (N, C, H, W) tensors (two MS-CAMs). Call as ``iaff(x, y)``.

    Args: channels: C. rd_ratio / rd_channels: width of both MS-CAMs.
    """

    def __init__(self, channels: int, rd_ratio: float = 1 / 4, rd_channels: int | None = None):
        super().__init__()
        self.cam1 = MSCAM(channels, rd_ratio, rd_channels)
        self.cam2 = MSCAM(channels, rd_ratio, rd_channels)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        w1 = self.cam1.weights(x + y)
        z = y + w1 * (x - y)
        w2 = self.cam2.weights(z)
        return y + w2 * (x - y)


FUSIONS = {"aff": AFF, "iaff": IAFF}


class FusedBottleneck(nn.Module):
    """A ResNet bottleneck whose ``residual + shortcut`` is replaced by ``fuse(residual, shortcut)``."""

    def __init__(self, block: Bottleneck, fuse: nn.Module):
        super().__init__()
        self.block = block
        self.fuse = fuse

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.block
        y = b.drop_path(b.attn(b.conv3(b.conv2(b.conv1(x)))))
        return b.act(self.fuse(y, b.shortcut(x)))


def aff_resnet(depth: int = 50, fusion: str = "aff", fuse_rd_ratio: float = 1 / 16, **kwargs) -> ResNet:
    """ResNet with attentional fusion of the residual branch and the shortcut in every bottleneck."""
    fuse_cls = FUSIONS[check_choice("fusion", fusion, FUSIONS)]
    model = ResNet(**DEPTHS[check_choice("depth", depth, DEPTHS)], **kwargs)
    for stage in model.stages:
        for i, block in enumerate(stage):
            if not isinstance(block, Bottleneck):
                raise ValueError(f"aff_resnet needs bottleneck blocks, got depth={depth}")
            stage[i] = FusedBottleneck(block, fuse_cls(block.conv3[0].out_channels, fuse_rd_ratio))
    return model


register_model("aff_resnet50", aff_resnet, depth=50, fusion="aff")
register_model("iaff_resnet50", aff_resnet, depth=50, fusion="iaff")
