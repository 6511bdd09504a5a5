"""SRM: A Style-based Recalibration Module (Lee, Kim & Nam, ICCV 2019, arXiv:1903.10829).

SRM treats the first two moments of each channel, the statistics that style-transfer methods manipulate, as a
description of the image's "style" and reweights channels by it:

1. Style pooling: t_c = [mu_c, sigma_c], the mean and standard deviation of channel c over H x W.
2. Style integration, channel by channel (no mixing across channels, unlike SE):
   z_c = w_c . t_c = w_c1 mu_c + w_c2 sigma_c (a "channel-wise fully connected" layer, 2 weights per channel),
   then BatchNorm and a sigmoid: g_c = sigmoid(BN(z)_c).
3. Recalibration: y_c = g_c x_c.

Per module that is 2C weights plus 2C BatchNorm parameters (4C), against 2C^2/r for SE, which is why
SRM-ResNet-50 is barely larger than ResNet-50. In a ResNet the module sits where SE sits: on the residual branch
after the last BatchNorm (``srm_resnet50``).

Style pooling follows the authors' code (hyunjaelee410/style-based-recalibration-module,
models/recalibration_modules.py lines 21-26): the standard deviation is sqrt(unbiased variance + eps), eps = 1e-5,
so a constant channel gives sqrt(eps) and a finite gradient.

Departures:
* A 1 x 1 map: the unbiased variance of a single value is 0/0, so the authors' code returns NaN there; we use the
  population variance (0) when H * W = 1, giving sqrt(eps). Every larger map is computed exactly as theirs.
* The BatchNorm acts on one value per channel (N, C, 1, 1): training needs a batch of at least 2
  (``min_train_batch``; a clear ValueError otherwise); eval mode works at batch 1.
* The channel-wise weights start at zero as in the authors' code, so a new module gates every channel by
  sigmoid(BN bias) = 0.5 until it is trained.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..layers import check_positive_int, check_train_batch
from ..models.resnet import register_resnet
from ..registry import register_attention


def style_pool(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, 2): per-channel mean and standard deviation over the spatial positions."""
    flat = x.flatten(2)
    var, mean = torch.var_mean(flat, dim=2, correction=1 if flat.shape[2] > 1 else 0)  # one pass
    return torch.stack([mean, (var + eps).sqrt()], dim=2)


@register_attention("srm")
class SRM(nn.Module):
    """(N, C, H, W) -> (N, C, H, W): x * sigmoid(BN(w_mean * mean + w_std * std)).

    Args:
        channels: C. eps: added to the variance before the square root.
    """

    min_train_batch = 2

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        check_positive_int("channels", channels)
        if not eps > 0:
            raise ValueError(f"eps must be positive, got {eps!r}")
        self.eps = eps
        self.cfc = nn.Parameter(torch.zeros(channels, 2))  # channel-wise fully connected: (mean, std) weights
        self.norm = nn.BatchNorm2d(channels)

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """The per-channel gate g, shape (N, C, 1, 1)."""
        t = style_pool(x.float(), self.eps).to(x.dtype)
        z = (t * self.cfc.to(t.dtype)).sum(dim=2)
        return torch.sigmoid(self.norm(z[:, :, None, None]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_train_batch(self, x)
        return x * self.weights(x)


register_resnet("srm_resnet50", 50, attn_layer="srm")
