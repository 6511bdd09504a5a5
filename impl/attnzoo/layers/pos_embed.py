"""Learned position embeddings on a patch grid, resized to another grid (fine-tuning at another resolution)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .helpers import check_choice, check_positive_int, to_2tuple


def resize_maps(x: torch.Tensor, size, mode: str = "bicubic", align_corners: bool | None = False) -> torch.Tensor:
    """``F.interpolate`` of (N, C, H, W) maps to ``size``; on the meta device only the (N, C, *size) result is made
    (torch's meta path runs the bicubic/bilinear decomposition in Python, seconds per call, for no values)."""
    if x.is_meta:
        return x.new_empty(*x.shape[:2], *size)
    return F.interpolate(x, size=size, mode=mode, align_corners=align_corners)


def linear_resize_matrix(n_in: int, n_out: int, like: torch.Tensor) -> torch.Tensor:
    """(n_out, n_in) matrix R with R @ v = ``F.interpolate(v, n_out, mode="linear", align_corners=False)`` for a
    vector v of n_in values (half-pixel centres, TF2's ``tf.image.resize``): output i reads the source position
    s_i = clamp((i + 1/2) n_in / n_out - 1/2, 0, n_in - 1) with the tent weights max(0, 1 - |s_i - j|). Resizing
    along several axes is one product per axis; cheap on the meta device and under tracing, unlike interpolate."""
    src = ((torch.arange(n_out, device=like.device, dtype=like.dtype) + 0.5) * (n_in / n_out) - 0.5).clamp(0, n_in - 1)
    return (1 - (src[:, None] - torch.arange(n_in, device=like.device, dtype=like.dtype)).abs()).clamp(min=0)


def resize_pos_grid(pos: torch.Tensor, src_hw: tuple[int, int], dst_hw: tuple[int, int],
                    mode: str = "bicubic", align_corners: bool | None = None) -> torch.Tensor:
    """(1, src_h * src_w, D) embeddings in raster order -> (1, dst_h * dst_w, D), resized as an image.

    ``mode``: "bicubic" (DeiT, CaiT, timm; corners not aligned) or "bilinear" (corners aligned, as
    ``scipy.ndimage.zoom(order=1)`` in the ViT authors' code). ``align_corners``: None for that default of the mode,
    or a bool (PVT resizes bilinearly with the corners not aligned). Returns ``pos`` itself when the grids agree.
    """
    check_choice("mode", mode, ("bicubic", "bilinear"))
    if align_corners is None:
        align_corners = mode == "bilinear"
    src_hw, dst_hw = tuple(src_hw), tuple(dst_hw)
    if src_hw == dst_hw:
        return pos
    grid = pos.reshape(1, src_hw[0], src_hw[1], -1).permute(0, 3, 1, 2)
    grid = resize_maps(grid, dst_hw, mode, align_corners)
    return grid.flatten(2).transpose(1, 2)


def patch_grid(img_size, patch_size: int) -> tuple[int, int]:
    """The (H / P, W / P) patch grid a position table is laid out for; a ValueError unless P divides both sides."""
    h, w = to_2tuple(img_size)
    for name, value in dict(img_height=h, img_width=w, patch_size=patch_size).items():
        check_positive_int(name, value)
    if h % patch_size or w % patch_size:
        raise ValueError(f"img_size={img_size} must be a multiple of patch_size={patch_size}")
    return h // patch_size, w // patch_size
