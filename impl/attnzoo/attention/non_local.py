"""Non-local block (Wang, Girshick, Gupta & He, CVPR 2018, arXiv:1711.07971).

Every position i gathers all positions j: y_i = 1/C(x) sum_j f(x_i, x_j) g(x_j), and the block is residual,
z = W_z y + x.  Four pairwise functions f from the paper:

* ``embedded_gaussian``: f = exp(theta(x_i)^T phi(x_j)), normalized by a softmax over j (the default);
* ``gaussian``: f = exp(x_i^T x_j) on the raw features;
* ``dot_product``: f = theta(x_i)^T phi(x_j), normalized by the number of positions N;
* ``concatenation``: f = relu(w^T [theta(x_i), phi(x_j)]) / N.

theta, phi, g are 1x1 convolutions to C/2 channels; W_z is a 1x1 convolution back to C followed by
BatchNorm whose scale starts at zero, so a new block starts as the identity (Sec. 4.1).
``sub_sample`` max-pools phi and g by 2 (Sec. 3.3), a 4x saving in the pairwise term.

Departure: the paper's main models are spatio-temporal (3D) for video; this is the 2D image form the
paper also uses for detection (Sec. 6). Softmax variants use the fused scaled_dot_product_attention with
scale 1, because the paper's embedded Gaussian has no 1/sqrt(d) factor.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import check_choice, reduced_channels
from ..registry import register_attention

MODES = ("embedded_gaussian", "gaussian", "dot_product", "concatenation")


@register_attention("non_local")
class NonLocal2d(nn.Module):
    """(N, C, H, W) -> (N, C, H, W) residual non-local block.

    Args:
        channels: C. rd_ratio / rd_channels: width of theta, phi, g (paper: C/2).
        mode: pairwise function, one of MODES. sub_sample: max-pool phi and g by 2.
    """

    def __init__(self, channels: int, rd_ratio: float = 1 / 2, rd_channels: int | None = None,
                 mode: str = "embedded_gaussian", sub_sample: bool = False):
        super().__init__()
        self.mode = check_choice("mode", mode, MODES)
        rd = reduced_channels(channels, rd_ratio, rd_channels)
        self.sub_sample = sub_sample
        self.g = nn.Conv2d(channels, rd, 1)
        if mode != "gaussian":
            self.theta = nn.Conv2d(channels, rd, 1)
            self.phi = nn.Conv2d(channels, rd, 1)
        if mode == "concatenation":
            self.concat_w = nn.Parameter(torch.randn(2, rd) * rd ** -0.5)
        self.out = nn.Conv2d(rd, channels, 1)
        self.norm = nn.BatchNorm2d(channels)
        nn.init.zeros_(self.norm.weight)

    def _pool(self, t: torch.Tensor) -> torch.Tensor:
        if self.sub_sample and min(t.shape[-2:]) >= 2:
            t = F.max_pool2d(t, 2, ceil_mode=True)
        return t.flatten(2).transpose(1, 2)  # (N, L', C')

    def _query_key(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mode == "gaussian":
            return x.flatten(2).transpose(1, 2), self._pool(x)
        return self.theta(x).flatten(2).transpose(1, 2), self._pool(self.phi(x))

    def affinity(self, x: torch.Tensor) -> torch.Tensor:
        """Normalized pairwise weights f(x_i, x_j) / C(x), shape (N, H*W, L') (L' = H*W, or pooled)."""
        q, k = self._query_key(x)
        if self.mode in ("embedded_gaussian", "gaussian"):
            return (q @ k.transpose(1, 2)).softmax(dim=-1)
        if self.mode == "dot_product":
            return q @ k.transpose(1, 2) / k.shape[1]
        a = q @ self.concat_w[0]  # (N, L)
        b = k @ self.concat_w[1]  # (N, L')
        return F.relu(a[:, :, None] + b[:, None, :]) / k.shape[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        v = self._pool(self.g(x))
        if self.mode in ("embedded_gaussian", "gaussian"):
            q, k = self._query_key(x)  # for "gaussian" q, k have C channels and v has C'
            y = F.scaled_dot_product_attention(q, k, v, scale=1.0)
        else:
            y = self.affinity(x) @ v
        y = y.transpose(1, 2).reshape(n, -1, h, w)
        return x + self.norm(self.out(y))
