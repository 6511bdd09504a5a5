"""Polarized self-attention (Liu, Liu, Fan & Huang, "Polarized Self-Attention: Towards High-quality Pixel-wise
Regression", arXiv:2107.00782, 2021; journal version "... Pixel-wise Mapping", Neurocomputing 2022).

PSA is designed for dense prediction (keypoint heatmaps, segmentation masks), where resolution matters. Each of
its two branches collapses the tensor completely along one axis while keeping the other axis at full
resolution ("polarized filtering"), and ends in a sigmoid (the "enhancement" non-linearity):

* Channel-only branch: W_q (1x1, C -> 1) gives one logit per position, a softmax over the H W positions turns it
  into a pooling distribution, and W_v (1x1, C -> C/2) features are pooled with it: a C/2 vector. W_z (1x1,
  C/2 -> C), LayerNorm over the C channels and a sigmoid give the channel weights
      A_ch = sigmoid(LN(W_z( W_v(X) softmax_HW(W_q(X))^T )))    (C x 1 x 1).
* Spatial-only branch: W_q (1x1, C -> C/2) is globally average-pooled and turned into a softmax over its C/2
  channels; this distribution mixes the C/2 channels of W_v(X) (1x1, C -> C/2) at every position:
      A_sp = sigmoid( softmax_C/2(GAP(W_q(X)))^T W_v(X) )      (1 x H x W).

Two layouts, both registered ((N, C, H, W) -> (N, C, H, W)):

* ``polarized_parallel``:   PSA_p(X) = A_ch(X) * X + A_sp(X) * X;
* ``polarized_sequential``: PSA_s(X) = A_sp(Y) * Y with Y = A_ch(X) * X.

The channel weights use the full C-channel resolution internally (C/2), the spatial ones the full H x W; no
size-dependent parameter, so any H, W works. The paper's results are on pose estimation and segmentation
networks, which the package does not have, so no parameter figure is checked here.

Two variants, chosen with ``variant=`` for either layout:

* ``"paper"`` (default): the equations above, as written in the paper, with biased 1x1 convolutions.
* ``"official"``: the authors' released code exactly (github.com/DeLightCMU/PSA,
  ``semantic-segmentation/network/PSA.py``, used by their Cityscapes models; ``PSA_p`` for the parallel layout,
  lines 29-137, ``PSA_s`` for the sequential one, lines 139-262). It differs from the paper:

  - every W_q and W_v is a 1x1 convolution without bias (lines 40-48, 151-168), initialised Kaiming-normal
    (fan_in, ReLU gain) with zero bias (lines 53-57, 173-177);
  - channel branch, parallel: no LayerNorm, W_z without bias: A_ch = sigmoid(W_z(...)) (lines 42, 88-91);
    sequential: W_z is a bottleneck conv(C/2 -> C/8) -> LayerNorm over its C/8 channels -> ReLU ->
    conv(C/8 -> C), both convolutions with bias (lines 155-160), then the sigmoid;
  - spatial branch, parallel: no softmax over the C/2 channels of GAP(W_q(X)); instead a softmax over the H W
    positions of the mixed map, before the sigmoid: A_sp = sigmoid(softmax_HW(GAP(W_q(X))^T W_v(X)))
    (lines 103-124);
  - spatial branch, sequential: no channel softmax either; the softmax over H W is applied to each channel of
    W_v(X) before the mix: A_sp = sigmoid(GAP(W_q(X))^T softmax_HW(W_v(X))) (lines 225-246).

  Both layouts then combine the branches as in the paper (PSA_p: sum, PSA_s: channel branch first). The width
  of W_v is ``planes // 2`` there, C // 2 here (``rd_ratio``). ``convert_official_state_dict`` renames the keys
  of a released ``PSA_p`` / ``PSA_s`` module (``conv_q_right``, ``conv_v_right``, ``conv_up``: the channel
  branch; ``conv_q_left``, ``conv_v_left``: the spatial branch) to this module's.

Note that in the official parallel spatial branch the logits are a distribution over the H W positions (they
sum to 1), so the gate lies in (1/2, sigmoid(1) = 0.731) whatever the weights, and close to 1/2 at almost every
position of a map of realistic size (the mean logit is 1 / (H W)).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..layers import PooledConv1x1, check_choice, check_positive_int, reduced_channels
from ..registry import register_attention

VARIANTS = ("paper", "official")


def _official_init(conv: nn.Conv2d) -> None:
    nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="relu")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


class PolarizedChannel(nn.Module):
    """(N, C, H, W) -> (N, C, 1, 1) channel weights of the channel-only branch.

    style: "paper", "official_parallel" or "official_sequential" (see the module docstring).
    """

    def __init__(self, channels: int, inner: int, style: str = "paper"):
        super().__init__()
        bias = style == "paper"
        self.wq = nn.Conv2d(channels, 1, 1, bias=bias)
        self.wv = nn.Conv2d(channels, inner, 1, bias=bias)
        if style == "official_sequential":
            hidden = inner // 4
            if hidden < 1:
                raise ValueError(f"the official sequential PSA needs an inner width of at least 4, got {inner}")
            self.wz = nn.Sequential(PooledConv1x1(inner, hidden), nn.LayerNorm([hidden, 1, 1]), nn.ReLU(),
                                    PooledConv1x1(hidden, channels))
        else:
            self.wz = PooledConv1x1(inner, channels, bias=bias)
        self.ln = nn.LayerNorm(channels) if style == "paper" else nn.Identity()
        if style != "paper":
            _official_init(self.wq)
            _official_init(self.wv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pool = self.wq(x).flatten(2).softmax(dim=-1)  # (N, 1, HW): a distribution over positions
        z = self.wv(x).flatten(2) @ pool.transpose(1, 2)  # (N, C/2, 1)
        z = self.wz(z.unsqueeze(-1)).flatten(1)  # (N, C)
        return torch.sigmoid(self.ln(z))[:, :, None, None]


class PolarizedSpatial(nn.Module):
    """(N, C, H, W) -> (N, 1, H, W) spatial weights of the spatial-only branch.

    style: "paper", "official_parallel" or "official_sequential" (see the module docstring).
    """

    def __init__(self, channels: int, inner: int, style: str = "paper"):
        super().__init__()
        self.style = style
        bias = style == "paper"
        self.wq = nn.Conv2d(channels, inner, 1, bias=bias)
        self.wv = nn.Conv2d(channels, inner, 1, bias=bias)
        if style != "paper":
            _official_init(self.wq)
            _official_init(self.wv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mix = self.wq(x).mean(dim=(2, 3))  # (N, C/2)
        v = self.wv(x)
        if self.style == "paper":
            mix = mix.softmax(dim=-1)  # a distribution over channels
        elif self.style == "official_sequential":
            v = v.flatten(2).softmax(dim=-1).view_as(v)  # each channel a distribution over positions
        logits = torch.einsum("nc,nchw->nhw", mix.to(v.dtype), v)
        if self.style == "official_parallel":
            logits = logits.flatten(1).softmax(dim=-1).view_as(logits)  # a distribution over positions
        return torch.sigmoid(logits).unsqueeze(1)


class _PolarizedBase(nn.Module):
    layout = ""

    def __init__(self, channels: int, rd_ratio: float = 1 / 2, rd_channels: int | None = None,
                 variant: str = "paper"):
        super().__init__()
        check_positive_int("channels", channels)
        self.variant = check_choice("variant", variant, VARIANTS)
        style = "paper" if variant == "paper" else f"official_{self.layout}"
        inner = reduced_channels(channels, rd_ratio, rd_channels)
        self.channel = PolarizedChannel(channels, inner, style)
        self.spatial = PolarizedSpatial(channels, inner, style)


@register_attention("polarized_parallel")
class PolarizedSelfAttentionParallel(_PolarizedBase):
    """(N, C, H, W) -> (N, C, H, W): A_ch(x) * x + A_sp(x) * x.

    Args: channels: C. rd_ratio / rd_channels: internal width of W_v (and of the spatial W_q) (paper: C/2).
        variant: "paper" (default) or "official" (the released ``PSA_p``; see the module docstring).
    """

    layout = "parallel"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.channel(x) + x * self.spatial(x)


@register_attention("polarized_sequential")
class PolarizedSelfAttentionSequential(_PolarizedBase):
    """(N, C, H, W) -> (N, C, H, W): y = A_ch(x) * x, then A_sp(y) * y.

    Args: channels: C. rd_ratio / rd_channels: internal width of W_v (and of the spatial W_q) (paper: C/2).
        variant: "paper" (default) or "official" (the released ``PSA_s``; see the module docstring).
    """

    layout = "sequential"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x * self.channel(x)
        return y * self.spatial(y)


_OFFICIAL_NAMES = {"conv_q_right": "channel.wq", "conv_v_right": "channel.wv", "conv_up": "channel.wz",
                   "conv_q_left": "spatial.wq", "conv_v_left": "spatial.wv"}


def convert_official_state_dict(state_dict: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """Rename the keys of one released ``PSA_p`` / ``PSA_s`` (prefix e.g. ``"layer1.0.deattn."``) to a module
    built with ``variant="official"`` and the same layout; keys outside the prefix are dropped."""
    out = {}
    for key, value in state_dict.items():
        if key.startswith(prefix):
            head, _, rest = key[len(prefix):].partition(".")
            if head in _OFFICIAL_NAMES:
                out[f"{_OFFICIAL_NAMES[head]}.{rest}"] = value
    return out
