"""sMLPNet (Tang, Zhao, Wang, Luo, Xie & Zeng, "Sparse MLP for Image Recognition: Is Self-Attention Really
Necessary?", AAAI 2022, arXiv:2109.05422; the authors' code: microsoft/SPACH, models/smlp.py and models/registry.py).

MLP-Mixer's token-mixing MLP connects every token with every other (L^2 weights, tied to one input size). The sparse
MLP (sMLP) connects a token only to the tokens of its row and its column: one linear layer W_W (W x W, shared by all
rows and channels) mixes along the width, one W_H (H x H) along the height, and a 1 x 1 convolution fuses them with
the identity. On an (N, C, H, W) map, after BatchNorm and GELU (the authors' code):

    X_W[n, c, h, :] = W_W X[n, c, h, :] + b_W          X_H[n, c, :, w] = W_H X[n, c, :, w] + b_H
    sMLP(X) = Fuse([X, X_W, X_H])                       Fuse: 1 x 1 convolution 3C -> C, no bias

A block is x + sMLP(DWConv(x)), then x + MLP(LN(x)) (MLP ratio alpha = 3), where DWConv is BN - GELU - a 3 x 3
depthwise convolution without bias (the token-mixing residual holds both, as the authors' code). sMLPNet: a 4 x 4
stride-4 patch embedding (no bias) to C, four stages with a 2 x 2 stride-2 convolution (no bias) doubling the width
before stages 2-4, a final BatchNorm, global average pooling and a linear head. sMLPNet-T/S/B (the authors'
registry.py): C = 80, 96, 112; blocks (2, 8, 14, 2), (2, 10, 24, 2), (2, 10, 24, 2); stochastic depth 0, 0.2, 0.3
(rising linearly over the blocks), as their model functions set it. The authors' modules keep PyTorch's default
initialisation, and so do these.

Input sizes: W_W and W_H are built for the maps of ``img_size`` (224: 56, 28, 14, 7 per stage). The authors' model
runs only that size (square: their block asserts W == H; other sizes fail inside the convolution); a pair
``img_size=(H, W)`` builds ours for a non-square size (W_W sized by W, W_H by H). For another map, our default
``grid_mismatch="resample"`` (**our departure**, the rule of this zoo's MLP-Mixer and gMLP) resizes each mixing
matrix bilinearly as a W x W image to W' x W' (scaled by W / W', so a sum over W' inputs keeps its scale) and its
bias linearly; ``grid_mismatch="error"`` gives the authors' behaviour as a ValueError naming the accepted size.
The strided convolutions drop incomplete windows, so any input of at least 32 x 32 pixels runs.

The authors name the width-mixing layer ``proj_h`` and the height-mixing one ``proh_w`` (the same size when
H = W); here they are ``proj_w`` (mixes along the width) and ``proj_h`` (along the height). The sparse MLP alone
(BN - GELU - the three branches - fuse) is registered as the attention module ``sparse_mlp`` (built for a 14 x 14
map by default, resampled for others).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import (DropPath, Mlp, check_choice, check_images, check_positive_int, drop_path_rates,
                      linear_resize_matrix, to_2tuple)
from ..registry import register_attention, register_model


def resize_mixing(weight: torch.Tensor, bias: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A (L, L) mixing matrix and its (L,) bias for sequences of ``size``: bilinear as an image (A W A^T, the two
    separable linear interpolations), the weight times L / size; the bias linearly (A b)."""
    a = linear_resize_matrix(weight.shape[0], size, weight)
    return a @ weight @ a.T * (weight.shape[0] / size), a @ bias


@register_attention("sparse_mlp")
class SparseMLP(nn.Module):
    """(N, C, H, W) -> (N, C, H, W): BN - GELU, then [X, X_W, X_H] fused by a 1 x 1 convolution.

    Args:
        channels: C. grid: the (H, W) map W_H and W_W are built for (int or pair; default 14, the third stage of
            sMLPNet at 224). grid_mismatch: "resample" (default, our departure) or "error" (the authors').
    """

    def __init__(self, channels: int, grid=14, grid_mismatch: str = "resample"):
        super().__init__()
        check_positive_int("channels", channels)
        self.grid = tuple(check_positive_int("grid", g) for g in to_2tuple(grid))
        self.grid_mismatch = check_choice("grid_mismatch", grid_mismatch, ("resample", "error"))
        self.norm = nn.BatchNorm2d(channels)
        self.act = nn.GELU()
        self.proj_h = nn.Linear(self.grid[0], self.grid[0])   # mixes along the height (the authors' ``proh_w``)
        self.proj_w = nn.Linear(self.grid[1], self.grid[1])   # mixes along the width (the authors' ``proj_h``)
        self.fuse = nn.Conv2d(3 * channels, channels, 1, bias=False)

    def _mixing(self, layer: nn.Linear, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        if size == layer.in_features:
            return layer.weight, layer.bias
        if self.grid_mismatch == "error":
            raise ValueError(f"this sparse MLP is built for {self.grid[0]}x{self.grid[1]} maps (the only size the "
                             f"authors' model takes), got a map with a side of {size}; build it for that size "
                             f"(grid, or img_size for sMLPNet) or pass grid_mismatch='resample'")
        return resize_mixing(layer.weight, layer.bias, size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.norm(x))
        h, w = x.shape[-2:]
        x_w = F.linear(x, *self._mixing(self.proj_w, w))                                    # along each row
        x_h = F.linear(x.transpose(-1, -2), *self._mixing(self.proj_h, h)).transpose(-1, -2)  # along each column
        return self.fuse(torch.cat([x, x_w, x_h], dim=1))


class DWConv(nn.Module):
    """BN - GELU - 3 x 3 depthwise convolution without bias: (N, C, H, W) -> same."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(channels)
        self.act = nn.GELU()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.act(self.norm(x)))


class SMLPBlock(nn.Module):
    """x + sMLP(DWConv(x)), then x + MLP(LN(x)) on (N, C, H, W) maps (LayerNorm over channels)."""

    def __init__(self, dim: int, grid: tuple[int, int], mlp_ratio: float, drop_path: float, grid_mismatch: str):
        super().__init__()
        self.dwconv = DWConv(dim)
        self.smlp = SparseMLP(dim, grid, grid_mismatch)
        self.norm = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.smlp(self.dwconv(x)))
        y = self.mlp(self.norm(x.permute(0, 2, 3, 1))).permute(0, 3, 1, 2)
        return x + self.drop_path(y)


class SMLPStage(nn.Module):
    """A stride-p convolution without bias (the patch embedding, or the 2 x 2 downsampling), then the blocks."""

    def __init__(self, in_dim: int, dim: int, stride: int, blocks: list[nn.Module]):
        super().__init__()
        self.downsample = nn.Conv2d(in_dim, dim, stride, stride, bias=False)
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


class SMLPNet(nn.Module):
    """(N, in_chans, H, W) -> (N, num_classes); H, W >= 32 (other sizes than ``img_size``: see grid_mismatch).

    Args:
        embed_dim: C of the first stage (doubled by every later one). depths: blocks per stage.
        mlp_ratio: alpha, the channel MLP's expansion (3). img_size: the input size (int or (H, W)) the sparse MLPs
            are built for; patch_size: the stem's stride (4). grid_mismatch: "resample" or "error" (see above).
        drop_path_rate: stochastic depth, linear over all blocks.
    """

    def __init__(self, embed_dim: int = 80, depths=(2, 8, 14, 2), mlp_ratio: float = 3.0, img_size=224,
                 patch_size: int = 4, in_chans: int = 3, num_classes: int = 1000, drop_path_rate: float = 0.0,
                 grid_mismatch: str = "resample"):
        super().__init__()
        check_positive_int("embed_dim", embed_dim)
        depths = tuple(depths)
        if len(depths) != 4:
            raise ValueError(f"depths must give 4 block counts, one per stage, got {depths!r}")
        for d in depths:
            check_positive_int("depths", d)
        for name, v in dict(patch_size=patch_size, in_chans=in_chans, num_classes=num_classes).items():
            check_positive_int(name, v)
        img = tuple(check_positive_int("img_size", v) for v in to_2tuple(img_size))
        if any(v % (patch_size * 8) for v in img):
            raise ValueError(f"img_size={img_size} must be a multiple of patch_size * 8 = {patch_size * 8} "
                             f"(the stem and three 2x2 downsamplings)")
        if mlp_ratio <= 0 or not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"mlp_ratio must be positive and drop_path_rate in [0, 1), got {mlp_ratio!r}, "
                             f"{drop_path_rate!r}")
        check_choice("grid_mismatch", grid_mismatch, ("resample", "error"))
        rates = iter(drop_path_rates(drop_path_rate, sum(depths)))
        stages, in_dim = [], in_chans
        for i, depth in enumerate(depths):
            dim, stride = embed_dim * 2 ** i, patch_size if i == 0 else 2
            grid = (img[0] // patch_size // 2 ** i, img[1] // patch_size // 2 ** i)
            blocks = [SMLPBlock(dim, grid, mlp_ratio, next(rates), grid_mismatch) for _ in range(depth)]
            stages.append(SMLPStage(in_dim, dim, stride, blocks))
            in_dim = dim
        self.stages = nn.Sequential(*stages)
        self.norm = nn.BatchNorm2d(in_dim)
        self.num_features = in_dim
        self.head = nn.Linear(in_dim, num_classes)
        self.min_size = patch_size * 8

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, C_4, H / 32, W / 32), after the final BatchNorm."""
        check_images("sMLPNet", x, self.min_size)
        return self.norm(self.stages(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x).mean((2, 3)))


# The authors' models/registry.py: smlpnet_tiny, smlpnet_small, smlpnet_base (alpha 3, patch 4 for all three).
for _name, _kwargs in {"smlpnet_t": dict(embed_dim=80, depths=(2, 8, 14, 2), drop_path_rate=0.0),
                       "smlpnet_s": dict(embed_dim=96, depths=(2, 10, 24, 2), drop_path_rate=0.2),
                       "smlpnet_b": dict(embed_dim=112, depths=(2, 10, 24, 2), drop_path_rate=0.3)}.items():
    register_model(_name, SMLPNet, **_kwargs)
