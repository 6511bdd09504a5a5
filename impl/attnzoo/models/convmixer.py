"""ConvMixer (Trockman & Kolter, "Patches Are All You Need?", TMLR 2023, arXiv:2201.09792).

An isotropic network in the layout of ViT and MLP-Mixer whose mixing is done by plain convolutions: a p x p patch
embedding of stride p (h channels), then d identical layers, each a residual depthwise k x k convolution (spatial
mixing) followed by a pointwise convolution (channel mixing), every convolution followed by the activation and then
BatchNorm (Eqs. 1-3):

    z_0 = BN(sigma(Conv_{c_in -> h}(X, stride=p, kernel=p)))
    z'_l = BN(sigma(DepthwiseConv_k(z_{l-1}))) + z_{l-1}
    z_{l+1} = BN(sigma(PointwiseConv(z'_l)))

then global average pooling and a linear classifier. Named ConvMixer-h/d. Models of Table 1 (the authors' released
weights): 1536/20 (k 9, p 7, GELU), 768/32 (k 7, p 7, **ReLU**, as the released checkpoint; the authors' README notes
it) and 1024/20 (k 9, p 14, GELU).

As in the authors' code (locuslab/convmixer, convmixer.py; timm's ``convmixer_*`` is the same model) the depthwise
convolution is "same"-padded and the patch embedding has no padding, so an H x W image gives a floor(H/p) x floor(W/p)
map; inputs smaller than p x p are a ValueError. PyTorch's default initialisation, as theirs. ``conv_layer`` swaps
the depthwise convolution for any registered convolution (built with groups=h); its kernel size must be odd, which
every size the paper uses is (the authors' "same" padding is then our symmetric k // 2 padding).

The spatial mixing is a depthwise convolution, not a new mechanism, so it is not registered as an attention module.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..layers import check_images, check_positive_int, create_act
from ..registry import get_conv, register_model
from ..timm import register_timm_rules


class ConvActNorm(nn.Sequential):
    """Conv2d -> activation -> BatchNorm2d (ConvMixer's order: the norm comes last)."""

    def __init__(self, conv: nn.Module, channels: int, act: str):
        super().__init__(conv, create_act(act), nn.BatchNorm2d(channels))


class ConvMixerLayer(nn.Module):
    """(N, h, H, W) -> same: x + BN(act(DWConv_k(x))), then BN(act(PWConv(.)))."""

    def __init__(self, dim: int, kernel_size: int, act: str, conv_layer=None):
        super().__init__()
        if conv_layer is None:
            dw = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        else:
            dw = conv_layer(dim, dim, kernel_size, stride=1, groups=dim, bias=True)
        self.spatial = ConvActNorm(dw, dim, act)
        self.channel = ConvActNorm(nn.Conv2d(dim, dim, 1), dim, act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.channel(x + self.spatial(x))


class ConvMixer(nn.Module):
    """(N, in_chans, H, W) -> (N, num_classes); H, W >= patch_size.

    Args:
        dim: h, the width of every layer. depth: d. kernel_size: k of the depthwise convolutions (odd).
        patch_size: p. act: "gelu" (paper) or "relu" (the released ConvMixer-768/32). drop_rate: dropout before
        the head. conv_layer: None (nn.Conv2d) or a registered conv name / factory for the depthwise convolutions.
    """

    def __init__(self, dim: int = 768, depth: int = 32, kernel_size: int = 9, patch_size: int = 7, in_chans: int = 3,
                 num_classes: int = 1000, act: str = "gelu", drop_rate: float = 0.0, conv_layer=None):
        super().__init__()
        for name, value in dict(dim=dim, depth=depth, kernel_size=kernel_size, patch_size=patch_size,
                                in_chans=in_chans, num_classes=num_classes).items():
            check_positive_int(name, value)
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (the paper's 3, 5, 7, 9), got {kernel_size}")
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate!r}")
        self.patch_size = patch_size
        conv = get_conv(conv_layer)
        self.stem = ConvActNorm(nn.Conv2d(in_chans, dim, patch_size, patch_size), dim, act)
        self.blocks = nn.Sequential(*[ConvMixerLayer(dim, kernel_size, act, conv) for _ in range(depth)])
        self.num_features = dim
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(dim, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, h, floor(H/p), floor(W/p))."""
        check_images("ConvMixer", x, self.patch_size, "one patch")
        return self.blocks(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.head_drop(self.forward_features(x).mean((2, 3))))


# timm's ConvMixer (timm/models/convmixer.py) nests each layer as Sequential(Residual(fn=[dw, act, bn]), pw, act, bn).
register_timm_rules(ConvMixer, renames=(
    (r"^(blocks\.\d+)\.0\.fn\.", r"\1.spatial."),
    (r"^(blocks\.\d+)\.1\.", r"\1.channel.0."),
    (r"^(blocks\.\d+)\.3\.", r"\1.channel.2."),
))

# Table 1 / the released weights: h, d, k, p and the activation.
register_model("convmixer_1536_20", ConvMixer, timm="convmixer_1536_20", dim=1536, depth=20, kernel_size=9,
               patch_size=7, act="gelu")
register_model("convmixer_768_32", ConvMixer, timm="convmixer_768_32", dim=768, depth=32, kernel_size=7,
               patch_size=7, act="relu")
register_model("convmixer_1024_20_ks9_p14", ConvMixer, timm="convmixer_1024_20_ks9_p14", dim=1024, depth=20,
               kernel_size=9, patch_size=14, act="gelu")
