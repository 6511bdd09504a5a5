"""CoaT: co-scale conv-attentional image transformers (Xu et al., ICCV 2021, arXiv:2104.06399).

**Conv-attention** (Sec. 3, registered alone as ``coat_attn``): factorized attention plus a convolutional relative
position encoding. Per head, with Q, K, V (N tokens x d channels),

    FactorAtt(X) = Q (softmax(K)^T V) / sqrt(d),          softmax over the N tokens for each key channel,
    CRPE(X)      = Q o DWConv(V),                          o: element-wise, DWConv over the token grid,
    ConvAtt(X)   = FactorAtt(X) + CRPE(X),   then a linear projection.

softmax(K)^T V is a d x d matrix, so the cost is linear in N (no N x N map; this is not softmax attention, so
there is no SDPA call). The depthwise convolution of V stands for the relative position term of Eq. 4 within a
window: the authors use window 3 for 2 heads, 5 for 3 and 7 for 3 (``crpe_window={3: 2, 5: 3, 7: 3}``, 8 heads).
The class token, when there is one, is attended like the others but gets no CRPE term (zero).

**The network** (Sec. 4): four scales, each a patch embedding (stride-4 then stride-2 convolution, LayerNorm), a
class token and **serial blocks** (a convolutional position encoding X + DWConv3x3(X) shared by the scale's blocks,
pre-norm conv-attention, pre-norm MLP). CoaT-Lite stops there and classifies the last scale's class token. CoaT adds
**parallel blocks** on scales 2-4 (same width): each runs the three conv-attentions, then every scale adds the
other two scales' attention outputs resized bilinearly to its grid (co-scale feature mixing, Fig. 4 "direct cross-layer
attention"'s cheaper variant the authors release), then an MLP shared by the three scales; the head aggregates the
three class tokens with a 1x1 Conv1d. The CRPE of each scale is shared by its serial and parallel blocks.

Sizes (the authors' ``coat.py`` and README): CoaT Tiny/Mini/Small with widths (152, 152, 152, 152),
(152, 216, 216, 216), (152, 320, 320, 320), 2 serial blocks per scale and 6 parallel blocks; CoaT-Lite
Tiny/Mini/Small/Medium with widths (64, 128, 256, 320), (64, 128, 320, 512), (64, 128, 320, 512),
(128, 256, 320, 512), serial blocks (2, 2, 2, 2), (2, 2, 2, 2), (3, 4, 6, 3), (3, 6, 10, 8) and MLP ratios
(8, 8, 4, 4) (Medium: 4). 8 heads everywhere. timm's ``coat_*`` / ``coat_lite_*`` load one to one.

Follows the authors' code (mlpc-ucsd/CoaT, src/models/coat.py): LayerNorm eps 1e-6 in the blocks and before the head
(1e-5 in the patch embeddings); the parallel blocks resize to the target scale's grid (``size=``), as the authors'
code, where timm scales by a factor of 2 or 4 (the same numbers wherever the grids halve exactly). The authors'
unused ``norm1`` (and CoaT-Lite's unused ``norm2``/``norm3``) are left out, as timm does.

Any input size works: the patch embeddings are strided convolutions that drop a remainder smaller than a patch (as
the authors'), and grids that do not halve exactly are resized to each other by ``size=`` (as the authors'; timm's
scale factors would not match them).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import DropPath, Mlp, TokenAttention, check_hw, check_positive_int, check_stages, trunc_normal_init
from ..registry import register_attention, register_model
from ..timm import register_timm_rules


class ConvRelPosEnc(nn.Module):
    """CRPE: Q o DWConv(V) per head, with a window size per group of heads; the class token (if any) gets zero.

    ``window``: an odd int for all heads, or {window: heads} (the authors' {3: 2, 5: 3, 7: 3}).
    """

    def __init__(self, head_dim: int, num_heads: int, window=None):
        super().__init__()
        window = {3: 2, 5: 3, 7: 3} if window is None else window
        window = {window: num_heads} if isinstance(window, int) else dict(window)
        for k, heads in window.items():
            check_positive_int("crpe window", k)
            check_positive_int("crpe heads per window", heads)
            if k % 2 == 0:
                raise ValueError(f"crpe windows must be odd (centred, zero-padded), got {k}")
        if sum(window.values()) != num_heads:
            raise ValueError(f"crpe_window {window} assigns {sum(window.values())} heads, the attention has "
                             f"{num_heads}")
        self.splits = [heads * head_dim for heads in window.values()]
        self.conv_list = nn.ModuleList(nn.Conv2d(c, c, k, padding=k // 2, groups=c)
                                       for k, c in zip(window, self.splits))

    def forward(self, q: torch.Tensor, v: torch.Tensor, hw: tuple[int, int], num_prefix: int) -> torch.Tensor:
        """q, v (N, heads, prefix + H * W, d) -> (N, heads, prefix + H * W, d)."""
        n, heads, length, d = v.shape
        grid = v[:, :, num_prefix:].transpose(2, 3).reshape(n, heads * d, hw[0], hw[1])
        conv = torch.cat([c(g) for c, g in zip(self.conv_list, grid.split(self.splits, dim=1))], dim=1)
        crpe = q[:, :, num_prefix:] * conv.reshape(n, heads, d, -1).transpose(2, 3)
        return F.pad(crpe, (0, 0, num_prefix, 0))


@register_attention("coat_attn", layout="nlc")
class FactorAttnConvRelPosEnc(TokenAttention):
    """CoaT's conv-attention: (N, L, C) tokens on an (H, W) grid -> same ((N, C, H, W) maps -> same).

    Args: channels; num_heads (8), qkv_bias (True), crpe_window ({3: 2, 5: 3, 7: 3}, or one odd int for all
    heads), all the authors' defaults; shared_crpe: a ``ConvRelPosEnc`` shared with other blocks (the network's).
    """

    def __init__(self, channels: int, num_heads: int = 8, qkv_bias: bool = True, crpe_window=None,
                 shared_crpe: ConvRelPosEnc | None = None, proj_drop: float = 0.0):
        super().__init__(channels)
        self.num_heads = check_positive_int("num_heads", num_heads)
        if channels % num_heads:
            raise ValueError(f"channels={channels} must be a multiple of num_heads={num_heads}")
        self.scale = (channels // num_heads) ** -0.5
        self.qkv = nn.Linear(channels, 3 * channels, bias=qkv_bias)
        self.proj = nn.Linear(channels, channels)
        self.proj_drop = nn.Dropout(proj_drop)
        self.crpe = shared_crpe if shared_crpe is not None else ConvRelPosEnc(channels // num_heads, num_heads,
                                                                              crpe_window)

    def forward_tokens(self, x: torch.Tensor, hw: tuple[int, int] | None) -> torch.Tensor:
        return self.attend(x, check_hw(hw, x.shape[1]), 0)

    def attend(self, x: torch.Tensor, hw: tuple[int, int], num_prefix: int = 1) -> torch.Tensor:
        """(N, prefix + H * W, C) -> same; the ``num_prefix`` leading tokens (class token) get no CRPE."""
        n, length, c = x.shape
        q, k, v = self.qkv(x).view(n, length, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        context = k.softmax(dim=2).transpose(-1, -2) @ v                  # (N, heads, d, d)
        y = self.scale * (q @ context) + self.crpe(q, v, hw, num_prefix)
        return self.proj_drop(self.proj(y.transpose(1, 2).reshape(n, length, c)))


class ConvPosEnc(nn.Module):
    """CPE: image tokens + DWConv3x3(image tokens), class token unchanged: (N, 1 + H * W, C) -> same."""

    def __init__(self, dim: int, kernel_size: int = 3):
        super().__init__()
        self.proj = nn.Conv2d(dim, dim, kernel_size, 1, kernel_size // 2, groups=dim)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        cls, img = x[:, :1], x[:, 1:]
        grid = img.transpose(1, 2).reshape(x.shape[0], x.shape[2], hw[0], hw[1])
        return torch.cat([cls, img + self.proj(grid).flatten(2).transpose(1, 2)], dim=1)


class PatchEmbed(nn.Module):
    """(N, C_in, H, W) -> (N, floor(H / p) * floor(W / p), C) normalised tokens and their grid."""

    def __init__(self, patch_size: int, in_chans: int, dim: int):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, dim, patch_size, patch_size)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        if min(x.shape[-2:]) < self.patch_size:
            raise ValueError(f"CoaT needs inputs of at least 32 x 32 pixels (one token at every scale), got a "
                             f"{x.shape[-2]} x {x.shape[-1]} map at a stride-{self.patch_size} patch embedding")
        x = self.proj(x)
        return self.norm(x.flatten(2).transpose(1, 2)), (x.shape[2], x.shape[3])


class SerialBlock(nn.Module):
    """CPE, then x + ConvAtt(LN(x)), then x + MLP(LN(x)): (N, 1 + H * W, C) -> same."""

    def __init__(self, dim: int, mlp_ratio: float, cpe: ConvPosEnc, crpe: ConvRelPosEnc, num_heads: int,
                 qkv_bias: bool, drop: float, drop_path: float):
        super().__init__()
        self.cpe = cpe
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.factoratt_crpe = FactorAttnConvRelPosEnc(dim, num_heads, qkv_bias, shared_crpe=crpe, proj_drop=drop)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        x = self.cpe(x, hw)
        x = x + self.drop_path(self.factoratt_crpe.attend(self.norm1(x), hw))
        return x + self.drop_path(self.mlp(self.norm2(x)))


def resize_tokens(x: torch.Tensor, hw: tuple[int, int], out_hw: tuple[int, int]) -> torch.Tensor:
    """(N, 1 + H * W, C) -> (N, 1 + H' * W', C): image tokens resized bilinearly (half-pixel), class token kept."""
    grid = x[:, 1:].transpose(1, 2).reshape(x.shape[0], x.shape[2], hw[0], hw[1])
    grid = F.interpolate(grid, size=out_hw, mode="bilinear", align_corners=False)
    return torch.cat([x[:, :1], grid.flatten(2).transpose(1, 2)], dim=1)


class ParallelBlock(nn.Module):
    """Co-scale block on scales 2-4 (one width C): conv-attention per scale, each scale plus the other two resized
    to its grid, then an MLP shared by the three scales. Takes and returns the three (N, 1 + L_s, C) token sets."""

    def __init__(self, dim: int, mlp_ratio: float, cpes, crpes, num_heads: int, qkv_bias: bool, drop: float,
                 drop_path: float):
        super().__init__()
        self.cpes = cpes  # not registered here (a plain list): the network owns them, as in timm
        for s in (2, 3, 4):
            self.add_module(f"norm1{s}", nn.LayerNorm(dim, eps=1e-6))
            self.add_module(f"factoratt_crpe{s}", FactorAttnConvRelPosEnc(dim, num_heads, qkv_bias,
                                                                          shared_crpe=crpes[s - 1], proj_drop=drop))
            self.add_module(f"norm2{s}", nn.LayerNorm(dim, eps=1e-6))
        self.mlp2 = self.mlp3 = self.mlp4 = Mlp(dim, int(dim * mlp_ratio), drop=drop)
        self.drop_path = DropPath(drop_path)

    def forward(self, xs: list[torch.Tensor], sizes: list[tuple[int, int]]) -> list[torch.Tensor]:
        xs = [cpe(x, hw) for cpe, x, hw in zip(self.cpes, xs, sizes)]
        att = [getattr(self, f"factoratt_crpe{s}").attend(getattr(self, f"norm1{s}")(x), hw)
               for s, x, hw in zip((2, 3, 4), xs, sizes)]
        mixed = [sum((a if j == i else resize_tokens(a, sizes[j], sizes[i])) for j, a in enumerate(att))
                 for i in range(3)]
        xs = [x + self.drop_path(m) for x, m in zip(xs, mixed)]
        return [x + self.drop_path(getattr(self, f"mlp{s}")(getattr(self, f"norm2{s}")(x)))
                for s, x in zip((2, 3, 4), xs)]


class CoaT(nn.Module):
    """(N, in_chans, H, W) -> (N, num_classes) logits.

    Args:
        embed_dims, depths: widths and serial blocks of the 4 scales. parallel_depth: co-scale blocks on scales 2-4
            (0: CoaT-Lite; > 0 needs embed_dims[1] == embed_dims[2] == embed_dims[3]). num_heads (8), mlp_ratios
            (per scale), qkv_bias (True), crpe_window ({3: 2, 5: 3, 7: 3}), patch_size (4, the first embedding),
            drop_rate, drop_path_rate (the same on every block, as the authors' code).
    """

    def __init__(self, embed_dims=(64, 128, 256, 320), depths=(2, 2, 2, 2), parallel_depth: int = 0,
                 num_heads: int = 8, mlp_ratios=(8, 8, 4, 4), qkv_bias: bool = True, crpe_window=None,
                 patch_size: int = 4, in_chans: int = 3, num_classes: int = 1000, drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0):
        super().__init__()
        depths, embed_dims = check_stages(depths, embed_dims)
        check_positive_int("num_classes", num_classes)
        if isinstance(parallel_depth, bool) or not isinstance(parallel_depth, int) or parallel_depth < 0:
            raise ValueError(f"parallel_depth must be a non-negative integer, got {parallel_depth!r}")
        mlp_ratios = tuple(mlp_ratios) if isinstance(mlp_ratios, (tuple, list)) else (mlp_ratios,) * 4
        if parallel_depth and not (embed_dims[1] == embed_dims[2] == embed_dims[3]
                                   and mlp_ratios[1] == mlp_ratios[2] == mlp_ratios[3]):
            raise ValueError(f"parallel blocks need one width and MLP ratio on scales 2-4, got embed_dims "
                             f"{embed_dims} and mlp_ratios {mlp_ratios}")
        for s, c in enumerate(embed_dims, 1):
            if c % num_heads:
                raise ValueError(f"embed_dims[{s - 1}]={c} must be a multiple of num_heads={num_heads}")
        dims_in = (in_chans,) + embed_dims[:3]
        for s in range(1, 5):
            setattr(self, f"patch_embed{s}", PatchEmbed(patch_size if s == 1 else 2, dims_in[s - 1], embed_dims[s - 1]))
            setattr(self, f"cls_token{s}", nn.Parameter(torch.zeros(1, 1, embed_dims[s - 1])))
            setattr(self, f"cpe{s}", ConvPosEnc(embed_dims[s - 1]))
            setattr(self, f"crpe{s}", ConvRelPosEnc(embed_dims[s - 1] // num_heads, num_heads, crpe_window))
        block = dict(num_heads=num_heads, qkv_bias=qkv_bias, drop=drop_rate, drop_path=drop_path_rate)
        for s in range(1, 5):
            setattr(self, f"serial_blocks{s}", nn.ModuleList(
                SerialBlock(embed_dims[s - 1], mlp_ratios[s - 1], getattr(self, f"cpe{s}"),
                            getattr(self, f"crpe{s}"), **block) for _ in range(depths[s - 1])))
        self.parallel_depth = parallel_depth
        if parallel_depth:
            self.parallel_blocks = nn.ModuleList(
                ParallelBlock(embed_dims[1], mlp_ratios[1], [self.cpe2, self.cpe3, self.cpe4],
                              [self.crpe1, self.crpe2, self.crpe3, self.crpe4], **block)
                for _ in range(parallel_depth))
            self.norm2 = nn.LayerNorm(embed_dims[1], eps=1e-6)
            self.norm3 = nn.LayerNorm(embed_dims[2], eps=1e-6)
            self.aggregate = nn.Conv1d(3, 1, kernel_size=1)
        self.norm4 = nn.LayerNorm(embed_dims[3], eps=1e-6)
        self.num_features = embed_dims[3]
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dims[3], num_classes)
        self.apply(trunc_normal_init)
        for s in range(1, 5):
            cls = getattr(self, f"cls_token{s}")
            if not cls.is_meta:
                nn.init.trunc_normal_(cls, std=0.02)

    def forward_features(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[tuple[int, int]]]:
        """(N, C, H, W) -> the four scales' (N, 1 + H_s * W_s, C_s) tokens (class token first, after the parallel
        blocks for scales 2-4, not normalised) and their grids."""
        xs, sizes = [], []
        for s in range(1, 5):
            tokens, hw = getattr(self, f"patch_embed{s}")(x)
            cls = getattr(self, f"cls_token{s}").expand(tokens.shape[0], -1, -1)
            tokens = torch.cat([cls, tokens], dim=1)
            for blk in getattr(self, f"serial_blocks{s}"):
                tokens = blk(tokens, hw)
            xs.append(tokens)
            sizes.append(hw)
            x = tokens[:, 1:].transpose(1, 2).reshape(tokens.shape[0], -1, hw[0], hw[1])
        if self.parallel_depth:
            rest = xs[1:]
            for blk in self.parallel_blocks:
                rest = blk(rest, sizes[1:])
            xs = xs[:1] + rest
        return xs, sizes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xs, _ = self.forward_features(x)
        if self.parallel_depth:
            cls = torch.stack([self.norm2(xs[1][:, 0]), self.norm3(xs[2][:, 0]), self.norm4(xs[3][:, 0])], dim=1)
            feat = self.aggregate(cls).squeeze(1)
        else:
            feat = self.norm4(xs[3][:, 0])
        return self.head(self.head_drop(feat))


# timm's CoaT has the authors' names and the same sharing of position encodings between blocks.
register_timm_rules(CoaT, renames=())

_COAT = dict(depths=(2, 2, 2, 2), parallel_depth=6, mlp_ratios=(4, 4, 4, 4))
_VARIANTS = {
    "coat_tiny": dict(embed_dims=(152, 152, 152, 152), **_COAT),
    "coat_mini": dict(embed_dims=(152, 216, 216, 216), **_COAT),
    "coat_small": dict(embed_dims=(152, 320, 320, 320), **_COAT),
    "coat_lite_tiny": dict(embed_dims=(64, 128, 256, 320), depths=(2, 2, 2, 2), mlp_ratios=(8, 8, 4, 4)),
    "coat_lite_mini": dict(embed_dims=(64, 128, 320, 512), depths=(2, 2, 2, 2), mlp_ratios=(8, 8, 4, 4)),
    "coat_lite_small": dict(embed_dims=(64, 128, 320, 512), depths=(3, 4, 6, 3), mlp_ratios=(8, 8, 4, 4)),
    "coat_lite_medium": dict(embed_dims=(128, 256, 320, 512), depths=(3, 6, 10, 8), mlp_ratios=(4, 4, 4, 4)),
}
for _name, _cfg in _VARIANTS.items():
    register_model(_name, CoaT, timm=_name, **_cfg)
