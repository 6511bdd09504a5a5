"""EffNet: An Efficient Structure for Convolutional Neural Networks (Freeman, Roese-Koerner & Kummert, ICIP 2018,
arXiv:1801.06434).

EffNet targets networks that are slim to begin with, where MobileNet's and ShuffleNet's blocks compress the data
flowing through them too early (a strided depthwise 3x3 convolution quarters the map at once). Its block, which
replaces a convolution followed by a 2x2 max-pooling, spreads the spatial reduction over two one-dimensional steps
(Fig. 1a: "1x1xch/2", "dw 1x3 + 1d mp", "dw 3x1", "2x1xch + 1d stride"):

    z_1 = act(BN(W_pw * x))                      1x1 convolution to ch/2 channels (bottleneck factor 2)
    z_2 = maxpool_{2x1}(act(BN(w_{1x3} (*) z_1)))  depthwise 1 x k, then max-pooling over the height only
    z_3 = act(BN(w_{3x1} (*) z_2))                 depthwise k x 1 at half the height (half the cost of the first)
    y   = W_{2x1} *_{stride (1, 2)} z_3             a 2 x 1 convolution to ch channels, strided over the width

so (N, C_in, H, W) -> (N, ch, ceil(H / 2), ceil(W / 2)), the size a 3x3 convolution + 2x2 max-pooling gives. The 2 x 1
kernel with a one-dimensional stride replaces the block's pointwise convolution; the paper reports that it costs
about the same and is more accurate. ``(*)`` is a depthwise convolution. The paper also replaces the network's first
layer with an EffNet block ("addressing the first layer"), so the CIFAR-10 model has no plain stem.

Sources. The authors released no code. What we could read of the paper is its abstract and the start of its
introduction (an arxiv-vanity copy), and pictures of Fig. 1 and Tables 1-7 (in a third-party summary,
DataXujing/CNN-paper2, ``docs/zh-cn/img/effnet``), with a Chinese paraphrase of Sections 3-4 in the same
summary. From these:

* order of the layers, kernel shapes and the "1d" pooling and stride: Fig. 1a and Table 1;
* widths: Table 1, EffNet column (1x1x32, 2x1x64; 1x1x64, 2x1x128; 1x1x128, 2x1x256; then a fully connected layer
  to 10 classes on the flattened 4 x 4 x 256 = 4096 floats), i.e. the 1x1 convolution has half the block's output
  channels (Fig. 1a: ch/2), also when that is not fewer than its input channels;
* the floats after every layer in Table 1 (e.g. 32768, 16384, 16384, 16384 in the first block at 32 x 32) fix the
  pooling to one axis and the depthwise multiplier to 1;
* cost: Table 2 gives 11.4 million FLOPs for this model on CIFAR-10; ours is 5.64 M multiply-accumulates at 32 x 32,
  11.3 M FLOPs at two per MAC (Table 2's baseline counts the same way: 39.6 M MACs against its 80.3 M FLOPs). The
  paper gives no parameter counts (ours: 151,146 with 10 classes).

Not readable in those sources, so our choice, said here: where the normalisation and the activation sit (a
BatchNorm and a ReLU after each of the four convolutions, as in the MobileNet block the paper compares with;
``act`` changes the activation) and the initialisation (He, fan-out). Which axis each "2 x 1" kernel spans is read
literally from Fig. 1a: the max-pooling and the last convolution both span the height (a 2 x 1 window), and the
convolution's one-dimensional stride is over the width, the only way three blocks take 32 x 32 to Table 1's 4 x 4
(``reduce_kernel="pooled"``); ``reduce_kernel="strided"`` spans the width with a 1 x 2 kernel and stride 2 instead
(no pixel skipped), the reading of some third-party ports. Both cost the same. Odd sizes are padded at the end
(bottom/right), as "same" padding does, so that the output is ceil(H / 2) x ceil(W / 2).

As a conv kind (``create_conv("effnet", c_in, c_out, k, stride=2)``) the block is a drop-in for a padded ``nn.Conv2d``
that downsamples; its output is the last convolution's (the host's BN and activation follow, as for any conv).
At ``stride=1`` (not in the paper, which uses the block only to downsample) there is no pooling and the last
convolution is the 1 x 1 pointwise one that the 2 x 1 strided convolution replaces. ``groups`` applies to the two
dense convolutions (the paper itself uses none: it found group convolutions cost too much accuracy).

Model ``effnet_cifar10``: Table 1's EffNet column, three blocks (64, 128, 256 channels) each followed by BN + ReLU,
then the flattened 4 x 4 x 256 map into a linear classifier. At another input size the last map is first
average-pooled to the 4 x 4 grid the classifier was built for (``img_size // 8``); at 32 x 32 this changes
nothing. Table 2's "EffNet large" (79.8 M FLOPs) is not described in the paper's tables and is not built here.
"""
from __future__ import annotations

import functools

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import ConvNormAct, check_choice, check_conv_args, check_images, check_positive_int, conv_fan_out_init
from ..registry import register_conv, register_model

REDUCE_KERNELS = {"pooled": (2, 1), "strided": (1, 2)}


@register_conv("effnet")
class EffNetBlock(nn.Module):
    """EffNet block (paper's Fig. 1a): (N, C_in, H, W) -> (N, C_out, ceil(H / s), ceil(W / s)), s = 1 or 2.

    Layers (named as below): ``conv_pw`` 1x1 to ``C_out // bottleneck`` channels + BN + act; ``conv_1xk`` depthwise
    1 x k + BN + act; ``pool`` max-pooling 2 x 1 over the height (stride 2 only); ``conv_kx1`` depthwise k x 1 + BN +
    act; ``conv_reduce`` the 2 x 1 convolution with stride (1, 2) to ``C_out`` (stride 2), or a 1 x 1 one (stride 1).

    Args:
        in_channels, out_channels, kernel_size (odd: the k of 1 x k and k x 1), stride (1 or 2), groups (of the
            1 x 1 and the last convolution), dilation (of the depthwise ones), bias (of the last convolution): as
            ``nn.Conv2d`` with "same" padding.
        bottleneck: the 1 x 1 convolution has ``out_channels // bottleneck`` channels (paper: 2).
        act: activation after the first three convolutions (paper: not stated; ReLU here).
        reduce_kernel: "pooled" (2 x 1 kernel, stride over the width: Fig. 1a read literally) or "strided" (1 x 2
            kernel and stride over the width); see the module doc.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, groups: int = 1,
                 dilation: int = 1, bias: bool = False, bottleneck: int = 2, act: str | None = "relu",
                 reduce_kernel: str = "pooled"):
        super().__init__()
        check_conv_args(in_channels, out_channels, kernel_size, stride, groups, dilation)
        check_positive_int("bottleneck", bottleneck)
        check_choice("reduce_kernel", reduce_kernel, REDUCE_KERNELS)
        if stride not in (1, 2):
            raise ValueError(f"the EffNet block downsamples by 2 (stride=2) or not at all (stride=1), got "
                             f"stride={stride}")
        if kernel_size % 2 == 0:
            raise ValueError(f"the EffNet block needs an odd kernel_size for its 1 x k and k x 1 depthwise "
                             f"convolutions (same padding), got {kernel_size}")
        mid = out_channels // bottleneck
        if mid < 1 or mid % groups:
            raise ValueError(f"the EffNet block's 1x1 convolution has out_channels // bottleneck = {mid} channels, "
                             f"which must be a positive multiple of groups={groups}")
        k = kernel_size
        self.in_channels, self.out_channels, self.kernel_size, self.stride = in_channels, out_channels, k, stride
        self.groups, self.mid_channels, self.reduce_kernel = groups, mid, reduce_kernel
        self.conv_pw = ConvNormAct(in_channels, mid, 1, groups=groups, act=act)
        self.conv_1xk = ConvNormAct(mid, mid, (1, k), groups=mid, dilation=dilation, act=act)
        self.pool = nn.MaxPool2d((2, 1), (2, 1), ceil_mode=True) if stride == 2 else nn.Identity()
        self.conv_kx1 = ConvNormAct(mid, mid, (k, 1), groups=mid, dilation=dilation, act=act)
        if stride == 2:
            self.conv_reduce = nn.Conv2d(mid, out_channels, REDUCE_KERNELS[reduce_kernel], stride=(1, 2),
                                         groups=groups, bias=bias)
        else:
            self.conv_reduce = nn.Conv2d(mid, out_channels, 1, groups=groups, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_kx1(self.pool(self.conv_1xk(self.conv_pw(x))))
        if self.stride == 2:
            # "same" padding at the end: one zero row under a 2 x 1 kernel, a zero column after an odd width for 1 x 2
            x = F.pad(x, (0, 0, 0, 1)) if self.reduce_kernel == "pooled" else F.pad(x, (0, x.shape[-1] % 2))
        return self.conv_reduce(x)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"mid_channels={self.mid_channels}, groups={self.groups}, reduce_kernel={self.reduce_kernel!r}")


class EffNet(nn.Module):
    """EffNet for small images (paper's Table 1): EffNet blocks + BN + act, then flatten and a linear classifier.

    (N, in_chans, H, W) -> (N, num_classes). Every block halves the height and the width (rounded up).

    Args:
        num_classes: classes (CIFAR-10: 10). widths: output channels of the blocks (Table 1: 64, 128, 256).
        in_chans: input channels. img_size: the side the classifier is built for (Table 1: 32, giving a 4 x 4 map);
            other sizes are average-pooled to that grid before flattening.
        act, reduce_kernel: as ``EffNetBlock``. drop_rate: dropout before the classifier (not in the tables: 0).
    """

    def __init__(self, num_classes: int = 10, widths: tuple[int, ...] = (64, 128, 256), in_chans: int = 3,
                 img_size: int = 32, act: str | None = "relu", reduce_kernel: str = "pooled", drop_rate: float = 0.0):
        super().__init__()
        widths = tuple(widths)
        if not widths:
            raise ValueError("widths must name at least one block")
        for name, value in [("num_classes", num_classes), ("in_chans", in_chans), ("img_size", img_size),
                            *((f"widths[{i}]", w) for i, w in enumerate(widths))]:
            check_positive_int(name, value)
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate!r}")
        block = functools.partial(EffNetBlock, act=act, reduce_kernel=reduce_kernel)
        chans = (in_chans,) + widths
        self.in_chans = in_chans
        self.blocks = nn.Sequential(*(ConvNormAct(cin, cout, 3, stride=2, act=act, conv_layer=block)
                                      for cin, cout in zip(chans, widths)))
        side = img_size
        for _ in widths:
            side = -(-side // 2)
        self.grid = (side, side)
        self.num_features = widths[-1] * side * side
        self.drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(self.num_features, num_classes)
        conv_fan_out_init(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        check_images("EffNet", x)
        if x.shape[1] != self.in_chans:
            raise ValueError(f"EffNet expects {self.in_chans}-channel images, got shape {tuple(x.shape)}")
        return self.blocks(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x)
        if tuple(x.shape[-2:]) != self.grid:
            x = F.adaptive_avg_pool2d(x, self.grid)
        return self.head(self.drop(x.flatten(1)))


register_model("effnet_cifar10", EffNet)
