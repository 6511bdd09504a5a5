"""CycleMLP (Chen, Xie, Ge, Chen, Liang & Luo, "CycleMLP: A MLP-like Architecture for Dense Prediction", ICLR 2022,
arXiv:2107.10224; the authors' code: ShoufaChen/CycleMLP, cycle_mlp.py).

A channel FC sees one position; a spatial FC (MLP-Mixer) sees every position but is tied to one input size. Cycle FC
is a channel FC whose input channel c is read at a position shifted by a channel-dependent offset that cycles with
period S (the pseudo-kernel size) along one axis. On a channels-last map X (H x W x C_in), for the axis W:

    CycleFC_W(X)[h, w, :] = sum_c W[:, c] * X[h, w + delta(c), c] + b,      delta(c) = (c + S // 2) mod S - S // 2

and zero where w + delta(c) falls outside the map (S = 3: offsets 0, +1, -1, 0, +1, -1, ... over the channels). It has
the parameters and MACs of a channel FC, a receptive field of S positions, and works at any size. The CycleMLP token
mixer sums a 1 x S Cycle FC (along the width), an S x 1 one (along the height) and a channel FC and fuses them with
per-channel softmax weights from their pooled sum (the split-attention fusion of Vision Permutator):

    a = mean_{h,w}(X_W + X_H + X_C);   [alpha_W, alpha_H, alpha_C] = softmax_3(reshape(MLP(a), (C, 3)))
    CycleMLP(X) = proj(alpha_W * X_W + alpha_H * X_H + alpha_C * X_C)          MLP: C -> C / 4 -> 3C, GELU

A block is x + CycleMLP(LN(x)), then x + MLP(LN(x)). The network: a 7 x 7 stride-4 convolution (padding 2), four
stages of blocks with a 3 x 3 stride-2 convolution (padding 1) between them, LayerNorm, global average pooling and a
linear head. CycleMLP-B1..B5 (the authors' code; the paper's Table 10 lists them with the README's parameter counts)
differ in blocks per stage, widths and MLP ratios; every block uses S = 3.

The authors implement Cycle FC with torchvision's deformable convolution (a 1 x 1 kernel, one fixed integer offset per
input channel). Bilinear sampling at integer offsets reads a single pixel and deformable convolution reads zero
outside the map, so the same numbers come from shifting each channel by its offset (one zero padding, a slice per
residue c mod S) and one channel FC: this file does that (no deformable-convolution kernel, no extra MACs, any device,
traced by torch._dynamo). ``tests/models/test_cyclemlp.py`` checks it against ``torchvision.ops.deform_conv2d`` with
the authors' offset layout. The offsets follow the code (channel 0 unshifted); the paper's Eq. 2 writes
delta(c) = c mod S - 1, the same pattern with channels rotated by one, which only relabels channels.

Names and shapes of the tensors follow the authors' code (``patch_embed.proj``, ``network.<i>``, ``attn.sfc_h``,
``attn.sfc_w``, ``attn.mlp_c``, ``attn.reweight``, ``norm``, ``head``; Cycle FC weights (C_out, C_in, 1, 1)), so their
checkpoints load with ``load_state_dict(..., strict=False)``: their ``offset`` buffers are the only extra entries. As
in their code: ``sfc_h`` is the 1 x S Cycle FC (it mixes along the width), ``sfc_w`` the S x 1 one; the channel FC
has no bias; linear and Cycle FC weights truncated-normal (std 0.02) with zero biases, LayerNorm eps 1e-5,
convolutions PyTorch's default; stochastic depth rising linearly over all blocks. Their unused ``drop_rate`` and
``attn_drop_rate`` arguments are left out, and so is ``skip_lam`` (a divisor of both residual branches, 1 in every
released model). timm has no CycleMLP.

The token mixer is registered as the token mechanism ``cycle_mlp`` (S = 3, any grid).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import (check_images, DropPath, Mlp, TokenAttention, check_choice, check_positive_int, check_stages,
                      drop_path_rates, tokens_to_grid, trunc_normal_init)
from ..registry import register_attention, register_model


def cycle_offsets(channels: int, pseudo_kernel: int) -> list[int]:
    """Offset of every input channel along the Cycle FC's axis: (c + S // 2) mod S - S // 2 (the authors' code)."""
    half = pseudo_kernel // 2
    return [(c + half) % pseudo_kernel - half for c in range(channels)]


class CycleFC(nn.Module):
    """Cycle FC on a channels-last map: (N, H, W, C_in) -> (N, H, W, C_out).

    Args:
        in_channels, out_channels: C_in, C_out. pseudo_kernel: S, the period of the offsets (3 in every CycleMLP).
        axis: "w" (the authors' 1 x S, ``sfc_h``) or "h" (S x 1, ``sfc_w``). bias: a bias after the sum.
    """

    def __init__(self, in_channels: int, out_channels: int, pseudo_kernel: int = 3, axis: str = "w",
                 bias: bool = True):
        super().__init__()
        check_positive_int("in_channels", in_channels)
        check_positive_int("out_channels", out_channels)
        self.pseudo_kernel = check_positive_int("pseudo_kernel", pseudo_kernel)
        self.axis = check_choice("axis", axis, ("h", "w"))
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        nn.init.trunc_normal_(self.weight, std=0.02)
        # Which of the S padded positions around each output pixel channel c reads: delta(c) + S // 2.
        taps = [d + pseudo_kernel // 2 for d in cycle_offsets(in_channels, pseudo_kernel)]
        self.register_buffer("taps", torch.tensor(taps).view(in_channels, 1), persistent=False)

    def shift(self, x: torch.Tensor) -> torch.Tensor:
        """(N, H, W, C_in) -> (N, H, W, C_in): channel c read at its offset along the axis, zero outside the map."""
        dim = 2 if self.axis == "w" else 1
        ends = (self.pseudo_kernel // 2, self.pseudo_kernel - 1 - self.pseudo_kernel // 2)
        pad = (0, 0, *ends) if dim == 2 else (0, 0, 0, 0, *ends)  # F.pad lists the last dimension first
        windows = F.pad(x, pad).unfold(dim, self.pseudo_kernel, 1)  # (N, H, W, C_in, S), a view
        return windows.gather(-1, self.taps.expand(*x.shape, 1)).squeeze(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.shift(x), self.weight.flatten(1), self.bias)

    def extra_repr(self) -> str:
        out, inp = self.weight.shape[:2]
        return f"{inp}, {out}, pseudo_kernel={self.pseudo_kernel}, axis={self.axis!r}, bias={self.bias is not None}"


@register_attention("cycle_mlp", layout="nlc")
class CycleMLPMixer(TokenAttention):
    """(N, L, C) tokens with ``hw=(H, W)`` (or (N, C, H, W) maps) -> same shape: 1 x S and S x 1 Cycle FCs and a
    channel FC fused by per-channel softmax weights, then a projection. ``mix`` takes the (N, H, W, C) grid.

    Args:
        channels: C. pseudo_kernel: S (3, the authors'). qkv_bias: a bias in the channel FC (the authors': none).
        proj_drop: dropout after the projection.
    """

    def __init__(self, channels: int, pseudo_kernel: int = 3, qkv_bias: bool = False, proj_drop: float = 0.0):
        super().__init__(channels)
        self.mlp_c = nn.Linear(channels, channels, bias=qkv_bias)
        self.sfc_h = CycleFC(channels, channels, pseudo_kernel, axis="w")
        self.sfc_w = CycleFC(channels, channels, pseudo_kernel, axis="h")
        self.reweight = Mlp(channels, max(channels // 4, 1), 3 * channels)
        self.proj = nn.Linear(channels, channels)
        self.proj_drop = nn.Dropout(proj_drop)

    def branch_weights(self, branches: torch.Tensor) -> torch.Tensor:
        """(3, N, C) softmax weights of the width, height and channel branches ((3, N, H, W, C), stacked)."""
        pooled = branches.sum(0).mean(dim=(1, 2))
        n, c = pooled.shape
        return self.reweight(pooled).reshape(n, c, 3).permute(2, 0, 1).softmax(dim=0)

    def mix(self, x: torch.Tensor) -> torch.Tensor:
        """(N, H, W, C) -> (N, H, W, C)."""
        branches = torch.stack([self.sfc_h(x), self.sfc_w(x), self.mlp_c(x)])
        alpha = self.branch_weights(branches)[:, :, None, None, :]
        return self.proj_drop(self.proj((alpha * branches).sum(0)))

    def forward_tokens(self, x: torch.Tensor, hw=None) -> torch.Tensor:
        return self.mix(tokens_to_grid(x, hw)).flatten(1, 2)


class CycleBlock(nn.Module):
    """x + CycleMLP(LN(x)), then x + MLP(LN(x)), on a channels-last (N, H, W, C) map."""

    def __init__(self, dim: int, mlp_ratio: float, drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = CycleMLPMixer(dim)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn.mix(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class Downsample(nn.Module):
    """3 x 3 stride-2 convolution (padding 1) between stages, on channels-last maps."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.proj = nn.Conv2d(in_dim, out_dim, 3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class PatchEmbed(nn.Module):
    """7 x 7 stride-4 convolution (padding 2): (N, C_in, H, W) -> (N, H', W', C) channels-last."""

    def __init__(self, in_chans: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, 7, 4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


class CycleNet(nn.Module):
    """(N, in_chans, H, W) -> (N, num_classes); any H, W >= 3 (an H x W image ends as a map of about H/32 x W/32).

    Args:
        layers, embed_dims, mlp_ratios: per stage: blocks, width C, MLP ratio.
        drop_path_rate: stochastic depth, linear over all blocks.
    """

    min_size = 3

    def __init__(self, layers=(2, 2, 4, 2), embed_dims=(64, 128, 320, 512), mlp_ratios=(4, 4, 4, 4),
                 in_chans: int = 3, num_classes: int = 1000, drop_path_rate: float = 0.0):
        super().__init__()
        layers, embed_dims = check_stages(layers, embed_dims)
        if len(mlp_ratios) != 4 or any(r <= 0 for r in mlp_ratios):
            raise ValueError(f"mlp_ratios must be 4 positive numbers, got {mlp_ratios!r}")
        check_positive_int("in_chans", in_chans)
        check_positive_int("num_classes", num_classes)
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {drop_path_rate!r}")
        self.patch_embed = PatchEmbed(in_chans, embed_dims[0])
        rates = iter(drop_path_rates(drop_path_rate, sum(layers)))
        network = []
        for i in range(4):
            network.append(nn.Sequential(*[CycleBlock(embed_dims[i], mlp_ratios[i], next(rates))
                                           for _ in range(layers[i])]))
            if i < 3:
                network.append(Downsample(embed_dims[i], embed_dims[i + 1]))
        self.network = nn.Sequential(*network)
        self.norm = nn.LayerNorm(embed_dims[-1])
        self.num_features = embed_dims[-1]
        self.head = nn.Linear(embed_dims[-1], num_classes)
        self.apply(lambda m: trunc_normal_init(m, types=(nn.Linear, CycleFC)))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, H', W', C_4) channels-last map of the last stage (before the final norm)."""
        check_images("CycleMLP", x, self.min_size)
        return self.network(self.patch_embed(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.forward_features(x)).mean((1, 2)))


# The authors' cycle_mlp.py (CycleMLP_B1..B5): blocks per stage, widths and MLP ratios.
_VARIANTS = {
    "cyclemlp_b1": dict(layers=(2, 2, 4, 2), embed_dims=(64, 128, 320, 512), mlp_ratios=(4, 4, 4, 4)),
    "cyclemlp_b2": dict(layers=(2, 3, 10, 3), embed_dims=(64, 128, 320, 512), mlp_ratios=(4, 4, 4, 4)),
    "cyclemlp_b3": dict(layers=(3, 4, 18, 3), embed_dims=(64, 128, 320, 512), mlp_ratios=(8, 8, 4, 4)),
    "cyclemlp_b4": dict(layers=(3, 8, 27, 3), embed_dims=(64, 128, 320, 512), mlp_ratios=(8, 8, 4, 4)),
    "cyclemlp_b5": dict(layers=(3, 4, 24, 3), embed_dims=(96, 192, 384, 768), mlp_ratios=(4, 4, 4, 4)),
}
for _name, _kwargs in _VARIANTS.items():
    register_model(_name, CycleNet, **_kwargs)
