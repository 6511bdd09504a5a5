"""Token modules (layout "nlc"): the shared base class and helpers for the H x W arrangement of L = H * W tokens."""
from __future__ import annotations

import torch
import torch.nn as nn

from .helpers import check_positive_int, to_2tuple


def check_hw(hw, length: int) -> tuple[int, int]:
    """Validate ``hw=(H, W)`` against the number of tokens; a clear ValueError when missing or inconsistent."""
    if hw is None:
        raise ValueError("this module needs the token grid: call it as module(x, hw=(H, W))")
    h, w = to_2tuple(hw)
    if any(isinstance(v, bool) or not isinstance(v, int) or v <= 0 for v in (h, w)):
        raise ValueError(f"hw must be two positive integers, got {hw!r}")
    if h * w != length:
        raise ValueError(f"hw={tuple(hw)} does not match the number of tokens L={length} (H * W must equal L)")
    return h, w


def tokens_to_grid(x: torch.Tensor, hw) -> torch.Tensor:
    """(N, L, C) tokens -> (N, H, W, C) channels-last grid (checks hw)."""
    h, w = check_hw(hw, x.shape[1])
    return x.reshape(x.shape[0], h, w, x.shape[2])


class TokenAttention(nn.Module):
    """Base class of every attention mechanism defined on tokens (registered with ``layout="nlc"``).

    A subclass implements ``forward_tokens(x, hw)``: (N, L, C) tokens, with ``hw=(H, W)`` the grid of the
    L = H * W tokens (None when the caller has no grid), -> (N, L, C). ``forward`` is the one place where the
    zoo's attention contract meets tokens:

    * (N, C, H, W) feature maps -> the same shape (flattened to tokens in raster order and back), so every token
      mechanism is an ``attn_layer=`` of every CNN;
    * (N, L, C) tokens (inside transformers) -> (N, L, C), with ``hw`` passed through (checked against L);
    * anything else: a ValueError naming both layouts.
    """

    checks_own_input = True  # the registry's input check is done here instead

    def __init__(self, channels: int):
        super().__init__()
        self.channels = check_positive_int("channels", channels)

    def forward(self, x: torch.Tensor, hw=None) -> torch.Tensor:
        if x.dim() == 4 and x.shape[1] == self.channels:
            n, c, h, w = x.shape
            if hw is not None and tuple(to_2tuple(hw)) != (h, w):
                raise ValueError(f"{type(self).__name__}: hw={tuple(hw)} contradicts the feature map's {h}x{w} grid")
            y = self.forward_tokens(x.flatten(2).transpose(1, 2), (h, w))
            return y.transpose(1, 2).reshape(n, c, h, w)
        if x.dim() == 3 and x.shape[2] == self.channels:
            if hw is not None:
                check_hw(hw, x.shape[1])
            return self.forward_tokens(x, hw)
        raise ValueError(f"{type(self).__name__} expects (N, C, H, W) feature maps or (N, L, C) tokens with "
                         f"C={self.channels}, got a tensor of shape {tuple(x.shape)}")

    def forward_tokens(self, x: torch.Tensor, hw: tuple[int, int] | None) -> torch.Tensor:
        raise NotImplementedError
