"""Sequencer (Tatsunami & Taki, "Sequencer: Deep LSTM for Image Classification", NeurIPS 2022, arXiv:2205.01972).

A four-stage MetaFormer-style network whose token mixer is a BiLSTM2D instead of self-attention. On a channels-last
map X (H x W x C), one bidirectional LSTM (hidden size D per direction) runs down every column and another along
every row, all columns (rows) as one batch; their outputs are concatenated and projected back to C (Eq. 7-9):

    V = BiLSTM_v(X[:, w, :] for every column w)     (H, W, 2D)
    H = BiLSTM_h(X[h, :, :] for every row h)        (H, W, 2D)
    BiLSTM2D(X) = FC(concat(V, H))                  FC: 4D -> C

A Sequencer2D block is x + BiLSTM2D(LN(x)), then x + MLP(LN(x)) (MLP ratio 3). Stages (Table 1 / the authors'
code, okojoalg/sequencer): a 7 x 7 patch embedding of stride 7 (C 192, D 48), a 2 x 2 stride-2 downsampling to
C 384 (D 96) before stage 2, and a 1 x 1 projection (384 -> 384) before stages 3 and 4; then LayerNorm, global
average pooling and a linear head. Sequencer2D-S/M/L have (4, 3, 8, 3), (4, 3, 14, 3) and (8, 8, 16, 4) blocks.

As in the authors' code (built on timm, whose ``sequencer2d_*`` is the same model with the same tensor names):
LayerNorm eps 1e-6; linear layers Xavier-uniform with biases ~ N(0, 1e-6) in the MLPs, convolutions LeCun-normal,
LSTMs PyTorch's uniform(+-1/sqrt(D)), the head zero (``layers.init.xavier_mlp_init``). The paper's ablations
(only one direction, sum instead of concatenation, no FC) are not implemented. Stochastic depth rises linearly over
all blocks, as the authors' code (models/two_dim_sequencer.py, line 65; timm uses one rate for every block).

Input sizes: the strided convolutions drop incomplete windows as the authors' code does, so an H x W image ends as a
floor(floor(H/7)/2) x floor(floor(W/7)/2) map: any input of at least 14 x 14 pixels. The LSTMs take any length.

The BiLSTM2D is registered as the token mechanism ``bilstm2d`` (D = C / 4 by default, the paper's ratio).
torch._dynamo traces ``nn.LSTM`` only with ``torch._dynamo.config.allow_rnn = True``; without it, it runs the whole
forward eagerly.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..layers import (check_images, DropPath, Mlp, TokenAttention, check_positive_int, check_stages,
                      stage_drop_path_rates, tokens_to_grid)
from ..layers.init import xavier_mlp_init
from ..registry import register_attention, register_model
from ..timm import register_timm_rules


@register_attention("bilstm2d", layout="nlc")
class BiLSTM2D(TokenAttention):
    """(N, L, C) tokens with ``hw=(H, W)`` (or (N, C, H, W) maps) -> same shape: vertical and horizontal BiLSTMs,
    concatenated and projected to C. ``mix`` takes the channels-last (N, H, W, C) grid directly.

    Args:
        channels: C. hidden_size: D, per direction (default C // 4, the paper's 48 for C = 192).
    """

    def __init__(self, channels: int, hidden_size: int | None = None):
        super().__init__(channels)
        hidden_size = check_positive_int("hidden_size", max(channels // 4, 1) if hidden_size is None else hidden_size)
        self.rnn_v = nn.LSTM(channels, hidden_size, batch_first=True, bidirectional=True)
        self.rnn_h = nn.LSTM(channels, hidden_size, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(4 * hidden_size, channels)

    @staticmethod
    def _run(rnn: nn.LSTM, seq: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", enabled=False):  # oneDNN has no bfloat16 LSTM: CPU autocast runs it in float32
            return rnn(seq.to(rnn.weight_ih_l0.dtype))[0]

    def mix(self, x: torch.Tensor) -> torch.Tensor:
        """(N, H, W, C) -> (N, H, W, C)."""
        n, h, w, c = x.shape
        v = self._run(self.rnn_v, x.transpose(1, 2).reshape(n * w, h, c))   # every column, down and up
        v = v.reshape(n, w, h, -1).transpose(1, 2)
        r = self._run(self.rnn_h, x.reshape(n * h, w, c)).reshape(n, h, w, -1)  # every row, both ways
        return self.fc(torch.cat([v, r], dim=-1))

    def forward_tokens(self, x: torch.Tensor, hw=None) -> torch.Tensor:
        return self.mix(tokens_to_grid(x, hw)).flatten(1, 2)


class Sequencer2dBlock(nn.Module):
    """x + BiLSTM2D(LN(x)), then x + MLP(LN(x)), on a channels-last (N, H, W, C) map."""

    def __init__(self, dim: int, hidden_size: int, mlp_ratio: float = 3.0, drop: float = 0.0,
                 drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.rnn_tokens = BiLSTM2D(dim, hidden_size)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp_channels = Mlp(dim, int(dim * mlp_ratio), drop=drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.rnn_tokens.mix(self.norm1(x)))
        return x + self.drop_path(self.mlp_channels(self.norm2(x)))


class Downsample2d(nn.Module):
    """p x p convolution of stride p on a channels-last map (p = 1: a channel projection)."""

    def __init__(self, in_dim: int, out_dim: int, patch_size: int):
        super().__init__()
        self.down = nn.Conv2d(in_dim, out_dim, patch_size, patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class Sequencer2dStage(nn.Module):
    """Downsampling (none in stage 1, whose patches the stem embeds), then the blocks; channels-last."""

    def __init__(self, in_dim: int, dim: int, patch_size: int | None, hidden_size: int, mlp_ratio: float,
                 drop: float, drop_paths: list[float]):
        super().__init__()
        self.downsample = nn.Identity() if patch_size is None else Downsample2d(in_dim, dim, patch_size)
        self.blocks = nn.Sequential(*[Sequencer2dBlock(dim, hidden_size, mlp_ratio, drop, r) for r in drop_paths])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


class Sequencer2d(nn.Module):
    """(N, in_chans, H, W) -> (N, num_classes); H, W >= the product of the patch sizes (14 for the paper's models).

    Args:
        layers, embed_dims, hidden_sizes, mlp_ratios: per stage: blocks, C, D, MLP ratio.
        patch_sizes: the stem's patch size, then each later stage's downsampling stride (7, 2, 1, 1).
        drop_rate: dropout in the MLPs. drop_path_rate: stochastic depth, linear over all blocks.
    """

    def __init__(self, layers=(4, 3, 8, 3), embed_dims=(192, 384, 384, 384), hidden_sizes=(48, 96, 96, 96),
                 mlp_ratios=(3.0, 3.0, 3.0, 3.0), patch_sizes=(7, 2, 1, 1), in_chans: int = 3,
                 num_classes: int = 1000, drop_rate: float = 0.0, drop_path_rate: float = 0.0):
        super().__init__()
        layers, embed_dims = check_stages(layers, embed_dims)
        for name, seq in dict(hidden_sizes=hidden_sizes, patch_sizes=patch_sizes).items():
            if len(seq) != 4:
                raise ValueError(f"{name} must give 4 values, one per stage, got {seq!r}")
            for v in seq:
                check_positive_int(name, v)
        if len(mlp_ratios) != 4 or any(r <= 0 for r in mlp_ratios):
            raise ValueError(f"mlp_ratios must be 4 positive numbers, got {mlp_ratios!r}")
        check_positive_int("num_classes", num_classes)
        if not 0.0 <= drop_rate < 1.0 or not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"drop_rate and drop_path_rate must be in [0, 1), got {drop_rate!r}, {drop_path_rate!r}")
        self.min_size = patch_sizes[0] * patch_sizes[1] * patch_sizes[2] * patch_sizes[3]
        self.stem = nn.Conv2d(in_chans, embed_dims[0], patch_sizes[0], patch_sizes[0])
        rates = stage_drop_path_rates(drop_path_rate, layers)
        self.stages = nn.Sequential(*[
            Sequencer2dStage(embed_dims[max(i - 1, 0)], embed_dims[i], patch_sizes[i] if i else None,
                             hidden_sizes[i], mlp_ratios[i], drop_rate, rates[i])
            for i in range(4)])
        self.norm = nn.LayerNorm(embed_dims[-1], eps=1e-6)
        self.num_features = embed_dims[-1]
        self.head = nn.Linear(embed_dims[-1], num_classes)
        xavier_mlp_init(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, H', W', C_4) normalised channels-last map of the last stage."""
        check_images("Sequencer2D", x, self.min_size)
        x = self.stem(x).permute(0, 2, 3, 1)
        return self.norm(self.stages(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x).mean((1, 2)))


# timm's Sequencer2d (timm/models/sequencer.py): the same names but a PatchEmbed ("stem.proj") and a ClassifierHead
# ("head.fc").
register_timm_rules(Sequencer2d, renames=((r"^stem\.proj\.", "stem."), (r"^head\.fc\.", "head.")))

# Table 1: blocks per stage; widths, hidden sizes and strides are shared by S, M and L.
for _name, _layers in {"sequencer2d_s": (4, 3, 8, 3), "sequencer2d_m": (4, 3, 14, 3),
                       "sequencer2d_l": (8, 8, 16, 4)}.items():
    register_model(_name, Sequencer2d, timm=_name, layers=_layers)
