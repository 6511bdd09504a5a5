"""ParNet's RepVGG-SSE block (Goyal, Bochkovskiy, Deng & Koltun, "Non-deep Networks", NeurIPS 2022,
arXiv:2110.07641).

ParNet reaches ResNet-like accuracy with only 12 layers of depth by running three shallow streams in parallel.
With so few layers, each block must see a large context; the authors add an attention-like path that costs
no depth, the Skip-Squeeze-Excitation (SSE): a squeeze-excitation applied to the *skip* branch of a
RepVGG block, with a single fully-connected layer so that it adds no sequential layers:

    s = BN_0(x)                                         (the skip branch: BatchNorm only)
    y = SiLU( BN_3(Conv3x3(x)) + BN_1(Conv1x1(x)) + s * sigmoid(W GAP(s)) )

W is a C x C 1x1 convolution without bias (no bottleneck, unlike SE). At inference the 3x3 and 1x1 branches fold
into one 3x3 convolution (structural re-parameterization, ``fuse()``), leaving a conv, the SSE gate and SiLU.

Models: ParNet-S/M/L/XL, built as in the authors' code. A chain of stride-2 blocks produces the inputs of three
streams at 1/4, 1/8 and 1/16 of the input resolution; each stream is a stack of RepVGG-SSE blocks; the streams
are merged from fine to coarse by fusion blocks (BatchNorm of both inputs, channel concatenation with shuffling,
a grouped block with 2 groups), and a final stride-2 block leads to the pooled linear head. Blocks that change
the shape have no skip branch; they put a 2x2 average pooling before their 1x1 branch (when strided) and
multiply their output by 2 sigmoid(W GAP(x)). Grouped blocks shuffle channels after the activation.
``parnet_s`` ... ``parnet_xl`` are the training-time networks; ``parnet_s_deploy`` ... ``parnet_xl_deploy`` the same
networks after re-parameterization (each 3x3 + 1x1 pair replaced by one biased 3x3 convolution), which is the
form whose parameters the paper reports (19.0 M, 35.6 M, 54.9 M, 85.0 M); ``ParNet.fuse()`` converts the one
into the other with identical outputs in eval mode, at every input size (up to float rounding).
Widths follow the authors' configuration files (S: 92, 192, 384, 1280 after a 64-channel first block).

Departures: the authors' code (imagenet/timm/models/simplenet_impl/repvgg.py, ``nn.AvgPool2d(2, 2)`` before the
1x1 branch of strided blocks) only runs on even sizes: at an odd size that pooling gives floor(H/2) rows and the
stride-2 3x3 branch ceil(H/2). We zero-pad an odd side by one row (column) at the bottom (right) before the 2x2
pooling, so the last window averages the real values with zeros, divided by 4. This is the same as the authors'
pooling at every even size, gives the 3x3 branch's ceil(H/2) at odd ones, and is exactly what the fused 3x3
kernel (the 1x1 weights spread over the lower-right 2x2 taps, divided by 4, with the convolution's zero padding)
computes, so fusion is exact at every size; a ceil-mode pooling would divide the partial window by its number of
valid values instead and break that equality. Defaults of the registered block for 64 channels: the paper's
stream block (SSE, SiLU) at 64 channels.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import PooledConv1x1, check_choice, check_positive_int
from ..registry import register_attention, register_model


def _conv_bn(in_ch: int, out_ch: int, kernel_size: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, kernel_size, stride, kernel_size // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(out_ch))


def _fold_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    std = (bn.running_var + bn.eps).sqrt()
    return conv.weight * (bn.weight / std).reshape(-1, 1, 1, 1), bn.bias - bn.running_mean * bn.weight / std


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    n, c, h, w = x.shape
    return x.reshape(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ZeroPadAvgPool2x2(nn.Module):
    """2x2 average pooling with stride 2 after zero-padding an odd height (width) by one row (column) at the end.

    (N, C, H, W) -> (N, C, ceil(H/2), ceil(W/2)). At even sizes this is ``nn.AvgPool2d(2, 2)``, the authors' layer;
    at odd sizes the last window is (sum of its real values) / 4, as in the re-parameterized 3x3 convolution.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h % 2 or w % 2:
            x = F.pad(x, (0, w % 2, 0, h % 2))
        return F.avg_pool2d(x, 2, 2)


class RepSSEBlock(nn.Module):
    """RepVGG-style block with SSE (same shape) or, when the shape changes, with an SE gate on the output.

    (N, C_in, H, W) -> (N, C_out, ceil(H / s), ceil(W / s)). ``deploy=True`` builds the re-parameterized form
    (one biased 3x3 convolution instead of the 3x3 and 1x1 branches), as ``fuse()`` leaves it.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, groups: int = 1, se: bool = True,
                 act: str = "silu", deploy: bool = False):
        super().__init__()
        self.stride, self.groups = stride, groups
        self.identity = nn.BatchNorm2d(in_ch) if in_ch == out_ch and stride == 1 else None
        if deploy:
            self.fused = nn.Conv2d(in_ch, out_ch, 3, stride, 1, groups=groups, bias=True)
        else:
            self.fused = None
            self.dense = _conv_bn(in_ch, out_ch, 3, stride, groups)
            self.pool = ZeroPadAvgPool2x2() if stride == 2 else nn.Identity()
            self.conv1x1 = _conv_bn(in_ch, out_ch, 1, 1, groups)
        self.se = PooledConv1x1(in_ch, out_ch, groups=groups, bias=False) if se else None
        self.act = nn.SiLU() if act == "silu" else nn.ReLU()

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """The SSE gate sigmoid(W GAP(BN_0(x))) (N, C, 1, 1), or the downsampling SE gate 2 sigmoid(W GAP(x))."""
        if self.identity is not None:
            return torch.sigmoid(self.se(self.identity(x).mean(dim=(2, 3), keepdim=True)))
        return 2 * torch.sigmoid(self.se(x.mean(dim=(2, 3), keepdim=True)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused is not None:
            out = self.fused(x)
        else:
            out = self.dense(x) + self.conv1x1(self.pool(x))
        if self.identity is not None:
            skip = self.identity(x)
            out = out + (skip * self.gate(x) if self.se is not None else skip)
        elif self.se is not None:
            out = out * self.gate(x)
        out = self.act(out)
        return channel_shuffle(out, self.groups) if self.groups > 1 else out

    @torch.no_grad()
    def fuse(self) -> None:
        """Merge the 3x3 and 1x1 branches (with their BatchNorms) into one biased 3x3 convolution (eval mode).

        The 1x1 branch becomes the centre tap; after the 2x2 average pooling of strided blocks it becomes the
        lower right 2x2 taps, each divided by 4 (exact at every size, odd ones included, because the pooling pads
        odd sides with zeros as the 3x3 convolution does). The SSE skip branch stays as it is.
        """
        if self.fused is not None:
            return
        w3, b3 = _fold_bn(self.dense[0], self.dense[1])
        w1, b1 = _fold_bn(self.conv1x1[0], self.conv1x1[1])
        if self.stride == 2:
            w1 = F.pad(w1.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3) / 4, (1, 0, 1, 0))
        else:
            w1 = F.pad(w1, (1, 1, 1, 1))
        conv = self.dense[0]
        fused = nn.Conv2d(conv.in_channels, conv.out_channels, 3, self.stride, 1, groups=conv.groups, bias=True)
        fused = fused.to(device=w3.device, dtype=w3.dtype)
        fused.weight.copy_(w3 + w1)
        fused.bias.copy_(b3 + b1)
        self.fused = fused
        del self.dense, self.pool, self.conv1x1


@register_attention("parnet_block")
class ParNetBlock(RepSSEBlock):
    """(N, C, H, W) -> (N, C, H, W): ParNet's stream block, RepVGG (3x3 + 1x1) with SSE on the skip branch.

    Args:
        channels: C. se: keep the SSE gate (False gives a plain RepVGG block). act: "silu" (ParNet) or "relu".
    """

    def __init__(self, channels: int, se: bool = True, act: str = "silu"):
        check_positive_int("channels", channels)
        check_choice("act", act, ("silu", "relu"))
        super().__init__(channels, channels, 1, 1, se, act)


class _Fusion(nn.Module):
    """BatchNorm both inputs, concatenate with channel shuffling, then a grouped block (2 groups)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, deploy: bool = False):
        super().__init__()
        self.bn1, self.bn2 = nn.BatchNorm2d(in_ch), nn.BatchNorm2d(in_ch)
        self.block = RepSSEBlock(2 * in_ch, out_ch, stride, groups=2, deploy=deploy)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        x = torch.stack([self.bn1(a), self.bn2(b)], dim=2).flatten(1, 2)  # interleave the channels
        return self.block(x)


class ParNet(nn.Module):
    """(N, in_chans, H, W) -> (N, num_classes); any H, W >= 1.

    Args:
        planes: widths of the three streams and of the final block. num_blocks: blocks per stream, counting
            the stride-2 block that feeds it (the authors' configuration files: 5, 6, 6).
        deploy: build the re-parameterized (inference) form directly. drop_rate: dropout before the head.
    """

    def __init__(self, planes=(128, 256, 512, 2048), num_blocks=(5, 6, 6), in_chans: int = 3,
                 num_classes: int = 1000, drop_rate: float = 0.0, deploy: bool = False):
        super().__init__()
        check_positive_int("num_classes", num_classes)
        p = planes
        blk = lambda i, o, s=1: RepSSEBlock(i, o, s, deploy=deploy)  # noqa: E731
        self.inits = nn.ModuleList([nn.Sequential(blk(in_chans, min(64, p[0]), 2), blk(min(64, p[0]), p[0], 2)),
                                    blk(p[0], p[1], 2), blk(p[1], p[2], 2)])
        self.streams = nn.ModuleList([nn.Sequential(*[blk(p[i], p[i]) for _ in range(num_blocks[i] - 1)])
                                      for i in range(3)])
        self.down1 = blk(p[0], p[1], 2)
        self.fuse2 = _Fusion(p[1], p[2], 2, deploy)
        self.fuse3 = _Fusion(p[2], p[2], 1, deploy)
        self.final = blk(p[2], p[3], 2)
        self.drop = nn.Dropout(drop_rate)
        self.num_features = p[3]
        self.head = nn.Linear(p[3], num_classes)

    def fuse(self) -> "ParNet":
        """Re-parameterize every block in place (eval mode); returns self."""
        for m in self.modules():
            if isinstance(m, RepSSEBlock):
                m.fuse()
        return self

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.inits[0](x)
        x2 = self.inits[1](x1)
        x3 = self.inits[2](x2)
        y = self.down1(self.streams[0](x1))
        y = self.fuse2(self.streams[1](x2), y)
        y = self.fuse3(self.streams[2](x3), y)
        return self.final(y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.forward_features(x).mean(dim=(2, 3))))


# Widths from the authors' configuration files (imagenet/models/*.yaml of the official code).
_PLANES = {"s": (92, 192, 384, 1280), "m": (128, 256, 512, 2048), "l": (160, 320, 640, 2560),
           "xl": (200, 400, 800, 3200)}
for _size, _planes in _PLANES.items():
    register_model(f"parnet_{_size}", ParNet, planes=_planes)
    register_model(f"parnet_{_size}_deploy", ParNet, planes=_planes, deploy=True)
