"""EfficientFormer: vision transformers at MobileNet speed (Li et al., NeurIPS 2022, arXiv:2206.01191).

A latency-driven design (Sec. 3-4): a conv stem (two stride-2 3x3 conv + BN + ReLU) and four stages of
**MetaBlocks**. The first stages use 4D blocks on (N, C, H, W) maps, a PoolFormer-style token mixer
pool(x) - x (3x3 average pooling, padding not counted) and a conv MLP (1x1 conv, BN, GELU, 1x1 conv, BN), each
branch with LayerScale. The last ``num_vit`` blocks of the last stage are 3D blocks on (N, L, C) tokens: LayerNorm,
multi-head self-attention with a learned **attention bias** per head and relative offset, LayerNorm, MLP. Stages
are joined by stride-2 3x3 conv + BN; the head is LayerNorm, token average, and two linear heads (class and
distillation, as DeiT; eval returns their mean, ``distilled_training=True`` the pair when training).

The attention (``efficientformer_attn``, registered on its own): per head, Q and K of 32 channels and V of 128
(attn_ratio 4), softmax(Q K^T / sqrt(32) + B) V with B_h(i, j) = b_h[|dy_ij|, |dx_ij|] from a 7 x 7 table (the stage-4
grid at 224), as in the authors' code (snap-research/EfficientFormer, models/efficientformer.py ``Attention``). It is
plain softmax attention with an additive bias, so it runs in ``F.scaled_dot_product_attention`` with the bias as
``attn_mask``.

Sizes (Table 1 / the authors' code): L1, L3, L7 with widths (48, 96, 224, 448), (64, 128, 320, 512),
(96, 192, 384, 768), depths (3, 2, 6, 4), (4, 4, 12, 6), (6, 6, 18, 8) and 1, 4, 8 attention blocks. timm's
``efficientformer_l1/l3/l7`` (the authors' weights, re-keyed) load one to one.

Departure: any input size works. The authors' (and timm's) attention bias is laid out for a 7 x 7 grid only; for other
grids each offset (|dy|, |dx|) takes its entry in the table, and offsets beyond 6 (grids larger than 7) take the
table's last row / column (clamped). At 224 this is exactly the authors' bias.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import (DropPath, Mlp, TokenAttention, cached_geometry, check_hw, check_positive_int, check_stages,
                      layer_scale, resolve_device, stage_drop_path_rates, to_2tuple, trunc_normal_init)
from ..registry import register_attention, register_model
from ..timm import register_timm_rules
from .deit import fuse_heads


def offset_bias_index(hw: tuple[int, int], table_hw: tuple[int, int], device=None, stride: int = 1) -> torch.Tensor:
    """(L_q, L) indices into a flattened (th, tw) table of |dy| x |dx| offsets, clamped to the table: keys on the
    (H, W) grid, queries on its ``stride``-subsampled grid (L_q = ceil(H / stride) * ceil(W / stride)). Cached per
    grid (``cached_geometry``)."""
    hw, table_hw, device = tuple(hw), tuple(table_hw), resolve_device(device)
    return cached_geometry(("offset_bias_index", hw, table_hw, device, stride),
                           lambda: _offset_bias_index(hw, table_hw, device, stride))


def _offset_bias_index(hw, table_hw, device, stride):
    h, w = hw
    ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    qy, qx = ys[::stride, ::stride].flatten(), xs[::stride, ::stride].flatten()
    ys, xs = ys.flatten(), xs.flatten()
    dy = (qy[:, None] - ys[None, :]).abs().clamp(max=table_hw[0] - 1)
    dx = (qx[:, None] - xs[None, :]).abs().clamp(max=table_hw[1] - 1)
    return dy * table_hw[1] + dx


@register_attention("efficientformer_attn", layout="nlc")
class EfficientFormerAttention(TokenAttention):
    """(N, L, C) tokens on an (H, W) grid -> same (maps (N, C, H, W) -> same); needs ``hw`` for tokens.

    Args: channels, key_dim (32), num_heads (8), attn_ratio (V width / key_dim, 4), resolution (the bias table, 7).
    """

    def __init__(self, channels: int, key_dim: int = 32, num_heads: int = 8, attn_ratio: float = 4.0,
                 resolution=7):
        super().__init__(channels)
        for name, value in dict(key_dim=key_dim, num_heads=num_heads).items():
            check_positive_int(name, value)
        self.num_heads, self.key_dim = num_heads, key_dim
        self.val_dim = int(attn_ratio * key_dim)
        check_positive_int("attn_ratio * key_dim", self.val_dim)
        self.resolution = to_2tuple(resolution)
        self.qkv = nn.Linear(channels, num_heads * (2 * key_dim + self.val_dim))
        self.proj = nn.Linear(num_heads * self.val_dim, channels)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, self.resolution[0] * self.resolution[1]))

    def attention_bias(self, hw: tuple[int, int]) -> torch.Tensor:
        """(heads, L, L) additive bias for an (H, W) grid."""
        return self.attention_biases[:, offset_bias_index(hw, self.resolution, self.attention_biases.device)]

    def forward_tokens(self, x: torch.Tensor, hw: tuple[int, int] | None) -> torch.Tensor:
        hw = check_hw(hw, x.shape[1])
        n, length, _ = x.shape
        qkv = self.qkv(x).reshape(n, length, self.num_heads, -1).transpose(1, 2)
        q, k, v = qkv.split([self.key_dim, self.key_dim, self.val_dim], dim=-1)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=self.attention_bias(hw).to(q.dtype))
        return self.proj(y.transpose(1, 2).reshape(n, length, -1))


class LayerScale(nn.Module):
    """x * gamma over the channel axis (last for tokens, axis 1 for maps with ``channels_first``)."""

    def __init__(self, dim: int, init_value: float, channels_first: bool = False):
        super().__init__()
        self.gamma = layer_scale(dim, init_value)
        self.channels_first = channels_first

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * (self.gamma.view(-1, 1, 1) if self.channels_first else self.gamma)


class Pooling(nn.Module):
    """PoolFormer's token mixer: avg_pool3x3(x) - x (padding not counted)."""

    def __init__(self, pool_size: int = 3):
        super().__init__()
        self.pool = nn.AvgPool2d(pool_size, 1, pool_size // 2, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(x) - x


class ConvMlp(nn.Module):
    """1x1 conv, BN, GELU, 1x1 conv, BN on (N, C, H, W)."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0):
        super().__init__()
        self.fc1, self.norm1 = nn.Conv2d(dim, hidden, 1), nn.BatchNorm2d(hidden)
        self.act = nn.GELU()
        self.fc2, self.norm2 = nn.Conv2d(hidden, dim, 1), nn.BatchNorm2d(dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.norm2(self.fc2(self.drop(self.act(self.norm1(self.fc1(x)))))))


class MetaBlock2d(nn.Module):
    """4D MetaBlock on (N, C, H, W): pooling mixer and conv MLP, each with LayerScale."""

    def __init__(self, dim: int, mlp_ratio: float, ls_init: float, drop: float = 0.0, drop_path: float = 0.0):
        super().__init__()
        self.token_mixer = Pooling()
        self.ls1 = LayerScale(dim, ls_init, channels_first=True)
        self.mlp = ConvMlp(dim, int(dim * mlp_ratio), drop)
        self.ls2 = LayerScale(dim, ls_init, channels_first=True)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.ls1(self.token_mixer(x)))
        return x + self.drop_path(self.ls2(self.mlp(x)))


class MetaBlock1d(nn.Module):
    """3D MetaBlock on (N, L, C) tokens of an (H, W) grid: attention and MLP, each pre-norm with LayerScale."""

    def __init__(self, dim: int, mlp_ratio: float, ls_init: float, drop: float = 0.0, drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.token_mixer = EfficientFormerAttention(dim)
        self.ls1 = LayerScale(dim, ls_init)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)
        self.ls2 = LayerScale(dim, ls_init)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        x = x + self.drop_path(self.ls1(self.token_mixer(self.norm1(x), hw)))
        return x + self.drop_path(self.ls2(self.mlp(self.norm2(x))))


class Flat(nn.Module):
    """(N, C, H, W) -> (N, H * W, C): where the last stage turns from maps to tokens."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(2).transpose(1, 2)


class Downsample(nn.Module):
    """Stride-2 3x3 conv + BN between stages."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.conv, self.norm = nn.Conv2d(in_dim, out_dim, 3, 2, 1), nn.BatchNorm2d(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x))


class EfficientFormerStage(nn.Module):
    """(N, C_in, H, W) -> (N, C, H', W') maps, or (N, L, C) tokens when the stage ends with attention blocks."""

    def __init__(self, in_dim: int, dim: int, depth: int, downsample: bool, num_vit: int, mlp_ratio: float,
                 ls_init: float, drop: float, drop_paths: list[float]):
        super().__init__()
        self.downsample = Downsample(in_dim, dim) if downsample else nn.Identity()
        blocks: list[nn.Module] = []
        num_vit = min(num_vit, depth)
        for i in range(depth):
            if i == depth - num_vit:
                blocks.append(Flat())
            block_cls = MetaBlock1d if i >= depth - num_vit else MetaBlock2d
            blocks.append(block_cls(dim, mlp_ratio, ls_init, drop, drop_paths[i]))
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        hw = (x.shape[-2], x.shape[-1])
        for block in self.blocks:
            x = block(x, hw) if isinstance(block, MetaBlock1d) else block(x)
        return x


class EfficientFormer(nn.Module):
    """(N, in_chans, H, W) -> (N, num_classes) logits (eval: mean of the class and distillation heads).

    Args:
        depths, embed_dims: blocks and widths of the 4 stages. num_vit: attention blocks at the end of the last stage
            (at least 1; more than its depth makes the whole stage attention blocks, as in timm).
        mlp_ratios (4), layer_scale_init_value (1e-5), drop_rate, drop_path_rate (linear over all blocks),
        distilled_training: return (class, distillation) logits when training.
    """

    def __init__(self, depths=(3, 2, 6, 4), embed_dims=(48, 96, 224, 448), num_vit: int = 1, in_chans: int = 3,
                 num_classes: int = 1000, mlp_ratios: float = 4.0, layer_scale_init_value: float = 1e-5,
                 drop_rate: float = 0.0, drop_path_rate: float = 0.0, distilled_training: bool = False):
        super().__init__()
        depths, embed_dims = check_stages(depths, embed_dims)
        check_positive_int("num_classes", num_classes)
        check_positive_int("num_vit", num_vit)  # more than the last stage's depth: all of it (as timm)
        c0 = embed_dims[0]
        self.stem = nn.Sequential()
        self.stem.add_module("conv1", nn.Conv2d(in_chans, c0 // 2, 3, 2, 1))
        self.stem.add_module("norm1", nn.BatchNorm2d(c0 // 2))
        self.stem.add_module("act1", nn.ReLU())
        self.stem.add_module("conv2", nn.Conv2d(c0 // 2, c0, 3, 2, 1))
        self.stem.add_module("norm2", nn.BatchNorm2d(c0))
        self.stem.add_module("act2", nn.ReLU())
        rates = stage_drop_path_rates(drop_path_rate, depths)
        self.stages = nn.Sequential(*[
            EfficientFormerStage(embed_dims[max(i - 1, 0)], embed_dims[i], depths[i], i > 0,
                                 num_vit if i == 3 else 0, mlp_ratios, layer_scale_init_value, drop_rate,
                                 rates[i]) for i in range(4)])
        self.norm = nn.LayerNorm(embed_dims[-1])
        self.num_features = embed_dims[-1]
        self.head = nn.Linear(embed_dims[-1], num_classes)
        self.head_dist = nn.Linear(embed_dims[-1], num_classes)
        self.distilled_training = bool(distilled_training)
        self.apply(trunc_normal_init)

    def set_distilled_training(self, enable: bool = True) -> "EfficientFormer":
        self.distilled_training = bool(enable)
        return self

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, L, D) normalized tokens of the last stage."""
        return self.norm(self.stages(self.stem(x)))

    def forward(self, x: torch.Tensor):
        x = self.forward_features(x)
        x = x.mean(dim=1)
        logits, dist_logits = self.head(x), self.head_dist(x)
        if self.training and self.distilled_training:
            return logits, dist_logits
        return fuse_heads(logits, dist_logits)


# timm's EfficientFormer (timm/models/efficientformer.py): the same names; only its non-persistent bias-index buffer
# ("attention_bias_idxs", persistent in timm's state dict) has no counterpart here (we compute it per grid).
register_timm_rules(EfficientFormer, renames=(), convert=lambda sd: {k: v for k, v in sd.items()
                                                                     if not k.endswith("attention_bias_idxs")})

_VARIANTS = {
    "l1": dict(embed_dims=(48, 96, 224, 448), depths=(3, 2, 6, 4), num_vit=1),
    "l3": dict(embed_dims=(64, 128, 320, 512), depths=(4, 4, 12, 6), num_vit=4),
    "l7": dict(embed_dims=(96, 192, 384, 768), depths=(6, 6, 18, 8), num_vit=8),
}
for _name, _cfg in _VARIANTS.items():
    register_model(f"efficientformer_{_name}", EfficientFormer, timm=f"efficientformer_{_name}", **_cfg)
