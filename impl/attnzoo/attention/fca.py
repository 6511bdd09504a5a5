"""FcaNet: multi-spectral channel attention (Qin, Zhang, Wu & Li, "FcaNet: Frequency Channel Attention
Networks", ICCV 2021, arXiv:2012.11879).

Global average pooling is, up to a constant, the lowest-frequency (0, 0) coefficient of the 2D DCT of a
channel, so SE sees only that one frequency. FcaNet splits the C channels into n groups and pools group i with
its own 2D DCT basis function B_{u_i, v_i} instead of the plain average:

    Freq_c = sum_{h,w} x_c(h, w) B_{u_i, v_i}(h, w),   B_{u,v}(h, w) = b_u(h; H) b_v(w; W),
    b_u(h; L) = cos(pi u (h + 1/2) / L) / sqrt(L) * (sqrt(2) if u > 0),

then applies SE's excitation to the result: att = sigmoid(W2 ReLU(W1 Freq)) (C -> C/16 -> C, no biases), and
y = att * x. The n = 16 frequencies ("top16") are the 16 best single frequencies of the paper's ablation on a
7 x 7 grid; on a larger map they are scaled so that they sit at the same fraction of the spectrum
(u = u_7 * H / 7), as in the authors' code for 14 x 14, 28 x 28 and 56 x 56 maps.

Any input size: the basis is built for the size of the map it is applied to (after optional adaptive pooling
to ``pool_size``), at run time and on the input's device, with u = floor(u_7 * H / 7), v = floor(v_7 * W / 7)
(exact for multiples of 7, always a valid index u < H). The authors' module stores one basis for a fixed size
per stage and pools every other input to it; re-implementations that hard-code the 7 x 7 or 56 x 56 basis fail
on other sizes.

``fca_resnet50`` (FcaNet-50) puts the module where SE sits in every bottleneck; at 224 x 224 the maps are
56, 28, 14 and 7 pixels wide, which is exactly the authors' setting. 28.07 M parameters (as SE without biases).

Departures: none at the authors' sizes; other sizes use the floor mapping above instead of pooling.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import check_choice, check_divisible, reduced_channels, to_2tuple
from ..models.resnet import register_resnet
from ..registry import register_attention

# The paper's ranking of the 49 frequencies of a 7x7 DCT (best first); (u, v) = (vertical, horizontal) index.
TOP_FREQ_U = (0, 0, 6, 0, 0, 1, 1, 4, 5, 1, 3, 0, 0, 0, 3, 2, 4, 6, 3, 5, 5, 2, 6, 5, 5, 3, 3, 4, 2, 2, 6, 1)
TOP_FREQ_V = (0, 1, 0, 5, 2, 0, 2, 0, 0, 6, 0, 4, 6, 3, 5, 2, 6, 3, 3, 3, 5, 1, 1, 2, 4, 2, 1, 1, 3, 0, 5, 3)


def dct_basis_1d(freqs: torch.Tensor, length: int) -> torch.Tensor:
    """Orthonormal DCT-II basis vectors b_u(., L) for integer frequencies ``freqs`` (F,), shape (F, L)."""
    pos = torch.arange(length, dtype=torch.float32, device=freqs.device) + 0.5
    basis = torch.cos(math.pi * freqs.float()[:, None] * pos[None, :] / length) / math.sqrt(length)
    return basis * torch.where(freqs > 0, math.sqrt(2.0), 1.0)[:, None]


@register_attention("fca")
class MultiSpectralAttention(nn.Module):
    """(N, C, H, W) -> (N, C, H, W): x * sigmoid(MLP(multi-spectral DCT pooling of x)).

    Args:
        channels: C, divisible by ``num_freq``. num_freq: n frequencies, the top-n of the paper's ranking
        (paper: 16). rd_ratio / rd_channels: excitation bottleneck (paper: 1/16).
        pool_size: if given, adaptive-average-pool the input to this size before the DCT (the authors do so for
        detection inputs); None applies the DCT at the input's own size.
    """

    def __init__(self, channels: int, num_freq: int = 16, rd_ratio: float = 1 / 16, rd_channels: int | None = None,
                 pool_size: int | tuple[int, int] | None = None):
        super().__init__()
        rd = reduced_channels(channels, rd_ratio, rd_channels)
        check_choice("num_freq", num_freq, (1, 2, 4, 8, 16, 32))
        check_divisible("channels", channels, num_freq, "num_freq")
        self.num_freq = num_freq
        self.pool_size = None if pool_size is None else to_2tuple(pool_size)
        self.register_buffer("freq_u", torch.tensor(TOP_FREQ_U[:num_freq]), persistent=False)
        self.register_buffer("freq_v", torch.tensor(TOP_FREQ_V[:num_freq]), persistent=False)
        self.fc = nn.Sequential(nn.Linear(channels, rd, bias=False), nn.ReLU(inplace=True),
                                nn.Linear(rd, channels, bias=False))

    def basis(self, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The separable basis for an h x w map: row factors (n, h) and column factors (n, w)."""
        u = torch.div(self.freq_u * h, 7, rounding_mode="floor")
        v = torch.div(self.freq_v * w, 7, rounding_mode="floor")
        return dct_basis_1d(u, h), dct_basis_1d(v, w)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """The multi-spectral descriptor Freq, shape (N, C): group i pooled with DCT frequency i."""
        if self.pool_size is not None:
            x = F.adaptive_avg_pool2d(x, self.pool_size)
        n, c, h, w = x.shape
        bh, bw = self.basis(h, w)
        groups = x.reshape(n, self.num_freq, c // self.num_freq, h, w)
        return torch.einsum("ngchw,gh,gw->ngc", groups, bh.to(x.dtype), bw.to(x.dtype)).reshape(n, c)

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """The per-channel gate, shape (N, C, 1, 1)."""
        return torch.sigmoid(self.fc(self.pooled(x)))[:, :, None, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weights(x).to(x.dtype)


register_resnet("fca_resnet50", 50, attn_layer="fca")
