"""LeViT: a vision transformer in ConvNet's clothing for faster inference (Graham et al., ICCV 2021,
arXiv:2104.01136).

A fast hybrid classifier (Sec. 4). A stem of four stride-2 3x3 convolutions (each followed by BatchNorm,
Hardswish between them) turns the (3, 224, 224) image into a 14 x 14 grid of C_1 tokens; three stages of residual
attention and MLP blocks follow, the grid shrinking 14 -> 7 -> 4 between them by a **shrink attention** block.
There is no class token and no position embedding; global average pooling feeds a class head and a distillation
head (BatchNorm then linear each), whose logits are averaged at inference (DeiT's distillation).

**LeViT attention** (Sec. 4.4-4.5, registered alone as ``levit_attn``): per head h, Q and K of D channels (small
keys) and V of ``attn_ratio`` * D channels, each projection a linear layer followed by BatchNorm, and a learned
**attention bias** per head and relative offset in place of any position embedding:

    A_h(i, j) = Q_i . K_j / sqrt(D) + B_h(|x_i - x_j|, |y_i - y_j|),    out = BN(W_o hardswish(softmax(A) V)).

The bias depends only on the absolute offsets, so it is a table of H x W entries per head (14 x 14 in the first
stage at 224 px). It is plain softmax attention with an additive term, so it runs in
``F.scaled_dot_product_attention`` with the (heads, L, L) bias as ``attn_mask``.

**Shrink attention** (Sec. 4.2) between stages: the queries come from the grid subsampled by 2 (``x[::2, ::2]``),
keys and values from the full grid, so the output has the subsampled grid; 4 * D value channels per head and
C_i / D heads (the authors' ``down_ops``), no residual (the width changes), then a residual MLP.
Its bias is indexed by the offsets between the query's position on the full grid (2i, 2j) and the keys'.

Every linear layer is followed by BatchNorm (Sec. 4.3: it folds into the linear layer at inference), the last one
of each residual branch initialised to zero (the authors' ``bn_weight_init=0``); every activation is Hardswish;
MLPs expand by 2.

This follows the authors' ``levit.py`` (facebookresearch/LeViT): the model trained for the released checkpoints,
with tokens (N, L, C) and ``nn.Linear`` + ``BatchNorm1d`` (their ``levit_c.py`` is the same network written with
1x1 convolutions on maps). timm's ``levit_128s`` ... ``levit_384`` are this linear-mode network and carry the
authors' weights as released; timm's ``levit_conv_*`` are the conv-mode rewrite (their weights reshaped to 1x1
kernels). Ours therefore names the ``levit_*`` models as twins; their tensors load one to one.

Sizes (the authors' ``specification`` and the paper's Table 2; C = widths, D = key dim, N = heads, X = depths):
128S (128, 256, 384), D 16, N (4, 6, 8), X (2, 3, 4); 128 same widths, N (4, 8, 12), X (4, 4, 4); 192
(192, 288, 384), D 32, N (3, 5, 6); 256 (256, 384, 512), D 32, N (4, 6, 8); 384 (384, 512, 768), D 32,
N (6, 9, 12), drop path 0.1; all with X (4, 4, 4) except 128S.

Departures, none acting at the size the tables are built for (``img_size``, 224 by default):

* any input size works. The authors' (and timm's) bias tables and token reshapes are fixed to one grid
  (``img_size // 16``); here each stage reads its grid from the tensor, offsets index the table built for
  ``img_size`` and offsets beyond it take the table's last row / column (clamped), as ``efficientformer_attn``.
  At the built size the bias is exactly the authors'.
* the authors' drop path on a residual branch is written as ``DropPath`` (the same per-sample rule).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import (ConvNormAct, DropPath, TokenAttention, check_hw, check_positive_int, check_positive_ints,
                      check_stages,
                      check_train_batch, create_act, to_2tuple, trunc_normal_init)
from ..registry import register_attention, register_model
from ..timm import register_timm_rules
from .deit import fuse_heads
from .efficientformer import offset_bias_index


class LinearBN(nn.Module):
    """Linear layer without bias, then BatchNorm over channels: (..., C_in) -> (..., C_out) tokens or vectors.

    ``bn_weight_init`` 0 makes a residual branch start as the identity (the authors' last layer of each branch).
    """

    def __init__(self, in_features: int, out_features: int, bn_weight_init: float = 1.0):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features, bias=False)
        self.bn = nn.BatchNorm1d(out_features)
        nn.init.constant_(self.bn.weight, bn_weight_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.linear(x)
        return self.bn(x.flatten(0, -2)).view_as(x)


class BiasedHeads(nn.Module):
    """What both LeViT attentions share: the bias table and softmax(Q K^T / sqrt(D) + B) V on SDPA."""

    def __init__(self, num_heads: int, key_dim: int, attn_ratio: float, resolution):
        super().__init__()
        self.num_heads = check_positive_int("num_heads", num_heads)
        self.key_dim = check_positive_int("key_dim", key_dim)
        self.val_dim = check_positive_int("attn_ratio * key_dim", int(attn_ratio * key_dim))
        self.resolution = tuple(check_positive_int("resolution", r) for r in to_2tuple(resolution))
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, self.resolution[0] * self.resolution[1]))

    def attention_bias(self, hw: tuple[int, int], stride: int = 1) -> torch.Tensor:
        """(heads, L_q, L) bias for keys on an (H, W) grid and queries on its ``stride``-subsampled grid."""
        return self.attention_biases[:, offset_bias_index(hw, self.resolution, self.attention_biases.device, stride)]

    def attend(self, q, k, v, bias) -> torch.Tensor:
        """q (N, heads, L_q, D), k (N, heads, L, D), v (N, heads, L, V) -> (N, L_q, heads * V)."""
        # a 4-D mask, so that SDPA can take its fused CPU kernel where the value width equals the key width
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype).unsqueeze(0))
        return y.transpose(1, 2).flatten(2)


@register_attention("levit_attn", layout="nlc")
class LeViTAttention(TokenAttention):
    """LeViT's attention with per-head offset biases: (N, L, C) tokens on an (H, W) grid -> same
    ((N, C, H, W) maps -> same). ``hw`` is required for tokens.

    Args: channels; key_dim (D, 16), num_heads (4), attn_ratio (V width / D, 2): LeViT-128S's first stage;
    resolution: the bias table's grid (14, the first stage at 224 px); act: before the output projection
    (Hardswish).
    """

    def __init__(self, channels: int, key_dim: int = 16, num_heads: int = 4, attn_ratio: float = 2.0,
                 resolution=14, act: str = "hard_swish"):
        super().__init__(channels)
        self.heads = BiasedHeads(num_heads, key_dim, attn_ratio, resolution)
        h = self.heads
        self.qkv = LinearBN(channels, num_heads * (2 * h.key_dim + h.val_dim))
        self.proj = nn.Sequential(create_act(act), LinearBN(num_heads * h.val_dim, channels, bn_weight_init=0.0))

    def forward_tokens(self, x: torch.Tensor, hw: tuple[int, int] | None) -> torch.Tensor:
        hw = check_hw(hw, x.shape[1])
        n, length, _ = x.shape
        h = self.heads
        q, k, v = self.qkv(x).view(n, length, h.num_heads, -1).transpose(1, 2).split(
            [h.key_dim, h.key_dim, h.val_dim], dim=-1)
        return self.proj(h.attend(q, k, v, h.attention_bias(hw)))


class LeViTShrinkAttention(nn.Module):
    """Shrink attention between stages: (N, L, C_in) tokens on (H, W) -> (N, L', C_out) on the grid subsampled by
    ``stride`` (H' = ceil(H / stride)); queries from the subsampled tokens, keys and values from all of them."""

    def __init__(self, in_dim: int, out_dim: int, key_dim: int, num_heads: int, attn_ratio: float = 4.0,
                 stride: int = 2, resolution=14, act: str = "hard_swish"):
        super().__init__()
        self.stride = check_positive_int("stride", stride)
        self.heads = BiasedHeads(num_heads, key_dim, attn_ratio, resolution)
        h = self.heads
        self.kv = LinearBN(in_dim, num_heads * (h.key_dim + h.val_dim))
        self.q = LinearBN(in_dim, num_heads * h.key_dim)
        self.proj = nn.Sequential(create_act(act), LinearBN(num_heads * h.val_dim, out_dim))

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int]]:
        n, length, c = x.shape
        h, s = self.heads, self.stride
        k, v = self.kv(x).view(n, length, h.num_heads, -1).transpose(1, 2).split([h.key_dim, h.val_dim], dim=-1)
        sub = x.view(n, hw[0], hw[1], c)[:, ::s, ::s]
        out_hw = (sub.shape[1], sub.shape[2])
        q = self.q(sub.flatten(1, 2)).view(n, -1, h.num_heads, h.key_dim).transpose(1, 2)
        return self.proj(h.attend(q, k, v, h.attention_bias(hw, s))), out_hw


class LeViTMlp(nn.Module):
    """LinearBN (x ratio), Hardswish, LinearBN back (BN weight 0): (N, L, C) -> (N, L, C)."""

    def __init__(self, dim: int, hidden: int, act: str = "hard_swish"):
        super().__init__()
        self.fc1 = LinearBN(dim, hidden)
        self.act = create_act(act)
        self.fc2 = LinearBN(hidden, dim, bn_weight_init=0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class LeViTBlock(nn.Module):
    """x + attn(x), then x + mlp(x) (no LayerNorm: the BatchNorms inside normalise): (N, L, C) on (H, W)."""

    def __init__(self, dim: int, key_dim: int, num_heads: int, attn_ratio: float, mlp_ratio: float, resolution,
                 drop_path: float = 0.0):
        super().__init__()
        self.attn = LeViTAttention(dim, key_dim, num_heads, attn_ratio, resolution)
        self.mlp = LeViTMlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        x = x + self.drop_path(self.attn.forward_tokens(x, hw))
        return x + self.drop_path(self.mlp(x))


class LeViTDownsample(nn.Module):
    """Shrink attention (no residual) then a residual MLP: (N, L, C_in) on (H, W) -> (N, L', C_out) on (H', W')."""

    def __init__(self, in_dim: int, out_dim: int, key_dim: int, attn_ratio: float, mlp_ratio: float, resolution,
                 drop_path: float = 0.0):
        super().__init__()
        self.attn = LeViTShrinkAttention(in_dim, out_dim, key_dim, in_dim // key_dim, attn_ratio, 2, resolution)
        self.mlp = LeViTMlp(out_dim, int(out_dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int]]:
        x, hw = self.attn(x, hw)
        return x + self.drop_path(self.mlp(x)), hw


class BNLinear(nn.Sequential):
    """The classifier: BatchNorm1d then linear (trunc-normal 0.02 weights, zero bias): (N, C) -> (N, classes)."""

    def __init__(self, dim: int, num_classes: int, drop: float = 0.0):
        super().__init__()
        self.bn = nn.BatchNorm1d(dim)
        self.drop = nn.Dropout(drop)
        self.linear = nn.Linear(dim, num_classes)
        trunc_normal_init(self.linear)


class LeViT(nn.Module):
    """(N, in_chans, H, W) -> (N, num_classes) logits (eval: mean of the class and distillation heads).

    Args:
        embed_dims, depths, num_heads: widths, blocks and heads of the 3 stages. key_dim: D, every attention's
            query / key width per head. attn_ratio (2), mlp_ratio (2): V width / D and MLP expansion in the stages;
            down_attn_ratio (4), down_mlp_ratio (2): the same in the shrink blocks (whose heads are C_in / D).
        img_size: the input size the bias tables are laid out for (224: 14 x 14, 7 x 7, 4 x 4 grids).
        drop_rate (before the heads), drop_path_rate (the same on every residual branch, as the authors),
        distilled_training: return (class, distillation) logits when training.

    Training needs a batch of at least 2 (the heads' BatchNorm acts on one pooled vector per image).
    """

    min_train_batch = 2

    def __init__(self, embed_dims=(128, 256, 384), depths=(2, 3, 4), num_heads=(4, 6, 8), key_dim: int = 16,
                 attn_ratio: float = 2.0, mlp_ratio: float = 2.0, down_attn_ratio: float = 4.0,
                 down_mlp_ratio: float = 2.0, img_size=224, in_chans: int = 3, num_classes: int = 1000,
                 drop_rate: float = 0.0, drop_path_rate: float = 0.0, distilled_training: bool = False):
        super().__init__()
        depths, embed_dims = check_stages(depths, embed_dims, num_stages=3)
        num_heads = check_positive_ints("num_heads", num_heads)
        if len(num_heads) != 3:
            raise ValueError(f"num_heads needs 3 entries (one per stage), got {num_heads!r}")
        check_positive_int("key_dim", key_dim)
        check_positive_int("num_classes", num_classes)
        for i, c in enumerate(embed_dims[:2]):
            if c % key_dim:
                raise ValueError(f"embed_dims[{i}]={c} must be a multiple of key_dim={key_dim} "
                                 f"(the shrink attention after stage {i + 1} has embed_dims[{i}] / key_dim heads)")
        if embed_dims[0] % 8:
            raise ValueError(f"embed_dims[0]={embed_dims[0]} must be a multiple of 8 (the stem widens C/8 -> C)")
        c0 = embed_dims[0]
        widths = (in_chans, c0 // 8, c0 // 4, c0 // 2, c0)
        self.stem = nn.Sequential(*[ConvNormAct(widths[i], widths[i + 1], 3, 2, act="hard_swish" if i < 3 else None)
                                    for i in range(4)])
        resolution = tuple(s // 16 for s in to_2tuple(img_size))
        if min(resolution) < 1:
            raise ValueError(f"img_size must be at least 16 (one token), got {img_size!r}")
        self.stages = nn.ModuleList()
        for i in range(3):
            blocks = nn.ModuleList()
            if i > 0:
                blocks.append(LeViTDownsample(embed_dims[i - 1], embed_dims[i], key_dim, down_attn_ratio,
                                              down_mlp_ratio, resolution, drop_path_rate))
                resolution = tuple((r - 1) // 2 + 1 for r in resolution)
            blocks.extend(LeViTBlock(embed_dims[i], key_dim, num_heads[i], attn_ratio, mlp_ratio, resolution,
                                     drop_path_rate) for _ in range(depths[i]))
            self.stages.append(blocks)
        self.num_features = embed_dims[-1]
        self.head = BNLinear(embed_dims[-1], num_classes, drop_rate)
        self.head_dist = BNLinear(embed_dims[-1], num_classes, drop_rate)
        self.distilled_training = bool(distilled_training)

    def set_distilled_training(self, enable: bool = True) -> "LeViT":
        self.distilled_training = bool(enable)
        return self

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """(N, C, H, W) -> ((N, L, C_3) tokens of the last stage, their grid (H / 64, W / 64) rounded up)."""
        x = self.stem(x)
        hw = (x.shape[2], x.shape[3])
        x = x.flatten(2).transpose(1, 2)
        for blocks in self.stages:
            for block in blocks:
                if isinstance(block, LeViTDownsample):
                    x, hw = block(x, hw)
                else:
                    x = block(x, hw)
        return x, hw

    def forward(self, x: torch.Tensor):
        check_train_batch(self, x)
        x = self.forward_features(x)[0].mean(dim=1)
        logits, dist_logits = self.head(x), self.head_dist(x)
        if self.training and self.distilled_training:
            return logits, dist_logits
        return fuse_heads(logits, dist_logits)


def _timm_renames(model: LeViT):
    """timm's Levit (linear mode) -> ours: stem convK.linear/bn -> stem.(K-1).0/1; stage blocks follow the shrink
    block in our stage lists, so timm's block j of stage i > 0 is our j + 1."""
    def block(m):
        i, j = int(m.group(1)), int(m.group(2))
        return f"stages.{i}.{j + (i > 0)}."

    return (
        (r"^stem\.conv(\d)\.linear\.", lambda m: f"stem.{int(m.group(1)) - 1}.0."),
        (r"^stem\.conv(\d)\.bn\.", lambda m: f"stem.{int(m.group(1)) - 1}.1."),
        (r"^stages\.(\d+)\.blocks\.(\d+)\.", block),
        (r"^stages\.(\d+)\.downsample\.attn_downsample\.", r"stages.\1.0.attn."),
        (r"^stages\.(\d+)\.downsample\.mlp\.", r"stages.\1.0.mlp."),
        (r"\.attention_biases$", ".heads.attention_biases"),
        (r"\.(proj|q)\.ln\.", lambda m: f".{m.group(1)}.1." if m.group(1) == "proj" else ".q."),
        (r"\.mlp\.ln(\d)\.", r".mlp.fc\1."),
    )


register_timm_rules(LeViT, renames=_timm_renames)

_VARIANTS = {
    "128s": dict(embed_dims=(128, 256, 384), key_dim=16, num_heads=(4, 6, 8), depths=(2, 3, 4)),
    "128": dict(embed_dims=(128, 256, 384), key_dim=16, num_heads=(4, 8, 12), depths=(4, 4, 4)),
    "192": dict(embed_dims=(192, 288, 384), key_dim=32, num_heads=(3, 5, 6), depths=(4, 4, 4)),
    "256": dict(embed_dims=(256, 384, 512), key_dim=32, num_heads=(4, 6, 8), depths=(4, 4, 4)),
    "384": dict(embed_dims=(384, 512, 768), key_dim=32, num_heads=(6, 9, 12), depths=(4, 4, 4),
                drop_path_rate=0.1),
}
for _name, _cfg in _VARIANTS.items():
    register_model(f"levit_{_name}", LeViT, timm=f"levit_{_name}", **_cfg)
