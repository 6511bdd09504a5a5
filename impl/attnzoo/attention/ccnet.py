"""Criss-cross attention (Huang, Wang, Huang, Huang, Wei & Liu, "CCNet: Criss-Cross Attention for Semantic
Segmentation", ICCV 2019, arXiv:1811.11721).

A non-local block lets every pixel attend to all H W pixels, an (H W)^2 cost. Criss-cross attention lets pixel
u = (i, j) attend only to the pixels of its own row and its own column, H + W - 1 of them, and recovers full-image
context by applying the same module twice ("recurrent criss-cross attention", RCCA, R = 2): after two steps
information from any pixel has reached any other pixel through the pixel that shares a row with one and a
column with the other.

For one step, with 1x1-convolution queries Q and keys K (C/8 channels) and values V (C channels):

    d_{u,v} = Q_u . K_v  for v in Omega_u = column(j) + row(i),     A_u = softmax over Omega_u of d_u,
    H'_u = gamma * sum_{v in Omega_u} A_{u,v} V_v + H_u,           gamma a learned scalar starting at 0.

The centre pixel u belongs to both its row and its column; the paper counts it once (|Omega_u| = H + W - 1).
Like the authors' pure-PyTorch code, the column part excludes it (its logit is set to -inf) and the row part keeps
it. The weights of the two steps are shared (the same module is applied R times), as in the paper.

The implementation is vectorized: the column and row affinities are two einsums over the (N, C', H, W) maps,
(N, H, W, H) and (N, H, W, W), one softmax over their concatenation, and two einsums back; memory O(N H W (H+W)),
no loops over pixels (the authors ship a CUDA kernel for the same computation).

Departures: this is the attention module (``criss_cross``, (N, C, H, W) -> (N, C, H, W), recurrence 2 by
default); the segmentation head around it (3x3 reductions and the concatenation with the input) is not
registered. The paper has no parameter table for it, so no figure is checked.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import check_positive_int, reduced_channels
from ..registry import register_attention


@register_attention("criss_cross")
class CrissCrossAttention(nn.Module):
    """(N, C, H, W) -> (N, C, H, W): R steps of x + gamma * (attention over the row and column of each pixel).

    Args:
        channels: C. rd_ratio / rd_channels: width of queries and keys (paper: C/8).
        recurrence: R, the number of times the module (with shared weights) is applied (paper: 2).
    """

    def __init__(self, channels: int, rd_ratio: float = 1 / 8, rd_channels: int | None = None, recurrence: int = 2):
        super().__init__()
        rd = reduced_channels(channels, rd_ratio, rd_channels)
        self.recurrence = check_positive_int("recurrence", recurrence)
        self.query = nn.Conv2d(channels, rd, 1)
        self.key = nn.Conv2d(channels, rd, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def affinity(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One step's weights: column part (N, H, W, H) (entry [n, i, j, k]: pixel (i, j) from (k, j)) and
        row part (N, H, W, W) (entry [n, i, j, k]: pixel (i, j) from (i, k)); together they sum to one."""
        return self._affinity(*self._projections(x)[:2])

    def _projections(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """query, key, value of x as one convolution (weights concatenated per call; the parameters stay three
        convolutions, the authors' layout), split into channel views."""
        weight = torch.cat([self.query.weight, self.key.weight, self.value.weight])
        bias = torch.cat([self.query.bias, self.key.bias, self.value.bias])
        rd = self.query.out_channels
        return F.conv2d(x, weight, bias).split([rd, rd, self.value.out_channels], dim=1)

    def _affinity(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = q.shape[-2]
        e_col = torch.einsum("ncij,nckj->nijk", q, k)
        self_in_col = torch.eye(h, dtype=torch.bool, device=q.device).view(h, 1, h)
        e_col = e_col.masked_fill(self_in_col, float("-inf"))  # the centre is counted in the row part only
        e_row = torch.einsum("ncij,ncik->nijk", q, k)
        a = torch.cat([e_col, e_row], dim=-1).softmax(dim=-1)
        return a[..., :h], a[..., h:]

    def step(self, x: torch.Tensor) -> torch.Tensor:
        """One criss-cross step (the module with recurrence 1)."""
        q, k, v = self._projections(x)
        a_col, a_row = self._affinity(q, k)
        a_col, a_row = a_col.to(v.dtype), a_row.to(v.dtype)
        out = torch.einsum("nijk,nckj->ncij", a_col, v) + torch.einsum("nijk,ncik->ncij", a_row, v)
        return x + self.gamma * out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(self.recurrence):  # R is 1 or 2 in the paper: a loop over steps, not pixels
            x = self.step(x)
        return x

    @torch.no_grad()
    def dense_attention(self, x: torch.Tensor) -> torch.Tensor:
        """One step's weights as a dense (N, H*W, H*W) matrix (row-major pixels), for inspection and plots."""
        n, _, h, w = x.shape
        a_col, a_row = self.affinity(x)
        dense = x.new_zeros(n, h, w, h, w)
        idx_i, idx_j = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
        dense[:, :, idx_j, :, idx_j] = a_col.permute(2, 0, 1, 3)  # (W, N, H, H): column of each pixel
        dense[:, idx_i, :, idx_i, :] += a_row.permute(1, 0, 2, 3)  # (H, N, W, W): row of each pixel
        return dense.reshape(n, h * w, h * w)
