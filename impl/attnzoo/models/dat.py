"""DAT: Vision Transformer with Deformable Attention (Xia et al., CVPR 2022, arXiv:2201.00520).

**Deformable multi-head attention**. The keys and values of every query are taken at the same
few, data-dependent points of the map instead of at fixed positions. From the input x (H x W tokens, C channels):

* q = x W_q; the channels are split into G groups, each with its own deformed points, C / G channels and M / G
  of the M heads;
* an offset network theta_offset (per group, weights shared by the groups: a k x k depthwise convolution of stride
  r, LayerNorm, GELU, a bias-free 1 x 1 convolution to 2 channels) predicts one offset per point of an
  H_G x W_G = (H / r) x (W / r) grid of reference points p, Delta p = s tanh(theta_offset(q));
* x~ = phi(x; p + Delta p): x sampled bilinearly at the deformed points, k~ = x~ W_k, v~ = x~ W_v;
* per head m: z(m) = softmax(q(m) k~(m)^T / sqrt(d) + phi(B^; R)) v~(m), where B^ is a learned
  (2H - 1) x (2W - 1) table of relative position biases per head, read bilinearly at the continuous displacement
  R between every query position and every deformed key point (the *deformable relative position bias*);
* the heads are concatenated and projected, z W_o.

Everything follows the authors' released CVPR 2022 code (LeapLabTHU/DAT as of June 2022, commit 566a593, before
the DAT++ update: models/dat_blocks.py, ``DAttentionBaseline``; models/dat.py; configs/dat_*.yaml), in particular
its coordinate conventions:

* reference points are the pixel centres in normalized coordinates, ((i + 1/2) / H_G) * 2 - 1 (y, x order), and
  the offsets are scaled per axis as Delta p = s tanh(.) / (H_G, W_G) with s = 2 (``offset_range_factor``), i.e.
  at most about one grid cell in each direction;
* both bilinear samplings use ``grid_sample(..., align_corners=True)``, under which -1 and +1 are the *centres* of
  the border pixels, so the undeformed grid reads the map at i + 1/2 - (i + 1/2) / H, slightly contracted towards
  the centre (not exactly at the pixels); zero padding outside;
* the bias displacement is R = (query point - key point) / 2, both in the normalized coordinates above, the query
  points being the same pixel-centre grid at H x W, and the (2H - 1) x (2W - 1) table is read at R with
  ``align_corners=True``;
* the offset network sees q (not x), reshaped per group, and the keys and values are sampled from x itself.

**The backbone** (the paper and the configs): a 4 x 4 stride-4 patch embedding with LayerNorm, four
stages at strides 4-32 joined by 2 x 2 stride-2 convolutions (bias-free) with LayerNorm, pre-norm blocks
x = x + DropPath(Attn(LN(x))); x = x + DropPath(MLP(LN(x))) with a 4x GELU MLP, then LayerNorm, global average
pooling and a linear classifier. Stages 1-2 alternate window attention (7 x 7, relative position bias as in Swin)
and shifted window attention (shift ceil(7 / 2) = 4, not Swin's 3); stages 3-4 alternate window attention and
deformable attention with r = 1, s = 2, offset kernels 5 and 3 (the code's [9, 7, 5, 3] by stage) and groups of
128 channels (DAT-T/S: 3 and 6 groups, DAT-B: 4 and 8). Heads are 32 channels wide. DAT-T: C = 96, depths
2-2-6-2; DAT-S: C = 96, 2-2-18-2; DAT-B: C = 128, 2-2-18-2; drop-path 0.2 / 0.3 / 0.5 as in the configs;
DAT-B at 384 (fine-tuned) uses 12 x 12 windows (shift 6).

Departures, all for inputs the released code rejects (it accepts exactly the ``img_size`` it was built for):

* the window attention is ``models.swin.WindowAttention`` (same parameters and computation): maps that are not
  multiples of the window are zero-padded right and bottom before the shift, and an axis no longer than the window
  is one unshifted window, as Swin's detection code and timm do;
* the relative position bias table is built for the ``img_size`` map; on another map size it is resized
  bicubically to (2H - 1) x (2W - 1), which is what the authors' ``load_pretrained`` does to fine-tune at 384;
* inputs of any size of at least 32 x 32 (one token at stage 4) work: the stride-4 and stride-2 convolutions
  drop trailing rows and columns as the authors' unpadded convolutions do.

Initialization: PyTorch's defaults for linear and convolution layers (the authors' ``reset_parameters`` loops over
parameters, not modules, so it changes nothing) and truncated normal (std 0.01) for the bias tables. Attention
runs in ``F.scaled_dot_product_attention`` with the (deformable) relative position bias as ``attn_mask``.

Registered: ``dat_deformable_attn`` (the deformable attention alone, (N, C, H, W) -> same or tokens with
``hw``) and the models ``dat_tiny``, ``dat_small``, ``dat_base`` (224) and ``dat_base_384``.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import (DropPath, LayerNorm2d, Mlp, TokenAttention, cached_geometry, check_hw, check_images,
                      check_positive_int, check_stages, drop_path_rates, heads_for_width, resize_maps, resolve_device,
                      to_2tuple)
from ..registry import register_attention, register_model
from .swin import WindowAttention

GROUP_WIDTH = 128  # channels per offset group in every released config (DAT-T/S: 384/3, 768/6; DAT-B: 512/4, 1024/8)
OFFSET_KERNELS = (9, 7, 5, 3)  # the offset network's depthwise kernel by stage (dat_blocks.py, ``ksizes``)


def bilinear_sample(x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """``grid_sample(x, grid, "bilinear", zeros padding, align_corners=True)``: (B, C, H, W) at (B, H', W', 2) points
    given as (x, y) -> (B, C, H', W'). On the meta device only the shape is made: torch computes grid_sample there
    through its Python decomposition (about 0.2 s a call), and meta tensors hold no values anyway."""
    if x.is_meta:
        return x.new_empty(x.shape[0], x.shape[1], grid.shape[1], grid.shape[2])
    return F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="zeros", align_corners=True)


def resize_table(table: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(M, h, w) bias table -> (M, *size), resized bicubically (align_corners=False) as the authors' load_pretrained
    does (``layers.resize_maps``: on the meta device only the shape)."""
    return resize_maps(table[None], size)[0]


def pixel_centres(n: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """(n,) normalized centres ((i + 1/2) / n) * 2 - 1 of n pixels, the authors' reference grid along one axis.
    Cached per size, device and dtype (``cached_geometry``)."""
    device = resolve_device(device)
    return cached_geometry(("dat_pixel_centres", n, device, dtype),
                           lambda: (torch.arange(n, device=device, dtype=dtype) + 0.5) * (2.0 / n) - 1.0)


@register_attention("dat_deformable_attn", layout="nlc")
class DeformableAttention(TokenAttention):
    """DAT's deformable multi-head attention: (N, L, C) tokens with ``hw=(H, W)`` -> same; (N, C, H, W) -> same.

    Args:
        channels: C. num_heads: M (default C / 32, DAT's head width). groups: G offset groups, each with its own
            deformed points for C / G channels and M / G heads (default C / 128 where that divides M, else 1).
        offset_kernel: k of the offset network's depthwise convolution (5: DAT's stage 3; stage 4 uses 3).
        offset_stride: r, the reference grid has (H + 2 (k // 2) - k) // r + 1 rows (r = 1 in DAT).
        offset_range_factor: s > 0, offsets are s tanh(.) / (H_G, W_G) in normalized coordinates (2 in DAT).
        use_pe: add the deformable relative position bias (True in DAT's stages 3-4).
        fmap_size: the map (H, W) the bias table is laid out for, (2H - 1) x (2W - 1) per head (14: stage 3 at
            224); other maps read a bicubically resized table.
        attn_drop, proj_drop: dropout on the attention weights and on the output.
    """

    def __init__(self, channels: int, num_heads: int | None = None, groups: int | None = None,
                 offset_kernel: int = 5, offset_stride: int = 1, offset_range_factor: float = 2.0,
                 use_pe: bool = True, fmap_size: int | tuple[int, int] = 14, attn_drop: float = 0.0,
                 proj_drop: float = 0.0):
        super().__init__(channels)
        self.num_heads = heads_for_width(channels, num_heads, 32, "DAT")
        if groups is None:
            wide = channels % GROUP_WIDTH == 0 and self.num_heads % (channels // GROUP_WIDTH) == 0
            groups = channels // GROUP_WIDTH if wide else 1
        check_positive_int("groups", groups)
        if self.num_heads % groups:
            raise ValueError(f"groups={groups} must divide num_heads={self.num_heads} (each group owns whole heads)")
        check_positive_int("offset_kernel", offset_kernel)
        check_positive_int("offset_stride", offset_stride)
        if isinstance(offset_range_factor, bool) or not isinstance(offset_range_factor, (int, float)) \
                or offset_range_factor <= 0:
            raise ValueError(f"offset_range_factor must be a positive number, got {offset_range_factor!r}")
        fh, fw = to_2tuple(fmap_size)
        check_positive_int("fmap_size", fh), check_positive_int("fmap_size", fw)
        self.groups, self.group_channels = groups, channels // groups
        self.offset_range_factor = float(offset_range_factor)
        self.attn_drop = attn_drop
        gc = self.group_channels
        self.conv_offset = nn.Sequential(
            nn.Conv2d(gc, gc, offset_kernel, offset_stride, offset_kernel // 2, groups=gc),
            LayerNorm2d(gc), nn.GELU(), nn.Conv2d(gc, 2, 1, bias=False))
        self.proj_q = nn.Linear(channels, channels)
        self.proj_k = nn.Linear(channels, channels)
        self.proj_v = nn.Linear(channels, channels)
        self.proj_out = nn.Linear(channels, channels)
        self.proj_drop = nn.Dropout(proj_drop)
        if use_pe:
            self.rpe_table = nn.Parameter(torch.zeros(self.num_heads, 2 * fh - 1, 2 * fw - 1))
            nn.init.trunc_normal_(self.rpe_table, std=0.01)
        else:
            self.register_parameter("rpe_table", None)

    def deformed_points(self, q: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        """(N * G, H_G, W_G, 2) deformed points p + Delta p, normalized (y, x), from queries q: (N, L, C)."""
        h, w = hw
        n = q.shape[0]
        q_map = q.transpose(1, 2).reshape(n * self.groups, self.group_channels, h, w)
        offset = self.conv_offset(q_map).tanh()  # (N * G, 2, H_G, W_G), channel 0 = y
        hg, wg = offset.shape[-2:]
        s = self.offset_range_factor
        ys = pixel_centres(hg, q.device, offset.dtype)[:, None] + offset[:, 0] * (s / hg)
        xs = pixel_centres(wg, q.device, offset.dtype)[None, :] + offset[:, 1] * (s / wg)
        return torch.stack((ys, xs), dim=-1)

    def sampling_points(self, x: torch.Tensor, hw=None) -> torch.Tensor:
        """(N, G, H_G, W_G, 2) deformed points in pixel coordinates (row, column) of the H x W map, where the keys
        and values of ``x`` ((N, C, H, W), or (N, L, C) with ``hw``) are read (``align_corners=True``: (u + 1) / 2 *
        (H - 1))."""
        if x.dim() == 4:
            hw = x.shape[-2:]
            x = x.flatten(2).transpose(1, 2)
        h, w = check_hw(hw, x.shape[1])
        pos = self.deformed_points(self.proj_q(x), (h, w))
        scale = torch.tensor([h - 1, w - 1], device=pos.device, dtype=pos.dtype)
        return ((pos + 1) / 2 * scale).reshape(x.shape[0], self.groups, *pos.shape[1:])

    def position_bias(self, pos: torch.Tensor, hw: tuple[int, int], n: int) -> torch.Tensor:
        """(N, M, H * W, N_s) deformable relative position bias phi(B^; R) for points ``pos`` (N * G, H_G, W_G, 2)."""
        h, w = hw
        table = self.rpe_table
        if table.shape[-2:] != (2 * h - 1, 2 * w - 1):  # the authors' load_pretrained: bicubic resize
            table = resize_table(table, (2 * h - 1, 2 * w - 1))
        ys, xs = pixel_centres(h, pos.device, pos.dtype), pixel_centres(w, pos.device, pos.dtype)
        queries = torch.stack(torch.meshgrid(ys, xs, indexing="ij"), dim=-1).reshape(1, h * w, 1, 2)
        displacement = (queries - pos.reshape(pos.shape[0], 1, -1, 2)) * 0.5  # (N * G, HW, N_s, 2), (y, x)
        heads = table.expand(n, -1, -1, -1).reshape(n * self.groups, self.num_heads // self.groups, *table.shape[-2:])
        bias = bilinear_sample(heads, displacement.flip(-1))
        return bias.reshape(n, self.num_heads, h * w, -1)

    def _heads(self, x: torch.Tensor, h: int, w: int):
        """q (N, M, HW, d), k, v (N, M, N_s, d), the bias (N, M, HW, N_s) or None, for tokens x (N, HW, C)."""
        n, length, c = x.shape
        q = self.proj_q(x)
        pos = self.deformed_points(q, (h, w))  # (N * G, H_G, W_G, 2)
        x_map = x.transpose(1, 2).reshape(n * self.groups, self.group_channels, h, w)
        sampled = bilinear_sample(x_map, pos.flip(-1)).reshape(n, c, -1).transpose(1, 2)  # (N, N_s, C)
        d = c // self.num_heads
        q = q.reshape(n, length, self.num_heads, d).transpose(1, 2)
        k = self.proj_k(sampled).reshape(n, -1, self.num_heads, d).transpose(1, 2)
        v = self.proj_v(sampled).reshape(n, -1, self.num_heads, d).transpose(1, 2)
        bias = None if self.rpe_table is None else self.position_bias(pos, (h, w), n).to(q.dtype)
        return q, k, v, bias

    def attention_map(self, x: torch.Tensor, hw) -> torch.Tensor:
        """(N, M, H * W, N_s) attention weights of every query over the deformed points, for tokens (N, L, C)."""
        q, k, _, bias = self._heads(x, *check_hw(hw, x.shape[1]))
        logits = q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5
        return (logits if bias is None else logits + bias).softmax(-1)

    def forward_tokens(self, x: torch.Tensor, hw: tuple[int, int] | None) -> torch.Tensor:
        h, w = check_hw(hw, x.shape[1])
        q, k, v, bias = self._heads(x, h, w)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias,
                                             dropout_p=self.attn_drop if self.training else 0.0)
        return self.proj_drop(self.proj_out(out.transpose(1, 2).reshape(x.shape)))

    def extra_repr(self) -> str:
        return f"channels={self.channels}, num_heads={self.num_heads}, groups={self.groups}, " \
               f"offset_range_factor={self.offset_range_factor}, use_pe={self.rpe_table is not None}"


class DATBlock(nn.Module):
    """(B, H, W, C) -> same: x = x + DropPath(Attn(LN(x))); x = x + DropPath(MLP(LN(x))) (one DropPath module for
    both residuals, as the authors' stages)."""

    def __init__(self, dim: int, attn: TokenAttention, mlp_ratio: float, drop: float, drop_path: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = attn
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        x = x + self.drop_path(self.attn(self.norm1(x).reshape(b, h * w, c), hw=(h, w)).reshape(b, h, w, c))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class Downsample(nn.Module):
    """(B, H, W, C_in) channels-last -> (B, H // s, W // s, C_out): unpadded s x s stride-s convolution, LayerNorm
    (the patch embedding with s = 4 and a bias; the reductions between stages with s = 2 and no bias)."""

    def __init__(self, in_dim: int, out_dim: int, stride: int, bias: bool):
        super().__init__()
        self.proj = nn.Conv2d(in_dim, out_dim, stride, stride, bias=bias)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))


class DATStage(nn.Module):
    """``depth`` blocks at width ``dim``; block i's attention is ``spec[i % len(spec)]``: "L" window attention,
    "S" shifted window attention (shift ceil(M / 2)), "D" deformable attention."""

    def __init__(self, dim: int, depth: int, num_heads: int, spec: str, window_size: int,
                 fmap_size: tuple[int, int], offset_kernel: int, offset_range_factor: float, mlp_ratio: float,
                 drop: float, attn_drop: float, drop_paths: list[float]):
        super().__init__()
        shift = -(-window_size // 2)
        attns = []
        for i in range(depth):
            kind = spec[i % len(spec)]
            if kind == "D":
                groups = max(dim // GROUP_WIDTH, 1)
                attns.append(DeformableAttention(dim, num_heads, groups, offset_kernel, 1, offset_range_factor,
                                                 True, fmap_size, attn_drop, drop))
            else:
                attns.append(WindowAttention(dim, num_heads, window_size, shift if kind == "S" else 0, True,
                                             attn_drop, drop))
        self.blocks = nn.Sequential(*[DATBlock(dim, a, mlp_ratio, drop, r) for a, r in zip(attns, drop_paths)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


class DAT(nn.Module):
    """(N, in_chans, H, W) -> (N, num_classes) logits, for any H, W >= 32.

    Args:
        img_size: the input size the deformable attention's bias tables are laid out for (224; 384 for the
            fine-tuned DAT-B). patch_size: 4. dims, depths, num_heads: per stage.
        stage_spec: per stage, the repeating pattern of attention kinds ("L", "S", "D"; see ``DATStage``).
        window_size: M. offset_range_factor: s of the deformable attention. mlp_ratio: MLP width / C.
        drop_rate, attn_drop_rate: dropout; drop_path_rate: stochastic depth rising linearly over all blocks.
    """

    def __init__(self, img_size: int | tuple[int, int] = 224, patch_size: int = 4, in_chans: int = 3,
                 num_classes: int = 1000, dims: tuple[int, ...] = (96, 192, 384, 768),
                 depths: tuple[int, ...] = (2, 2, 6, 2), num_heads: tuple[int, ...] = (3, 6, 12, 24),
                 stage_spec: tuple[str, ...] = ("LS", "LS", "LD", "LD"), window_size: int = 7,
                 offset_range_factor: float = 2.0, mlp_ratio: float = 4.0, drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0, drop_path_rate: float = 0.2):
        super().__init__()
        depths, dims = check_stages(depths, dims)
        num_heads, stage_spec = tuple(num_heads), tuple(stage_spec)
        if len(num_heads) != 4 or len(stage_spec) != 4:
            raise ValueError(f"num_heads and stage_spec need 4 entries, got {num_heads!r} and {stage_spec!r}")
        if any(not s or set(s) - set("LSD") for s in stage_spec):
            raise ValueError(f"stage_spec entries are non-empty strings of 'L', 'S' and 'D', got {stage_spec!r}")
        for name, value in dict(patch_size=patch_size, in_chans=in_chans, num_classes=num_classes,
                                window_size=window_size).items():
            check_positive_int(name, value)
        ih, iw = to_2tuple(img_size)
        check_positive_int("img_size", ih), check_positive_int("img_size", iw)
        self.patch_size = patch_size
        rates = drop_path_rates(drop_path_rate, sum(depths))
        self.patch_embed = Downsample(in_chans, dims[0], patch_size, bias=True)
        stages, downsamples, start = [], [], 0
        for i in range(4):
            fmap = (max(ih // patch_size // 2 ** i, 1), max(iw // patch_size // 2 ** i, 1))
            stages.append(DATStage(dims[i], depths[i], num_heads[i], stage_spec[i], window_size, fmap,
                                   OFFSET_KERNELS[i], offset_range_factor, mlp_ratio, drop_rate, attn_drop_rate,
                                   rates[start:start + depths[i]]))
            start += depths[i]
            if i < 3:
                downsamples.append(Downsample(dims[i], dims[i + 1], 2, bias=False))
        self.stages = nn.ModuleList(stages)
        self.downsamples = nn.ModuleList(downsamples)
        self.norm = nn.LayerNorm(dims[-1])
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(dims[-1], num_classes)
        for m in self.modules():  # the authors' layers keep PyTorch's initialization (see the module docstring)
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                m.reset_parameters()
            elif isinstance(m, WindowAttention):
                nn.init.trunc_normal_(m.relative_position_bias_table, std=0.01)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, H // 32, W // 32, C_4) normalized channels-last map."""
        check_images("DAT", x, 8 * self.patch_size, "a 4x4 patch embedding and three 2x2 reductions")
        x = self.patch_embed(x.permute(0, 2, 3, 1))
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i < 3:
                x = self.downsamples[i](x)
        return self.norm(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.head_drop(self.forward_features(x).mean(dim=(1, 2))))


_VARIANTS = {
    "dat_tiny": dict(dims=(96, 192, 384, 768), depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), drop_path_rate=0.2),
    "dat_small": dict(dims=(96, 192, 384, 768), depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24),
                      drop_path_rate=0.3),
    "dat_base": dict(dims=(128, 256, 512, 1024), depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32),
                     drop_path_rate=0.5),
    "dat_base_384": dict(dims=(128, 256, 512, 1024), depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32),
                         drop_path_rate=0.5, img_size=384, window_size=12),
}
for _name, _cfg in _VARIANTS.items():
    register_model(_name, DAT, **_cfg)
