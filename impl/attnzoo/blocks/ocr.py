"""Object-contextual representations, the OCR module (Yuan, Chen & Wang, "Object-Contextual Representations for
Semantic Segmentation", ECCV 2020, arXiv:1909.11065).

The label of a pixel is the label of the object it belongs to, so OCR describes each pixel's context by the
objects in the image rather than by its neighbourhood. A coarse segmentation (soft object regions) pools one
representation per class; each pixel then attends to these K region representations and appends the result:

    M = softmax_{HW}(R)                          R: (N, K, H, W) soft object regions (class logits)
    f_k = sum_p M_{k,p} x_p                       object region representations, (N, K, C)
    q = phi(x), k = psi(f), v = delta(f)          two 1x1 conv-BN-ReLU for q and k, one for v (key width D)
    w_{p,k} = softmax_k(q_p . k_k / sqrt(D))      pixel-region relation (scaled dot-product attention)
    y_p = rho(sum_k w_{p,k} v_k)                  object contextual representation, 1x1 conv-BN-ReLU back to C
    z_p = Dropout(ReLU(BN(W [y_p, x_p])))         augmented representation, (N, C_out, H, W)

Input convention: ``forward(x, regions=None)``. ``x`` (N, C_in, H, W) are backbone features and ``regions`` (N, K,
H, W) the soft object regions, the logits of any coarse segmentation head at the same resolution (the paper
supervises them with the ground truth). Without ``regions`` the block predicts them from ``x`` with its own
``aux_head``; call ``ocr.aux_head(x)`` to get them for that auxiliary loss. As in the authors' HRNet-OCR
(``HRNet-Semantic-Segmentation``, ``lib/models/seg_hrnet_ocr.py``, branch HRNet-OCR), the block is the head between
the backbone and the classifier: ``aux_head`` = 1x1 conv (C_in) - BN - ReLU - 1x1 conv (K) on the backbone
features, ``conv3x3_ocr`` = 3x3 conv - BN - ReLU from C_in to C_out (512), the spatial gather (softmax over
positions, scale 1), the object attention block with key width D = C_out / 2 (256) and the 1x1 fusion with
dropout 0.05; the defaults are theirs (``MID_CHANNELS`` 512, ``KEY_CHANNELS`` 256, ``DROPOUT`` 0.05, K = 19 for
Cityscapes). The pixel-region relation runs on ``F.scaled_dot_product_attention`` (one head, same scale 1/sqrt(D)).

Departure: none in the computation (their ``scale`` > 1 option, max-pooling the pixels before attention, is not
offered; they always use 1).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import ConvNormAct, check_positive_int
from ..registry import register_block


def _proj(cin: int, cout: int, depth: int = 1) -> nn.Sequential:
    """``depth`` 1x1 conv-BN-ReLU layers (no conv bias)."""
    return nn.Sequential(*[ConvNormAct(cin if i == 0 else cout, cout, 1) for i in range(depth)])


@register_block("ocr")
class OCR(nn.Module):
    """(x (N, C_in, H, W), regions (N, K, H, W) or None) -> (N, C_out, H, W): pixels augmented by object context.

    Args:
        in_channels: C_in (backbone features). out_channels: C_out, the OCR width (paper: 512).
        num_classes: K of the auxiliary head that predicts regions when none are given (None: no aux head).
        key_channels: D, width of queries, keys and values (default C_out / 2; paper: 256).
        drop: Dropout2d after the fusion (authors' code: 0.05).
    """

    def __init__(self, in_channels: int, out_channels: int = 512, num_classes: int | None = 19,
                 key_channels: int | None = None, drop: float = 0.05):
        super().__init__()
        check_positive_int("in_channels", in_channels)
        check_positive_int("out_channels", out_channels)
        key = check_positive_int("key_channels", key_channels or max(1, out_channels // 2))
        if num_classes is not None:
            check_positive_int("num_classes", num_classes)
            self.aux_head = nn.Sequential(ConvNormAct(in_channels, in_channels, 1, bias=True),
                                          nn.Conv2d(in_channels, num_classes, 1))
        else:
            self.aux_head = None
        self.conv3x3_ocr = ConvNormAct(in_channels, out_channels, 3, bias=True)
        self.f_pixel = _proj(out_channels, key, 2)
        self.f_object = _proj(out_channels, key, 2)
        self.f_down = _proj(out_channels, key)
        self.f_up = _proj(key, out_channels)
        self.fuse = ConvNormAct(2 * out_channels, out_channels, 1)
        self.drop = nn.Dropout2d(drop)

    @staticmethod
    def gather(feats: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
        """Object region representations f_k = sum_p softmax_p(R_k)_p x_p: (N, C, H, W), (N, K, H, W) -> (N, C, K, 1)."""
        weights = regions.flatten(2).softmax(dim=-1)  # (N, K, HW): each region's distribution over pixels
        return torch.einsum("nkp,ncp->nck", weights, feats.flatten(2)).unsqueeze(-1)

    def context(self, feats: torch.Tensor, objects: torch.Tensor) -> torch.Tensor:
        """Object contextual representation y: pixels (N, C, H, W) attend to regions (N, C, K, 1)."""
        n, _, h, w = feats.shape
        q = self.f_pixel(feats).flatten(2).transpose(1, 2).unsqueeze(1)  # (N, 1, HW, D)
        k = self.f_object(objects).flatten(2).transpose(1, 2).unsqueeze(1)  # (N, 1, K, D)
        v = self.f_down(objects).flatten(2).transpose(1, 2).unsqueeze(1)  # (N, 1, K, D)
        y = F.scaled_dot_product_attention(q, k, v)  # (N, 1, HW, D)
        return self.f_up(y.squeeze(1).transpose(1, 2).reshape(n, -1, h, w))

    def forward(self, x: torch.Tensor, regions: torch.Tensor | None = None) -> torch.Tensor:
        if regions is None:
            if self.aux_head is None:
                raise ValueError("ocr needs soft object regions (N, K, H, W): pass them, or build the block with "
                                 "num_classes=K so that its aux_head predicts them")
            regions = self.aux_head(x)
        if regions.dim() != 4 or regions.shape[0] != x.shape[0] or regions.shape[-2:] != x.shape[-2:]:
            raise ValueError(f"ocr: regions must be (N, K, H, W) at the features' size {tuple(x.shape[-2:])} "
                             f"and batch {x.shape[0]}, got {tuple(regions.shape)}")
        feats = self.conv3x3_ocr(x)
        objects = self.gather(feats, regions)
        return self.drop(self.fuse(torch.cat([self.context(feats, objects), feats], dim=1)))
