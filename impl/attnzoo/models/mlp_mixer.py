"""MLP-Mixer (Tolstikhin, Houlsby, Kolesnikov, Beyer, Zhai, Unterthiner, Yung, Steiner, Keysers, Uszkoreit, Lucic &
Dosovitskiy, NeurIPS 2021, arXiv:2105.01601).

The image is cut into P x P patches, each linearly embedded to C channels (a stride-P convolution), giving an
S x C table (S patches). Each Mixer layer applies two MLPs with pre-LayerNorm and a skip connection (Eq. 1):

    U = X + W2 GELU(W1 LN(X)^T)^T   (token mixing: one MLP S -> D_S -> S, shared by all channels)
    Y = U + W4 GELU(W3 LN(U))       (channel mixing: one MLP C -> D_C -> C, shared by all patches)

then a LayerNorm, global average pooling over the patches and a linear head (zero-initialised). No convolution
beyond the patch embedding, no attention, no position embedding: the token-mixing MLP sees positions through its
weights. Sizes (Table 1): S/16 (8 layers, C 512, D_S 256, D_C 2048), B/16 (12, 768, 384, 3072),
L/16 (24, 1024, 512, 4096).

Following the authors' code (google-research/vision_transformer, vit_jax/models_mixer.py): the MLPs use flax's
``nn.gelu``, JAX's tanh approximation of GELU (lines 22-29), our default ``gelu="tanh"``; timm's ``mixer_*`` use the
exact erf form, ``gelu="exact"`` (then timm's weights give timm's logits). LayerNorm eps 1e-6 and the zero-initialised
head are flax's defaults there (lines 39-44, 66-70). Their stem is a flax ``nn.Conv`` with its default "SAME" padding
(lines 61-62): an input whose sides are not multiples of P is zero-padded to whole patches, half of the padding
(rounded down) before and the rest after, which we reproduce.

Other input sizes: the token-mixing MLP is bound to the S patches of ``img_size``. The authors' code creates its
Dense layer for the patch count it first sees and cannot run another one; timm builds it for ``img_size`` and
refuses other inputs. Here ``grid_mismatch="resample"`` (default) resamples the token-mixing weights to the actual
patch grid, bilinearly over the grid as ViT resizes its position embeddings: W1 (D_S x S) and W2, b2 (S outputs) are
read as maps over the gh x gw grid and resized, and W1 is multiplied by S / S' so that the sum over S' patches keeps
its scale. This is our departure (neither the paper nor the code does it); at the native grid nothing changes.
``grid_mismatch="error"`` gives the authors' behaviour as a clear ValueError. Because its behaviour at other sizes is
ours rather than the paper's, the token-mixing MLP is not registered as a stand-alone attention.
"""
from __future__ import annotations

import functools

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import (check_images, DropPath, Mlp, PatchEmbed, check_choice, check_positive_int, drop_path_rates,
                      to_2tuple)
from ..registry import register_model
from ..timm import register_timm_rules

_GELU = {"tanh": functools.partial(nn.GELU, approximate="tanh"), "exact": nn.GELU}


def resize_grid(t: torch.Tensor, grid: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """(..., g0h * g0w) values over a grid -> (..., gh * gw), bilinear (half-pixel centres)."""
    lead = t.shape[:-1]
    t = t.reshape(-1, 1, *grid)
    t = F.interpolate(t, size=size, mode="bilinear", align_corners=False)
    return t.reshape(*lead, size[0] * size[1])


class MixerBlock(nn.Module):
    """Token mixing then channel mixing, each LayerNorm -> MLP -> residual, on (N, S, C) tokens."""

    def __init__(self, dim: int, grid: tuple[int, int], tokens_mlp_dim: int, channels_mlp_dim: int,
                 act, drop: float = 0.0, drop_path: float = 0.0, grid_mismatch: str = "resample"):
        super().__init__()
        self.grid = grid
        self.grid_mismatch = grid_mismatch
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp_tokens = Mlp(grid[0] * grid[1], tokens_mlp_dim, act=act, drop=drop)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp_channels = Mlp(dim, channels_mlp_dim, act=act, drop=drop)

    def token_mixing(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """The token-mixing MLP on (N, S', C), applied along S' (each channel separately)."""
        x = x.transpose(1, 2)
        if tuple(grid) == self.grid:
            return self.mlp_tokens(x).transpose(1, 2)
        if self.grid_mismatch == "error":
            raise ValueError(f"this MLP-Mixer's token-mixing MLP is built for a {self.grid[0]}x{self.grid[1]} patch "
                             f"grid, got {grid[0]}x{grid[1]}; build it with img_size for that input, or pass "
                             f"grid_mismatch='resample'")
        m = self.mlp_tokens
        s0, s1 = self.grid[0] * self.grid[1], grid[0] * grid[1]
        w1 = resize_grid(m.fc1.weight, self.grid, grid) * (s0 / s1)                    # (D_S, S')
        w2 = resize_grid(m.fc2.weight.t(), self.grid, grid).t()                       # (S', D_S)
        b2 = resize_grid(m.fc2.bias, self.grid, grid)                                 # (S',)
        y = m.drop1(m.act(F.linear(x, w1, m.fc1.bias)))
        return m.drop2(F.linear(y, w2, b2)).transpose(1, 2)

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        x = x + self.drop_path(self.token_mixing(self.norm1(x), grid))
        return x + self.drop_path(self.mlp_channels(self.norm2(x)))


class PatchTokenNet(nn.Module):
    """The isotropic pipeline shared with gMLP: ``stem`` (patch tokens and their grid), ``blocks`` (each called as
    ``block(x, grid)``), ``norm``, mean over the tokens, ``head``; subclasses build these four."""

    arch = "MLP-Mixer"

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, S, D) normalized patch tokens."""
        check_images(self.arch, x)
        x, grid = self.stem(x)
        for block in self.blocks:
            x = block(x, grid)
        return self.norm(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x).mean(1))


class MlpMixer(PatchTokenNet):
    """(N, in_chans, H, W) -> (N, num_classes) logits; any H, W >= 1 (see the module docstring for other sizes).

    Args:
        img_size: the input size (int or (H, W)) the token-mixing MLPs are built for; patch_size: P.
        embed_dim: C. depth: number of Mixer layers. tokens_mlp_dim: D_S. channels_mlp_dim: D_C.
        gelu: "tanh" (the authors' flax nn.gelu) or "exact" (timm). drop_rate: dropout in the MLPs.
        drop_path_rate: stochastic depth, linear over blocks. grid_mismatch: "resample" or "error" for inputs whose
        patch grid is not img_size's.
    """

    def __init__(self, img_size=224, patch_size: int = 16, in_chans: int = 3, num_classes: int = 1000,
                 embed_dim: int = 768, depth: int = 12, tokens_mlp_dim: int = 384, channels_mlp_dim: int = 3072,
                 gelu: str = "tanh", drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                 grid_mismatch: str = "resample"):
        super().__init__()
        for name, value in dict(patch_size=patch_size, in_chans=in_chans, num_classes=num_classes,
                                embed_dim=embed_dim, depth=depth, tokens_mlp_dim=tokens_mlp_dim,
                                channels_mlp_dim=channels_mlp_dim).items():
            check_positive_int(name, value)
        img_hw = to_2tuple(img_size)
        for v in img_hw:
            check_positive_int("img_size", v)
        if img_hw[0] % patch_size or img_hw[1] % patch_size:
            raise ValueError(f"img_size={img_size} must be a multiple of patch_size={patch_size}")
        check_choice("gelu", gelu, tuple(_GELU))
        self.grid_mismatch = check_choice("grid_mismatch", grid_mismatch, ("resample", "error"))
        if not 0.0 <= drop_rate < 1.0 or not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"drop_rate and drop_path_rate must be in [0, 1), got {drop_rate!r}, {drop_path_rate!r}")
        self.grid = (img_hw[0] // patch_size, img_hw[1] // patch_size)
        self.stem = PatchEmbed(patch_size, in_chans, embed_dim, padding="same")  # flax's "SAME" convolution
        self.blocks = nn.ModuleList([
            MixerBlock(embed_dim, self.grid, tokens_mlp_dim, channels_mlp_dim, _GELU[gelu], drop_rate, r,
                       grid_mismatch) for r in drop_path_rates(drop_path_rate, depth)])
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.num_features = embed_dim
        self.head = nn.Linear(embed_dim, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        """flax defaults, as the authors' code: LeCun normal (truncated) kernels, zero biases, zero head."""
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                fan_in = m.weight[0].numel()
                std = (1.0 / fan_in) ** 0.5 / 0.87962566103423978  # jax: unit normal cut at +-2, rescaled
                nn.init.trunc_normal_(m.weight, std=std, a=-2 * std, b=2 * std)
                nn.init.zeros_(m.bias)
        nn.init.zeros_(self.head.weight)



# timm's MlpMixer (timm/models/mlp_mixer.py) uses the same names for every tensor.
register_timm_rules(MlpMixer, renames=())

_VARIANTS = {
    "mixer_s16_224": dict(embed_dim=512, depth=8, tokens_mlp_dim=256, channels_mlp_dim=2048),
    "mixer_b16_224": dict(embed_dim=768, depth=12, tokens_mlp_dim=384, channels_mlp_dim=3072),
    "mixer_l16_224": dict(embed_dim=1024, depth=24, tokens_mlp_dim=512, channels_mlp_dim=4096),
}
for _name, _cfg in _VARIANTS.items():
    register_model(_name, MlpMixer, timm=_name, img_size=224, patch_size=16, **_cfg)
