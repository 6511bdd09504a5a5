"""Context Gating (Miech, Laptev & Sivic, "Learnable pooling with Context Gating for video classification",
arXiv:1706.06905, 2017).

A learned, self-gated reweighting of feature dimensions: the gate of each dimension is a sigmoid of a linear map of
the whole vector, so it captures dependencies between features (and, after the classifier, between labels):

    Y = sigmoid(W X + b) * X,        X, Y in R^C, W in R^{C x C}

On a feature map (N, C, H, W) we apply the equation to the C-vector of every position (W is a 1x1 convolution);
``pool=True`` computes one gate per channel from the globally averaged vector instead (like SE without its
bottleneck), the closer reading when a map stands for a whole clip.

Defaults follow the authors' TensorFlow code (``antoine77340/Youtube-8M-WILLOW``, ``frame_level_models.py``): with
``netvlad_add_batch_norm`` (its default, used for the released models) the bias b is replaced by a BatchNorm of
W X (``norm=True``); ``norm=False`` is the paper's equation with b. W is initialised from N(0, 1/C) as there.
``remove_diag=True`` is their ``gating_remove_diag`` option: the diagonal of W is ignored, so a dimension's gate
depends only on the other dimensions. With ``pool=True`` and ``norm=True`` the BatchNorm sees one pooled value per
channel and sample, so training needs batches of 2 or more.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import check_positive_int, check_train_batch
from ..registry import register_attention


@register_attention("context_gating")
class ContextGating(nn.Module):
    """(N, C, H, W) -> (N, C, H, W): x * sigmoid(BN(W x)) at every position (or from the pooled vector).

    Args: channels: C. norm: BatchNorm instead of a bias (authors' code: True). pool: one gate per channel from
    the global average. remove_diag: ignore W's diagonal (authors' option, off by default).
    """

    def __init__(self, channels: int, norm: bool = True, pool: bool = False, remove_diag: bool = False):
        super().__init__()
        check_positive_int("channels", channels)
        self.fc = nn.Conv2d(channels, channels, 1, bias=not norm)
        nn.init.normal_(self.fc.weight, std=channels ** -0.5)
        if not norm:
            nn.init.normal_(self.fc.bias, std=channels ** -0.5)
        self.bn = nn.BatchNorm2d(channels) if norm else nn.Identity()
        self.pool, self.remove_diag = pool, remove_diag
        if remove_diag:
            self.register_buffer("off_diagonal", (1 - torch.eye(channels)).view(channels, channels, 1, 1),
                                 persistent=False)
        self.min_train_batch = 2 if pool and norm else 1

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """The gate sigmoid(BN(W x)): (N, C, H, W), or (N, C, 1, 1) with ``pool``."""
        if self.min_train_batch > 1:
            check_train_batch(self, x)
        z = x.mean(dim=(2, 3), keepdim=True) if self.pool else x
        weight = self.fc.weight * self.off_diagonal if self.remove_diag else self.fc.weight
        return torch.sigmoid(self.bn(F.conv2d(z, weight, self.fc.bias)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weights(x)
