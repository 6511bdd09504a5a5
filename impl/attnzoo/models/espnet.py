"""ESPNet (Mehta, Rastegari, Caspi, Shapiro & Hajishirzi, ECCV 2018, arXiv:1803.06815): efficient spatial
pyramids of dilated convolutions for semantic segmentation.

The ESP module factorises a standard convolution as *reduce - split - transform - merge*: a pointwise convolution
reduces the M input channels to d = N / K, K = 5 parallel 3x3 convolutions with dilation rates 2^k (1, 2, 4, 8, 16)
transform the reduced map, and their outputs are concatenated to N channels. Concatenating dilated outputs directly
shows gridding artefacts, so the branches are first summed hierarchically (hierarchical feature fusion, HFF):

    F_1 = D_1(r),  F_2 = D_2(r),  F_k = F_{k-1} + D_{2^(k-1)}(r)  (k = 3 .. 5),   y = BN-PReLU([F_1, ..., F_5] (+ x))

with r the reduced map, the identity shortcut where the widths match, and the first branch taking the remaining
N - 4d channels. The strided version (the down-sampler) reduces with a 3x3 stride-2 convolution and has no shortcut.

ESPNet-C (the encoder, Fig. 4(c)): a 3x3/2 conv-BN-PReLU to 16 channels, a strided ESP module to 64 and alpha_2 = p
ESP modules, a strided ESP module to 128 and alpha_3 = q ESP modules; the input image, average-pooled to each
resolution, is concatenated to the level outputs (input reinforcement), and a 1x1 convolution gives the class
logits at 1/8 resolution. ESPNet (Fig. 4(d)) adds a light decoder that upsamples these logits twice with 2x2
transposed convolutions, fusing them first with the 1/4-resolution features (projected to C channels, then an ESP
module without shortcut) and then with the 1/2-resolution ones (a 3x3 conv-BN-PReLU), and a last transposed
convolution to full resolution.

Follows the authors' train/Model.py (sacmehta/ESPNet): ``depths`` = (p, q) = (2, 8) (train/main.py's defaults and the released
espnet_p_2_q_8 models), 20 Cityscapes classes, bias-free convolutions, BN eps 1e-3, per-channel PReLU, PyTorch's
default initialisation. Departure: at odd sizes the transposed convolutions overshoot by one row/column, which is
cropped at the bottom/right (the authors' code needs sizes divisible by 8). Outputs: ESPNet-C (N, num_classes,
ceil(H/8), ceil(W/8)) (``output_stride`` 8; the authors train it against labels downscaled by 8), ESPNet
(N, num_classes, H, W). ``attn_layer`` attends to the merged branches of every ESP module of the encoder, before
its shortcut (where SE sits in a ResNet block); the ESP module is also registered as the block ``esp``. No
``conv_layer``: the paper's spatial convolutions are dilated, which the conv kind's contract has no argument for.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..layers import check_images, check_positive_int, check_positive_ints
from ..registry import get_attn, register_block, register_model

DILATIONS = (1, 2, 4, 8, 16)


def norm_prelu(channels: int) -> nn.Sequential:
    """BN (eps 1e-3, the authors') -> per-channel PReLU."""
    return nn.Sequential(nn.BatchNorm2d(channels, eps=1e-3), nn.PReLU(channels))


def conv_norm_prelu(in_ch: int, out_ch: int, kernel_size: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, kernel_size, stride, kernel_size // 2, bias=False),
                         *norm_prelu(out_ch))


@register_block("esp")
class ESPModule(nn.Module):
    """ESP module with HFF: (N, C_in, H, W) -> (N, C_out, ceil(H/s), ceil(W/s)).

    ``add`` (default: when stride is 1 and C_in = C_out) adds the input before the final BN-PReLU; ``attn`` attends
    to the merged branches before that. ``out_channels`` >= 5 (one reduced channel per branch at least).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, add: bool | None = None, attn=None):
        super().__init__()
        check_positive_int("in_channels", in_channels)
        check_positive_int("out_channels", out_channels)
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride!r}")
        if out_channels < len(DILATIONS):
            raise ValueError(f"an ESP module splits into {len(DILATIONS)} branches: out_channels must be at least "
                             f"{len(DILATIONS)}, got {out_channels}")
        add = stride == 1 and in_channels == out_channels if add is None else add
        if add and (stride != 1 or in_channels != out_channels):
            raise ValueError("the identity shortcut needs stride 1 and in_channels == out_channels")
        d = out_channels // len(DILATIONS)
        k = 3 if stride == 2 else 1
        self.reduce = nn.Conv2d(in_channels, d, k, stride, k // 2, bias=False)
        widths = [out_channels - (len(DILATIONS) - 1) * d] + [d] * (len(DILATIONS) - 1)
        self.branches = nn.ModuleList(nn.Conv2d(d, w, 3, 1, r, dilation=r, bias=False)
                                      for w, r in zip(widths, DILATIONS))
        self.attn = attn(out_channels) if attn is not None else nn.Identity()
        self.add = add
        self.act = norm_prelu(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.reduce(x)
        first = self.branches[0](r)
        dilated = torch.stack([b(r) for b in self.branches[1:]], 1)         # (N, K - 1, d, H, W)
        fused = dilated.cumsum(1).flatten(1, 2)                              # hierarchical feature fusion
        y = self.attn(torch.cat([first, fused], 1))
        return self.act(x + y if self.add else y)


class ESPNet(nn.Module):
    """ESPNet-C (``decoder=False``: logits at 1/8) or ESPNet (full-resolution logits); see the module docstring.

    Args:
        num_classes: C (20 for Cityscapes, the authors' default). in_chans: image channels. depths: (p, q), the ESP
        modules at 1/4 and 1/8 resolution (alpha_2, alpha_3 of the paper; the code's p, q). decoder: add the RUM decoder (ESPNet). attn_layer / attn_kwargs:
        attention in the encoder's ESP modules.
    """

    def __init__(self, num_classes: int = 20, in_chans: int = 3, depths: tuple[int, int] = (2, 8),
                 decoder: bool = True, attn_layer=None, attn_kwargs: dict | None = None):
        super().__init__()
        for name, value in (("num_classes", num_classes), ("in_chans", in_chans)):
            check_positive_int(name, value)
        depths = check_positive_ints("depths", depths)
        if len(depths) != 2:
            raise ValueError(f"depths must be (p, q), the ESP modules at 1/4 and 1/8 resolution, got {depths!r}")
        p, q = depths
        if decoder and num_classes < len(DILATIONS):
            raise ValueError(f"ESPNet's decoder fuses its levels with an ESP module on num_classes channels: "
                             f"num_classes must be at least {len(DILATIONS)}, got {num_classes} "
                             f"(ESPNet-C, decoder=False, takes any)")
        attn = get_attn(attn_layer, **(attn_kwargs or {}))
        self.output_stride = 1 if decoder else 8
        self.level1 = conv_norm_prelu(in_chans, 16, 3, 2)
        self.pool = nn.AvgPool2d(3, 2, 1)                       # input reinforcement: the image at 1/2, 1/4
        self.norm1 = norm_prelu(16 + in_chans)
        self.level2_down = ESPModule(16 + in_chans, 64, 2)
        self.level2 = nn.Sequential(*[ESPModule(64, 64, attn=attn) for _ in range(p)])
        self.norm2 = norm_prelu(128 + in_chans)
        self.level3_down = ESPModule(128 + in_chans, 128, 2)
        self.level3 = nn.Sequential(*[ESPModule(128, 128, attn=attn) for _ in range(q)])
        self.norm3 = norm_prelu(256)
        self.classifier = nn.Conv2d(256, num_classes, 1, bias=False)
        if decoder:
            c = num_classes
            self.dec_norm3 = nn.BatchNorm2d(c, eps=1e-3)
            self.up3 = nn.ConvTranspose2d(c, c, 2, 2, bias=False)
            self.proj2 = nn.Conv2d(128 + in_chans, c, 1, bias=False)
            self.fuse2 = nn.Sequential(norm_prelu(2 * c), ESPModule(2 * c, c, add=False))
            self.up2 = nn.Sequential(nn.ConvTranspose2d(c, c, 2, 2, bias=False), *norm_prelu(c))
            self.fuse1 = conv_norm_prelu(16 + in_chans + c, c, 3)
            self.up1 = nn.ConvTranspose2d(c, c, 2, 2, bias=False)
        self.decoder = decoder

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The three levels: (N, 16 + in_chans, H/2, W/2), (N, 128 + in_chans, H/4, W/4), (N, 256, H/8, W/8)."""
        check_images("ESPNet", x)
        half = self.pool(x)
        f1 = self.norm1(torch.cat([self.level1(x), half], 1))
        down2 = self.level2_down(f1)
        f2 = self.norm2(torch.cat([self.level2(down2), down2, self.pool(half)], 1))
        down3 = self.level3_down(f2)
        f3 = self.norm3(torch.cat([down3, self.level3(down3)], 1))
        return f1, f2, f3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f1, f2, f3 = self.encode(x)
        logits = self.classifier(f3)
        if not self.decoder:
            return logits
        y = _crop(self.up3(self.dec_norm3(logits)), f2)
        y = _crop(self.up2(self.fuse2(torch.cat([self.proj2(f2), y], 1))), f1)
        return _crop(self.up1(self.fuse1(torch.cat([y, f1], 1))), x)


def _crop(y: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``y`` cut to ``like``'s spatial size at the bottom/right (a 2x upsampling of ceil(H/2) overshoots odd H)."""
    return y[..., :like.shape[-2], :like.shape[-1]]


register_model("espnet", ESPNet)
register_model("espnet_c", ESPNet, decoder=False)
