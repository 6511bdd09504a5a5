"""Global Filter Networks (Rao, Zhao, Zhu, Lu & Zhou, "Global Filter Networks for Image Classification",
NeurIPS 2021, arXiv:2107.00645).

GFNet replaces self-attention by a learnable filter applied in the frequency domain. For tokens X on an
H x W grid (C channels), the global filter layer computes

    X_f = FFT2(X)                 (2D real FFT over H and W, per channel: an H x (W // 2 + 1) complex grid)
    Y_f = K (.) X_f               (element-wise product with a learnable complex filter K of the same size)
    Y   = IFFT2(Y_f)              (back to H x W real tokens)

A product in frequency is a circular convolution in space with a kernel as large as the feature map, so every
token mixes with every other one in O(HW log HW) time and with HWC/2 parameters instead of quadratic attention.
A GFNet block is x + MLP(LN(GlobalFilter(LN(x)))) (no second residual around the filter, as in the paper).

Models: the isotropic GFNet-Ti/XS/S/B of the paper (16 x 16 patches, 12 or 19 blocks, MLP ratio 4, learned
absolute position embedding, global average pooling and a linear head), registered as ``gfnet_*``.

Departures:
* Any input size: the filter is learned on one frequency grid (``filter_size``, by default 14 x 8, the grid of a
  14 x 14 token map, i.e. 224 px / 16) and is resized to the rfft grid (H, W // 2 + 1) of each input by
  bicubic interpolation with aligned corners, real and imaginary parts separately. This is what the authors do
  when they fine-tune at a higher resolution (their main_gfnet.py resizes ``complex_weight`` the same way); here
  it is done on the fly, so the layer runs at every size instead of asserting one. The interpolation works on
  the FFT's natural ordering (zero frequency first), as the authors' code does.
* The FFT runs in float32 with autocast switched off (half-precision FFTs are restricted to power-of-two sizes
  on CUDA and lose accuracy); the result is cast back to the input dtype.
* Model inputs whose sides are not multiples of 16 are zero-padded; the position embedding is resized
  bicubically to the patch grid.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import drop_path_rates, DropPath, Mlp, check_positive_int, to_2tuple, trunc_normal_init
from ..layers.patch_embed import pad_to_multiple
from ..layers.tokens import check_hw
from ..layers.tokens import TokenAttention
from ..registry import register_attention, register_model


@register_attention("global_filter", layout="nlc")
class GlobalFilter(TokenAttention):
    """(N, L, C) -> (N, L, C), ``forward(x, hw=(H, W))``: a learnable global filter in the 2D Fourier domain.

    Args:
        channels: C.
        filter_size: (h, w) frequency grid the filter is stored on; the paper uses (H, W // 2 + 1) of the
            training resolution, (14, 8) for 224 px images and 16 x 16 patches.
    """

    def __init__(self, channels: int, filter_size: int | tuple[int, int] = (14, 8)):
        super().__init__(channels)
        fh, fw = to_2tuple(filter_size)
        check_positive_int("filter_size[0]", fh)
        check_positive_int("filter_size[1]", fw)
        self.channels = channels
        self.complex_weight = nn.Parameter(torch.randn(fh, fw, channels, 2) * 0.02)

    def filter(self, h: int, w: int) -> torch.Tensor:
        """The complex filter (h, w // 2 + 1, C) for an h x w token grid, resized from the stored one if needed."""
        weight = self.complex_weight.float()
        size = (h, w // 2 + 1)
        if tuple(weight.shape[:2]) != size:
            fh, fw, c, _ = weight.shape
            grid = weight.permute(2, 3, 0, 1).reshape(1, c * 2, fh, fw)
            grid = F.interpolate(grid, size=size, mode="bicubic", align_corners=True)
            weight = grid.reshape(c, 2, *size).permute(2, 3, 0, 1)
        return torch.view_as_complex(weight.contiguous())

    def forward_tokens(self, x: torch.Tensor, hw=None) -> torch.Tensor:
        n, length, c = x.shape
        h, w = check_hw(hw, length)
        with torch.autocast(device_type=x.device.type, enabled=False):
            grid = x.float().reshape(n, h, w, c)
            spec = torch.fft.rfft2(grid, dim=(1, 2), norm="ortho")
            out = torch.fft.irfft2(spec * self.filter(h, w), s=(h, w), dim=(1, 2), norm="ortho")
        return out.reshape(n, length, c).to(x.dtype)


class GFBlock(nn.Module):
    """x + DropPath(MLP(LN(GlobalFilter(LN(x))))) on (N, L, C) tokens with ``hw``."""

    def __init__(self, dim: int, mlp_ratio: float = 4.0, drop: float = 0.0, drop_path: float = 0.0,
                 filter_size=(14, 8)):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.filter = GlobalFilter(dim, filter_size)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, hw) -> torch.Tensor:
        return x + self.drop_path(self.mlp(self.norm2(self.filter(self.norm1(x), hw=hw))))


class GFNet(nn.Module):
    """Isotropic GFNet: (N, in_chans, H, W) -> (N, num_classes); any H, W >= 1.

    Args:
        img_size: training resolution (sets the position embedding and the filters' stored grid).
        patch_size: P (paper: 16). embed_dim, depth, mlp_ratio: the network's size.
        drop_rate, drop_path_rate: dropout in the MLPs and stochastic depth (linear over blocks).
    """

    def __init__(self, img_size: int = 224, patch_size: int = 16, in_chans: int = 3, num_classes: int = 1000,
                 embed_dim: int = 384, depth: int = 12, mlp_ratio: float = 4.0, drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0):
        super().__init__()
        for name, value in dict(img_size=img_size, patch_size=patch_size, in_chans=in_chans,
                                num_classes=num_classes, embed_dim=embed_dim, depth=depth).items():
            check_positive_int(name, value)
        self.patch_size = patch_size
        self.grid = img_size // patch_size
        if self.grid < 1:
            raise ValueError(f"img_size={img_size} must be at least patch_size={patch_size}")
        self.patch_embed = nn.Conv2d(in_chans, embed_dim, patch_size, patch_size)
        self.pos_embed = nn.Parameter(torch.zeros(1, embed_dim, self.grid, self.grid))
        self.pos_drop = nn.Dropout(drop_rate)
        filter_size = (self.grid, self.grid // 2 + 1)
        rates = drop_path_rates(drop_path_rate, depth)
        self.blocks = nn.ModuleList([GFBlock(embed_dim, mlp_ratio, drop_rate, r, filter_size) for r in rates])
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.num_features = embed_dim
        self.head = nn.Linear(embed_dim, num_classes)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.apply(trunc_normal_init)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, L, D) normalized tokens, L = ceil(H / P) * ceil(W / P)."""
        x = self.patch_embed(pad_to_multiple(x, self.patch_size))
        hw = tuple(x.shape[-2:])
        pos = self.pos_embed
        if hw != tuple(pos.shape[-2:]):
            pos = F.interpolate(pos, size=hw, mode="bicubic", align_corners=False)
        x = self.pos_drop((x + pos).flatten(2).transpose(1, 2))
        for blk in self.blocks:
            x = blk(x, hw)
        return self.norm(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x).mean(dim=1))


# Table 1 of the paper (GFNet-Ti/XS/S/B): width, depth; 16 x 16 patches, MLP ratio 4.
_VARIANTS = {
    "gfnet_ti": dict(embed_dim=256, depth=12),
    "gfnet_xs": dict(embed_dim=384, depth=12),
    "gfnet_s": dict(embed_dim=384, depth=19, drop_path_rate=0.15),
    "gfnet_b": dict(embed_dim=512, depth=19, drop_path_rate=0.25),
}
for _name, _cfg in _VARIANTS.items():
    register_model(_name, GFNet, img_size=224, patch_size=16, **_cfg)
