"""Non-overlapping window partition of a channels-last map (Swin, CSWin's stripes, Shuffle Transformer)."""
from __future__ import annotations

import torch


def window_partition(x: torch.Tensor, window: tuple[int, int], strided: bool = False) -> torch.Tensor:
    """(B, H, W, C) with H, W multiples of the window (wh, ww) -> (B * nW, wh * ww, C), windows in raster order.

    ``strided=False``: window (p, q) holds the contiguous block of tokens (p * wh + i, q * ww + j), i < wh, j < ww.
    ``strided=True``: the spatial shuffle of Shuffle Transformer: window (a, b) holds the tokens spread evenly over
    the map, (i * H / wh + a, j * W / ww + b), in raster order of (i, j).
    """
    b, h, w, c = x.shape
    wh, ww = window
    if strided:
        x = x.reshape(b, wh, h // wh, ww, w // ww, c).permute(0, 2, 4, 1, 3, 5)
    else:
        x = x.reshape(b, h // wh, wh, w // ww, ww, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, wh * ww, c)


def window_reverse(windows: torch.Tensor, window: tuple[int, int], h: int, w: int,
                   strided: bool = False) -> torch.Tensor:
    """Inverse of ``window_partition`` (with the same ``strided``): (B * nW, wh * ww, C) -> (B, H, W, C)."""
    wh, ww = window
    c = windows.shape[-1]
    x = windows.reshape(-1, h // wh, w // ww, wh, ww, c)
    x = x.permute(0, 3, 1, 4, 2, 5) if strided else x.permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, h, w, c)
