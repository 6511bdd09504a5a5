"""Non-overlapping window partition of a channels-last map (Swin, CSWin's stripes, Shuffle Transformer)."""
from __future__ import annotations

import torch


def window_partition(x: torch.Tensor, window: tuple[int, int]) -> torch.Tensor:
    """(B, H, W, C) with H, W multiples of the window (wh, ww) -> (B * nW, wh * ww, C), windows in raster order."""
    b, h, w, c = x.shape
    wh, ww = window
    x = x.reshape(b, h // wh, wh, w // ww, ww, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, wh * ww, c)


def window_reverse(windows: torch.Tensor, window: tuple[int, int], h: int, w: int) -> torch.Tensor:
    """Inverse of ``window_partition``: (B * nW, wh * ww, C) -> (B, H, W, C)."""
    wh, ww = window
    c = windows.shape[-1]
    x = windows.reshape(-1, h // wh, w // ww, wh, ww, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, h, w, c)
