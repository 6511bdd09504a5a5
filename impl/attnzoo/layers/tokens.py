"""Helpers for token modules (layout "nlc") that need the H x W arrangement of their L = H * W tokens."""
from __future__ import annotations

import torch

from .helpers import to_2tuple


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
