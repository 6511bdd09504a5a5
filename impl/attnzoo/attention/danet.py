"""DANet: Dual Attention Network (Fu, Liu, Tian, Li, Bao, Fang & Lu, "Dual Attention Network for Scene
Segmentation", CVPR 2019, arXiv:1809.02983).

Two self-attention modules model long-range context on top of a dilated backbone, one over positions and one
over channels, and their outputs are summed.

* Position attention (PAM). 1x1 convolutions give queries B and keys C with C/8 channels and values D with C
  channels. Every position i attends to every position j with weights s_ij = softmax_j(B_i . C_j) (no 1/sqrt(d)
  scaling), and E_i = alpha * sum_j s_ij D_j + A_i, with alpha a learned scalar that starts at 0.
* Channel attention (CAM). No projections: the C x C Gram matrix of the feature map, X_ij = softmax_j(A_i . A_j)
  (dot products over all H W positions), mixes the channels, E_i = beta * sum_j X_ij A_j + A_i, beta from 0.
* The head (``danet``): each module sits between two 3x3 conv-BN-ReLU layers that reduce C to C/4, the two branch
  outputs are summed, and a dropout + 1x1 convolution gives the output.

Registered names, all (N, C, H, W) -> (N, C, H, W): ``danet_pam``, ``danet_cam`` and ``danet`` (the dual head).
PAM runs through ``scaled_dot_product_attention`` with scale 1 over the H W positions; CAM's C x C affinity is
small and computed with two explicit matrix products (softmax in float32: its energies are sums over all H W
positions and easily exceed the range where bfloat16 keeps precision). Nothing depends on the input size.

Departures and known bugs elsewhere:

* Any input size. Several public re-implementations build PAM from a token attention with a fixed H x W (e.g.
  ``DAModule(d_model=512, H=7, W=7)``) and fail or silently misbehave at other sizes; the modules here have no
  size-dependent parameter.
* CAM's energy: the paper's Eq. (3) is softmax(A_i . A_j). The authors' code computes
  softmax(max_j E_ij - E_ij), which equals softmax(-E_ij) (a softmax ignores a per-row shift): channels attend to
  the channels *least* similar to them. Both are offered: ``energy="paper"`` (default) or ``"official"``.
* The head: the authors' head ends in 1x1 classifiers (plus two auxiliary per-branch classifiers for deep
  supervision); as a C -> C module, our last 1x1 convolution maps back to ``out_channels`` (default C) and the
  auxiliary outputs are left out.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import ConvNormAct, check_choice, check_positive_int, reduced_channels
from ..registry import register_attention


@register_attention("danet_pam")
class PositionAttention(nn.Module):
    """(N, C, H, W) -> (N, C, H, W): x + alpha * softmax(Q K^T) V over all H W positions.

    Args:
        channels: C. rd_ratio / rd_channels: width of queries and keys (paper: C/8). Values keep C channels.
    """

    def __init__(self, channels: int, rd_ratio: float = 1 / 8, rd_channels: int | None = None):
        super().__init__()
        rd = reduced_channels(channels, rd_ratio, rd_channels)
        self.query = nn.Conv2d(channels, rd, 1)
        self.key = nn.Conv2d(channels, rd, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    @staticmethod
    def _tokens(t: torch.Tensor) -> torch.Tensor:
        return t.flatten(2).transpose(1, 2).unsqueeze(1)  # (N, 1, L, C')

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """The weights s (N, H*W, H*W): row i is where position i (row-major) gathers from."""
        q, k = self._tokens(self.query(x))[:, 0], self._tokens(self.key(x))[:, 0]
        return (q @ k.transpose(1, 2)).softmax(dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        # the three 1x1 projections of the same input as one matrix product on the tokens, split into (N, 1, L, .)
        # views (parameters stay three convolutions, the authors' layout): ~10 % faster fwd+bwd at 14 x 14
        weight = torch.cat([self.query.weight, self.key.weight, self.value.weight]).flatten(1)
        bias = torch.cat([self.query.bias, self.key.bias, self.value.bias])
        rd = self.query.out_channels
        q, k, v = F.linear(x.flatten(2).transpose(1, 2), weight, bias).unsqueeze(1).split([rd, rd, c], dim=-1)
        out = F.scaled_dot_product_attention(q, k, v, scale=1.0)
        return x + self.gamma * out[:, 0].transpose(1, 2).reshape(n, c, h, w)


@register_attention("danet_cam")
class ChannelAttention(nn.Module):
    """(N, C, H, W) -> (N, C, H, W): x + beta * softmax(A A^T) A, the channels as the sequence.

    Args:
        channels: C (only validated; the module has the single parameter beta).
        energy: "paper" for softmax(A_i . A_j) (Eq. 3), "official" for the authors' softmax(max - E) = softmax(-E).
    """

    ENERGIES = ("paper", "official")

    def __init__(self, channels: int, energy: str = "paper"):
        super().__init__()
        check_positive_int("channels", channels)
        self.sign = 1.0 if check_choice("energy", energy, self.ENERGIES) == "paper" else -1.0
        self.gamma = nn.Parameter(torch.zeros(1))

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """The weights (N, C, C): row i is how channel i mixes all channels."""
        a = x.flatten(2)
        return (self.sign * (a @ a.transpose(1, 2))).float().softmax(dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = x.flatten(2)  # (N, C, L)
        out = self.attention_map(x).to(a.dtype) @ a  # the C x C matrix is small: explicit products
        return x + self.gamma * out.view_as(x)


@register_attention("danet")
class DualAttentionHead(nn.Module):
    """(N, C, H, W) -> (N, out_channels, H, W) (default out_channels = C): the DANet head.

    Two branches, conv3x3-BN-ReLU (C -> C/4) -> PAM | CAM -> conv3x3-BN-ReLU, are summed; dropout and a 1x1
    convolution give the output.

    Args:
        channels: C. inter_ratio: branch width C * inter_ratio (paper: 1/4). out_channels: output width.
        pam_rd_ratio: PAM query/key width relative to the branch width (paper: 1/8). cam_energy: see ChannelAttention.
        drop: Dropout2d rate before the output convolution (paper's code: 0.1).
    """

    def __init__(self, channels: int, inter_ratio: float = 1 / 4, out_channels: int | None = None,
                 pam_rd_ratio: float = 1 / 8, cam_energy: str = "paper", drop: float = 0.1):
        super().__init__()
        inter = reduced_channels(channels, inter_ratio)
        out_channels = channels if out_channels is None else check_positive_int("out_channels", out_channels)
        if not 0.0 <= drop < 1.0:
            raise ValueError(f"drop must be in [0, 1), got {drop!r}")
        self.pam_in = ConvNormAct(channels, inter, 3)
        self.pam = PositionAttention(inter, pam_rd_ratio)
        self.pam_out = ConvNormAct(inter, inter, 3)
        self.cam_in = ConvNormAct(channels, inter, 3)
        self.cam = ChannelAttention(inter, cam_energy)
        self.cam_out = ConvNormAct(inter, inter, 3)
        self.drop = nn.Dropout2d(drop)
        self.proj = nn.Conv2d(inter, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.pam_out(self.pam(self.pam_in(x)))
        c = self.cam_out(self.cam(self.cam_in(x)))
        return self.proj(self.drop(p + c))
