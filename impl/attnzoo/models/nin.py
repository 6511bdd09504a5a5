"""Network In Network (Lin, Chen & Yan, ICLR 2014, arXiv:1312.4400), the CIFAR-10 model.

Each "mlpconv" layer slides a small multilayer perceptron over the input instead of a linear filter: a k x k
convolution followed by two 1x1 convolutions ("cascaded cross-channel parametric pooling"), all with ReLU,

    f^1 = relu(W_1 * x + b_1),   f^n = relu(W_n f^{n-1} + b_n)   (Eq. 2, W_n per pixel: a 1x1 convolution).

The fully connected classifier is replaced by *global average pooling*: the last mlpconv layer outputs one map
per class and the logits are the maps' spatial means (Sec. 3.2), which adds no parameters. The CIFAR-10 network
(Sec. 4.2, Fig. 2; the authors' released Caffe definition): three mlpconv layers of (5x5 192, 1x1 160, 1x1 96),
(5x5 192, 1x1 192, 1x1 192), (3x3 192, 1x1 192, 1x1 num_classes); a 3x3/2 max pooling and dropout 0.5 after the
first, a 3x3/2 average pooling and dropout after the second (Caffe pools in ceil mode, as ours); about 0.97M
parameters. The released definition also applies ReLU to the class maps before the global average;
``final_relu=False`` leaves them linear. ``batch_norm=True`` puts a BN after every convolution (the variant in
szagoruyko/wide-residual-networks, models/nin.lua, not the paper's). ``attn_layer`` attends to each mlpconv
layer's output (before the pooling), ``conv_layer`` replaces the three spatial (5x5, 5x5, 3x3) convolutions.
Inputs of at least 4 x 4 pixels (a 3x3 ceil-mode pooling needs a map of at least 2 x 2).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..layers import ConvNormAct, check_images, check_positive_int, conv_fan_out_init
from ..registry import get_attn, get_conv, register_model

# (spatial kernel, widths of the conv and the two 1x1 convs) of the three mlpconv layers; the last 1x1 gives classes
NIN_CIFAR = ((5, (192, 160, 96)), (5, (192, 192, 192)), (3, (192, 192, None)))


class MLPConv(nn.Sequential):
    """k x k conv -> ReLU -> 1x1 conv -> ReLU -> 1x1 conv [-> ReLU]: (N, C, H, W) -> (N, widths[-1], H, W)."""

    def __init__(self, in_ch: int, kernel_size: int, widths: tuple[int, int, int], batch_norm: bool = False,
                 last_act: bool = True, conv_layer=None):
        chans = (in_ch,) + tuple(widths)
        super().__init__(*[ConvNormAct(chans[i], chans[i + 1], kernel_size if i == 0 else 1, norm=batch_norm,
                                       act="relu" if i < 2 or last_act else None,
                                       conv_layer=conv_layer if i == 0 else None) for i in range(3)])


class NiN(nn.Module):
    """(N, in_chans, H, W) -> (N, num_classes): global average of the last mlpconv layer's class maps; H, W >= 4.

    Args:
        drop_rate: dropout after the first two mlpconv layers' poolings (0.5). final_relu: ReLU on the class maps.
        batch_norm: BN after every convolution (not in the paper). attn_layer / attn_kwargs: attention after each
        mlpconv layer. conv_layer / conv_kwargs: the spatial convolutions.
    """

    def __init__(self, num_classes: int = 10, in_chans: int = 3, drop_rate: float = 0.5, final_relu: bool = True,
                 batch_norm: bool = False, attn_layer=None, attn_kwargs: dict | None = None, conv_layer=None,
                 conv_kwargs: dict | None = None):
        super().__init__()
        check_positive_int("num_classes", num_classes)
        check_positive_int("in_chans", in_chans)
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate!r}")
        attn = get_attn(attn_layer, **(attn_kwargs or {}))
        conv = get_conv(conv_layer, **(conv_kwargs or {}))
        layers, ch = [], in_chans
        pools = (nn.MaxPool2d(3, 2, ceil_mode=True), nn.AvgPool2d(3, 2, ceil_mode=True), None)
        for (k, widths), pool in zip(NIN_CIFAR, pools):
            widths = widths[:2] + (widths[2] or num_classes,)
            layers.append(MLPConv(ch, k, widths, batch_norm, pool is not None or final_relu, conv))
            ch = widths[-1]
            if attn is not None:
                layers.append(attn(ch))
            if pool is not None:
                layers += [pool, nn.Dropout(drop_rate)]
        self.features = nn.Sequential(*layers)
        self.num_features = num_classes
        conv_fan_out_init(self, zero_bias=True)

    def class_maps(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_chans, H, W) -> (N, num_classes, H', W'): one map per class; each pooling maps H to ceil((H-3)/2)+1."""
        check_images("NiN", x, 4, "its two 3x3 poolings")
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.class_maps(x).mean(dim=(2, 3))


register_model("nin_cifar10", NiN)
