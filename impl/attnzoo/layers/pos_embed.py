"""Learned position embeddings on a patch grid, resized to another grid (fine-tuning at another resolution)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .helpers import check_choice


def resize_pos_grid(pos: torch.Tensor, src_hw: tuple[int, int], dst_hw: tuple[int, int],
                    mode: str = "bicubic") -> torch.Tensor:
    """(1, src_h * src_w, D) embeddings in raster order -> (1, dst_h * dst_w, D), resized as an image.

    ``mode``: "bicubic" (DeiT, CaiT, timm; corners not aligned) or "bilinear" (corners aligned, as
    ``scipy.ndimage.zoom(order=1)`` in the ViT authors' code). Returns ``pos`` itself when the grids agree.
    """
    check_choice("mode", mode, ("bicubic", "bilinear"))
    src_hw, dst_hw = tuple(src_hw), tuple(dst_hw)
    if src_hw == dst_hw:
        return pos
    grid = pos.reshape(1, src_hw[0], src_hw[1], -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=dst_hw, mode=mode, align_corners=mode == "bilinear")
    return grid.flatten(2).transpose(1, 2)
