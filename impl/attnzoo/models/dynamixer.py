"""DynaMixer (Wang, Jiang, Zhu, Yuan, Song & Liu, "DynaMixer: A Vision MLP Architecture with Dynamic Mixing",
ICML 2022, arXiv:2201.12083; official code: github.com/ziyuwwang/DynaMixer).

MLP-like models mix the tokens of a row or a column with a fixed matrix. DynaMixer generates that matrix from the
tokens themselves. For the L tokens X in R^{L x D} of one row (or column), split into G segments (the code's
``num_head``) of D / G channels:

    Z = X W_r                                    (L, G d)    one linear layer reduces every token to d channels
                                                             per segment (d = ``reduced_dim``: 2 for S/M, 8 for L)
    P_g = softmax_rows(reshape(W_g vec(Z_g) + b, (L, L)))    the generating layer W_g: L d -> L^2, shared by the
                                                             segments; each output token's weights sum to one
    Y_g = P_g X_g                                (L, D / G)  each segment mixed by its own matrix
    DynaMixerOp(X) = concat_g(Y_g) W_o                       an output projection

(In the code's layout the generated matrix is indexed (input, output) and normalised over the inputs,
``softmax(dim=-2)``, then ``X^T P``; that is the equation above with P transposed.) The DynaMixer block (the token
mixer registered here as the attention ``dynamixer``) applies one such operator along every column (height
mixing, Y_h) and another along every row (width mixing, Y_w), a linear channel mixing Y_c = X W_c, and fuses the
three with per-channel softmax weights from their pooled sum, as Vision Permutator's weighted Permute-MLP (it is
written as a subclass of ours, ``attention.vision_permutator.WeightedPermuteMLP``, whose fusion it reuses):

    a = mean_{h,w}(Y_h + Y_w + Y_c);  [alpha_h, alpha_w, alpha_c] = softmax_3(MLP(a));
    Y = (alpha_h Y_h + alpha_w Y_w + alpha_c Y_c) W_proj.

This weighted fusion is the official code's (the reported models); the paper's Algorithm 1 writes a plain sum,
Y = (Y_h + Y_w + Y_c) W_proj, offered as ``fusion="sum"``.

A layer is x + DynaMixerBlock(LN(x)), then x + MLP(LN(x)) (hidden 3D, GELU). The models are ViP's: a 7x7 stride-7
patch embedding, four stages of layers with a 2x2 stride-2 patch merging (or a 1x1 convolution where only the
width changes) between them, LayerNorm, average pooling, a linear head. Variants (``models/configs`` of the
official code, the paper's Table 1): DynaMixer-S (layers 4-3-8-3, widths 192-384-384-384, segments 8-16-16-16,
d = 2), -M (4-3-14-3, 256-256-512-512, 8-8-16-16, d = 2, the merging after stage 2), -L (8-8-16-4,
256-512-512-512, 8-16-16-16, d = 8). Their README gives 26 M, 57 M and 97 M parameters.

Size policy. W_g maps L d numbers to L x L weights: the operator is bound to one row length L (the code's
``resolution``: 32 tokens in the first stage, 16 after the merging, from 224 x 224 images). The authors' code cannot
run any other length (a shape error in the generating layer) and their transfer-learning script resizes every image
to 224. Here ``grid_mismatch`` chooses:

* ``"error"``, the authors' behaviour: a ValueError naming the row and column lengths the block accepts;
* ``"resample"`` (default, **our departure**, the rule of this zoo's MLP-Mixer, gMLP and sMLPNet, so that the block
  and the models take any size, batch 1 and odd non-square maps included): W_g and b are read as functions of
  (input position, output position, reduced input position) and resized linearly (as ``F.interpolate``'s
  trilinear mode, ``align_corners=False``) to the new length L', W_g scaled
  by L / L' since its input now has L' tokens; the softmax renormalises each output's weights over the L' inputs.
  At the built length nothing changes.

The block's lengths come from ``grid`` (an int for square maps as in the authors' code, or (H, W): the height
mixing is built for H tokens, the width mixing for W); the models derive them from ``img_size`` (224: the code's
resolutions 32/16). Images are zero-padded to whole 7 x 7 patches and odd grids to even before a 2 x 2 merging (as
our ViP). Defaults of the attention for any channel count: grid 16 (the later stages' length), 8 segments (the
first stage's), d = 2. Initialisation as the authors': truncated normal (std 0.02) linear weights, zero biases.
No timm twin (timm has no DynaMixer).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..attention.vision_permutator import VisionPermutator, WeightedPermuteMLP
from ..layers import (check_choice, check_divisible, check_images, check_positive_int, linear_resize_matrix, to_2tuple,
                      trunc_normal_init)
from ..layers.tokens import check_hw
from ..registry import register_attention, register_model

GRID_MISMATCH = ("resample", "error")


class DynaMixerOp(nn.Module):
    """(B, L', C) -> (B, L', C): token mixing of a row (or column) by matrices generated from its own tokens.

    Args:
        channels: C. seq_len: L, the row length the generating layer is built for. num_heads: G segments
            (C % G == 0). reduced_dim: d, channels per segment after the reduction. grid_mismatch: see the module
            docstring ("resample" or "error").
    """

    def __init__(self, channels: int, seq_len: int, num_heads: int = 8, reduced_dim: int = 2,
                 grid_mismatch: str = "resample"):
        super().__init__()
        for name, value in (("channels", channels), ("seq_len", seq_len), ("num_heads", num_heads),
                            ("reduced_dim", reduced_dim)):
            check_positive_int(name, value)
        check_divisible("channels", channels, num_heads, "num_heads")
        self.seq_len, self.num_heads, self.reduced_dim = seq_len, num_heads, reduced_dim
        self.grid_mismatch = check_choice("grid_mismatch", grid_mismatch, GRID_MISMATCH)
        self.compress = nn.Linear(channels, num_heads * reduced_dim)
        self.generate = nn.Linear(seq_len * reduced_dim, seq_len * seq_len)
        self.out = nn.Linear(channels, channels)

    def generator(self, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The generating layer for rows of ``length`` tokens: weight (length^2, length d), bias (length^2,).

        Rows of the weight are (input i, output j) pairs, columns (token t, reduced channel r): the code's layout.
        """
        w, b = self.generate.weight, self.generate.bias
        n, d = self.seq_len, self.reduced_dim
        if length == n:
            return w, b
        if self.grid_mismatch == "error":
            raise ValueError(f"this DynaMixer operator is built for rows of {n} tokens, got {length}; build it for "
                             f"that length (grid, or img_size for the models) or pass grid_mismatch='resample'")
        r = linear_resize_matrix(n, length, w)                                   # (L', L)
        w = torch.einsum("ai,bj,ct,ijtr->abcr", r, r, r, w.reshape(n, n, n, d)) * (n / length)
        b = torch.einsum("ai,bj,ij->ab", r, r, b.reshape(n, n))
        return w.reshape(length * length, length * d), b.reshape(length * length)

    def mixing_matrices(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L', C) -> P of shape (B, G, L', L'), P[..., j, i] the weight of input token i in output token j
        (each row sums to one)."""
        bsz, length, _ = x.shape
        z = self.compress(x).reshape(bsz, length, self.num_heads, self.reduced_dim).transpose(1, 2)
        w, b = self.generator(length)
        logits = F.linear(z.reshape(bsz, self.num_heads, length * self.reduced_dim), w, b)
        return logits.reshape(bsz, self.num_heads, length, length).transpose(-1, -2).softmax(dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bsz, length, c = x.shape
        p = self.mixing_matrices(x)
        segments = x.reshape(bsz, length, self.num_heads, c // self.num_heads).transpose(1, 2)  # (B, G, L', C/G)
        return self.out((p @ segments).transpose(1, 2).reshape(bsz, length, c))


@register_attention("dynamixer", layout="nlc")
class DynaMixerBlock(WeightedPermuteMLP):
    """(N, L, C) -> (N, L, C), ``forward(x, hw=(H, W))`` (or (N, C, H, W) maps): dynamic height and width mixing
    plus channel mixing, fused by per-channel softmax weights.

    Size requirement: built for H = grid[0] and W = grid[1] tokens; other sizes are resampled
    (``grid_mismatch="resample"``, our default) or refused with a ValueError naming the accepted sizes
    (``"error"``, the authors' behaviour).

    Args:
        channels: C. grid: the H x W token grid the operators are built for (int: square; default 16).
        num_heads: G segments (default 8). reduced_dim: d (default 2). qkv_bias: bias of the channel mixing
            (the authors': none). proj_drop: dropout after the projection. grid_mismatch: "resample" or "error".
        fusion: "reweight" (the official code: per-channel softmax weights) or "sum" (the paper's Algorithm 1:
            Y_h + Y_w + Y_c, no fusion MLP).
    """

    def __init__(self, channels: int, grid=16, num_heads: int = 8, reduced_dim: int = 2, qkv_bias: bool = False,
                 proj_drop: float = 0.0, grid_mismatch: str = "resample", fusion: str = "reweight"):
        super().__init__(channels, segment_dim=1, qkv_bias=qkv_bias, proj_drop=proj_drop)
        del self.mlp_h, self.mlp_w  # ViP's fixed height / width layers: replaced by the dynamic operators
        if check_choice("fusion", fusion, ("reweight", "sum")) == "sum":
            self.reweight = None
        gh, gw = to_2tuple(grid)
        self.grid = (gh, gw)
        self.mix_h = DynaMixerOp(channels, gh, num_heads, reduced_dim, grid_mismatch)
        self.mix_w = DynaMixerOp(channels, gw, num_heads, reduced_dim, grid_mismatch)
        self.grid_mismatch = grid_mismatch

    def branches(self, x: torch.Tensor, hw=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The height, width and channel branches, each (N, H, W, C)."""
        n, length, c = x.shape
        h, w = check_hw(hw, length)
        if self.grid_mismatch == "error" and (h, w) != self.grid:
            raise ValueError(f"this DynaMixer block is built for a {self.grid[0]}x{self.grid[1]} token grid "
                             f"(H x W), got {h}x{w}; build it for that grid (grid=({h}, {w}); img_size for the "
                             f"DynaMixer models) or pass grid_mismatch='resample'")
        grid = x.reshape(n, h, w, c)
        y_h = self.mix_h(grid.transpose(1, 2).reshape(n * w, h, c)).reshape(n, w, h, c).transpose(1, 2)
        y_w = self.mix_w(grid.reshape(n * h, w, c)).reshape(n, h, w, c)
        return y_h, y_w, self.mlp_c(grid)

    def branch_weights(self, branches) -> torch.Tensor:
        """(3, N, C) fusion weights: ViP's per-channel softmax, or ones for the paper's plain sum."""
        if self.reweight is None:
            n, _, _, c = branches[0].shape
            return branches[0].new_ones(3, n, c)
        return super().branch_weights(branches)


class DynaMixer(VisionPermutator):
    """(N, in_chans, H, W) -> (N, num_classes); any H, W >= 1 (see the size policy in the module docstring).

    Our ViP (``attention.vision_permutator.VisionPermutator``: patch embedding, stages, mergings, head) with the
    DynaMixer block as every layer's token mixer.

    Args:
        layers, embed_dims, num_heads, reduced_dims, mlp_ratios: per stage: depth, width, segments G, d, MLP ratio.
        transitions: per stage, whether a 2 x 2 stride-2 patch merging follows it.
        img_size: the input size the operators are built for (224: grids 32 and 16, the authors' resolutions).
        patch_size: 7. grid_mismatch: "resample" (default, our departure) or "error" (the authors').
        drop_path_rate: stochastic depth, linear over all layers. skip_lam: residual scaling (1 as the authors).
    """

    def __init__(self, layers=(4, 3, 8, 3), embed_dims=(192, 384, 384, 384), num_heads=(8, 16, 16, 16),
                 reduced_dims=(2, 2, 2, 2), mlp_ratios=(3, 3, 3, 3), transitions=(True, False, False, False),
                 img_size: int = 224, patch_size: int = 7, in_chans: int = 3, num_classes: int = 1000,
                 grid_mismatch: str = "resample", drop_path_rate: float = 0.0, skip_lam: float = 1.0):
        check_positive_int("img_size", img_size)
        check_choice("grid_mismatch", grid_mismatch, GRID_MISMATCH)
        if not all(len(v) == len(layers) for v in (embed_dims, num_heads, reduced_dims, mlp_ratios, transitions)):
            raise ValueError("layers, embed_dims, num_heads, reduced_dims, mlp_ratios and transitions need one entry "
                             "per stage")
        super().__init__(layers, embed_dims, (1,) * len(layers), mlp_ratios, transitions, patch_size, in_chans,
                         num_classes, drop_path_rate, skip_lam)
        grid, self.grids = math.ceil(img_size / patch_size), []
        for s, (stage, down) in enumerate(zip(self.stages, self.downsamples)):
            self.grids.append(grid)
            for layer in stage:  # ViP's weighted Permute-MLP replaced by the DynaMixer block
                layer.attn = DynaMixerBlock(embed_dims[s], grid, num_heads[s], reduced_dims[s],
                                            grid_mismatch=grid_mismatch)
                layer.attn.apply(trunc_normal_init)
            if isinstance(down, nn.Conv2d):
                grid = math.ceil(grid / down.stride[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_images(type(self).__name__, x)
        return super().forward(x)


# The authors' configurations (models/configs/conf_dynamixer.py of the official code; the paper's Table 1).
register_model("dynamixer_s", DynaMixer, layers=(4, 3, 8, 3), embed_dims=(192, 384, 384, 384),
               num_heads=(8, 16, 16, 16), reduced_dims=(2, 2, 2, 2), transitions=(True, False, False, False))
register_model("dynamixer_m", DynaMixer, layers=(4, 3, 14, 3), embed_dims=(256, 256, 512, 512),
               num_heads=(8, 8, 16, 16), reduced_dims=(2, 2, 2, 2), transitions=(False, True, False, False))
register_model("dynamixer_l", DynaMixer, layers=(8, 8, 16, 4), embed_dims=(256, 512, 512, 512),
               num_heads=(8, 16, 16, 16), reduced_dims=(8, 8, 8, 8), transitions=(True, False, False, False))
