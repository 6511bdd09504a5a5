"""PiT: pooling-based vision transformer (Heo et al., ICCV 2021, arXiv:2103.16302).

ViT keeps one spatial size and one width through all its blocks. PiT gives the transformer the shape of a CNN:
three stages whose token grid halves and whose width doubles between them. The **pooling layer** (Sec. 3.2, Fig. 4)
reshapes the patch tokens to their 2D grid and applies a depthwise 3x3 convolution of stride 2 with a channel
multiplier of 2 (``groups = C_in``, ``C_out = 2 C_in``); the class token, which has no position, goes through a
linear layer to the new width. Each stage is a stack of standard pre-norm ViT blocks (``models.vit.Block``) on
[class token; patch tokens].

The patches are embedded by an overlapping convolution (kernel 16, stride 8, no padding: a 27 x 27 grid at 224; for
PiT-B kernel 14, stride 7: 31 x 31) and a learned position map (1, D, 27, 27) is added to the map.

Sizes: PiT-Ti/XS/S/B from the authors' code (naver-ai/pit, pit.py): base widths per head 32/48/48/64, heads
(2, 4, 8) / (2, 4, 8) / (3, 6, 12) / (4, 8, 16), depths (2, 6, 4) ((3, 6, 4) for B). The distilled models (DeiT's
distillation token, Touvron et al., 2021) carry two tokens through the stages and two heads; as in the authors'
and DeiT's code, eval returns the mean of both heads' logits (``models.deit``: ``distilled_training=True`` returns
the pair in training). timm's ``pit_*_224`` and ``pit_*_distilled_224`` load one to one.

Departures: the authors' (and timm's) models accept only ``img_size``. Ours accept any input of at least one
kernel: the position map is resized bicubically to the actual grid (DeiT's fine-tuning recipe, which PiT's training
code inherits), and odd maps are pooled with the same padded stride-2 convolution (ceil(H / 2)).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import check_positive_int, check_stages, stage_drop_path_rates, to_2tuple
from ..registry import register_model
from ..timm import register_timm_rules
from .deit import fuse_heads
from .vit import Block


class ConvEmbedding(nn.Module):
    """Overlapping patch embedding: (N, C, H, W) -> (N, D, (H - k) // s + 1, (W - k) // s + 1)."""

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int, stride: int):
        super().__init__()
        self.patch_size = patch_size
        self.conv = nn.Conv2d(in_chans, embed_dim, patch_size, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2] < self.patch_size or x.shape[-1] < self.patch_size:
            raise ValueError(f"PiT needs inputs of at least {self.patch_size}x{self.patch_size} (one patch), "
                             f"got {x.shape[-2]}x{x.shape[-1]}")
        return self.conv(x)


class Pooling(nn.Module):
    """PiT's pooling layer: map (N, C, H, W) -> (N, 2C, ceil(H/2), ceil(W/2)) by a depthwise 3x3 stride-2 conv with
    channel multiplier 2; tokens (N, t, C) -> (N, t, 2C) by a linear layer."""

    def __init__(self, in_dim: int, out_dim: int, stride: int = 2):
        super().__init__()
        self.conv = nn.Conv2d(in_dim, out_dim, stride + 1, stride, stride // 2, groups=in_dim)
        self.fc = nn.Linear(in_dim, out_dim)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.conv(x), self.fc(tokens)


class PiTStage(nn.Module):
    """(map (N, C_in, H, W), tokens (N or 1, t, C_in)) -> (map (N, C, H', W'), tokens (N, t, C)): optional pooling,
    then ViT blocks on [tokens; patches]."""

    def __init__(self, in_dim: int, dim: int, depth: int, heads: int, mlp_ratio: float, pool: bool,
                 drop: float, drop_paths: list[float]):
        super().__init__()
        self.pool = Pooling(in_dim, dim) if pool else None
        self.blocks = nn.Sequential(*[Block(dim, heads, mlp_ratio, True, drop, r) for r in drop_paths])

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.pool is not None:
            x, tokens = self.pool(x, tokens)
        n, c, h, w = x.shape
        t = tokens.shape[1]
        z = self.blocks(torch.cat([tokens.expand(n, -1, -1), x.flatten(2).transpose(1, 2)], dim=1))
        return z[:, t:].transpose(1, 2).reshape(n, c, h, w), z[:, :t]


class PoolingVisionTransformer(nn.Module):
    """(N, in_chans, H, W) -> (N, num_classes) logits (distilled: eval mean of both heads, see the module docstring).

    Args:
        img_size: int or (H, W), the size the position map is laid out for. patch_size, stride: the embedding conv.
        base_dims: channels per head in each stage; heads: heads per stage (width = base_dim * heads); depth: blocks
            per stage. distilled: add DeiT's distillation token and head. drop_path_rate: linear over all blocks.
    """

    def __init__(self, img_size=224, patch_size: int = 16, stride: int = 8, base_dims=(48, 48, 48),
                 depth=(2, 6, 4), heads=(2, 4, 8), mlp_ratio: float = 4.0, num_classes: int = 1000,
                 in_chans: int = 3, distilled: bool = False, distilled_training: bool = False,
                 drop_rate: float = 0.0, drop_path_rate: float = 0.0):
        super().__init__()
        depth, base_dims = check_stages(depth, base_dims, num_stages=len(tuple(heads)))
        heads = tuple(check_positive_int(f"heads[{i}]", h) for i, h in enumerate(heads))
        for name, value in dict(patch_size=patch_size, stride=stride, num_classes=num_classes,
                                in_chans=in_chans).items():
            check_positive_int(name, value)
        img_hw = to_2tuple(img_size)
        self.grid = tuple((s - patch_size) // stride + 1 for s in img_hw)
        if min(self.grid) < 1:
            raise ValueError(f"img_size={img_size} is smaller than patch_size={patch_size}")
        dims = [b * h for b, h in zip(base_dims, heads)]
        self.num_tokens = 2 if distilled else 1
        self.patch_embed = ConvEmbedding(in_chans, dims[0], patch_size, stride)
        self.pos_embed = nn.Parameter(torch.zeros(1, dims[0], *self.grid))
        self.cls_token = nn.Parameter(torch.zeros(1, self.num_tokens, dims[0]))
        self.pos_drop = nn.Dropout(drop_rate)
        rates = stage_drop_path_rates(drop_path_rate, depth)
        self.transformers = nn.ModuleList([
            PiTStage(dims[max(i - 1, 0)], dims[i], depth[i], heads[i], mlp_ratio, i > 0, drop_rate,
                     rates[i]) for i in range(len(depth))])
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.num_features = dims[-1]
        self.head = nn.Linear(dims[-1], num_classes)
        self.head_dist = nn.Linear(dims[-1], num_classes) if distilled else None
        self.distilled_training = bool(distilled_training)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def set_distilled_training(self, enable: bool = True) -> "PoolingVisionTransformer":
        self.distilled_training = bool(enable)
        return self

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, C, H, W) -> (last map (N, D, H', W'), normalized tokens (N, num_tokens, D))."""
        x = self.patch_embed(x)
        pos = self.pos_embed
        if x.shape[-2:] != pos.shape[-2:]:
            pos = F.interpolate(pos, size=x.shape[-2:], mode="bicubic", align_corners=False)
        x = self.pos_drop(x + pos)
        tokens = self.cls_token  # expanded to the batch inside the first stage
        for stage in self.transformers:
            x, tokens = stage(x, tokens)
        return x, self.norm(tokens)

    def forward(self, x: torch.Tensor):
        tokens = self.forward_features(x)[1]
        logits = self.head(tokens[:, 0])
        if self.head_dist is None:
            return logits
        dist_logits = self.head_dist(tokens[:, 1])
        if self.training and self.distilled_training:
            return logits, dist_logits
        return fuse_heads(logits, dist_logits)


# timm's PoolingVisionTransformer: same names, its stages' ``transformers.{i}`` are ours; its per-stage ``norm`` is
# a parameter-free Identity in these models.
register_timm_rules(PoolingVisionTransformer, renames=())

_VARIANTS = {
    "ti": dict(base_dims=(32, 32, 32), heads=(2, 4, 8), depth=(2, 6, 4)),
    "xs": dict(base_dims=(48, 48, 48), heads=(2, 4, 8), depth=(2, 6, 4)),
    "s": dict(base_dims=(48, 48, 48), heads=(3, 6, 12), depth=(2, 6, 4)),
    "b": dict(base_dims=(64, 64, 64), heads=(4, 8, 16), depth=(3, 6, 4), patch_size=14, stride=7),
}
for _size, _cfg in _VARIANTS.items():
    _cfg = {"patch_size": 16, "stride": 8, **_cfg}
    register_model(f"pit_{_size}_224", PoolingVisionTransformer, timm=f"pit_{_size}_224", img_size=224, **_cfg)
    register_model(f"pit_{_size}_distilled_224", PoolingVisionTransformer, timm=f"pit_{_size}_distilled_224",
                   img_size=224, distilled=True, **_cfg)
