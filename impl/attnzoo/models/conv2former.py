"""Conv2Former: a simple transformer-style ConvNet (Hou et al., TPAMI 2024, arXiv:2211.11943).

Conv2Former keeps the transformer's block (token mixer + MLP, each a pre-norm residual branch with layer scale) and
its four-stage pyramid, but replaces self-attention by **convolutional modulation** (Fig. 1): instead of
an attention matrix ``softmax(Q K^T)`` multiplying the values, the output of a large-kernel depthwise convolution
multiplies them element-wise (Hadamard product):

    A = DWConv_{k x k}(W_1 X),    V = W_2 X,    Z = W_3 (A * V)

with ``W_1, W_2, W_3`` linear (1x1) maps; every position is thus modulated by a weighted sum over its k x k
neighbourhood, at a cost linear in the number of pixels. The module (with its LayerNorm) is registered alone as the
attention ``conv2former_modulation``; ``modulation_weights`` returns ``A``.

* **Block**: ``X + s_1 * ConvMod(X)``, ``X + s_2 * MLP(X)`` with layer scales initialised at 1e-6; the MLP is
  LN -> 1x1 (ratio 4) -> GELU -> ``h + GELU(DWConv3x3(h))`` -> 1x1 (the official code's depthwise position term).
* **Stem**: 3x3 conv of stride 2 to C/2, GELU, BN, 3x3 conv, GELU, BN, 2x2 stride-2 conv to C (bias-free);
  between stages LN + 2x2 stride-2 conv. **Head**: 1x1 conv to 1280, GELU, LN, global average pooling, linear.

Sizes (the official ``models/conv2former.py``, HVision-NKU/Conv2Former): N: widths (64, 128, 256, 512), depths (2,
2, 8, 2), kernel 7; T: (72, 144, 288, 576), (3, 3, 12, 3), kernel 11; S: (72, 144, 288, 576), (4, 4, 32, 4); B:
(96, 192, 384, 768), (4, 4, 34, 4); L: (128, 256, 512, 1024), (4, 4, 48, 4), all kernel 11 except N.

Departures: the paper writes ``A = DWConv(W_1 X)``; the official code (whose models give the reported numbers) puts a
GELU between the linear map and the depthwise convolution: we follow the code (``act_in_modulation=False`` gives the
paper's equation). Inputs need at least 31 pixels a side (five stride-2 reductions leave one pixel); odd sizes are
floored by the 2x2 stride-2 convolutions as in the official code.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..layers import (DropPath, LayerNorm2d, check_images, check_positive_int, check_stages, drop_path_rates,
                      trunc_normal_init)
from ..registry import register_attention, register_model


@register_attention("conv2former_modulation", kernel_size=11)
class ConvModulation(nn.Module):
    """Convolutional modulation: (N, C, H, W) -> (N, C, H, W), ``W_3 (DWConv_k(GELU(W_1 LN(X))) * W_2 LN(X))``.

    Args:
        channels: C. kernel_size: k of the depthwise convolution (odd; 11 in Conv2Former-T/S/B/L, 7 in N; the
            registered default is 11). norm: the LayerNorm over channels in front (part of the official module).
        act_in_modulation: the GELU between ``W_1`` and the depthwise conv (official code); False for the paper's
            equation.
    """

    def __init__(self, channels: int, kernel_size: int = 11, norm: bool = True, act_in_modulation: bool = True):
        super().__init__()
        check_positive_int("channels", channels)
        check_positive_int("kernel_size", kernel_size)
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (a centred depthwise kernel), got {kernel_size}")
        self.norm = LayerNorm2d(channels, eps=1e-6) if norm else nn.Identity()
        self.a = nn.Sequential(nn.Conv2d(channels, channels, 1), nn.GELU() if act_in_modulation else nn.Identity(),
                               nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2, groups=channels))
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def modulation_weights(self, x: torch.Tensor) -> torch.Tensor:
        """``A`` (N, C, H, W): the large-kernel depthwise responses that multiply the values."""
        return self.a(self.norm(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        return self.proj(self.a(x) * self.v(x))


class ConvMlp(nn.Module):
    """LN -> 1x1 (C -> rC) -> GELU -> ``h + GELU(DWConv3x3(h))`` -> 1x1 (rC -> C): (N, C, H, W) -> same."""

    def __init__(self, dim: int, mlp_ratio: int = 4):
        super().__init__()
        hidden = dim * mlp_ratio
        self.norm = LayerNorm2d(dim, eps=1e-6)
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.act = nn.GELU()
        self.pos = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.fc1(self.norm(x)))
        return self.fc2(x + self.act(self.pos(x)))


class Conv2FormerBlock(nn.Module):
    """``x + s_1 * ConvMod(x)``, then ``x + s_2 * MLP(x)`` (layer scales per channel): (N, C, H, W) -> same."""

    def __init__(self, dim: int, kernel_size: int, mlp_ratio: int = 4, drop_path: float = 0.0,
                 layer_scale_init_value: float = 1e-6):
        super().__init__()
        self.attn = ConvModulation(dim, kernel_size)
        self.mlp = ConvMlp(dim, mlp_ratio)
        self.layer_scale_1 = nn.Parameter(torch.full((dim, 1, 1), float(layer_scale_init_value)))
        self.layer_scale_2 = nn.Parameter(torch.full((dim, 1, 1), float(layer_scale_init_value)))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.layer_scale_1 * self.attn(x))
        return x + self.drop_path(self.layer_scale_2 * self.mlp(x))


class Conv2Former(nn.Module):
    """(N, in_chans, H, W) images -> (N, num_classes) logits; see the module docstring.

    Args:
        dims, depths: per stage (four each). kernel_size: the modulation's depthwise kernel. mlp_ratio: MLP
        expansion (an integer, 4). head_dim: width of the 1x1 conv before pooling (1280). drop_path_rate: linear
        over all blocks. layer_scale_init_value: initial layer scales (1e-6).
    """

    def __init__(self, dims=(64, 128, 256, 512), depths=(2, 2, 8, 2), kernel_size: int = 7, mlp_ratio: int = 4,
                 head_dim: int = 1280, num_classes: int = 1000, in_chans: int = 3, drop_path_rate: float = 0.0,
                 layer_scale_init_value: float = 1e-6):
        super().__init__()
        depths, dims = check_stages(depths, dims)
        for name, value in dict(mlp_ratio=mlp_ratio, head_dim=head_dim, num_classes=num_classes,
                                in_chans=in_chans).items():
            check_positive_int(name, value)
        if dims[0] % 2:
            raise ValueError(f"dims[0] must be even (the stem's first convolutions have dims[0] // 2 channels), "
                             f"got {dims[0]}")
        half = dims[0] // 2
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, half, 3, 2, 1, bias=False), nn.GELU(), nn.BatchNorm2d(half),
            nn.Conv2d(half, half, 3, 1, 1, bias=False), nn.GELU(), nn.BatchNorm2d(half),
            nn.Conv2d(half, dims[0], 2, 2, bias=False))
        rates = drop_path_rates(drop_path_rate, sum(depths))
        stages = []
        for i in range(4):
            down = [] if i == 0 else [LayerNorm2d(dims[i - 1], eps=1e-6), nn.Conv2d(dims[i - 1], dims[i], 2, 2)]
            blocks = [Conv2FormerBlock(dims[i], kernel_size, mlp_ratio, r, layer_scale_init_value)
                      for r in rates[sum(depths[:i]):sum(depths[:i + 1])]]
            stages.append(nn.Sequential(*down, *blocks))
        self.stages = nn.Sequential(*stages)
        self.head_conv = nn.Sequential(nn.Conv2d(dims[-1], head_dim, 1), nn.GELU(), LayerNorm2d(head_dim, eps=1e-6))
        self.num_features = head_dim
        self.head = nn.Linear(head_dim, num_classes)
        self.apply(lambda m: trunc_normal_init(m, types=(nn.Conv2d, nn.Linear)))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> the last stage's map (N, dims[-1], H / 32, W / 32)."""
        check_images("Conv2Former", x, 31, "the stem and three 2x2 stride-2 reductions must leave one pixel")
        return self.stages(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.head_conv(self.forward_features(x)).mean((2, 3)))


_VARIANTS = {
    "n": dict(dims=(64, 128, 256, 512), depths=(2, 2, 8, 2), kernel_size=7),
    "t": dict(dims=(72, 144, 288, 576), depths=(3, 3, 12, 3), kernel_size=11),
    "s": dict(dims=(72, 144, 288, 576), depths=(4, 4, 32, 4), kernel_size=11),
    "b": dict(dims=(96, 192, 384, 768), depths=(4, 4, 34, 4), kernel_size=11),
    "l": dict(dims=(128, 256, 512, 1024), depths=(4, 4, 48, 4), kernel_size=11),
}
for _size, _cfg in _VARIANTS.items():
    register_model(f"conv2former_{_size}", Conv2Former, **_cfg)
