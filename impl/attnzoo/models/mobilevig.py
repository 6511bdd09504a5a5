"""MobileViG (Munir, Avery & Marculescu, "MobileViG: Graph-Based Sparse Attention for Mobile Vision Applications",
CVPR Workshops 2023, arXiv:2307.00395; official code: github.com/SLDGroup/MobileViG).

Vision GNNs (ViG) build a k-nearest-neighbour graph over the tokens of every layer, which is slow on phones.
Sparse Vision Graph Attention (SVGA) fixes the graph instead: every pixel is connected to the pixels K, 2K, 3K, ...
hops away along its row and its column (K = 2 in every model). A max-relative graph convolution (Li et al., DeepGCNs)
aggregates each pixel's neighbourhood as the largest difference to any neighbour, channel by channel:

    x_j = max(0, max_{n in N(p)} (x_p - x_n))                       (per channel; 0 is the pixel's own difference)
    MRConv(x) = GELU(BN(W [x ; x_j]))                              (1x1 convolution, 2C -> 2C)
    SVGA(x) = x + BN(W_2 MRConv(BN(W_1 x)))                        (the Grapher: 1x1 convolutions around it)

The neighbours follow the authors' code (``MRConv4d``): for every hop i = K, 2K, ... < H the column is rolled by i
(cyclically) and likewise the row for i < W, so N(p) holds the pixels (h - i mod H, w) and (h, w - i mod W). When K
divides H these are the pixels of p's column with the same row index modulo K; when it does not (7 x 7 maps in the
last stage at 224 x 224) the wrap-around reaches other residues too. Both are reproduced exactly.

Computation (**ours**, no loop over hops; the authors' loop has H / K + W / K steps): since the pixel's own
difference is 0, x_j = x_p - min(x_p, min over N(p)) and the minimum over p's column neighbours is one dilated
min-pooling: pad the column cyclically by nK rows at the top (n = (H - 1) // K hops) and take a (n + 1) x 1 max-pool
of -x with dilation K, which reads x at h - nK, ..., h - K, h (mod H). Rows likewise. Any H, W >= 1 (with a single row
or a map smaller than K, the column term only holds the pixel itself).

Model (the official ``models/mobilevig.py``): a stem of two 3x3 stride-2 convolutions (BN, GELU); three local stages
of inverted residual blocks (1x1 expansion x4, 3x3 depthwise, 1x1 projection, BN after each, GELU after the first
two, layer scale 1e-5); 3x3 stride-2 convolutions (+BN) between stages; a last stage at stride 32 of Grapher (SVGA)
+ FFN (1x1 x4 expansion, BN, GELU, BN, residual) blocks; global average pooling, a 1x1 convolution to
``hidden_dim`` (the code's ``emb_dims``) with BN and GELU, and a classifier plus a distillation classifier (the
models are trained with DeiT's hard distillation from RegNetY-16GF): at inference the mean of the two, during
training too unless ``distilled_training=True`` (then the pair, as the authors' training step expects; their model
always returns the pair in training). Variants (the official ``mobilevig_ti/s/m/b``):

    Ti: layers 2-2-6-2, widths 42-84-168-256, hidden 512       S: 3-3-9-3, 42-84-176-256, 512
    M:  3-3-9-3, 42-84-224-400, 768                             B: 5-5-15-5, 42-84-240-464, 768

Convolution weights are initialised as the authors' (Kaiming normal, fan-in; zero biases; every convolution has a
bias, also before a BN, as theirs). Departures: the authors' ``drop_path=0.1`` is a training setting,
``drop_path_rate`` (default 0) here; stochastic depth in their global blocks uses one rate per block for both the
Grapher and the FFN, as here. No timm twin (timm has no MobileViG).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import ConvNormAct, DropPath, check_images, check_positive_int, drop_path_rates
from ..registry import register_attention, register_model
from .deit import fuse_heads
from .efficientformer import LayerScale


def sparse_neighbour_min(x: torch.Tensor, k: int, dim: int) -> torch.Tensor:
    """min(x_p, x at p - K, p - 2K, ... (cyclic) along ``dim`` (2: columns, 3: rows)) for every pixel p of an
    (N, C, H, W) map, as one dilated pooling over a cyclically padded copy (see the module docstring)."""
    size = x.shape[dim]
    hops = (size - 1) // k
    if hops == 0:
        return x
    pad = x.narrow(dim, size - hops * k, hops * k)  # the last n K positions, wrapped around to the front
    padded = torch.cat([pad, x], dim=dim)
    window, dilation = ((hops + 1, 1), (k, 1)) if dim == 2 else ((1, hops + 1), (1, k))
    return -F.max_pool2d(-padded, window, stride=1, dilation=dilation)


def max_relative(x: torch.Tensor, k: int) -> torch.Tensor:
    """SVGA's aggregation x_j = max(0, max over the row and column neighbours n of p of (x_p - x_n)): (N, C, H, W)."""
    return x - torch.minimum(sparse_neighbour_min(x, k, 2), sparse_neighbour_min(x, k, 3))


class MRConv(nn.Module):
    """Max-relative graph convolution on SVGA's graph: (N, C, H, W) -> (N, out, H, W), GELU(BN(1x1([x; x_j])))."""

    def __init__(self, channels: int, out_channels: int, k: int = 2):
        super().__init__()
        self.k = check_positive_int("k", k)
        self.nn = ConvNormAct(2 * channels, out_channels, 1, act="gelu", bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nn(torch.cat([x, max_relative(x, self.k)], dim=1))


@register_attention("svga")
class SVGA(nn.Module):
    """Sparse Vision Graph Attention, the authors' Grapher: (N, C, H, W) -> (N, C, H, W), any size.

    x + DropPath(BN(1x1(MRConv_K(BN(1x1 x))))), the graph convolution at twice the width (C -> 2C -> C).

    Args:
        channels: C. k: K, the hop between connected pixels along rows and columns (the paper's 2).
        drop_path: stochastic depth on the residual branch.
    """

    def __init__(self, channels: int, k: int = 2, drop_path: float = 0.0):
        super().__init__()
        check_positive_int("channels", channels)
        self.fc1 = ConvNormAct(channels, channels, 1, act=None, bias=True)
        self.graph_conv = MRConv(channels, 2 * channels, k)
        self.fc2 = ConvNormAct(2 * channels, channels, 1, act=None, bias=True)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(self.fc2(self.graph_conv(self.fc1(x))))


class InvertedResidual(nn.Module):
    """x + DropPath(gamma * BN(1x1(GELU(BN(dw3x3(GELU(BN(1x1 x)))))))), expansion ``mlp_ratio``."""

    def __init__(self, dim: int, mlp_ratio: float = 4.0, drop_path: float = 0.0, layer_scale_init: float = 1e-5):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(ConvNormAct(dim, hidden, 1, act="gelu", bias=True),
                                 ConvNormAct(hidden, hidden, 3, groups=hidden, act="gelu", bias=True),
                                 ConvNormAct(hidden, dim, 1, act=None, bias=True))
        self.layer_scale = LayerScale(dim, layer_scale_init, channels_first=True)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(self.layer_scale(self.mlp(x)))


class FFN(nn.Module):
    """x + DropPath(BN(1x1(GELU(BN(1x1 x))))), hidden width ``hidden``."""

    def __init__(self, dim: int, hidden: int, drop_path: float = 0.0):
        super().__init__()
        self.fc1 = ConvNormAct(dim, hidden, 1, act="gelu", bias=True)
        self.fc2 = ConvNormAct(hidden, dim, 1, act=None, bias=True)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(self.fc2(self.fc1(x)))


class MobileViG(nn.Module):
    """(N, in_chans, H, W) -> (N, num_classes); any H, W >= 1 (strides 2 and padding 1 everywhere: ceil sizes).

    Args:
        layers, embed_dims: blocks and width per stage; the last ``graph_stages`` stages are Grapher (SVGA) + FFN
            blocks, the others inverted residual blocks. hidden_dim: width of the head's 1x1 projection.
        k: SVGA's hop K. mlp_ratio: expansion of both block kinds (4). distilled_training: return (class,
            distillation) logits in training. drop_rate: dropout before the classifiers. drop_path_rate: stochastic
            depth, linear over all blocks.
    """

    def __init__(self, layers=(2, 2, 6, 2), embed_dims=(42, 84, 168, 256), hidden_dim: int = 512,
                 graph_stages: int = 1, k: int = 2, mlp_ratio: float = 4.0, in_chans: int = 3,
                 num_classes: int = 1000, drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                 distilled_training: bool = False):
        super().__init__()
        check_positive_int("num_classes", num_classes)
        check_positive_int("hidden_dim", hidden_dim)
        if len(layers) != len(embed_dims) or not 0 <= graph_stages <= len(layers):
            raise ValueError(f"layers and embed_dims need one entry per stage and 0 <= graph_stages <= stages, got "
                             f"layers={layers}, embed_dims={embed_dims}, graph_stages={graph_stages}")
        self.stem = nn.Sequential(ConvNormAct(in_chans, embed_dims[0] // 2, 3, 2, act="gelu", bias=True),
                                  ConvNormAct(embed_dims[0] // 2, embed_dims[0], 3, 2, act="gelu", bias=True))
        rates = iter(drop_path_rates(drop_path_rate, sum(layers)))
        stages = []
        for s, (depth, dim) in enumerate(zip(layers, embed_dims)):
            blocks = [] if s == 0 else [ConvNormAct(embed_dims[s - 1], dim, 3, 2, act=None, bias=True)]
            for _ in range(depth):
                rate = next(rates)
                if s >= len(layers) - graph_stages:
                    blocks.append(nn.Sequential(SVGA(dim, k, rate), FFN(dim, int(dim * mlp_ratio), rate)))
                else:
                    blocks.append(InvertedResidual(dim, mlp_ratio, rate))
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.num_features = embed_dims[-1]
        self.prediction = nn.Sequential(ConvNormAct(embed_dims[-1], hidden_dim, 1, act="gelu", bias=True),
                                        nn.Dropout(drop_rate))
        self.head = nn.Conv2d(hidden_dim, num_classes, 1)
        self.dist_head = nn.Conv2d(hidden_dim, num_classes, 1)
        self.distilled_training = bool(distilled_training)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) images -> (N, embed_dims[-1], ceil(H / 32), ceil(W / 32))."""
        check_images(type(self).__name__, x)
        return self.stages(self.stem(x))

    def forward(self, x: torch.Tensor):
        x = self.prediction(self.forward_features(x).mean(dim=(2, 3), keepdim=True))
        logits, dist_logits = self.head(x).flatten(1), self.dist_head(x).flatten(1)
        if self.training and self.distilled_training:
            return logits, dist_logits
        return fuse_heads(logits, dist_logits)


# The authors' configurations (official models/mobilevig.py: mobilevig_ti, _s, _m, _b).
register_model("mobilevig_ti", MobileViG, layers=(2, 2, 6, 2), embed_dims=(42, 84, 168, 256), hidden_dim=512)
register_model("mobilevig_s", MobileViG, layers=(3, 3, 9, 3), embed_dims=(42, 84, 176, 256), hidden_dim=512)
register_model("mobilevig_m", MobileViG, layers=(3, 3, 9, 3), embed_dims=(42, 84, 224, 400), hidden_dim=768)
register_model("mobilevig_b", MobileViG, layers=(5, 5, 15, 5), embed_dims=(42, 84, 240, 464), hidden_dim=768)
