"""gMLP (Liu, Dai, So & Le, "Pay Attention to MLPs", NeurIPS 2021, arXiv:2105.08050): the vision models.

A stack of L identical gMLP blocks on the S patch tokens of a ViT-style 16 x 16 patch embedding. Each block
(pre-LayerNorm, residual) is a channel MLP whose hidden layer is gated across tokens:

    Z = GELU(LN(X) U)                      (N, S, d_ffn)
    [Z1, Z2] = split(Z) along channels     two halves of d_ffn / 2 channels
    s(Z) = Z1 * (W LN(Z2) + b)             the Spatial Gating Unit: W is an S x S matrix over tokens, b in R^S
    Y = X + s(Z) V                         V: d_ffn / 2 -> d_model

W starts near zero and b at one, so every block starts as a plain FFN (s(Z) ~ Z1) and learns its token mixing.
There is no position embedding: W is tied to token positions. The network ends with LayerNorm, global average
pooling over the tokens and a linear classifier. Sizes (Table 1): Ti (30 blocks, d_model 128, d_ffn 768),
S (30, 256, 1536), B (30, 512, 3072).

The authors released no vision code. Where the paper is silent we follow timm's ``gmlp_*`` (the weights timm releases
for gMLP-S come from it, and our tensor names are timm's): LayerNorm eps 1e-6 before each block and at the end,
1e-5 inside the gating unit; the other linear layers Xavier-uniform with biases ~ N(0, 1e-6) inside the MLPs, the
patch embedding LeCun-normal, the head zero-initialised; W ~ N(0, 1e-6) and b = 1 (the paper's "near zero" and
"ones"). Stochastic depth: the paper's survival probabilities (Table 1: 1.00, 0.95, 0.80 for Ti, S, B) are a
training setting, ``drop_path_rate`` = 0, 0.05, 0.2 here, rising linearly over the blocks (timm uses one rate for
all blocks); the registered models default to 0.

Input sizes: W is an S x S matrix for the patch grid of ``img_size`` (default 224: 14 x 14), and the paper's model
runs only that grid (so does timm's). Images are zero-padded to whole patches as MLP-Mixer's stem does
(``layers.PatchEmbed`` with ``padding="same"``). For another patch grid, ``grid_mismatch="resample"`` (default, **our
departure**, the same rule as our MLP-Mixer) resizes W along both token axes and b bilinearly over the grid, W scaled
by S / S'; ``grid_mismatch="error"`` gives the paper's behaviour as a clear ValueError; ``img_size=(H, W)`` builds a
model for another size. At the native grid nothing changes. The gating unit halves the channel count and is bound to
one token count, so it does not fit the attention contract ((N, C, H, W) -> same shape at any size) and is not
registered as an attention.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import DropPath, PatchEmbed, check_choice, check_positive_int, drop_path_rates, to_2tuple
from ..layers.init import xavier_mlp_init
from ..registry import register_model
from ..timm import register_timm_rules
from .mlp_mixer import PatchTokenNet, resize_grid


class SpatialGatingUnit(nn.Module):
    """(N, S', 2D) -> (N, S', D): the first half gated by a token-wise linear map of the normalised second half.

    W (S x S) and b are built for the patch grid ``grid``; another grid is resampled or refused (``grid_mismatch``).
    """

    def __init__(self, dim: int, grid: tuple[int, int], grid_mismatch: str = "resample"):
        super().__init__()
        self.grid, self.grid_mismatch = tuple(grid), grid_mismatch
        self.norm = nn.LayerNorm(dim // 2)
        self.proj = nn.Linear(grid[0] * grid[1], grid[0] * grid[1])

    def weights(self, grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """W (S' x S') and b (S') for a gh x gw patch grid: read as maps over the grid and resized bilinearly,
        W scaled by S / S' so that its sum over the S' inputs keeps its scale (as MLP-Mixer's token mixing)."""
        w, b = self.proj.weight, self.proj.bias
        if tuple(grid) == self.grid:
            return w, b
        if self.grid_mismatch == "error":
            raise ValueError(f"this gMLP's spatial gating is built for a {self.grid[0]}x{self.grid[1]} patch grid, "
                             f"got {grid[0]}x{grid[1]}; build the model with img_size for that input, or pass "
                             f"grid_mismatch='resample'")
        scale = (self.grid[0] * self.grid[1]) / (grid[0] * grid[1])
        w = resize_grid(resize_grid(w, self.grid, grid).t(), self.grid, grid).t() * scale
        return w, resize_grid(b, self.grid, grid)

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        u, v = x.chunk(2, dim=-1)
        w, b = self.weights(grid)
        return u * F.linear(self.norm(v).transpose(1, 2), w, b).transpose(1, 2)


class GatedMlp(nn.Module):
    """fc1 (d_model -> d_ffn) -> GELU -> spatial gating (d_ffn -> d_ffn / 2) -> fc2 (-> d_model), on (N, S, d)."""

    def __init__(self, dim: int, hidden: int, grid: tuple[int, int], drop: float = 0.0,
                 grid_mismatch: str = "resample"):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.drop1 = nn.Dropout(drop)
        self.gate = SpatialGatingUnit(hidden, grid, grid_mismatch)
        self.fc2 = nn.Linear(hidden // 2, dim)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        return self.drop2(self.fc2(self.gate(self.drop1(self.act(self.fc1(x))), grid)))


class GMlpBlock(nn.Module):
    """x + DropPath(GatedMlp(LN(x))) on (N, S, d_model) tokens."""

    def __init__(self, dim: int, hidden: int, grid: tuple[int, int], drop: float = 0.0, drop_path: float = 0.0,
                 grid_mismatch: str = "resample"):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.mlp_channels = GatedMlp(dim, hidden, grid, drop, grid_mismatch)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        return x + self.drop_path(self.mlp_channels(self.norm(x), grid))


class GMlp(PatchTokenNet):
    """(N, in_chans, H, W) -> (N, num_classes), any H, W >= 1 (see the module docstring for other sizes).
    ``forward_features``: (N, S, d_model) normalised tokens; ``forward``: their mean -> head.

    Args:
        img_size: the input size (int or (H, W)) the gating units are built for. patch_size: P.
        embed_dim: d_model. depth: L. mlp_ratio: d_ffn / d_model (6 in every Table 1 model).
        drop_rate: dropout in the MLPs. drop_path_rate: stochastic depth, linear over the blocks.
        grid_mismatch: "resample" (our departure) or "error" (the paper's fixed size) for inputs whose patch grid
        is not img_size's.
    """

    arch = "gMLP"

    def __init__(self, img_size=224, patch_size: int = 16, in_chans: int = 3, num_classes: int = 1000,
                 embed_dim: int = 256, depth: int = 30, mlp_ratio: float = 6.0, drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, grid_mismatch: str = "resample"):
        super().__init__()
        for name, value in dict(patch_size=patch_size, in_chans=in_chans, num_classes=num_classes,
                                embed_dim=embed_dim, depth=depth).items():
            check_positive_int(name, value)
        img_hw = to_2tuple(img_size)
        for v in img_hw:
            check_positive_int("img_size", v)
        hidden = int(embed_dim * mlp_ratio)
        if hidden < 2 or hidden % 2:
            raise ValueError(f"embed_dim * mlp_ratio must be an even number >= 2 (d_ffn is split in two), "
                             f"got {embed_dim} * {mlp_ratio}")
        if not 0.0 <= drop_rate < 1.0 or not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"drop_rate and drop_path_rate must be in [0, 1), got {drop_rate!r}, {drop_path_rate!r}")
        check_choice("grid_mismatch", grid_mismatch, ("resample", "error"))
        self.grid = (math.ceil(img_hw[0] / patch_size), math.ceil(img_hw[1] / patch_size))
        self.stem = PatchEmbed(patch_size, in_chans, embed_dim, padding="same")  # as MLP-Mixer's stem
        self.blocks = nn.ModuleList([GMlpBlock(embed_dim, hidden, self.grid, drop_rate, r, grid_mismatch)
                                     for r in drop_path_rates(drop_path_rate, depth)])
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.num_features = embed_dim
        self.head = nn.Linear(embed_dim, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        xavier_mlp_init(self)
        for m in self.modules():
            if isinstance(m, SpatialGatingUnit) and not m.proj.weight.is_meta:  # W near zero, b = 1 (Sec. 2.1)
                nn.init.normal_(m.proj.weight, std=1e-6)
                nn.init.ones_(m.proj.bias)


# timm's gmlp_* (MlpMixer with SpatialGatingBlock, timm/models/mlp_mixer.py) use the same tensor names.
register_timm_rules(GMlp, renames=())

_VARIANTS = {"gmlp_ti16_224": 128, "gmlp_s16_224": 256, "gmlp_b16_224": 512}  # Table 1: d_model; d_ffn = 6 d_model
for _name, _dim in _VARIANTS.items():
    register_model(_name, GMlp, timm=_name, img_size=224, patch_size=16, embed_dim=_dim, depth=30, mlp_ratio=6.0)
