"""Weighted Permute-MLP of Vision Permutator (Hou, Jiang, Yuan, Cheng, Yan & Feng, "Vision Permutator: A
Permutable MLP-Like Architecture for Visual Recognition", IEEE TPAMI 2023 (online 2022), arXiv:2106.12368).

MLP-Mixer flattens the H x W grid and mixes all tokens at once. ViP keeps the two axes apart: it encodes
along the height with one linear layer, along the width with another, and along the channels with a third,
then fuses the three results with learned per-channel weights.

Height branch: split the C channels into G segments of S = C / G channels. For every column w and segment g,
the H x S values x[:, w, gS:(g+1)S] are flattened into one vector of length H * S and mapped by a linear layer
W_H (H * S -> H * S), i.e. each output row is a mixture of all rows of that column. The paper chooses G = H so
that H * S = C ("permuting" the height into the channel axis). The width branch does the same along the rows
with W_W; the channel branch is a plain linear map W_C. The fusion ("weighted" Permute-MLP) is split attention:

    a = mean_{h,w}(X_H + X_W + X_C)  in R^C
    [alpha_H, alpha_W, alpha_C] = softmax over the 3 branches of reshape(MLP(a), (3, C))   (MLP: C -> C/4 -> 3C)
    Y = W_proj(alpha_H * X_H + alpha_W * X_W + alpha_C * X_C)

Models: ViP-Small/7, ViP-Medium/7 and ViP-Large/7 (7 x 7 patches, a 2x2 patch merging after the first stage,
MLP ratio 3), registered as ``vip_s7``, ``vip_m7``, ``vip_l7``.

Departures (any input size): W_H and W_W have a size that depends on H and W in the paper (H * S = C with
G = H segments). Here the segment count G (``segment_dim``) is fixed and also sets a fixed *token window* of
G positions along each axis, so W_H and W_W are C x C layers whatever the input size:
* H = G (the paper's setting) is exactly the paper's operator;
* H < G: the column is zero-padded to G rows; the padding adds nothing (the layer's input there is zero) and
  its outputs are dropped, so the result equals using the top-left H * S x H * S block of W_H;
* H > G: the axis is zero-padded to a multiple of G and split into windows of G rows, each mixed by the same
  W_H (height mixing then reaches G rows, not the whole column).
The same holds for W. Defaults for 64 channels: G = 8 segments of 8 channels (the paper uses G = H, e.g. 32
segments at 32 x 32 tokens, which would force 2-channel segments at C = 64). ``forward`` takes ``hw``.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import drop_path_rates, DropPath, Mlp, check_divisible, check_positive_int, trunc_normal_init
from ..layers.patch_embed import pad_to_multiple
from ..layers.tokens import check_hw
from ..layers.tokens import TokenAttention
from ..registry import register_attention, register_model


@register_attention("permute_mlp", layout="nlc")
class WeightedPermuteMLP(TokenAttention):
    """(N, L, C) -> (N, L, C), ``forward(x, hw=(H, W))``: height, width and channel linear mixing, fused by
    per-channel softmax weights.

    Args:
        channels: C. segment_dim: G, number of channel segments and window length along H and W (C % G == 0).
        qkv_bias: biases in W_H, W_W, W_C (the paper's code: none). proj_drop: dropout after the projection.
    """

    def __init__(self, channels: int, segment_dim: int = 8, qkv_bias: bool = False, proj_drop: float = 0.0):
        super().__init__(channels)
        check_positive_int("segment_dim", segment_dim)
        check_divisible("channels", channels, segment_dim, "segment_dim")
        self.segment_dim = segment_dim
        self.mlp_h = nn.Linear(channels, channels, bias=qkv_bias)
        self.mlp_w = nn.Linear(channels, channels, bias=qkv_bias)
        self.mlp_c = nn.Linear(channels, channels, bias=qkv_bias)
        self.reweight = Mlp(channels, max(channels // 4, 1), channels * 3)
        self.proj = nn.Linear(channels, channels)
        self.proj_drop = nn.Dropout(proj_drop)

    def _mix(self, x: torch.Tensor, layer: nn.Linear) -> torch.Tensor:
        """Mix along dim 1 of (N, A, B, C) in windows of G positions, S = C / G channels per segment."""
        n, a, b, c = x.shape
        g = self.segment_dim
        s = c // g
        nw = math.ceil(a / g)
        x = F.pad(x, (0, 0, 0, 0, 0, nw * g - a))  # zero rows at the end of the axis
        # (N, nw, G positions, B, G segments, S) -> (N, nw, B, segments, positions * S)
        t = x.reshape(n, nw, g, b, g, s).permute(0, 1, 3, 4, 2, 5).reshape(n, nw, b, g, g * s)
        t = layer(t).reshape(n, nw, b, g, g, s).permute(0, 1, 4, 2, 3, 5).reshape(n, nw * g, b, c)
        return t[:, :a]

    def branches(self, x: torch.Tensor, hw=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The height, width and channel branches, each (N, H, W, C)."""
        n, length, c = x.shape
        h, w = check_hw(hw, length)
        grid = x.reshape(n, h, w, c)
        x_h = self._mix(grid, self.mlp_h)
        x_w = self._mix(grid.transpose(1, 2), self.mlp_w).transpose(1, 2)
        return x_h, x_w, self.mlp_c(grid)

    def branch_weights(self, branches) -> torch.Tensor:
        """Softmax fusion weights (3, N, C) for the height, width and channel branches."""
        x_h, x_w, x_c = branches
        a = (x_h + x_w + x_c).mean(dim=(1, 2))
        return self.reweight(a).reshape(a.shape[0], a.shape[1], 3).permute(2, 0, 1).softmax(dim=0)

    def forward_tokens(self, x: torch.Tensor, hw=None) -> torch.Tensor:
        parts = self.branches(x, hw)
        weights = self.branch_weights(parts)[:, :, None, None, :]
        out = sum(wt * part for wt, part in zip(weights, parts))
        return self.proj_drop(self.proj(out.flatten(1, 2)))


class Permutator(nn.Module):
    """x + WeightedPermuteMLP(LN(x)), then x + MLP(LN(x)) on (N, L, C) tokens."""

    def __init__(self, dim: int, segment_dim: int, mlp_ratio: float = 3.0, drop_path: float = 0.0,
                 skip_lam: float = 1.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WeightedPermuteMLP(dim, segment_dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)
        self.skip_lam = skip_lam

    def forward(self, x: torch.Tensor, hw) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), hw=hw)) / self.skip_lam
        return x + self.drop_path(self.mlp(self.norm2(x))) / self.skip_lam


class VisionPermutator(nn.Module):
    """(N, in_chans, H, W) -> (N, num_classes); any H, W >= 1.

    Args:
        layers, embed_dims, segment_dims, mlp_ratios: per-stage depth, width, segment count G and MLP ratio.
        transitions: per stage, whether a 2 x 2 stride-2 patch merging follows it (a 1x1 projection is used
            when only the width changes). patch_size: the first embedding's patch size (7 or 14).
        drop_path_rate: stochastic depth, linear over all blocks. skip_lam: residual scaling (paper: 1).
    """

    def __init__(self, layers=(4, 3, 8, 3), embed_dims=(192, 384, 384, 384), segment_dims=(32, 16, 16, 16),
                 mlp_ratios=(3, 3, 3, 3), transitions=(True, False, False, False), patch_size: int = 7,
                 in_chans: int = 3, num_classes: int = 1000, drop_path_rate: float = 0.0, skip_lam: float = 1.0):
        super().__init__()
        check_positive_int("num_classes", num_classes)
        check_positive_int("patch_size", patch_size)
        self.patch_size = patch_size
        self.patch_embed = nn.Conv2d(in_chans, embed_dims[0], patch_size, patch_size)
        rates = drop_path_rates(drop_path_rate, sum(layers))
        self.stages, self.downsamples, i = nn.ModuleList(), nn.ModuleList(), 0
        for s, depth in enumerate(layers):
            self.stages.append(nn.ModuleList([Permutator(embed_dims[s], segment_dims[s], mlp_ratios[s], rates[i + b],
                                                         skip_lam) for b in range(depth)]))
            i += depth
            last = s == len(layers) - 1
            if not last and (transitions[s] or embed_dims[s] != embed_dims[s + 1]):
                k = 2 if transitions[s] else 1
                self.downsamples.append(nn.Conv2d(embed_dims[s], embed_dims[s + 1], k, k))
            else:
                self.downsamples.append(nn.Identity())
        self.norm = nn.LayerNorm(embed_dims[-1])
        self.num_features = embed_dims[-1]
        self.head = nn.Linear(embed_dims[-1], num_classes)
        self.apply(trunc_normal_init)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, D, H', W') feature map after the last stage (before the final norm)."""
        x = self.patch_embed(pad_to_multiple(x, self.patch_size))
        for stage, down in zip(self.stages, self.downsamples):
            n, c, h, w = x.shape
            t = x.flatten(2).transpose(1, 2)
            for blk in stage:
                t = blk(t, (h, w))
            x = t.transpose(1, 2).reshape(n, c, h, w)
            if isinstance(down, nn.Conv2d) and down.stride[0] == 2:
                x = F.pad(x, (0, x.shape[-1] % 2, 0, x.shape[-2] % 2))  # odd grids: pad before the 2x2 merge
            x = down(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x).flatten(2).transpose(1, 2)
        return self.head(self.norm(x).mean(dim=1))


# The authors' configurations (models/vip.py of the official code; Table 1 of the paper).
register_model("vip_s7", VisionPermutator, layers=(4, 3, 8, 3), embed_dims=(192, 384, 384, 384),
               segment_dims=(32, 16, 16, 16), transitions=(True, False, False, False))
register_model("vip_m7", VisionPermutator, layers=(4, 3, 14, 3), embed_dims=(256, 256, 512, 512),
               segment_dims=(32, 32, 16, 16), transitions=(False, True, False, False))
register_model("vip_l7", VisionPermutator, layers=(8, 8, 16, 4), embed_dims=(256, 512, 512, 512),
               segment_dims=(32, 16, 16, 16), transitions=(True, False, False, False))
