"""CMT: convolutional neural networks meet vision transformers (Guo et al., CVPR 2022, arXiv:2107.06263).

A hybrid backbone with a CNN's layout (a convolutional stem, four stages at strides 4, 8, 16, 32 whose widths
double) built from transformer blocks that each carry two depthwise convolutions. A **CMT block** on the tokens
``X`` of an H x W grid is

    Y = LPU(X) = DWConv3x3(X) + X                                   (local perception unit)
    Z = LMHSA(LN(Y)) + Y                                            (lightweight multi-head self-attention)
    X' = IRFFN(LN(Z)) + Z                                           (inverted residual feed-forward network)

* **LMHSA** (registered alone as the attention ``cmt_lmhsa``): keys and values come from the grid shrunk by a
  k x k depthwise convolution of stride k (k = ``sr_ratio``, 8 / 4 / 2 / 1 in the four stages) followed by a
  BatchNorm, so their number is (H // k) (W // k); a learned bias ``B`` of shape (heads, H W, (H // k)(W // k)),
  which the paper calls a relative position bias, is added to the logits:
  ``Attn(Q, K, V) = softmax(Q K^T / sqrt(d) + B) V`` (plain softmax attention: SDPA with ``B`` as ``attn_mask``).
* **IRFFN**: 1x1 conv (expansion ``mlp_ratio``) -> GELU -> BN; a residual depthwise 3x3 conv; GELU -> BN;
  1x1 conv -> BN.
* **Stem**: 3x3 conv of stride 2 and two 3x3 convs, each followed by GELU then BN (activation first, as
  the official code); each stage opens with a 2x2 stride-2 convolution and a LayerNorm (patch embedding).
* **Head**: 1x1 conv to 1280 channels, BN, Swish, global average pooling, dropout, linear classifier.

Sizes (the official ``cmt.py``, huawei-noah/Efficient-AI-Backbones, cmt_pytorch): widths 46/52/64/76 x (1, 2, 4,
8) for CMT-Ti/XS/S/B, depths (2, 2, 10, 2) / (3, 3, 12, 3) / (3, 3, 16, 3) / (4, 4, 20, 4), stem widths 16/16/32/
38, FFN ratios 3.6/3.77/4/4, heads (1, 2, 4, 8), reductions (8, 4, 2, 1), qkv biases, classifier dropout 0.1 (0.3
for CMT-B). The position biases have the size of the training input (the README's ``--input-size``: 160, 192,
224, 256), which is each variant's registered ``img_size``.

Departures: the official model only accepts ``img_size`` (its patch embeddings assert it). Ours takes any input of
at least ``min_input_size`` pixels a side (31 with the reductions above: stage 1 needs an 8 x 8 grid for one key):
for another grid, each bias is resized bicubically (corners not aligned) along its query grid and its key grid, as
position tables are when fine-tuning at another resolution (DeiT's recipe); the official repository ships no resize
for these tables, so this is our choice; at ``img_size`` the bias is used as stored. Odd grids are handled as the
convolutions do (floor). The official MemoryEfficientSwish is ``nn.SiLU`` (same function).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import (DropPath, TokenAttention, check_divisible, check_images, check_positive_int,
                      check_stages, conv_fan_out_init, resize_maps, stage_drop_path_rates, to_2tuple, trunc_normal_init)
from ..registry import register_attention, register_model


def resize_attn_bias(bias: torch.Tensor, query_hw: tuple[int, int], key_hw: tuple[int, int],
                     new_query_hw: tuple[int, int], new_key_hw: tuple[int, int]) -> torch.Tensor:
    """(heads, Hq Wq, Hk Wk) logit bias -> (heads, Hq' Wq', Hk' Wk'), resized bicubically (corners not aligned)
    along the key grid (the query grid as channels), then along the query grid (the keys as channels). Returns
    ``bias`` itself when both grids agree."""
    heads = bias.shape[0]
    query_hw, key_hw = tuple(query_hw), tuple(key_hw)
    new_query_hw, new_key_hw = tuple(new_query_hw), tuple(new_key_hw)
    if query_hw == new_query_hw and key_hw == new_key_hw:
        return bias
    if key_hw != new_key_hw:
        b = bias.reshape(heads, query_hw[0] * query_hw[1], *key_hw)
        bias = resize_maps(b, new_key_hw).flatten(2)
    if query_hw != new_query_hw:
        b = bias.transpose(1, 2).reshape(heads, -1, *query_hw)
        b = resize_maps(b, new_query_hw)
        bias = b.flatten(2).transpose(1, 2)
    return bias


def key_grid(hw: tuple[int, int], sr_ratio: int) -> tuple[int, int]:
    """The grid of keys and values after the k x k, stride-k reduction of an H x W grid: (H // k, W // k)."""
    return hw[0] // sr_ratio, hw[1] // sr_ratio


@register_attention("cmt_lmhsa", layout="nlc", num_heads=2, sr_ratio=2)
class LightweightMHSA(TokenAttention):
    """CMT's lightweight multi-head self-attention: (N, L, C) tokens of an H x W grid -> (N, L, C).

    ``softmax(Q K^T / sqrt(d) + B) V`` with Q from all tokens and K, V from the grid reduced by a depthwise
    ``sr_ratio`` x ``sr_ratio`` convolution of the same stride and a BatchNorm (none when ``sr_ratio`` is 1), then
    a linear output projection. Q and K are ``channels // qk_ratio`` wide (the official code's option, 1 in every
    variant); ``d`` is ``channels // num_heads`` as there.

    Args:
        channels: token width C. num_heads: heads (C divisible by it). sr_ratio: the key/value reduction k; the grid
            needs at least k x k tokens (else a ValueError). qkv_bias: biases of the Q, K, V projections (True in
            every CMT variant). attn_drop, proj_drop: dropout on the attention weights / the output.
        grid: None, or the query grid (H, W) of a learned bias ``B`` (heads, H W, (H // k)(W // k)) owned by this
            module, resized bicubically for other grids (see ``resize_attn_bias``). Inside CMT the stage owns the
            bias (shared by its blocks, as in the official code) and passes it to ``forward_tokens``. Registered
            default (standalone use): a 14 x 14 grid (stage 3 of CMT-S at 224), 2 heads, k = 2.
    """

    def __init__(self, channels: int, num_heads: int = 1, sr_ratio: int = 1, qk_ratio: int = 1,
                 qkv_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0, grid=(14, 14)):
        super().__init__(channels)
        self.num_heads = check_positive_int("num_heads", num_heads)
        self.sr_ratio = check_positive_int("sr_ratio", sr_ratio)
        check_positive_int("qk_ratio", qk_ratio)
        check_divisible("channels", channels, num_heads, "num_heads")
        check_divisible("channels // qk_ratio", channels // qk_ratio, num_heads, "num_heads")
        self.qk_dim = channels // qk_ratio
        self.scale = (channels // num_heads) ** -0.5
        self.q = nn.Linear(channels, self.qk_dim, bias=qkv_bias)
        self.k = nn.Linear(channels, self.qk_dim, bias=qkv_bias)
        self.v = nn.Linear(channels, channels, bias=qkv_bias)
        self.sr = None
        if sr_ratio > 1:
            self.sr = nn.Sequential(nn.Conv2d(channels, channels, sr_ratio, sr_ratio, groups=channels),
                                    nn.BatchNorm2d(channels))
        self.attn_drop = float(attn_drop)
        self.proj = nn.Linear(channels, channels)
        self.proj_drop = nn.Dropout(proj_drop) if proj_drop > 0 else nn.Identity()
        self.grid = None
        self.pos_bias = None
        if grid is not None:
            self.grid = tuple(check_positive_int("grid", g) for g in to_2tuple(grid))
            if min(key_grid(self.grid, sr_ratio)) < 1:
                raise ValueError(f"grid={self.grid} is smaller than sr_ratio={sr_ratio}: no keys")
            keys = key_grid(self.grid, sr_ratio)
            self.pos_bias = nn.Parameter(torch.empty(num_heads, self.grid[0] * self.grid[1], keys[0] * keys[1]))
            nn.init.normal_(self.pos_bias)  # the official code draws its biases with torch.randn

    def bias_for(self, hw: tuple[int, int]) -> torch.Tensor | None:
        """This module's own bias for an H x W query grid (None when it has none)."""
        if self.pos_bias is None:
            return None
        return resize_attn_bias(self.pos_bias, self.grid, key_grid(self.grid, self.sr_ratio), hw,
                                key_grid(hw, self.sr_ratio))

    def _qkv(self, x: torch.Tensor, hw) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(N, L, C) tokens -> q (N, heads, L, d_qk), k (N, heads, L', d_qk), v (N, heads, L', C / heads)."""
        if hw is None:
            raise ValueError("LightweightMHSA needs the token grid (its keys come from a strided convolution): "
                             "call it with hw=(H, W)")
        h, w = hw
        if h < self.sr_ratio or w < self.sr_ratio:
            raise ValueError(f"LightweightMHSA with sr_ratio={self.sr_ratio} needs a grid of at least "
                             f"{self.sr_ratio}x{self.sr_ratio} tokens, got {h}x{w}")
        n, length, c = x.shape
        heads = self.num_heads
        q = self.q(x).reshape(n, length, heads, -1).transpose(1, 2)
        kv = x
        if self.sr is not None:
            kv = self.sr(x.transpose(1, 2).reshape(n, c, h, w)).flatten(2).transpose(1, 2)
        k = self.k(kv).reshape(n, kv.shape[1], heads, -1).transpose(1, 2)
        v = self.v(kv).reshape(n, kv.shape[1], heads, -1).transpose(1, 2)
        return q, k, v

    def attention_weights(self, x: torch.Tensor, hw, pos_bias: torch.Tensor | None = None) -> torch.Tensor:
        """The attention probabilities (N, heads, L, (H // k)(W // k)), written out (for figures; ``forward``
        computes the same through SDPA)."""
        q, k, _ = self._qkv(x, hw)
        bias = pos_bias if pos_bias is not None else self.bias_for(tuple(hw))
        logits = q @ k.transpose(-2, -1) * self.scale
        return (logits if bias is None else logits + bias).softmax(-1)

    def forward_tokens(self, x: torch.Tensor, hw, pos_bias: torch.Tensor | None = None) -> torch.Tensor:
        q, k, v = self._qkv(x, hw)
        n, length, c = x.shape
        bias = pos_bias if pos_bias is not None else self.bias_for(tuple(hw))
        if bias is not None:  # (1, heads, L, L_kv): a 4-D mask keeps SDPA on its fused CPU kernel (autocast casts it)
            bias = bias.unsqueeze(0)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.scale,
                                             dropout_p=self.attn_drop if self.training else 0.0)
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(n, length, c)))


class IRFFN(nn.Module):
    """Inverted residual feed-forward network: (N, C, H, W) -> (N, C, H, W).

    1x1 conv C -> hidden, GELU, BN; ``h + DWConv3x3(h)``; GELU, BN; 1x1 conv hidden -> C, BN (dropout after the
    expansion and at the output, 0 in the official variants)."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Sequential(nn.Conv2d(dim, hidden, 1), nn.GELU(), nn.BatchNorm2d(hidden))
        self.dw = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.dw_post = nn.Sequential(nn.GELU(), nn.BatchNorm2d(hidden))
        self.fc2 = nn.Sequential(nn.Conv2d(hidden, dim, 1), nn.BatchNorm2d(dim))
        self.drop = nn.Dropout(drop) if drop > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.fc1(x))
        x = self.dw_post(self.dw(x) + x)
        return self.drop(self.fc2(x))


class CMTBlock(nn.Module):
    """LPU, LMHSA and IRFFN with their residuals: (N, C, H, W) map and the stage's bias -> (N, C, H, W)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, sr_ratio: int, qk_ratio: int = 1,
                 qkv_bias: bool = True, drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0):
        super().__init__()
        self.lpu = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = LightweightMHSA(dim, num_heads, sr_ratio, qk_ratio, qkv_bias, attn_drop, drop, grid=None)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.ffn = IRFFN(dim, int(dim * mlp_ratio), drop)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, pos_bias: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        x = self.lpu(x) + x
        t = x.flatten(2).transpose(1, 2)
        t = t + self.drop_path(self.attn.forward_tokens(self.norm1(t), (h, w), pos_bias))
        y = self.norm2(t).transpose(1, 2).reshape(n, c, h, w)
        return t.transpose(1, 2).reshape(n, c, h, w) + self.drop_path(self.ffn(y))


class CMTStage(nn.Module):
    """2x2 stride-2 patch embedding + LayerNorm, then CMT blocks sharing one learned attention bias laid out for the
    stage's grid at ``img_size``: (N, C_in, H, W) -> (N, C, H // 2, W // 2)."""

    def __init__(self, in_dim: int, dim: int, depth: int, num_heads: int, mlp_ratio: float, sr_ratio: int,
                 grid: tuple[int, int], qk_ratio: int, qkv_bias: bool, drop: float, attn_drop: float,
                 drop_paths: list[float]):
        super().__init__()
        self.patch_embed = nn.Conv2d(in_dim, dim, 2, 2)
        self.norm = nn.LayerNorm(dim)  # PyTorch's default eps here, 1e-6 in the blocks (as the official code)
        self.sr_ratio, self.grid = sr_ratio, grid
        keys = key_grid(grid, sr_ratio)
        self.pos_bias = nn.Parameter(torch.empty(num_heads, grid[0] * grid[1], keys[0] * keys[1]))
        nn.init.normal_(self.pos_bias)
        self.blocks = nn.ModuleList([CMTBlock(dim, num_heads, mlp_ratio, sr_ratio, qk_ratio, qkv_bias, drop,
                                              attn_drop, r) for r in drop_paths])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        x = self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        hw = tuple(x.shape[-2:])
        bias = resize_attn_bias(self.pos_bias, self.grid, key_grid(self.grid, self.sr_ratio), hw,
                                key_grid(hw, self.sr_ratio))
        for block in self.blocks:
            x = block(x, bias)
        return x


class CMT(nn.Module):
    """(N, in_chans, H, W) images -> (N, num_classes) logits; see the module docstring.

    Args:
        img_size: int or (H, W): the input the attention biases are laid out for (the variant's training size).
        dims, depths, num_heads, mlp_ratios, sr_ratios: per stage (four each). stem_width: the stem's channels.
        qk_ratio: queries and keys ``dim // qk_ratio`` wide. qkv_bias: biases of the Q, K, V projections.
        head_dim: width of the 1x1 conv before pooling (1280). drop_rate: classifier dropout (0.1, CMT-B 0.3).
        proj_drop, attn_drop: dropout in the blocks (0 in the paper). drop_path_rate: linear over all blocks.
    """

    def __init__(self, img_size=224, dims=(46, 92, 184, 368), depths=(2, 2, 10, 2), num_heads=(1, 2, 4, 8),
                 mlp_ratios=(3.6, 3.6, 3.6, 3.6), sr_ratios=(8, 4, 2, 1), stem_width: int = 16, qk_ratio: int = 1,
                 qkv_bias: bool = True, head_dim: int = 1280, num_classes: int = 1000, in_chans: int = 3,
                 drop_rate: float = 0.1, proj_drop: float = 0.0, attn_drop: float = 0.0,
                 drop_path_rate: float = 0.0):
        super().__init__()
        depths, dims = check_stages(depths, dims)
        num_heads, sr_ratios, mlp_ratios = tuple(num_heads), tuple(sr_ratios), tuple(mlp_ratios)
        if not len(num_heads) == len(sr_ratios) == len(mlp_ratios) == 4:
            raise ValueError(f"num_heads, sr_ratios and mlp_ratios need 4 entries (one per stage), got "
                             f"{num_heads!r}, {sr_ratios!r}, {mlp_ratios!r}")
        for name, value in dict(stem_width=stem_width, head_dim=head_dim, num_classes=num_classes,
                                in_chans=in_chans).items():
            check_positive_int(name, value)
        for i, r in enumerate(mlp_ratios):
            if not r > 0:
                raise ValueError(f"mlp_ratios[{i}] must be positive, got {r!r}")
        img_hw = tuple(check_positive_int("img_size", s) for s in to_2tuple(img_size))
        self.sr_ratios = tuple(check_positive_int(f"sr_ratios[{i}]", s) for i, s in enumerate(sr_ratios))
        grids = self._grids(img_hw)
        for i, (g, k) in enumerate(zip(grids, self.sr_ratios)):
            if min(g) < k:
                raise ValueError(f"img_size={img_size} gives stage {i + 1} a {g[0]}x{g[1]} grid, smaller than its "
                                 f"sr_ratio={k}: use an img_size of at least {self._min_size()}")
        self.min_input_size = self._min_size()

        self.stem = nn.Sequential(*[m for i in range(3) for m in (
            nn.Conv2d(stem_width if i else in_chans, stem_width, 3, 1 if i else 2, 1), nn.GELU(),
            nn.BatchNorm2d(stem_width))])
        rates = stage_drop_path_rates(drop_path_rate, depths)
        in_dims = (stem_width,) + dims[:-1]
        self.stages = nn.Sequential(*[
            CMTStage(in_dims[i], dims[i], depths[i], num_heads[i], mlp_ratios[i], self.sr_ratios[i], grids[i],
                     qk_ratio, qkv_bias, proj_drop, attn_drop, rates[i])
            for i in range(4)])
        self.head_conv = nn.Sequential(nn.Conv2d(dims[-1], head_dim, 1), nn.BatchNorm2d(head_dim), nn.SiLU())
        self.drop = nn.Dropout(drop_rate)
        self.num_features = head_dim
        self.head = nn.Linear(head_dim, num_classes)
        self.apply(trunc_normal_init)
        conv_fan_out_init(self, zero_bias=True)

    @staticmethod
    def _grids(img_hw: tuple[int, int]) -> list[tuple[int, int]]:
        """Token grids of the four stages for an input of img_hw: ceil(H / 2) after the stem, then halved (floor)."""
        g = tuple(-(-s // 2) for s in img_hw)
        grids = []
        for _ in range(4):
            g = (g[0] // 2, g[1] // 2)
            grids.append(g)
        return grids

    def _min_size(self) -> int:
        size = 1
        while any(min(g) < k for g, k in zip(self._grids((size, size)), self.sr_ratios)):
            size += 1
        return size

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> the last stage's map (N, dims[-1], H / 32, W / 32)."""
        check_images("CMT", x, self.min_input_size,
                     "every stage's key/value reduction needs a grid of at least sr_ratio x sr_ratio tokens")
        return self.stages(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head_conv(self.forward_features(x))
        return self.head(self.drop(x.mean((2, 3))))


_VARIANTS = {
    "ti": dict(img_size=160, dims=(46, 92, 184, 368), depths=(2, 2, 10, 2), stem_width=16,
               mlp_ratios=(3.6,) * 4),
    "xs": dict(img_size=192, dims=(52, 104, 208, 416), depths=(3, 3, 12, 3), stem_width=16,
               mlp_ratios=(3.77,) * 4),
    "s": dict(img_size=224, dims=(64, 128, 256, 512), depths=(3, 3, 16, 3), stem_width=32, mlp_ratios=(4.0,) * 4),
    "b": dict(img_size=256, dims=(76, 152, 304, 608), depths=(4, 4, 20, 4), stem_width=38, mlp_ratios=(4.0,) * 4,
              drop_rate=0.3),
}
for _size, _cfg in _VARIANTS.items():
    register_model(f"cmt_{_size}", CMT, **_cfg)
