"""DO-Conv: depthwise over-parameterized convolution (Cao, Li, Sun, Chen, Lischinski, Cohen-Or, Chen & Tu,
IEEE TIP 2022, arXiv:2006.12030).

A k x k convolution sees, at every position, the input patch P in R^{C_in x (k k)}. DO-Conv first lets every
input channel c transform its own patch with a trainable matrix D_c in R^{(k k) x D_mul} (a depthwise
convolution, D_mul >= k k), then applies a conventional kernel W in R^{C_out x C_in x D_mul} to the result:

    O = W * (D^T o P)   (feature composition)   =   (D^T o W) * P   (kernel composition),

    W'[o, c, m] = sum_s D_c[m, s] W[o, c, s].

Both are linear in P, so after training D and W fold into one ordinary k x k kernel W' (``fuse()``): the
deployed layer is a plain ``nn.Conv2d`` with exactly its cost. During training the extra parameters change the
optimisation (the over-parameterisation), which is what improves accuracy.

Faithful to the authors' PyTorch layer (yangyanli/DO-Conv ``do_conv_pytorch.py``):

* parameters ``W`` (C_out, C_in / g, D_mul), initialised like a conv kernel (Kaiming-uniform, a = sqrt(5), line
  60), and ``D`` (C_in, k k, D_mul) initialised to ZERO; the kernel uses D + I, with a fixed identity ``d_diag``
  (lines 62-73) that is tiled when D_mul = 2 k k, 3 k k, ... and padded with zero columns for the rest. At the
  start, then, W'[o, c, m] = sum_j W[o, c, m + j k k]: the layer begins as a plain convolution.
* D_mul defaults to k k (line 58); for a 1x1 kernel there is no D and the layer is a plain convolution.
* ``d_diag`` is a buffer here (a frozen ``Parameter`` in the authors' code): same state-dict key and values, but it
  is not counted among the parameters.

Grouped convolutions (DO-GConv, 1 < groups < C_in): the paper's D_c belongs to input channel c. The authors'
TensorFlow and GluonCV layers (``do_conv_tensorflow.py`` lines 126-132, ``do_conv_gluoncv.py`` lines 87-100; the
GluonCV one trained the ImageNet models of their README, including ResNeXt-50 32x4d) compose W with the D of the
input channel each weight actually reads, which is our default (``group_d="input_channel"``). Their PyTorch layer
reshapes W (C_out, C_in / g, D_mul) to (C_out / g, C_in, D_mul) before the product (lines 120-125), so output
channel o, slot j uses the D of channel (o mod g) C_in / g + j, which need not be a channel o reads; it is
still a valid, foldable over-parameterisation, offered as ``group_d="pytorch"``. The two coincide for groups = 1
and for depthwise convolutions with C_out = C_in; with a channel multiplier (C_out = m C_in, groups = C_in) they
differ too.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import check_choice, check_conv_args, check_positive_int
from ..registry import register_conv

GROUP_D = ("input_channel", "pytorch")


@register_conv("do_conv")
class DOConv2d(nn.Module):
    """(N, C_in, H, W) -> (N, C_out, ceil(H / s), ceil(W / s)): a conv whose kernel is (D + I)^T o W.

    Args:
        in_channels, out_channels, kernel_size, stride, groups, dilation, bias: as ``nn.Conv2d`` ("same" padding
            ``dilation * (k - 1) // 2``). groups = 1: DO-Conv; groups = C_in: DO-DConv; otherwise DO-GConv.
        d_mul: D_mul >= k k, the depth multiplier of the over-parameterisation (default k k).
        group_d: which D a grouped convolution's weights use (module doc): "input_channel" (paper, TF/GluonCV
            code) or "pytorch" (the authors' PyTorch layer).
        deploy: build the folded form directly (a plain ``nn.Conv2d``, as ``fuse()`` leaves it).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, groups: int = 1,
                 dilation: int = 1, bias: bool = False, d_mul: int | None = None, group_d: str = "input_channel",
                 deploy: bool = False):
        super().__init__()
        check_conv_args(in_channels, out_channels, kernel_size, stride, groups, dilation)
        check_choice("group_d", group_d, GROUP_D)
        mn = kernel_size * kernel_size
        if mn == 1 and d_mul not in (None, 1):
            raise ValueError(f"a 1x1 DO-Conv has no depthwise part, so d_mul must be None or 1, got {d_mul!r}")
        d_mul = mn if d_mul is None else check_positive_int("d_mul", d_mul)
        if d_mul < mn:
            raise ValueError(f"d_mul must be at least kernel_size**2 = {mn} (over-parameterisation), got {d_mul}")
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.stride, self.groups, self.dilation = stride, groups, dilation
        self.padding = dilation * (kernel_size - 1) // 2
        self.d_mul, self.group_d = d_mul, group_d
        self.fused: nn.Conv2d | None = None
        if deploy:
            self.fused = self._plain_conv(bias)
            return
        self.W = nn.Parameter(torch.empty(out_channels, in_channels // groups, d_mul))
        nn.init.kaiming_uniform_(self.W, a=math.sqrt(5))
        if mn > 1:
            self.D = nn.Parameter(torch.zeros(in_channels, mn, d_mul))
            eye = torch.eye(mn).repeat(1, d_mul // mn)                       # (mn, mn * (d_mul // mn)), tiled I
            eye = F.pad(eye, (0, d_mul % mn))                                # zero columns for the remainder
            self.register_buffer("d_diag", eye.expand(in_channels, mn, d_mul).clone())
        else:
            self.D = None
        if bias:
            self.bias = nn.Parameter(torch.empty(out_channels))
            bound = 1 / math.sqrt(in_channels // groups * d_mul)
            nn.init.uniform_(self.bias, -bound, bound)
        else:
            self.bias = None

    def _plain_conv(self, bias: bool) -> nn.Conv2d:
        return nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, self.stride, self.padding,
                         self.dilation, self.groups, bias=bias)

    def kernel(self) -> torch.Tensor:
        """The composed kernel W' = (D + I)^T o W, shape (C_out, C_in / g, k, k)."""
        k, g = self.kernel_size, self.groups
        shape = (self.out_channels, self.in_channels // g, k, k)
        if self.fused is not None:
            return self.fused.weight
        if self.D is None:
            return self.W.reshape(shape)
        d = self.D + self.d_diag                                             # (C_in, k k, D_mul)
        if self.group_d == "pytorch":  # the authors' PyTorch reshape (see the module doc)
            w = self.W.reshape(self.out_channels // g, self.in_channels, self.d_mul)
            return torch.einsum("ims,ois->oim", d, w).reshape(shape)
        d = d.reshape(g, self.in_channels // g, k * k, self.d_mul)          # D of each group's input channels
        w = self.W.reshape(g, self.out_channels // g, self.in_channels // g, self.d_mul)
        return torch.einsum("gjms,gojs->gojm", d, w).reshape(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused is not None:
            return self.fused(x)
        return F.conv2d(x, self.kernel(), self.bias, self.stride, self.padding, self.dilation, self.groups)

    @torch.no_grad()
    def fuse(self) -> None:
        """Fold D into W: the layer becomes one ``nn.Conv2d`` with the kernel W' (same outputs, plain cost)."""
        if self.fused is not None:
            return
        fused = self._plain_conv(self.bias is not None).to(device=self.W.device, dtype=self.W.dtype)
        fused.weight.copy_(self.kernel())
        if self.bias is not None:
            fused.bias.copy_(self.bias)
        del self.W, self.D, self.bias
        if hasattr(self, "d_diag"):
            del self.d_diag
        self.fused = fused

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"groups={self.groups}, dilation={self.dilation}, d_mul={self.d_mul}, group_d={self.group_d!r}, "
                f"fused={self.fused is not None}")
