"""Gather-Excite (Hu, Shen, Albanie, Sun & Vedaldi, "Gather-Excite: Exploiting Feature Context in Convolutional
Neural Networks", NeurIPS 2018, arXiv:1810.12348).

A pair of operators around a residual branch x:

* gather xi_G: aggregates each channel over a spatial neighbourhood of extent e (e = 2, 4, 8, or the whole map,
  "global"), producing a coarser map (or one value per channel for the global extent);
* excite xi_E: resizes that map back to H x W (nearest neighbour) and gates: y = x * sigmoid(interp(xi_G(x))).

Three variants, all registered:

* GE-theta- (``ge_theta_minus``): parameter-free; gather = average pooling over windows of (2e - 1) x (2e - 1)
  with stride e, centred on every e-th position (padding e - 1), giving ceil(H / e) x ceil(W / e) values; global
  average pooling for the global extent. With the global extent this is SE without its MLP.
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

Sources for the finite extents of GE-theta-. The authors' released code (hujie-frank/GENet) has prototxts only
for the global extent (models/RN50-GEPF.prototxt: global AVE pooling; RN50-GEP / RN50-GEPP: a 56 x 56 depthwise
gather). Their README's schema figure of GE-theta- (E8) (figures/GEPF8.jpg) reads "Ave Pooling (15x15,
stride 8)" with a ceil(H/8) x ceil(W/8) output: window 2e - 1, stride e. That is also the receptive field and
stride of GE-theta's gather (log2 e stride-2 3x3 convolutions with padding 1, figures/GEP8.jpg), whose e-th
output is centred on input position e * u; we centre the pooling windows the same way (padding e - 1), as timm
does (timm/layers/gather_excite.py). Neither the figure nor the prototxts say how the windows that overhang the
border are averaged; we average over the positions inside the map (``count_include_pad=False``, timm's choice);
``count_include_pad=True`` divides by the full window instead, as Caffe's AVE pooling does with padding.

BatchNorm on a pooled descriptor: with the global extent GE-theta and GE-theta+ apply BatchNorm to one value per
channel (N, C, 1, 1), as do the finite extents once the map is no larger than e; training such a module needs a
batch of at least 2 (a clear ValueError otherwise); eval mode works at batch 1.

Departures: none at the training resolution (see "Any input size" for others).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import ConvNormAct, PooledConv1x1, check_positive_int, check_train_batch, create_act, reduced_channels
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
        count_include_pad: GE-theta- with a finite extent: divide windows that overhang the border by the full
        (2e - 1)^2 instead of the number of positions inside the map (default False, as timm).

    ``min_train_batch`` is 2 for GE-theta / GE-theta+ with the global extent (BatchNorm on an (N, C, 1, 1)
    descriptor), else 1.
    """

    def __init__(self, channels: int, extent: int = 0, param_gather: bool = False, param_excite: bool = False,
                 feat_size: int = 7, rd_ratio: float = 1 / 16, rd_channels: int | None = None,
                 count_include_pad: bool = False):
        super().__init__()
        check_positive_int("channels", channels)
        if isinstance(extent, bool) or not isinstance(extent, int) or extent < 0 or (
                extent > 0 and (extent < 2 or extent & (extent - 1))):
            raise ValueError(f"extent must be 0 (global) or a power of two >= 2, got {extent!r}")
        if param_excite and not param_gather:
            raise ValueError("param_excite (GE-theta+) requires param_gather=True")
        self.extent = extent
        self.count_include_pad = bool(count_include_pad)
        # BatchNorm on one value per channel (global extent) cannot train on a batch of one
        self.min_train_batch = 2 if param_gather and extent == 0 else 1
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
            self.excite = nn.Sequential(create_act("relu"), PooledConv1x1(channels, rd), create_act("relu"),
                                        PooledConv1x1(rd, channels))  # on a finite extent's map: plain convs

    def gathered(self, x: torch.Tensor) -> torch.Tensor:
        """xi_G(x): (N, C, 1, 1) for the global extent, else (N, C, ceil(H / e), ceil(W / e))."""
        if self.gather is not None:
            return self.gather(x)
        if self.extent == 0:
            return x.mean(dim=(2, 3), keepdim=True)
        e = self.extent  # windows of 2e - 1 centred on every e-th position: ceil(H / e) x ceil(W / e) outputs
        return F.avg_pool2d(x, 2 * e - 1, e, padding=e - 1, count_include_pad=self.count_include_pad)

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """The gate, broadcastable to x: (N, C, 1, 1) for the global extent, else (N, C, H, W)."""
        g = self.gathered(x)
        if self.excite is not None:
            g = self.excite(g)
        if g.shape[-2:] != (1, 1):
            g = F.interpolate(g, size=x.shape[-2:], mode="nearest")
        return torch.sigmoid(g)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gather is not None and (self.extent == 0 or max(x.shape[-2:]) <= self.extent):
            check_train_batch(self, x)  # the gathered map is (N, C, 1, 1): BatchNorm needs N >= 2 in training
        return x * self.weights(x).to(x.dtype)


def _resnet_stage_ge(**kwargs):
    """attn_layer factory for ResNet-50: the global kernel sized to the stage's map at 224 x 224 input."""
    def build(channels: int) -> GatherExcite:
        return GatherExcite(channels, feat_size=max(1, 56 * 256 // channels), **kwargs)
    return build


register_resnet("ge_theta_minus_resnet50", 50, attn_layer=_resnet_stage_ge())
register_resnet("ge_theta_resnet50", 50, attn_layer=_resnet_stage_ge(param_gather=True))
register_resnet("ge_theta_plus_resnet50", 50, attn_layer=_resnet_stage_ge(param_gather=True, param_excite=True))
