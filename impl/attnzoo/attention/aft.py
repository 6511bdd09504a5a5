"""Attention Free Transformer (Zhai, Talbott, Srivastava, Huang, Goh, Zhang & Susskind, "An Attention Free
Transformer", arXiv 2021, arXiv:2105.14103).

AFT keeps queries, keys and values (Q, K, V = X W_q, X W_k, X W_v) but drops the dot product between queries
and keys. Keys are combined with learned pairwise position biases w_{t,t'} and used, channel by channel, as
weights of a softmax-like average of the values; the query only gates the result:

    Y_t = sigmoid(Q_t) * [ sum_t' exp(K_t' + w_{t,t'}) * V_t' ] / [ sum_t' exp(K_t' + w_{t,t'}) ]   (all
    products element-wise over the C channels).

Memory is linear in the sequence length and in C (no L x L x heads tensor). Three variants are registered, all
token modules (layout "nlc", ``TokenAttention``: (N, C, H, W) maps or (N, L, C) tokens with ``hw=(H, W)``):

* ``aft_full``: a learned T x T bias w for a context of T = ``seq_len`` tokens (default 196, a 14 x 14 grid).
  Parameterisation as in the paper (Sec. 3, "Parameterization"): w is factorised, w_{t,t'} = u_t . v_{t'} with
  u, v of shape T x d' (``pos_dim``, default 128, the paper's example value), which the authors found to train
  and generalise better than a free T x T matrix; ``pos_dim=None`` gives the free matrix of the equation. The
  sums are two matrix products, exp(w) @ (exp(K) * V) and exp(w) @ exp(K), O(L^2 C).
  Other sizes: the T tokens are taken to lie on the grid ``grid`` (default: sqrt(T) x sqrt(T) when T is a
  square). For tokens on another H x W grid (a feature map, or tokens with ``hw``), w is resized in grid space,
  viewed as a function of (query row, query column, key row, key column): bilinear interpolation over the query
  grid and over the key grid (ViT-style, ``align_corners=False``). With the factorised form this is exactly the
  same as resizing u and v on their grids and multiplying, which is how it is computed. Tokens without ``hw``
  must number exactly T (a ValueError otherwise); so must tokens when no grid of T is known.
* ``aft_simple``: w = 0, so Y_t = sigmoid(Q_t) * sum_t' softmax_t'(K)_t' * V_t': one global context vector,
  O(L C), any L, no grid needed.
* ``aft_conv``: the paper's variant for images, size-independent by construction. Each of h heads has a
  k x k kernel w (shared by the C / h channels of the head) that is non-zero only inside the window around t.
  Writing exp(w) = 1 + (exp(w) - 1), the sums split into a global part (w = 0 everywhere) and a depth-wise
  convolution with kernel exp(w) - 1:

      Y = sigmoid(Q) * [conv(exp(K) * V, exp(w) - 1) + sum exp(K) * V] / [conv(exp(K), exp(w) - 1) + sum exp(K)],

  computed on the H x W grid; every position still sees the whole image through the global part. The kernel
  is re-parameterised as in the paper: w^i = gamma_i (w_raw^i - mean(w_raw^i)) / std(w_raw^i) + beta_i per head,
  with learned gain gamma and shift beta initialised to 0 (``reparam=True``; the std is the population std, with
  1e-5 added to the variance against division by zero). ``reparam=False`` learns w directly.

Numerics: exp(K) is computed as exp(K - max K) (max over the sequence, per sample and channel) and exp(w) as
exp(w - max w) per row in ``aft_full``; both factors cancel in the ratio. The ratio is computed in float32 even
under autocast, because the difference exp(w) - 1 and the sums lose too much in bfloat16.

Departures: the paper does not prescribe initialisations: u and v start as N(0, 0.02^2) (so w is close to, but
not exactly, 0; both at 0 would get no gradient), a free w and AFT-conv's gamma, beta start at 0, so at
initialization AFT-conv equals AFT-simple; AFT-conv's raw kernel starts as N(0, 1). No official code is public.
Resizing ``aft_full`` to other grids is ours (the paper trains and tests at one T). An output projection is
optional (``out_proj``, off by default) since the paper's equation has none. The paper's AFT-local (w restricted
to a 1D window) is the 1D analogue of ``aft_conv`` and is not registered.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import check_divisible, check_hw, check_positive_int, to_2tuple
from ..layers.tokens import TokenAttention
from ..registry import register_attention


class _AFTBase(TokenAttention):
    def __init__(self, channels: int, qkv_bias: bool = True, out_proj: bool = False):
        super().__init__(channels)
        self.qkv = nn.Linear(channels, 3 * channels, bias=qkv_bias)
        self.proj = nn.Linear(channels, channels) if out_proj else nn.Identity()

    def _qkv(self, x: torch.Tensor):
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        # exp(K - max_t K): the factor exp(-max) cancels in the ratio; float32 for the sums (see the docstring)
        k = k.float()
        # the max is a constant of the ratio: detached, it costs no backward (amax's builds a full-size mask)
        ek = torch.exp(k - k.amax(dim=1, keepdim=True).detach())
        return q, ek, v.float()

    def _finish(self, q: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
        return self.proj(torch.sigmoid(q) * ratio.to(q.dtype))


@register_attention("aft_simple", layout="nlc")
class AFTSimple(_AFTBase):
    """(N, L, C) -> (N, L, C): sigmoid(Q) * sum_t softmax_t(K) * V (AFT with w = 0); any L, no grid needed.

    Args:
        channels: C. qkv_bias: biases in Q, K, V. out_proj: a final linear layer (not in the paper's equation).
    """

    def forward_tokens(self, x: torch.Tensor, hw=None) -> torch.Tensor:
        q, ek, v = self._qkv(x)
        with torch.autocast(x.device.type, enabled=False):
            ratio = (ek * v).sum(dim=1, keepdim=True) / ek.sum(dim=1, keepdim=True)
        return self._finish(q, ratio)


def resize_on_grid(t: torch.Tensor, src: tuple[int, int], dst: tuple[int, int]) -> torch.Tensor:
    """(h0 * w0, D) rows indexed by raster positions of an h0 x w0 grid -> (h * w, D), bilinearly on the grid."""
    d = t.shape[1]
    grid = t.transpose(0, 1).reshape(1, d, *src)
    grid = F.interpolate(grid, size=dst, mode="bilinear", align_corners=False)
    return grid.reshape(d, dst[0] * dst[1]).transpose(0, 1)


@register_attention("aft_full", layout="nlc")
class AFTFull(_AFTBase):
    """(N, L, C) -> (N, L, C) with a learned pairwise position bias w for T = ``seq_len`` tokens.

    Args:
        channels: C. seq_len: T, the number of tokens w is learned for (default 196 = 14 x 14).
        grid: (h, w) arrangement of the T tokens, h * w = T; default (sqrt T, sqrt T) if T is a square, else
            none (then only sequences of exactly T tokens are accepted).
        pos_dim: d' of the paper's factorisation w = u v^T (default 128); None for a free T x T matrix.
        qkv_bias, out_proj: as AFTSimple.
    """

    def __init__(self, channels: int, seq_len: int = 196, grid: int | tuple[int, int] | None = None,
                 pos_dim: int | None = 128, qkv_bias: bool = True, out_proj: bool = False):
        super().__init__(channels, qkv_bias, out_proj)
        check_positive_int("seq_len", seq_len)
        if grid is None:
            side = math.isqrt(seq_len)
            grid = (side, side) if side * side == seq_len else None
        else:
            grid = tuple(to_2tuple(grid))
            for v in grid:
                check_positive_int("grid[i]", v)
            if grid[0] * grid[1] != seq_len:
                raise ValueError(f"grid={grid} must have seq_len={seq_len} cells")
        self.seq_len = seq_len
        self.grid = grid
        self.pos_dim = pos_dim
        if pos_dim is None:
            self.pos_bias = nn.Parameter(torch.zeros(seq_len, seq_len))
        else:
            check_positive_int("pos_dim", pos_dim)
            self.pos_u = nn.Parameter(torch.randn(seq_len, pos_dim) * 0.02)
            self.pos_v = nn.Parameter(torch.randn(seq_len, pos_dim) * 0.02)

    def position_bias(self, hw=None, length: int | None = None) -> torch.Tensor:
        """w (L, L) for tokens on the grid ``hw`` (or a sequence of ``length`` = T tokens when hw is None)."""
        if hw is None:
            length = self.seq_len if length is None else length
            if length != self.seq_len:
                raise ValueError(f"aft_full learned w for T={self.seq_len} tokens; for L={length} tokens pass their "
                                 f"grid, module(x, hw=(H, W)), so that w can be resized on it")
            dst = self.grid
        else:
            dst = tuple(to_2tuple(hw))
            if self.grid is None and dst[0] * dst[1] != self.seq_len:
                raise ValueError(f"aft_full learned w for a sequence of T={self.seq_len} tokens with no known grid, "
                                 f"so it cannot be resized to a {dst[0]}x{dst[1]} grid; build it with grid=(h, w)")
        if self.pos_dim is None:
            w = self.pos_bias
            if dst != self.grid and self.grid is not None:
                w = resize_on_grid(resize_on_grid(w, self.grid, dst).transpose(0, 1), self.grid, dst).transpose(0, 1)
            return w
        u, v = self.pos_u, self.pos_v
        if dst != self.grid and self.grid is not None:
            u, v = resize_on_grid(u, self.grid, dst), resize_on_grid(v, self.grid, dst)
        return u @ v.transpose(0, 1)

    def forward_tokens(self, x: torch.Tensor, hw=None) -> torch.Tensor:
        q, ek, v = self._qkv(x)
        with torch.autocast(x.device.type, enabled=False):
            w = self.position_bias(hw, x.shape[1]).float()
            ew = torch.exp(w - w.amax(dim=1, keepdim=True).detach())  # (L, L), rows rescaled, cancels below
            ratio = (ew @ (ek * v)) / (ew @ ek)                       # (N, L, C)
        return self._finish(q, ratio)


@register_attention("aft_conv", layout="nlc")
class AFTConv(_AFTBase):
    """(N, L, C) -> (N, L, C) on an H x W grid (``hw`` or a feature map): AFT with a k x k position bias per head.

    Args:
        channels: C. num_heads: h, must divide C; the C / h channels of a head share one kernel (default 8).
        kernel_size: k, odd (default 7). reparam: the paper's re-parameterisation
        w = gamma (w_raw - mean) / std + beta per head (default True). qkv_bias, out_proj: as AFTSimple.
    """

    def __init__(self, channels: int, num_heads: int = 8, kernel_size: int = 7, reparam: bool = True,
                 qkv_bias: bool = True, out_proj: bool = False):
        super().__init__(channels, qkv_bias, out_proj)
        check_positive_int("num_heads", num_heads)
        check_positive_int("kernel_size", kernel_size)
        check_divisible("channels", channels, num_heads, "num_heads")
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.num_heads = num_heads
        self.kernel_size = kernel_size
        self.reparam = reparam
        if reparam:
            self.pos_bias = nn.Parameter(torch.randn(num_heads, kernel_size, kernel_size))   # w_raw
            self.pos_gain = nn.Parameter(torch.zeros(num_heads))                             # gamma
            self.pos_shift = nn.Parameter(torch.zeros(num_heads))                            # beta
        else:
            self.pos_bias = nn.Parameter(torch.zeros(num_heads, kernel_size, kernel_size))

    def kernel(self) -> torch.Tensor:
        """The effective position bias w (h, k, k), in float32."""
        w = self.pos_bias.float()
        if self.reparam:
            w = self.pos_gain.float()[:, None, None] * F.layer_norm(w, w.shape[-2:], eps=1e-5) \
                + self.pos_shift.float()[:, None, None]  # (w - mean) / std per head, one fused op
        return w

    def forward_tokens(self, x: torch.Tensor, hw=None) -> torch.Tensor:
        n, length, c = x.shape
        h, w = check_hw(hw, length)
        q, ek, v = self._qkv(x)
        with torch.autocast(x.device.type, enabled=False):
            kernel = (torch.exp(self.kernel()) - 1).repeat_interleave(c // self.num_heads, dim=0)
            kernel = kernel.unsqueeze(1)                              # (C, 1, k, k), depth-wise
            both = torch.cat([ek * v, ek], dim=-1).transpose(1, 2).reshape(n, 2 * c, h, w)
            local = F.conv2d(both, kernel.repeat(2, 1, 1, 1), padding=self.kernel_size // 2, groups=2 * c)
            total = local.flatten(2).transpose(1, 2) + both.flatten(2).sum(dim=-1)[:, None, :]
            num, den = total.split(c, dim=-1)
        return self._finish(q, num / den)
