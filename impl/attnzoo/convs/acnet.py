"""ACNet's asymmetric convolution block (Ding, Guo, Ding & Han, ICCV 2019, arXiv:1908.03930).

During training a k x k convolution is replaced by three parallel branches that see the same input, each with
its own BatchNorm, and summed:

    y = BN_sq(K_{k x k} * x) + BN_ver(K_{k x 1} * x) + BN_hor(K_{1 x k} * x).

The k x 1 and 1 x k kernels are padded so that their sliding windows sit on the central column and row of the
square kernel's window ("same" padding (p, 0) and (0, p) against (p, p)), so by the additivity of convolution the
three branches collapse, after training, into ONE k x k kernel with a bias (``fuse()``): each BN is folded into
its kernel (gamma / sigma scaling, beta - mu gamma / sigma shift) and the asymmetric kernels are added onto the
central column and row, the "skeleton" the paper finds the most important part of a kernel. The deployed network
has the original structure and cost.

Faithful to the authors' code (DingXiaoH/ACNet ``acnet/acb.py``, current version): the branches and their names
(``square_conv/square_bn``, ``ver_conv/ver_bn``, ``hor_conv/hor_bn``, ``fused_conv``; lines 15-45), the padding
that aligns the windows (lines 22-27), BN folding and kernel addition (lines 55-74), ``gamma_init`` for the three
BN scales (lines 50-52, 94-98; their ImageNet ResNets use 1, their CIFAR models 1/3, ``acnet/do_acnet.py``).
Official state dicts load as they are.

How it sits in a backbone. The authors' ACB replaces a conv AND its BN: their builder maps ``Conv2dBN`` and
``Conv2dBNReLU`` to ``ACBlock`` (+ ReLU) for every k x k convolution with 1 < k < 7 (``acnet/acnet_builder.py``
lines 26-46), keeping 1x1 and the 7x7 stem plain. As a "conv" kind, ``conv_layer="acnet"`` replaces only the
convolution of a conv-BN-act unit, so in ``create_model("resnet18", conv_layer="acnet")`` the backbone's BN still
follows the summed branches. That is the ``use_last_bn=True`` option of the authors' first release
(``acnet/acb.py`` at commit eb0d078, lines 50-52 and 84-85), not the structure behind the paper's numbers; both
fuse into the same deployed network (the last BN then folds into the fused conv as usual). ``use_last_bn=False``
gives the official structure through the same path: the ACB then declares ``has_norm = True`` and ``ConvNormAct``
(every conv-BN-act unit of the backbones) leaves its BN out, e.g. ``create_model("resnet18", conv_layer="acnet",
conv_kwargs=dict(use_last_bn=False))``. For bottleneck ResNets the official structure is also ``mid_layer=lambda c, s: nn.Sequential(create_conv("acnet", c, c, 3, stride=s),
nn.ReLU())``, which replaces the 3x3 conv-BN-ReLU unit whole (the released ResNet-50 has its stride on that 3x3
convolution as well).

For k > 3 the branches are k x 1 and 1 x k (the current code; the first release added 3 x 1 and 1 x 3 kernels
to 5 x 5 ones, per the authors' README). Only odd k >= 3: a 1x1 kernel has no skeleton to strengthen (the authors' builder leaves it plain), and even k
has no centre. ``bias`` is accepted for the conv contract but adds nothing: the BN shifts already give a learned
per-channel bias (the fused convolution always has one).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..layers import check_conv_args
from ..registry import register_conv


def fold_bn(weight: torch.Tensor, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Kernel and bias of ``bn(conv(x))`` (bias-free conv, BN in eval mode) as one convolution."""
    std = (bn.running_var + bn.eps).sqrt()
    gamma = bn.weight if bn.affine else torch.ones_like(std)
    beta = bn.bias if bn.affine else torch.zeros_like(std)
    return weight * (gamma / std).reshape(-1, 1, 1, 1), beta - bn.running_mean * gamma / std


@register_conv("acnet")
class ACBlock(nn.Module):
    """(N, C_in, H, W) -> (N, C_out, ceil(H / s), ceil(W / s)): k x k, k x 1 and 1 x k conv-BN branches, summed.

    Args:
        in_channels, out_channels, kernel_size (odd, >= 3), stride, groups, dilation: as ``nn.Conv2d`` with "same"
            padding ``dilation * (k - 1) // 2``. bias: accepted, see the module doc.
        gamma_init: initial scale of the three BNs (authors: 1 on ImageNet, 1/3 on CIFAR); None keeps 1.
        deploy: build the fused form directly (one k x k ``nn.Conv2d`` with bias, as ``fuse()`` leaves it).
        use_last_bn: whether a host's conv-BN-act unit keeps its BN after the block (True, the default: the
            authors' first release) or leaves it out (False: ``has_norm``, the structure behind the paper's numbers).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, groups: int = 1,
                 dilation: int = 1, bias: bool = False, gamma_init: float | None = None, deploy: bool = False,
                 use_last_bn: bool = True):
        super().__init__()
        self.has_norm = not use_last_bn  # read by layers.ConvNormAct: no BN of the host after this block
        check_conv_args(in_channels, out_channels, kernel_size, stride, groups, dilation)
        if kernel_size < 3 or kernel_size % 2 == 0:
            raise ValueError(f"ACB needs an odd kernel_size >= 3 (its 1 x k and k x 1 branches lie on the centre "
                             f"row and column), got {kernel_size}")
        k, p = kernel_size, dilation * (kernel_size - 1) // 2
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, k
        self.stride, self.groups, self.dilation, self.padding = stride, groups, dilation, p
        if deploy:
            self.fused_conv = nn.Conv2d(in_channels, out_channels, k, stride, p, dilation, groups, bias=True)
            return
        self.fused_conv = None

        def conv(size, padding):
            return nn.Conv2d(in_channels, out_channels, size, stride, padding, dilation, groups, bias=False)

        self.square_conv, self.square_bn = conv((k, k), (p, p)), nn.BatchNorm2d(out_channels)
        self.ver_conv, self.ver_bn = conv((k, 1), (p, 0)), nn.BatchNorm2d(out_channels)
        self.hor_conv, self.hor_bn = conv((1, k), (0, p)), nn.BatchNorm2d(out_channels)
        if gamma_init is not None:
            for bn in (self.square_bn, self.ver_bn, self.hor_bn):
                nn.init.constant_(bn.weight, gamma_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused_conv is not None:
            return self.fused_conv(x)
        return (self.square_bn(self.square_conv(x)) + self.ver_bn(self.ver_conv(x))
                + self.hor_bn(self.hor_conv(x)))

    @torch.no_grad()
    def equivalent_kernel_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The k x k kernel and bias of the three branches with their BNs in eval mode (the deployed conv)."""
        if self.fused_conv is not None:
            return self.fused_conv.weight, self.fused_conv.bias
        kernel, bias = fold_bn(self.square_conv.weight, self.square_bn)
        kernel = kernel.clone()
        c = self.kernel_size // 2
        ver, ver_b = fold_bn(self.ver_conv.weight, self.ver_bn)
        hor, hor_b = fold_bn(self.hor_conv.weight, self.hor_bn)
        kernel[:, :, :, c:c + 1] += ver                                        # k x 1 -> the central column
        kernel[:, :, c:c + 1, :] += hor                                        # 1 x k -> the central row
        return kernel, bias + ver_b + hor_b

    @torch.no_grad()
    def fuse(self) -> None:
        """Replace the three branches by one k x k convolution with bias (exact in eval mode)."""
        if self.fused_conv is not None:
            return
        kernel, bias = self.equivalent_kernel_bias()
        fused = nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, self.stride, self.padding,
                          self.dilation, self.groups, bias=True).to(device=kernel.device, dtype=kernel.dtype)
        fused.weight.copy_(kernel)
        fused.bias.copy_(bias)
        for name in ("square_conv", "square_bn", "ver_conv", "ver_bn", "hor_conv", "hor_bn"):
            delattr(self, name)
        self.fused_conv = fused

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"groups={self.groups}, dilation={self.dilation}, fused={self.fused_conv is not None}")
