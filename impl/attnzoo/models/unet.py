"""U-Net (Ronneberger, Fischer & Brox, MICCAI 2015, arXiv:1505.04597): a contracting and an expanding path joined
by skip connections, for per-pixel classification.

Contracting path (Fig. 1): ``depth`` = 4 levels of two 3x3 convolutions with ReLU, each level followed by a 2x2
max pooling (stride 2) that halves the resolution, while the widths double from ``base_width`` = 64 to 512; at the
bottom two more 3x3 convolutions reach 1024 channels. Expanding path: at every level a 2x2 up-convolution
(transposed convolution, stride 2) halves the channels and doubles the resolution, the result is concatenated with
the contracting path's map of the same level, and two 3x3 convolutions with ReLU follow. A final 1x1 convolution
maps the 64 channels to per-pixel class logits:

    (N, in_chans, H, W) -> (N, num_classes, H', W').

``padding="valid"`` is the paper's network: unpadded convolutions, so each level loses a border and the skip
maps are centre-cropped before the concatenation; a 572 x 572 tile gives 388 x 388 logits (H' = H - 184), and
the input must be 16k + 124 pixels (k >= 4: 188, 204, ..., 572, ...) on each side so that every pooled map has an
even size (the paper's "seamless tiling" condition). ``padding="same"`` (the default) pads every 3x3 convolution by
one pixel, so H' = H for any size: after an odd-sized pooling the up-convolved map is one row/column short and is
zero-padded at the bottom/right to its skip map. "same" is the default because a backbone of this zoo takes any
input size and returns full-resolution logits (``output_stride`` = 1); "valid" reproduces the paper's geometry
(for overlap-tile inference on large images).

Defaults from the paper: widths 64-1024, ReLU, convolutions with biases and no normalisation, weights from a
Gaussian with standard deviation sqrt(2 / N) for N inputs of a neuron (He fan-in), dropout at the end of the
contracting path (``drop_rate`` = 0.5, on the bottom level's output; the paper names no rate, 0.5 is the
Caffe default). Departures: ``in_chans`` = 3 (the paper's microscopy images have one channel; ``in_chans=1``);
``num_classes`` = 2 as the paper's cell/background tasks. The authors' Caffe release (phseg_v5, on the
Freiburg site, not on GitHub) was not available to us, so the layout follows the paper's text and Fig. 1.

Options: ``norm=True`` puts a BatchNorm after every 3x3 convolution (a common later variant, bias-free convs);
``attn_layer`` attends to the output of every encoder and decoder level, where scSE (Roy et al., 2018) puts its
modules in U-Net; ``conv_layer`` replaces the 3x3 convolutions (``padding="same"`` only, as a registered conv
keeps the size).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import check_images, check_choice, check_positive_int
from ..registry import get_attn, get_conv, register_model

PADDINGS = ("same", "valid")


class DoubleConv(nn.Sequential):
    """Two 3x3 convolutions, each [BN and] ReLU: (N, C_in, H, W) -> (N, C_out, H - 4 or H, W - 4 or W)."""

    def __init__(self, in_ch: int, out_ch: int, padding: str = "same", norm: bool = False, conv_layer=None,
                 attn=None):
        layers = []
        for cin in (in_ch, out_ch):
            if conv_layer is not None:
                layers.append(conv_layer(cin, out_ch, 3))
            else:
                layers.append(nn.Conv2d(cin, out_ch, 3, padding=1 if padding == "same" else 0, bias=not norm))
            if norm:
                layers.append(nn.BatchNorm2d(out_ch))
            layers.append(nn.ReLU())
        if attn is not None:
            layers.append(attn(out_ch))
        super().__init__(*layers)


def center_crop(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The central ``size`` window of a (N, C, H, W) map (the paper's "cropping" of the skip maps)."""
    top, left = (x.shape[-2] - size[0]) // 2, (x.shape[-1] - size[1]) // 2
    return x[..., top:top + size[0], left:left + size[1]]


class UNet(nn.Module):
    """(N, in_chans, H, W) -> (N, num_classes, H, W) per-pixel logits (H - 184, W - 184 with ``padding="valid"``).

    Args:
        num_classes: output channels of the final 1x1 convolution. in_chans: input channels.
        base_width: channels of the first level (64), doubled at every level below.
        depth: number of poolings (4). padding: "same" (default) or "valid" (the paper's).
        drop_rate: dropout on the bottom level's output. norm: BatchNorm after every 3x3 convolution.
        attn_layer / attn_kwargs: attention after every level. conv_layer / conv_kwargs: the 3x3 convolutions.
    """

    output_stride = 1

    def __init__(self, num_classes: int = 2, in_chans: int = 3, base_width: int = 64, depth: int = 4,
                 padding: str = "same", drop_rate: float = 0.5, norm: bool = False, attn_layer=None,
                 attn_kwargs: dict | None = None, conv_layer=None, conv_kwargs: dict | None = None):
        super().__init__()
        for name, value in (("num_classes", num_classes), ("in_chans", in_chans), ("base_width", base_width),
                            ("depth", depth)):
            check_positive_int(name, value)
        self.padding = check_choice("padding", padding, PADDINGS)
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate!r}")
        if conv_layer is not None and padding == "valid":
            raise ValueError('conv_layer needs padding="same": a registered conv keeps the map size, '
                             'the paper\'s "valid" convolutions shrink it')
        attn = get_attn(attn_layer, **(attn_kwargs or {}))
        conv = get_conv(conv_layer, **(conv_kwargs or {}))
        widths = [base_width * 2 ** i for i in range(depth + 1)]
        self.depth = depth
        self.encoder = nn.ModuleList()
        ch = in_chans
        for w in widths[:-1]:
            self.encoder.append(DoubleConv(ch, w, padding, norm, conv, attn))
            ch = w
        self.pool = nn.MaxPool2d(2, 2)
        self.bottom = DoubleConv(ch, widths[-1], padding, norm, conv, attn)
        self.drop = nn.Dropout(drop_rate)
        self.up = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for w_low, w in zip(widths[:0:-1], widths[-2::-1]):
            self.up.append(nn.ConvTranspose2d(w_low, w, 2, 2))
            self.decoder.append(DoubleConv(2 * w, w, padding, norm, conv, attn))
        self.head = nn.Conv2d(widths[0], num_classes, 1)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) and not m.weight.is_meta:
                fan_in = m.weight[0].numel() if isinstance(m, nn.Conv2d) else m.weight[:, 0].numel()
                nn.init.normal_(m.weight, 0.0, (2.0 / fan_in) ** 0.5)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def _valid_geometry(self) -> tuple[int, int, int]:
        """(step, offset, k_min): "valid" takes sizes step * k + offset, k >= k_min, where k is the bottom map's
        size (16k + 124 with k >= 4 at depth 4; k = 28 is the paper's 572-pixel tile), and gives
        step * k - 4 (step - 1) logits per side (H - 184 at depth 4)."""
        step = 2 ** self.depth
        offset = 4 * (2 * step - 1)                          # two convs per level lose 4 pixels at each scale
        k_min = -(-(4 * (step - 1) + 1) // step)             # at least one output pixel
        return step, offset, k_min

    def valid_sizes(self, count: int = 4) -> list[int]:
        """The smallest input sizes (per side) that ``padding="valid"`` accepts (188, 204, ... at depth 4)."""
        step, offset, k_min = self._valid_geometry()
        return [step * (k_min + i) + offset for i in range(count)]

    def _check_valid(self, h: int, w: int) -> None:
        step, offset, k_min = self._valid_geometry()
        for size in (h, w):
            if size < step * k_min + offset or (size - offset) % step:
                raise ValueError(f'U-Net with padding="valid" needs every pooled map even and an output of at least '
                                 f"one pixel: sizes {', '.join(map(str, self.valid_sizes()))}, ... "
                                 f"({step}k + {offset}, k >= {k_min}) per side, got {h}x{w}; "
                                 f'use padding="same" for other sizes')

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_images("U-Net", x)
        if self.padding == "valid":
            self._check_valid(*x.shape[-2:])
        else:
            check_images("U-Net", x, 2 ** self.depth, f"it pools {self.depth} times")
        skips = []
        for level in self.encoder:
            x = level(x)
            skips.append(x)
            x = self.pool(x)
        x = self.drop(self.bottom(x))
        for up, level, skip in zip(self.up, self.decoder, reversed(skips)):
            x = up(x)
            if self.padding == "valid":
                skip = center_crop(skip, x.shape[-2:])
            else:  # after an odd-sized pooling the upsampled map is one short: zeros at the bottom/right
                x = F.pad(x, (0, skip.shape[-1] - x.shape[-1], 0, skip.shape[-2] - x.shape[-2]))
            x = level(torch.cat([skip, x], 1))
        return self.head(x)


register_model("unet", UNet)
