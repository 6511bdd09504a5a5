"""Non-overlapping patch embedding of ViT-style models: zero-pad to whole P x P patches, a stride-P convolution."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .helpers import check_choice


def pad_to_multiple(x: torch.Tensor, multiple: int, centred: bool = False) -> torch.Tensor:
    """Zero-pad (N, C, H, W) so that H and W are multiples of ``multiple``: on the right and bottom (default), or
    split as flax/XLA "SAME" padding does (``centred=True``: the smaller half first). ``x`` itself when none needed."""
    pad_h, pad_w = (-x.shape[-2]) % multiple, (-x.shape[-1]) % multiple
    if not (pad_h or pad_w):
        return x
    if centred:
        return F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
    return F.pad(x, (0, pad_w, 0, pad_h))


class PatchEmbed(nn.Module):
    """(N, C, H, W) -> (N, gh * gw, D) tokens in raster order and the grid (gh, gw) = (ceil(H / P), ceil(W / P)).

    ``padding``: where the zeros that complete the last patches go: "end" (right and bottom; ViT and its
    descendants in this package) or "same" (split as flax's "SAME" convolution does; the MLP-Mixer and gMLP authors'
    JAX code). The only parameters are ``proj`` (the P x P, stride-P convolution), timm's name.
    """

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int, padding: str = "end"):
        super().__init__()
        self.patch_size = patch_size
        self.padding = check_choice("padding", padding, ("end", "same"))
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, patch_size)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        x = self.proj(pad_to_multiple(x, self.patch_size, centred=self.padding == "same"))
        return x.flatten(2).transpose(1, 2), (x.shape[-2], x.shape[-1])
