"""Attention Free Transformer (Zhai, Talbott, Srivastava, Huang, Goh, Zhang & Susskind, "An Attention Free
Transformer", arXiv 2021, arXiv:2105.14103).

AFT keeps queries, keys and values (Q, K, V = X W_q, X W_k, X W_v) but drops the dot product between queries
and keys. Keys are combined with learned pairwise position biases w_{t,t'} and used, channel by channel, as
weights of a softmax-like average of the values; the query only gates the result:

    Y_t = sigmoid(Q_t) * [ sum_t' exp(K_t' + w_{t,t'}) * V_t' ] / [ sum_t' exp(K_t' + w_{t,t'}) ]   (all
    products element-wise over the C channels).

Memory is linear in the sequence length and in C (no L x L x heads tensor). Three variants are registered, all
on (N, L, C) tokens (layout "nlc"):

* ``aft_full``: w is a full learned T x T matrix. The paper defines it for a fixed context size T. Here w is
  learned for T = ``max_len`` (default 196, a 14 x 14 grid); for another length L it is resized bilinearly to
  L x L (as ViT resizes its position embeddings), so any L works; for L = max_len it is exactly the paper's.
  The sums are two matrix products, exp(w) @ (exp(K) * V) and exp(w) @ exp(K), O(L^2 C).
* ``aft_simple``: w = 0, so Y_t = sigmoid(Q_t) * sum_t' softmax_t'(K)_t' * V_t': one global context vector,
  O(L C), any L.
* ``aft_conv``: the paper's variant for images, size-independent by construction. Each of h heads has a
  k x k kernel w (shared by the C / h channels of the head) that is non-zero only inside the window around t.
  Writing exp(w) = 1 + (exp(w) - 1), the sums split into a global part (w = 0 everywhere) and a depth-wise
  convolution with kernel exp(w) - 1:

      Y = sigmoid(Q) * [conv(exp(K) * V, exp(w) - 1) + sum exp(K) * V] / [conv(exp(K), exp(w) - 1) + sum exp(K)],

  which needs ``forward(x, hw=(H, W))``; every position still sees the whole image through the global part.

Numerics: exp(K) is computed as exp(K - max K) (max over the sequence, per sample and channel) and exp(w) as
exp(w - max w) per row in ``aft_full``; both factors cancel in the ratio. The ratio is computed in float32 even
under autocast, because the difference exp(w) - 1 and the sums lose too much in bfloat16.

Departures: the w of ``aft_full`` and ``aft_conv`` start at zero, so at initialization both equal ``aft_simple``
(the paper does not prescribe an initialization); the resizing of ``aft_full``'s w is ours (see above). An
output projection is optional (``out_proj``, off by default) since the paper's equation has none. The
paper's AFT-local (w restricted to a 1D window) is the 1D analogue of ``aft_conv`` and is not registered.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import check_divisible, check_hw, check_positive_int
from ..registry import register_attention



class _AFTBase(nn.Module):
    def __init__(self, channels: int, qkv_bias: bool = True, out_proj: bool = False):
        super().__init__()
        check_positive_int("channels", channels)
        self.qkv = nn.Linear(channels, 3 * channels, bias=qkv_bias)
        self.proj = nn.Linear(channels, channels) if out_proj else nn.Identity()

    def _qkv(self, x: torch.Tensor):
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        # exp(K - max_t K): the factor exp(-max) cancels in the ratio; float32 for the sums (see the docstring)
        k = k.float()
        ek = torch.exp(k - k.amax(dim=1, keepdim=True))
        return q, ek, v.float()

    def _finish(self, q: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
        return self.proj(torch.sigmoid(q) * ratio.to(q.dtype))


@register_attention("aft_simple", layout="nlc")
class AFTSimple(_AFTBase):
    """(N, L, C) -> (N, L, C): sigmoid(Q) * sum_t softmax_t(K) * V (AFT with w = 0).

    Args:
        channels: C. qkv_bias: biases in Q, K, V. out_proj: a final linear layer (not in the paper's equation).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, ek, v = self._qkv(x)
        with torch.autocast(x.device.type, enabled=False):
            ratio = (ek * v).sum(dim=1, keepdim=True) / ek.sum(dim=1, keepdim=True)
        return self._finish(q, ratio)


@register_attention("aft_full", layout="nlc")
class AFTFull(_AFTBase):
    """(N, L, C) -> (N, L, C) with a learned pairwise position bias w (max_len x max_len, resized to L x L).

    Args:
        channels: C. max_len: T, the length w is learned for (default 196). qkv_bias, out_proj: as AFTSimple.
    """

    def __init__(self, channels: int, max_len: int = 196, qkv_bias: bool = True, out_proj: bool = False):
        super().__init__(channels, qkv_bias, out_proj)
        check_positive_int("max_len", max_len)
        self.max_len = max_len
        self.pos_bias = nn.Parameter(torch.zeros(max_len, max_len))

    def position_bias(self, length: int) -> torch.Tensor:
        """w for a sequence of ``length`` tokens: the learned matrix, bilinearly resized if needed."""
        w = self.pos_bias
        if length != self.max_len:
            w = F.interpolate(w[None, None], size=(length, length), mode="bilinear", align_corners=False)[0, 0]
        return w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, ek, v = self._qkv(x)
        with torch.autocast(x.device.type, enabled=False):
            w = self.position_bias(x.shape[1]).float()
            ew = torch.exp(w - w.amax(dim=1, keepdim=True))          # (L, L), rows rescaled, cancels below
            ratio = (ew @ (ek * v)) / (ew @ ek)                       # (N, L, C)
        return self._finish(q, ratio)


@register_attention("aft_conv", layout="nlc")
class AFTConv(_AFTBase):
    """(N, L, C) -> (N, L, C), ``forward(x, hw=(H, W))``: AFT with a k x k position bias per head.

    Args:
        channels: C. num_heads: h, must divide C; the C / h channels of a head share one kernel (default 8).
        kernel_size: k, odd (default 7). qkv_bias, out_proj: as AFTSimple.
    """

    def __init__(self, channels: int, num_heads: int = 8, kernel_size: int = 7, qkv_bias: bool = True,
                 out_proj: bool = False):
        super().__init__(channels, qkv_bias, out_proj)
        check_positive_int("num_heads", num_heads)
        check_positive_int("kernel_size", kernel_size)
        check_divisible("channels", channels, num_heads, "num_heads")
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.num_heads = num_heads
        self.kernel_size = kernel_size
        self.pos_bias = nn.Parameter(torch.zeros(num_heads, kernel_size, kernel_size))

    def forward(self, x: torch.Tensor, hw=None) -> torch.Tensor:
        n, length, c = x.shape
        h, w = check_hw(hw, length)
        q, ek, v = self._qkv(x)
        with torch.autocast(x.device.type, enabled=False):
            kernel = (torch.exp(self.pos_bias.float()) - 1).repeat_interleave(c // self.num_heads, dim=0)
            kernel = kernel.unsqueeze(1)                              # (C, 1, k, k), depth-wise
            both = torch.cat([ek * v, ek], dim=-1).transpose(1, 2).reshape(n, 2 * c, h, w)
            local = F.conv2d(both, kernel.repeat(2, 1, 1, 1), padding=self.kernel_size // 2, groups=2 * c)
            total = local.flatten(2).transpose(1, 2) + both.flatten(2).sum(dim=-1)[:, None, :]
            num, den = total.split(c, dim=-1)
        return self._finish(q, num / den)
