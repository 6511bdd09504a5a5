"""MOAT: alternating mobile convolution and attention (Yang, Qiao, Yu, Yuan, Zhu, Yuille, Adam & Chen, ICLR 2023,
arXiv:2210.01820).

**MOAT block** (Sec. 3.2, Fig. 1; registered alone as the block ``moat_block``). A transformer block is
x <- x + Attn(LN(x)); x <- x + MLP(LN(x)). MOAT replaces the MLP by a mobile convolution (MobileNetV2's inverted
residual) and moves it *before* the attention; the MBConv's squeeze-excitation is dropped, since the attention
that follows already mixes the whole map:

    x <- Shortcut(x) + W_shrink GELU(BN(DW_3x3,s GELU(BN(W_expand BN(x)))))        (pre-norm MBConv, expansion 4)
    x <- x + Attn(LN(x))                                                           (multi-head self-attention)

Attn is softmax(Q K^T / sqrt(d) + B) V in heads of d = 32 channels, with a learned relative position bias
B[h, i, j] = T_h[y_j - y_i, x_j - x_i] (CoAtNet's), over the whole map (global attention, the classification
setting) or inside non-overlapping windows (``window=``, the paper's downstream setting: the depthwise convolution
exchanges information across windows, so no window shifting is needed). A strided block (the first of a stage)
downsamples in the depthwise convolution; its shortcut is a "SAME" average pool (2x2, stride 2) followed by a 1x1
convolution when the width changes. The table T_h has (2P - 1) x (2P - 1) entries with P = 14 in stage 3 and 7 in
stage 4 (the 224-px maps) whatever the input size; for a window or map of h x w it is resized bilinearly to
(2h - 1) x (2w - 1) (the authors' ``scale_ratio``), and B enters ``F.scaled_dot_product_attention`` as its
additive ``attn_mask``.

**MOAT network** (Sec. 3.3, Table 1): a stem of two 3x3 convolutions (stride 2, BN + GELU between them), two stages
of MBConv blocks *with* squeeze-excitation (SE width 1/4 of the block's output width, SiLU), two stages of MOAT
blocks, every stage starting with a stride-2 block (output strides 4, 8, 16, 32), and a head: global average pool,
LayerNorm, a linear classifier. Variants (deeplab2 ``model/pixel_encoder/moat.py``; Table 1 of the paper):

=============  =========================  ============  ==========
variant        widths                     blocks        stem
=============  =========================  ============  ==========
MOAT-0         96, 192, 384, 768          2, 3, 7, 2    64
MOAT-1         96, 192, 384, 768          2, 6, 14, 2   64
MOAT-2         128, 256, 512, 1024        2, 6, 14, 2   128
MOAT-3         160, 320, 640, 1280        2, 12, 28, 2  160
MOAT-4         256, 512, 1024, 2048       2, 12, 28, 2  256
tiny-MOAT-0    32, 64, 128, 256           2, 3, 7, 2    32
tiny-MOAT-1    40, 80, 160, 320           2, 3, 7, 2    40
tiny-MOAT-2    56, 112, 224, 448          2, 3, 7, 2    56
tiny-MOAT-3    80, 160, 320, 640          2, 3, 7, 2    80
=============  =========================  ============  ==========

Follows the authors' TensorFlow code (google-research/deeplab2: ``model/pixel_encoder/moat.py``,
``model/layers/moat_blocks.py``, ``model/layers/moat_attention.py``); our parameter counts equal those asserted
in its ``moat_test.py`` to the unit. TF -> PyTorch details:

* BatchNorm: Keras' defaults (epsilon 1e-3, momentum 0.99), i.e. ``eps=1e-3, momentum=0.01`` here; LayerNorm
  epsilon 1e-5 (their ``ln_epsilon``).
* GELU: ``tf.nn.gelu`` with its default ``approximate=False``, i.e. the exact (erf) GELU (MaxViT's code, in
  contrast, uses the tanh form).
* Padding "SAME": the strided depthwise convolutions and the stem's first convolution put the extra row/column
  at the bottom/right (``layers.mbconv.conv2d``); the shortcut's average pool is TF's "SAME" pooling, whose
  border windows average only their valid entries (``same_avg_pool``).
* The authors' Q, K, V projections are three dense layers; here one fused ``nn.Linear(C, 3C)`` (same map, same
  parameters; Q rows first, heads in order). The head's 1x1 convolution on the pooled 1x1 map is a linear layer.
* Initialisation: normal(0, 0.02) weights (relative-position tables included) and zero biases, as their
  ``kernel_initializer`` / ``bias_initializer``.
* Stochastic depth: block i of n (counted from 0 over the whole network) drops with probability
  ``drop_path_rate * i / n`` (their ``survival_prob`` schedule), in both residual branches of a MOAT block. Their
  ImageNet rates are 0.2 (MOAT-0), 0.3 (MOAT-1, 2), 0.6 (MOAT-3), 0.7 (MOAT-4), 0 (tiny-MOAT-0..2), 0.1
  (tiny-MOAT-3); the registered models default to 0 (pass ``drop_path_rate`` to train).

Reused: ``layers.mbconv.conv2d`` (TF "SAME" convolutions), the SE module, ``layers.MultiHeadSelfAttention`` (with the
bias as ``attn_bias``) and ``layers.window_partition``. Not reused, because they differ: MaxViT's MBConv (same
pre-norm layout, but tanh GELU and its own shortcut pooling) and relative bias (a fixed window, never resized);
``layers.mbconv``'s blocks (post-norm); CoAtNet's bias (cropped, not resized, below its window).

Choices the authors' code leaves open, exposed as arguments: ``pool_size`` of the shortcut pool (2, the
classification default of their config, "saves FLOPs"; their ``get_model`` defaults to 3, which they recommend
for downstream tasks); ``window`` of the attention stages (None: global attention, the classification setting;
an (h, w) pair per MOAT stage for window attention, where maps must be multiples of the window: a ValueError
names the accepted sizes); ``global_attention_at_end`` (the last block of each MOAT stage global, their option for
detection); ``rel_pos=False`` drops the relative position bias (their "no_pe" checkpoints).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..attention.se import SqueezeExcite
from ..layers import (DropPath, MultiHeadSelfAttention, cached_geometry, check_images, check_positive_int,
                      check_stages, heads_for_width, linear_resize_matrix, to_2tuple, window_partition,
                      window_reverse)
from ..layers.mbconv import conv2d
from ..registry import register_block, register_model
from .swin import key_offset_index


def batch_norm(channels: int) -> nn.BatchNorm2d:
    """Keras' BatchNormalization defaults: epsilon 1e-3, momentum 0.99 (PyTorch's momentum 0.01)."""
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)


def _same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def same_avg_pool(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """TensorFlow's ``AveragePooling2D(kernel, stride, padding="SAME")``: (N, C, H, W) -> (N, C, ceil(H/s),
    ceil(W/s)); pads at the bottom/right first and averages each window over its valid (unpadded) entries."""
    (top, bottom), (left, right) = (_same_pads(s, kernel, stride) for s in x.shape[-2:])
    pads = (left, right, top, bottom)
    summed = F.avg_pool2d(F.pad(x, pads), kernel, stride, divisor_override=1)
    valid = F.avg_pool2d(F.pad(x.new_ones(1, 1, *x.shape[-2:]), pads), kernel, stride, divisor_override=1)
    return summed / valid


class Shortcut(nn.Module):
    """The residual path of a (possibly strided) block: "SAME" average pool if stride > 1, then a 1x1 convolution
    (with bias) if the width changes; (N, C_in, H, W) -> (N, C_out, ceil(H/s), ceil(W/s))."""

    def __init__(self, in_dim: int, out_dim: int, stride: int, pool_size: int):
        super().__init__()
        self.stride, self.pool_size = stride, pool_size
        self.conv = nn.Conv2d(in_dim, out_dim, 1) if in_dim != out_dim else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = same_avg_pool(x, self.pool_size, self.stride)
        return self.conv(x)


class MBConv(nn.Module):
    """MOAT's pre-norm inverted residual: (N, C_in, H, W) -> (N, C_out, ceil(H/s), ceil(W/s)).

    Shortcut(x) + 1x1 shrink(SE(GELU(BN(k x k depthwise, stride s(GELU(BN(1x1 expand(BN(x)))))))));
    expanded width ``expansion`` x C_out; the SE (width ``int(se_ratio * C_out)``, SiLU) only where ``se_ratio``.
    """

    def __init__(self, in_dim: int, out_dim: int, stride: int = 1, expansion: int = 4,
                 se_ratio: float | None = 0.25, kernel_size: int = 3, pool_size: int = 2, drop_path: float = 0.0):
        super().__init__()
        mid = out_dim * expansion
        self.shortcut = Shortcut(in_dim, out_dim, stride, pool_size)
        self.pre_norm = batch_norm(in_dim)
        self.expand_conv = nn.Conv2d(in_dim, mid, 1, bias=False)
        self.expand_norm = batch_norm(mid)
        self.depthwise_conv = conv2d(mid, mid, kernel_size, stride, groups=mid, padding="same")
        self.depthwise_norm = batch_norm(mid)
        self.se = (SqueezeExcite(mid, rd_channels=max(1, int(out_dim * se_ratio)), act="silu") if se_ratio
                   else nn.Identity())
        self.shrink_conv = nn.Conv2d(mid, out_dim, 1)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.gelu(self.expand_norm(self.expand_conv(self.pre_norm(x))))
        y = self.se(F.gelu(self.depthwise_norm(self.depthwise_conv(y))))
        return self.shortcut(x) + self.drop_path(self.shrink_conv(y))


def _linear_resize_matrix(n_in: int, n_out: int, like: torch.Tensor) -> torch.Tensor:
    """``layers.linear_resize_matrix`` (TF2's half-pixel linear resize), remembered per size, device and dtype."""
    return cached_geometry(("resize", n_in, n_out, like.device, like.dtype),
                           lambda: linear_resize_matrix(n_in, n_out, like))


class RelativePositionBias(nn.Module):
    """A learned bias per head and 2D offset, for any window: forward(h, w) -> (heads, h * w, h * w) with
    [n, i, j] = T_n[y_j - y_i + h - 1, x_j - x_i + w - 1], T the (2P_h - 1) x (2P_w - 1) table resized bilinearly
    (half-pixel centres, TF2's ``tf.image.resize``) to (2h - 1) x (2w - 1) when the window is not P_h x P_w."""

    def __init__(self, num_heads: int, size):
        super().__init__()
        self.size = tuple(check_positive_int("position_embedding_size", s) for s in to_2tuple(size))
        ph, pw = self.size
        self.relative_position_embedding = nn.Parameter(torch.empty(num_heads, 2 * ph - 1, 2 * pw - 1))
        nn.init.normal_(self.relative_position_embedding, std=0.02)

    def forward(self, h: int, w: int) -> torch.Tensor:
        table = self.relative_position_embedding
        if table.shape[-2:] != (2 * h - 1, 2 * w - 1):  # bilinear resize, separable: A_h T A_w^T
            rows, cols = (_linear_resize_matrix(n, 2 * s - 1, table) for n, s in zip(table.shape[-2:], (h, w)))
            table = torch.einsum("ya,nab,xb->nyx", rows, table, cols)
        return table.flatten(1)[:, key_offset_index((h, w), table.device)]


@register_block("moat_block")
class MOATBlock(nn.Module):
    """The MOAT block: (N, C_in, H, W) -> (N, C_out, ceil(H/s), ceil(W/s)).

    Args:
        in_channels: C_in. out_channels: C_out, a multiple of ``head_dim``. stride: 1, or 2 (first block of a
            stage). expansion: MBConv expansion (4). kernel_size: depthwise kernel (3). pool_size: shortcut pool
            (2, see the module docstring). head_dim: channels per head (32). window: None for global attention
            over the whole map (classification), or (h, w) windows (maps must be multiples). position_embedding_size:
            P of the (2P - 1)^2 relative-bias table (14 in stage 3, 7 in stage 4; default 14). rel_pos: use the
            relative position bias (True). drop_path: stochastic depth of both residual branches.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, expansion: int = 4,
                 kernel_size: int = 3, pool_size: int = 2, head_dim: int = 32, window=None,
                 position_embedding_size=14, rel_pos: bool = True, drop_path: float = 0.0):
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels), ("stride", stride),
                            ("expansion", expansion), ("kernel_size", kernel_size), ("pool_size", pool_size),
                            ("head_dim", head_dim)):
            check_positive_int(name, value)
        num_heads = heads_for_width(out_channels, None, head_dim, "MOAT")
        self.window = None if window is None else tuple(check_positive_int("window", v) for v in to_2tuple(window))
        self.mbconv = MBConv(in_channels, out_channels, stride, expansion, None, kernel_size, pool_size, drop_path)
        self.attention_norm = nn.LayerNorm(out_channels, eps=1e-5)
        self.attention = MultiHeadSelfAttention(out_channels, num_heads)
        self.rel_pos = RelativePositionBias(num_heads, position_embedding_size) if rel_pos else None
        self.drop_path = DropPath(drop_path)

    def attention_window(self, h: int, w: int) -> tuple[int, int]:
        """The (h, w) attention window on an h x w map: the whole map, or ``window`` (a ValueError unless it tiles)."""
        if self.window is None:
            return h, w
        wh, ww = self.window
        if h % wh or w % ww:
            raise ValueError(f"MOAT window attention with {wh}x{ww} windows needs feature maps whose height is a "
                             f"multiple of {wh} and width a multiple of {ww}, got {h}x{w} (use window=None for "
                             f"global attention at any size)")
        return wh, ww

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.mbconv(x)
        n, c, h, w = x.shape
        win = self.attention_window(h, w)
        tokens = window_partition(self.attention_norm(x.permute(0, 2, 3, 1)), win)  # (N * windows, wh * ww, C)
        bias = None if self.rel_pos is None else self.rel_pos(*win)[None].to(tokens.dtype)
        y = window_reverse(self.attention(tokens, bias), win, h, w).permute(0, 3, 1, 2)
        return x + self.drop_path(y)


class Stem(nn.Module):
    """3x3 conv stride 2 ("SAME", bias) -> BN -> GELU -> 3x3 conv (bias): (N, 3, H, W) -> (N, C, ceil(H/2), ceil(W/2))."""

    def __init__(self, in_chans: int, width: int):
        super().__init__()
        self.conv_0 = conv2d(in_chans, width, 3, 2, bias=True, padding="same")
        self.norm_0 = batch_norm(width)
        self.conv_1 = nn.Conv2d(width, width, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_1(F.gelu(self.norm_0(self.conv_0(x))))


class MOAT(nn.Module):
    """(N, in_chans, H, W) -> (N, num_classes) logits; any H, W >= 1 with global attention.

    Args:
        dims, depths: widths and blocks of the four stages (MBConv, MBConv, MOAT, MOAT). stem_width: width of both
            stem convolutions. expansion (4), se_ratio (0.25, the MBConv stages), head_dim (32), pool_size (2).
        window: None (global attention, the classification setting) or two (h, w) windows, one per MOAT stage.
        global_attention_at_end: the last block of each MOAT stage attends globally (with ``window``).
        position_embedding_sizes: P of the relative-bias tables of the two MOAT stages (14, 7: the 224-px maps).
        rel_pos: relative position bias (True). drop_path_rate: stochastic depth, block i of n drops with
            ``drop_path_rate * i / n``. drop_rate: dropout before the classifier (not in the authors' model: 0).
    """

    def __init__(self, dims=(96, 192, 384, 768), depths=(2, 3, 7, 2), stem_width: int = 64, expansion: int = 4,
                 se_ratio: float = 0.25, head_dim: int = 32, pool_size: int = 2, window=None,
                 global_attention_at_end: bool = False, position_embedding_sizes=(14, 7), rel_pos: bool = True,
                 in_chans: int = 3, num_classes: int = 1000, drop_path_rate: float = 0.0, drop_rate: float = 0.0):
        super().__init__()
        depths, dims = check_stages(depths, dims)
        check_positive_int("stem_width", stem_width)
        check_positive_int("num_classes", num_classes)
        if window is not None and len(window) != 2:
            raise ValueError(f"window must be None or two (h, w) windows, one per MOAT stage, got {window!r}")
        if len(position_embedding_sizes) != 2:
            raise ValueError(f"position_embedding_sizes needs two entries (the MOAT stages), got "
                             f"{position_embedding_sizes!r}")
        self.stem = Stem(in_chans, stem_width)
        total, in_dim, stages = sum(depths), stem_width, []
        for i, (depth, dim) in enumerate(zip(depths, dims)):
            blocks = []
            for j in range(depth):
                rate, stride = drop_path_rate * (sum(depths[:i]) + j) / total, 2 if j == 0 else 1
                if i < 2:
                    blocks.append(MBConv(in_dim, dim, stride, expansion, se_ratio, pool_size=pool_size,
                                         drop_path=rate))
                else:
                    win = None if window is None or (global_attention_at_end and j == depth - 1) else window[i - 2]
                    blocks.append(MOATBlock(in_dim, dim, stride, expansion, pool_size=pool_size, head_dim=head_dim,
                                            window=win, position_embedding_size=position_embedding_sizes[i - 2],
                                            rel_pos=rel_pos, drop_path=rate))
                in_dim = dim
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.num_features = dims[-1]
        self.norm = nn.LayerNorm(dims[-1], eps=1e-5)
        self.drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(dims[-1], num_classes)
        self.apply(_init_weights)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, C_4, H', W'), H' = H / 32 rounded up."""
        check_images("MOAT", x)
        return self.stages(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.norm(self.forward_features(x).mean(dim=(2, 3)))))


def _init_weights(m: nn.Module) -> None:
    """The authors' initialisers: normal(0, 0.02) kernels, zero biases."""
    if isinstance(m, (nn.Conv2d, nn.Linear)):
        nn.init.normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


_VARIANTS = {
    "moat_0": dict(dims=(96, 192, 384, 768), depths=(2, 3, 7, 2), stem_width=64),
    "moat_1": dict(dims=(96, 192, 384, 768), depths=(2, 6, 14, 2), stem_width=64),
    "moat_2": dict(dims=(128, 256, 512, 1024), depths=(2, 6, 14, 2), stem_width=128),
    "moat_3": dict(dims=(160, 320, 640, 1280), depths=(2, 12, 28, 2), stem_width=160),
    "moat_4": dict(dims=(256, 512, 1024, 2048), depths=(2, 12, 28, 2), stem_width=256),
    "tiny_moat_0": dict(dims=(32, 64, 128, 256), depths=(2, 3, 7, 2), stem_width=32),
    "tiny_moat_1": dict(dims=(40, 80, 160, 320), depths=(2, 3, 7, 2), stem_width=40),
    "tiny_moat_2": dict(dims=(56, 112, 224, 448), depths=(2, 3, 7, 2), stem_width=56),
    "tiny_moat_3": dict(dims=(80, 160, 320, 640), depths=(2, 3, 7, 2), stem_width=80),
}
for _name, _cfg in _VARIANTS.items():
    register_model(_name, MOAT, **_cfg)
