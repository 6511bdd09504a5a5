"""S^2-MLPv2's spatial-shift block with split attention (Yu, Li, Cai, Sun & Li, "S^2-MLPv2: Improved
Spatial-Shift MLP Architecture for Vision", arXiv:2108.01072, 2021).

S^2-MLP mixes tokens without any spatial weights: it shifts channel groups by one pixel in the four directions,
so that a following channel MLP sees each token's neighbours. S^2-MLPv2 widens this into three parts and lets
the network choose between them per channel:

    X' = MLP_1(X)                                   (C -> 3C), split into X_1, X_2, X_3 (C channels each)
    X_1 <- shift_1(X_1),  X_2 <- shift_2(X_2),  X_3 unchanged
    shift_1: the four channel quarters move one pixel down, up, right, left;  shift_2: right, left, down, up
    a = mean_{pixels} (X_1 + X_2 + X_3)             (a in R^C)
    [b_1, b_2, b_3] = softmax over k of reshape(W_2 GELU(W_1 a), (3, C))        (split attention, ResNeSt)
    Y = MLP_2(b_1 * X_1 + b_2 * X_2 + b_3 * X_3)    (C -> C)

A shift leaves the border row/column it moves away from unchanged (the value is copied, not zeroed), as in the
paper's pseudo-code. The shifts are slicing and concatenation: no loops, no in-place writes.

Departures: the pseudo-code in the paper sums the branch features over all pixels before the split-attention
MLP; we average them (ResNeSt's global average pooling, which the paper cites for split attention), so the
weights do not drift with the input resolution -- a sum grows with H * W and saturates the softmax on large
maps. The split-attention MLP has no biases (as in the pseudo-code); MLP_1 and MLP_2 do. No model is
registered: the paper gives no configuration from which its parameter counts can be reproduced exactly, and
there is no official code.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..layers.tokens import TokenAttention, check_hw
from ..registry import register_attention


def _shift(x: torch.Tensor, dim: int, step: int) -> torch.Tensor:
    """Move x by one position along ``dim`` (+1 towards higher indices); the vacated border keeps its value."""
    size = x.shape[dim]
    if size < 2:
        return x
    if step > 0:
        return torch.cat([x.narrow(dim, 0, 1), x.narrow(dim, 0, size - 1)], dim=dim)
    return torch.cat([x.narrow(dim, 1, size - 1), x.narrow(dim, size - 1, 1)], dim=dim)


def spatial_shift(x: torch.Tensor, first: int = 1, second: int = 2) -> torch.Tensor:
    """Shift the four channel quarters of (N, H, W, C) by +1 / -1 along ``first``, then +1 / -1 along ``second``.

    ``spatial_shift(x, 1, 2)`` is the paper's shift_1 (down, up, right, left); ``spatial_shift(x, 2, 1)`` is shift_2.
    """
    q = torch.tensor_split(x, 4, dim=-1)
    return torch.cat([_shift(q[0], first, 1), _shift(q[1], first, -1),
                      _shift(q[2], second, 1), _shift(q[3], second, -1)], dim=-1)


class SplitAttention(nn.Module):
    """Per-channel softmax weights over k branches from their pooled sum: (N, k, H, W, C) -> (N, H, W, C)."""

    def __init__(self, channels: int, k: int = 3):
        super().__init__()
        self.k = k
        self.fc1 = nn.Linear(channels, channels, bias=False)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(channels, channels * k, bias=False)

    def weights(self, parts: torch.Tensor) -> torch.Tensor:
        """(N, k, H, W, C) -> softmax weights (N, k, C), summing to one over k."""
        a = parts.sum(dim=1).mean(dim=(1, 2))
        return self.fc2(self.act(self.fc1(a))).reshape(a.shape[0], self.k, -1).softmax(dim=1)

    def forward(self, parts: torch.Tensor) -> torch.Tensor:
        return (self.weights(parts)[:, :, None, None, :] * parts).sum(dim=1)


@register_attention("s2_mlpv2", layout="nlc")
class S2Block(TokenAttention):
    """(N, L, C) -> (N, L, C), ``forward(x, hw=(H, W))``: expand to 3C, shift two parts, fuse by split attention.

    Args:
        channels: C.
    """

    def __init__(self, channels: int):
        super().__init__(channels)
        self.channels = channels
        self.mlp1 = nn.Linear(channels, channels * 3)
        self.split_attention = SplitAttention(channels, 3)
        self.mlp2 = nn.Linear(channels, channels)

    def parts(self, x: torch.Tensor, hw=None) -> torch.Tensor:
        """The three parts after the shifts, stacked: (N, 3, H, W, C)."""
        n, length, c = x.shape
        h, w = check_hw(hw, length)
        x1, x2, x3 = self.mlp1(x.reshape(n, h, w, c)).chunk(3, dim=-1)
        return torch.stack([spatial_shift(x1, 1, 2), spatial_shift(x2, 2, 1), x3], dim=1)

    def forward_tokens(self, x: torch.Tensor, hw=None) -> torch.Tensor:
        n, length, c = x.shape
        return self.mlp2(self.split_attention(self.parts(x, hw))).reshape(n, length, c)
