"""Gather-Excite (Hu, Shen, Albanie, Sun & Vedaldi, "Gather-Excite: Exploiting Feature Context in Convolutional
Neural Networks", NeurIPS 2018, arXiv:1810.12348).

A pair of operators around a residual branch x:

* gather xi_G: aggregates each channel over a spatial neighbourhood of extent e (e = 2, 4, 8, or the whole map,
  "global"), producing a coarser map (or one value per channel for the global extent);
* excite xi_E: resizes that map back to H x W (nearest neighbour) and gates: y = x * sigmoid(interp(xi_G(x))).

Three variants, all registered:

* GE-theta- (``ge_theta_minus``): parameter-free; gather = average pooling with window and stride e (global
  average pooling for the global extent). With the global extent this is SE without its MLP.
* GE-theta (``ge_theta``): the gather is learned, as depthwise convolutions followed by BatchNorm: for extent e,
  log2(e) depthwise 3x3 convolutions of stride 2 (ReLU in between); for the global extent one depthwise
  convolution whose kernel covers the whole feature map (56 x 56 in the first stage of a ResNet-50, as in the
  authors' Caffe models).
* GE-theta+ (``ge_theta_plus``): the learned gather (+ BN + ReLU) followed by SE's excitation MLP
  (1x1 convs C -> C/16 -> C with biases) before the sigmoid.

Any input size: the global depthwise kernel is a parameter of fixed size ``feat_size`` (the map size the paper
trains at); on a map of another size it is resized to H x W by (antialiased) bilinear interpolation and scaled by
feat_size^2 / (H W), which keeps a uniform kernel a uniform average. At the training size nothing changes.

Backbones: ``ge_theta_minus_resnet50``, ``ge_theta_resnet50``, ``ge_theta_plus_resnet50``: the module on the
residual branch of every bottleneck (where SE sits), global extent, with the global kernel sized to each stage's
map at 224 x 224 input (56, 28, 14, 7): the ResNet-50 models of the paper's ImageNet table.

Departures: none at the training resolution (see "Any input size" for others).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import ConvNormAct, check_positive_int, create_act, reduced_channels
from ..models.resnet import register_resnet
from ..registry import register_attention


class GlobalDepthwiseGather(nn.Module):
    """(N, C, H, W) -> (N, C, 1, 1): a per-channel weighted sum over the whole map, kernel resized to H x W."""

    def __init__(self, channels: int, feat_size: int):
        super().__init__()
        self.feat_size = check_positive_int("feat_size", feat_size)
        self.weight = nn.Parameter(torch.empty(channels, feat_size, feat_size))
        nn.init.kaiming_normal_(self.weight.view(channels, 1, feat_size, feat_size), mode="fan_in")  # MSRA filler

    def kernel(self, h: int, w: int) -> torch.Tensor:
        """The kernel for an h x w map, shape (C, h, w)."""
        k = self.feat_size
        if (h, w) == (k, k):
            return self.weight
        resized = F.interpolate(self.weight[None].float(), size=(h, w), mode="bilinear", align_corners=False,
                                antialias=h < k or w < k)[0]
        return resized * (k * k / (h * w))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kern = self.kernel(*x.shape[-2:]).to(x.dtype)
        return torch.einsum("nchw,chw->nc", x, kern)[:, :, None, None]


@register_attention("ge_theta_minus")
@register_attention("ge_theta", param_gather=True)
@register_attention("ge_theta_plus", param_gather=True, param_excite=True)
class GatherExcite(nn.Module):
    """(N, C, H, W) -> (N, C, H, W): x * sigmoid(resize(excite(gather(x)))).

    Args:
        channels: C. extent: 0 for the global extent (paper's best), else a power of two e (2, 4, 8, ...).
        param_gather: learned depthwise gather (GE-theta) instead of average pooling (GE-theta-).
        param_excite: SE-style MLP before the sigmoid (GE-theta+; needs param_gather).
        feat_size: map size the global depthwise kernel is parametrized at (paper: the stage's size, 7 for the
        last ResNet-50 stage). rd_ratio / rd_channels: MLP bottleneck of GE-theta+ (paper: 1/16).
    """

    def __init__(self, channels: int, extent: int = 0, param_gather: bool = False, param_excite: bool = False,
                 feat_size: int = 7, rd_ratio: float = 1 / 16, rd_channels: int | None = None):
        super().__init__()
        check_positive_int("channels", channels)
        if isinstance(extent, bool) or not isinstance(extent, int) or extent < 0 or (
                extent > 0 and (extent < 2 or extent & (extent - 1))):
            raise ValueError(f"extent must be 0 (global) or a power of two >= 2, got {extent!r}")
        if param_excite and not param_gather:
            raise ValueError("param_excite (GE-theta+) requires param_gather=True")
        self.extent = extent
        self.gather: nn.Module | None = None
        if param_gather:
            if extent == 0:
                self.gather = nn.Sequential(GlobalDepthwiseGather(channels, feat_size), nn.BatchNorm2d(channels))
            else:
                n_convs = int(math.log2(extent))
                layers = [ConvNormAct(channels, channels, 3, 2, groups=channels,
                                      act="relu" if i < n_convs - 1 else None) for i in range(n_convs)]
                self.gather = nn.Sequential(*layers)
        self.excite: nn.Module | None = None
        if param_excite:
            rd = reduced_channels(channels, rd_ratio, rd_channels)
            self.excite = nn.Sequential(create_act("relu"), nn.Conv2d(channels, rd, 1), create_act("relu"),
                                        nn.Conv2d(rd, channels, 1))

    def gathered(self, x: torch.Tensor) -> torch.Tensor:
        """xi_G(x): (N, C, 1, 1) for the global extent, else (N, C, ceil(H / e), ceil(W / e))."""
        if self.gather is not None:
            return self.gather(x)
        if self.extent == 0:
            return x.mean(dim=(2, 3), keepdim=True)
        return F.avg_pool2d(x, self.extent, self.extent, ceil_mode=True)

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """The gate, broadcastable to x: (N, C, 1, 1) for the global extent, else (N, C, H, W)."""
        g = self.gathered(x)
        if self.excite is not None:
            g = self.excite(g)
        if g.shape[-2:] != (1, 1):
            g = F.interpolate(g, size=x.shape[-2:], mode="nearest")
        return torch.sigmoid(g)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weights(x).to(x.dtype)


def _resnet_stage_ge(**kwargs):
    """attn_layer factory for ResNet-50: the global kernel sized to the stage's map at 224 x 224 input."""
    def build(channels: int) -> GatherExcite:
        return GatherExcite(channels, feat_size=max(1, 56 * 256 // channels), **kwargs)
    return build


register_resnet("ge_theta_minus_resnet50", 50, attn_layer=_resnet_stage_ge())
register_resnet("ge_theta_resnet50", 50, attn_layer=_resnet_stage_ge(param_gather=True))
register_resnet("ge_theta_plus_resnet50", 50, attn_layer=_resnet_stage_ge(param_gather=True, param_excite=True))
