"""Non-local block (Wang, Girshick, Gupta & He, CVPR 2018, arXiv:1711.07971).

Every position i gathers all positions j: y_i = 1/C(x) sum_j f(x_i, x_j) g(x_j), and the block is residual,
z = W_z y + x.  Four pairwise functions f from the paper:

* ``embedded_gaussian``: f = exp(theta(x_i)^T phi(x_j)), normalized by a softmax over j (the default);
* ``gaussian``: f = exp(x_i^T x_j) on the raw features;
* ``dot_product``: f = theta(x_i)^T phi(x_j), normalized by the number of positions N;
* ``concatenation``: f = relu(w^T [theta(x_i), phi(x_j)]) / N.

theta, phi, g are 1x1 convolutions to C/2 channels; W_z is a 1x1 convolution back to C followed by
BatchNorm whose scale starts at zero, so a new block starts as the identity (Sec. 4.1).

Two registered configurations, which differ where the paper and the authors' released code differ:

* ``non_local`` follows the paper: logits theta^T phi unscaled (the embedded Gaussian has no 1/sqrt(d)), no
  sub-sampling unless ``sub_sample=True``, which max-pools the *outputs* of phi and g by 2 ("a max pooling layer
  after phi and g", Sec. 3.3), in ceil mode so that no row or column of an odd-sized map is dropped; PyTorch's
  default initialization of the 1x1 convolutions.
* ``non_local_official`` is the configuration of the authors' code (facebookresearch/video-nonlocal-net, whose
  defaults in ``lib/core/config.py`` lines 197-209 are USE_SCALE=True, USE_MAXPOOL=True, CONV_INIT_STD=0.01,
  BN_INIT_GAMMA=0; the block is ``spacetime_nonlocal`` in ``lib/models/nonlocal_helper.py``): logits scaled by
  1/sqrt(d) (d = C/2, line 86), the *input* max-pooled by 2 x 2 with stride 2 and no padding (floor mode: an
  odd row or column is dropped) before phi and g (lines 37-65), theta on the full-resolution input, and the
  1x1 convolutions initialized N(0, 0.01^2) with zero biases. As keyword arguments: ``sub_sample="input"``,
  ``scale=True``, ``conv_init_std=0.01``; each can be used with ``non_local`` too.

Pooling 2 x 2 is skipped on maps with a side below 2. Max-pooling before a 1x1 convolution is not the same as
after it (the max does not commute with the linear map), so the two sub-sampling options give different blocks.
Official constants kept as is: BatchNorm eps 1e-5 and momentum 0.1 (Caffe2's 0.9).

Departure: the paper's main models are spatio-temporal (3D) for video; this is the 2D image form the
paper also uses for detection (Sec. 6), with the official 1 x 2 x 2 pooling as 2 x 2. Softmax variants use the
fused scaled_dot_product_attention (scale 1, or 1/sqrt(d) with ``scale=True``). Without sub-sampling, theta,
phi and g see the same input and run as one matrix product on the tokens (their parameters stay three 1x1
convolutions, as in the authors' checkpoints).
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
        mode: pairwise function, one of MODES.
        sub_sample: False (none); True or "after": max-pool the outputs of phi and g by 2, ceil mode (the paper);
            "input": max-pool the input of phi and g by 2, floor mode (the official code).
        scale: multiply the logits theta^T phi by 1/sqrt(d) (the official USE_SCALE; softmax modes only).
        conv_init_std: if given, theta, phi, g, W_z weights start N(0, std^2) with zero biases (official: 0.01).
    """

    def __init__(self, channels: int, rd_ratio: float = 1 / 2, rd_channels: int | None = None,
                 mode: str = "embedded_gaussian", sub_sample: bool | str = False, scale: bool = False,
                 conv_init_std: float | None = None):
        super().__init__()
        self.mode = check_choice("mode", mode, MODES)
        rd = reduced_channels(channels, rd_ratio, rd_channels)
        if sub_sample is True:
            sub_sample = "after"
        elif sub_sample is False or sub_sample is None:
            sub_sample = None
        elif sub_sample not in ("after", "input"):
            raise ValueError(f"sub_sample must be False, True, 'after' or 'input', got {sub_sample!r}")
        if scale and mode not in ("embedded_gaussian", "gaussian"):
            raise ValueError(f"scale=True applies to the softmax modes only, not mode={mode!r}")
        if conv_init_std is not None and not conv_init_std > 0:
            raise ValueError(f"conv_init_std must be positive or None, got {conv_init_std!r}")
        self.sub_sample = sub_sample
        self.scale = scale
        self.g = nn.Conv2d(channels, rd, 1)
        if mode != "gaussian":
            self.theta = nn.Conv2d(channels, rd, 1)
            self.phi = nn.Conv2d(channels, rd, 1)
        if mode == "concatenation":
            self.concat_w = nn.Parameter(torch.randn(2, rd) * rd ** -0.5)
        self.out = nn.Conv2d(rd, channels, 1)
        self.norm = nn.BatchNorm2d(channels)
        if conv_init_std is not None:
            for conv in self.modules():
                if isinstance(conv, nn.Conv2d):
                    nn.init.normal_(conv.weight, std=conv_init_std)
                    nn.init.zeros_(conv.bias)
        nn.init.zeros_(self.norm.weight)

    def _pool(self, t: torch.Tensor, where: str) -> torch.Tensor:
        """Max-pool by 2 if this block sub-samples at ``where`` ("after" phi/g, or their "input")."""
        if self.sub_sample == where and min(t.shape[-2:]) >= 2:
            t = F.max_pool2d(t, 2, ceil_mode=where == "after")
        return t

    def _key_value_input(self, x: torch.Tensor) -> torch.Tensor:
        return self._pool(x, "input")

    @staticmethod
    def _tokens(t: torch.Tensor) -> torch.Tensor:
        # (N, L, C') with unit stride on C': SDPA's fused CPU kernel needs it (else it falls back to the explicit
        # L x L softmax); a no-op copy for channels_last maps
        return t.flatten(2).transpose(1, 2).contiguous()

    def _query_key(self, x: torch.Tensor, xs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """theta(x) and phi of the (possibly pooled) key input ``xs``, as tokens."""
        if self.mode == "gaussian":
            return self._tokens(x), self._tokens(self._pool(xs, "after"))
        return self._tokens(self.theta(x)), self._tokens(self._pool(self.phi(xs), "after"))

    def _value(self, xs: torch.Tensor) -> torch.Tensor:
        return self._tokens(self._pool(self.g(xs), "after"))

    def _logit_scale(self, q: torch.Tensor) -> float:
        return q.shape[-1] ** -0.5 if self.scale else 1.0

    def affinity(self, x: torch.Tensor) -> torch.Tensor:
        """Normalized pairwise weights f(x_i, x_j) / C(x), shape (N, H*W, L') (L' = H*W, or pooled)."""
        return self._affinity(*self._query_key(x, self._key_value_input(x)))

    def _affinity(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        if self.mode in ("embedded_gaussian", "gaussian"):
            return (q @ k.transpose(1, 2) * self._logit_scale(q)).softmax(dim=-1)
        if self.mode == "dot_product":
            return q @ k.transpose(1, 2) / k.shape[1]
        a = q @ self.concat_w[0]  # (N, L)
        b = k @ self.concat_w[1]  # (N, L')
        return F.relu(a[:, :, None] + b[:, None, :]) / k.shape[1]

    def _fused_qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """theta, phi, g of the same (un-pooled) input in one matrix product on the tokens (N, L, 3C'), split into
        three (N, L, C') views with unit channel stride. The three convolutions keep their own parameters (the
        checkpoint layout); their weights are concatenated per call. One pass over x instead of three and no
        per-projection transposition copies: 10-15 % faster forward+backward than three convolutions at 14 x 14."""
        weight = torch.cat([self.theta.weight, self.phi.weight, self.g.weight]).flatten(1)
        bias = torch.cat([self.theta.bias, self.phi.bias, self.g.bias])
        return F.linear(x.flatten(2).transpose(1, 2), weight, bias).chunk(3, dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        if self.sub_sample is None and self.mode != "gaussian":
            q, k, v = self._fused_qkv(x)
            if self.mode == "embedded_gaussian":
                y = F.scaled_dot_product_attention(q, k, v, scale=self._logit_scale(q))
            else:
                y = self._affinity(q, k) @ v
            return x + self.norm(self.out(y.transpose(1, 2).reshape(n, -1, h, w)))
        xs = self._key_value_input(x)
        v = self._value(xs)
        if self.mode in ("embedded_gaussian", "gaussian"):
            q, k = self._query_key(x, xs)  # for "gaussian" q, k have C channels and v has C'
            y = F.scaled_dot_product_attention(q, k, v, scale=self._logit_scale(q))
        else:
            y = self.affinity(x) @ v
        y = y.transpose(1, 2).reshape(n, -1, h, w)
        return x + self.norm(self.out(y))


register_attention("non_local_official", NonLocal2d, sub_sample="input", scale=True, conv_init_std=0.01)
