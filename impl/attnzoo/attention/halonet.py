"""Blocked local self-attention with halos, from HaloNet (Vaswani, Ramachandran, Srinivas, Parmar, Hechtman &
Shlens, "Scaling Local Self-Attention for Parameter Efficient Visual Backbones", CVPR 2021, arXiv:2103.12731).

Local self-attention lets every pixel attend to a k x k neighbourhood, but extracting a separate neighbourhood
per pixel is slow and memory-hungry. Halo attention shares neighbourhoods: the (N, C, H, W) map is cut into
non-overlapping b x b query blocks, and all b^2 queries of a block attend to the same (b + 2h) x (b + 2h) window,
the block plus a "halo" of h pixels on every side. A pixel thus sees at least h pixels in every direction
(more if it is inside its block), and the key/value windows are extracted once per block.

Position enters through relative embeddings, factorized over height and width as in stand-alone
self-attention: for a query q at (y, x) and a key at (y', x'), the logit is q . k + q . (r_h[y' - y] + r_w[x' - x])
(both terms scaled by 1 / sqrt(d) here). The relative logits are computed for all blocks at once and handed to
``scaled_dot_product_attention`` as an additive bias; there is no Python loop over blocks.

Registered as ``halo`` on (N, C, H, W) maps; any H, W: the map is zero-padded on the bottom/right to a multiple
of b and by h on every side, and keys/values that fall outside the image (the padding) are masked out, so they
take no attention weight; the output is cropped back to H x W. 1x1 convolutions give Q, K, V; the heads'
outputs are concatenated without an output projection (in HaloNet the layer replaces the 3x3 convolution of a
bottleneck, whose next 1x1 convolution mixes the heads).

Departures: masking the padding instead of letting queries attend to zeros (the result then does not depend
on how much padding a size needs); scaling the relative logits by 1 / sqrt(d) together with the content logits
(a reparametrization of r). Defaults b = 8, h = 3, 8 heads, as in the paper's models. The HaloNet-H0...H7
backbones are not registered.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import cached_geometry, check_divisible, check_positive_int, resolve_device
from ..registry import register_attention


def relative_index(block_size: int, halo_size: int, device=None) -> torch.Tensor:
    """(b, b + 2h) table index of r[y' - y] for query row y of a block and key row y' of its window (cached)."""
    device = resolve_device(device)
    return cached_geometry(("halo_relative_index", block_size, halo_size, device),
                           lambda: _relative_index(block_size, halo_size, device))


def _relative_index(block_size: int, halo_size: int, device) -> torch.Tensor:
    q = torch.arange(block_size, device=device)[:, None] + halo_size   # query position in window coordinates
    k = torch.arange(block_size + 2 * halo_size, device=device)[None, :]
    return k - q + (block_size + halo_size - 1)


@register_attention("halo")
class HaloAttention(nn.Module):
    """(N, C, H, W) -> (N, C, H, W): multi-head attention of b x b query blocks to (b + 2h)^2 windows.

    Args:
        channels: C. num_heads: heads, must divide C (default 8). block_size: b (default 8).
        halo_size: h (default 3). qkv_bias: biases in the Q, K, V convolutions.
    """

    def __init__(self, channels: int, num_heads: int = 8, block_size: int = 8, halo_size: int = 3,
                 qkv_bias: bool = False):
        super().__init__()
        check_positive_int("channels", channels)
        check_positive_int("num_heads", num_heads)
        check_positive_int("block_size", block_size)
        if isinstance(halo_size, bool) or not isinstance(halo_size, int) or halo_size < 0:
            raise ValueError(f"halo_size must be a non-negative integer, got {halo_size!r}")
        check_divisible("channels", channels, num_heads, "num_heads")
        self.num_heads = num_heads
        self.head_dim = channels // num_heads
        self.block_size = block_size
        self.halo_size = halo_size
        self.win_size = block_size + 2 * halo_size
        self.q = nn.Conv2d(channels, channels, 1, bias=qkv_bias)
        self.kv = nn.Conv2d(channels, 2 * channels, 1, bias=qkv_bias)
        num_rel = 2 * (block_size + halo_size) - 1
        self.rel_h = nn.Parameter(torch.randn(num_rel, self.head_dim) * self.head_dim ** -0.5)
        self.rel_w = nn.Parameter(torch.randn(num_rel, self.head_dim) * self.head_dim ** -0.5)

    def _blocks(self, x: torch.Tensor):
        """Q (N, heads, B, b*b, d), K and V (N, heads, B, win*win, d), the attention bias (N, heads, B, b*b, win*win)
        (relative logits, -inf for keys outside the image) and the padded grid."""
        n, c, h, w = x.shape
        b, p, win, heads, d = self.block_size, self.halo_size, self.win_size, self.num_heads, self.head_dim
        pad_h, pad_w = (-h) % b, (-w) % b
        nbh, nbw = (h + pad_h) // b, (w + pad_w) // b
        q = F.pad(self.q(x), (0, pad_w, 0, pad_h)) * d ** -0.5
        q = q.reshape(n, heads, d, nbh, b, nbw, b).permute(0, 1, 3, 5, 4, 6, 2)  # (N, heads, nbh, nbw, b, b, d)
        q = q.reshape(n, heads, nbh * nbw, b, b, d)
        kv = F.unfold(F.pad(self.kv(x), (p, p + pad_w, p, p + pad_h)), win, stride=b)  # (N, 2C*win*win, B)
        kv = kv.reshape(n, 2, heads, d, win * win, nbh * nbw).permute(1, 0, 2, 5, 4, 3)
        k, v = kv[0], kv[1]                                                     # (N, heads, B, win*win, d)
        # relative logits: q . r_h[y' - y] + q . r_w[x' - x], for all blocks at once
        idx = relative_index(b, p, x.device)
        logits_h = torch.einsum("nhbyxd,ykd->nhbyxk", q, self.rel_h[idx].to(q.dtype))
        logits_w = torch.einsum("nhbyxd,xkd->nhbyxk", q, self.rel_w[idx].to(q.dtype))
        bias = (logits_h[..., :, None] + logits_w[..., None, :]).reshape(n, heads, nbh * nbw, b * b, win * win)
        inside = F.pad(x.new_ones(1, 1, h, w), (p, p + pad_w, p, p + pad_h))
        inside = F.unfold(inside, win, stride=b).transpose(1, 2).reshape(1, 1, nbh * nbw, 1, win * win) > 0.5
        bias = bias.masked_fill(~inside, float("-inf"))
        return q.reshape(n, heads, nbh * nbw, b * b, d), k, v, bias, (nbh, nbw)

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """Softmax weights (N, heads, blocks, b*b queries, win*win keys), computed explicitly for plots."""
        with torch.no_grad():
            q, k, _, bias, _ = self._blocks(x)
            return (q @ k.transpose(-2, -1) + bias).softmax(dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        b, heads, d = self.block_size, self.num_heads, self.head_dim
        q, k, v, bias, (nbh, nbw) = self._blocks(x)
        flat = (n, heads * nbh * nbw)
        # contiguous: SDPA's fused CPU kernel needs unit stride on d (else the explicit softmax path runs)
        q, k, v = (t.reshape(*flat, -1, d).contiguous() for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.reshape(*flat, b * b, -1),
                                           scale=1.0)  # q is already scaled by 1 / sqrt(d)
        y = y.reshape(n, heads, nbh, nbw, b, b, d).permute(0, 1, 6, 2, 4, 3, 5).reshape(n, c, nbh * b, nbw * b)
        return y[:, :, :h, :w]
