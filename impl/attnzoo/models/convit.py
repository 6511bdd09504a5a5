"""ConViT: vision transformers with soft convolutional inductive biases (d'Ascoli et al., ICML 2021,
arXiv:2103.10697).

**Gated positional self-attention** (GPSA, Sec. 3) mixes, per head h, content attention with a purely positional
attention over the relative offsets delta_ij = (dx, dy) between patches:

    A^h_ij = (1 - sigmoid(lambda_h)) softmax_j(Q_i K_j^T / sqrt(d_h)) + sigmoid(lambda_h) softmax_j(v_pos^h . r_ij)

with r_ij = (dx, dy, dx^2 + dy^2) and learned v_pos^h (a linear map 3 -> heads, with bias, as in the authors' code),
and the output is A^h V^h. At initialisation (``local_init``, the authors' convolutional init) V is the identity,
v_pos^h = -alpha (-2 Delta^h_x, -2 Delta^h_y, 1), so head h attends around the offset Delta^h on a sqrt(h) x sqrt(h)
grid of offsets with locality strength alpha = 1, i.e. the layer starts as a convolution; sigmoid(lambda) = sigmoid(1)
lets it drift towards content attention during training. The content term is plain softmax attention and runs in
``F.scaled_dot_product_attention``; the positional term depends on the grid only.

The network is DeiT with the first 10 of its 12 blocks using GPSA on the patch tokens alone; the class token is
appended before block 11 (``local_up_to_layer``), where ordinary self-attention begins (Sec. 3, Fig. 1). Sizes
(Table 1): ConViT-Ti/S/B with 4/9/16 heads of 48 channels, and Ti+/S+/B+ with 4/9/16 heads of 64; Q, K, V have no
biases. timm's ``convit_tiny/small/base`` (the authors' weights) load one to one.

Departures: any input size works. Inputs are padded to whole patches and the position embeddings are resized
bicubically to the patch grid (the authors' and timm's models accept ``img_size`` only); the positional attention
is built for the actual h x w grid. The authors' code computes the offsets for a square grid of sqrt(L) x sqrt(L)
patches, which is the same at square sizes and undefined otherwise.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import (PatchEmbed, TokenAttention, cached_geometry, check_divisible, check_hw, check_positive_int,
                      drop_path_rates, patch_grid, resize_pos_grid, resolve_device, trunc_normal_init)
from ..registry import register_attention, register_model
from ..timm import register_timm_rules
from .vit import Block


def relative_offsets(hw: tuple[int, int], device=None, dtype=None) -> torch.Tensor:
    """(L, L, 3) features r_ij = (dx, dy, dx^2 + dy^2) of key j relative to query i on an h x w raster grid.
    Cached per grid, device and dtype (``cached_geometry``)."""
    hw, device, dtype = tuple(hw), resolve_device(device), dtype or torch.float32
    return cached_geometry(("convit_offsets", hw, device, dtype), lambda: _relative_offsets(hw, device, dtype))


def _relative_offsets(hw, device, dtype):
    h, w = hw
    ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    xs, ys = xs.flatten().to(torch.float32), ys.flatten().to(torch.float32)
    dx, dy = xs[None, :] - xs[:, None], ys[None, :] - ys[:, None]
    return torch.stack([dx, dy, dx * dx + dy * dy], dim=-1).to(dtype)


@register_attention("convit_gpsa", layout="nlc")
class GatedPositionalSelfAttention(TokenAttention):
    """GPSA: (N, L, C) tokens on an (H, W) grid -> same (maps (N, C, H, W) -> same). Needs ``hw`` for tokens.

    Args: channels, num_heads (4, ConViT-Ti), qkv_bias (False in ConViT), locality_strength alpha (1),
    local_init: start as a convolution (the authors' init; needs a square number of heads to fill all offsets).
    """

    def __init__(self, channels: int, num_heads: int = 4, qkv_bias: bool = False, attn_drop: float = 0.0,
                 proj_drop: float = 0.0, locality_strength: float = 1.0, local_init: bool = True):
        super().__init__(channels)
        check_positive_int("num_heads", num_heads)
        check_divisible("channels", channels, num_heads, "num_heads")
        self.num_heads = num_heads
        self.qk = nn.Linear(channels, 2 * channels, bias=qkv_bias)
        self.v = nn.Linear(channels, channels, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(channels, channels)
        self.proj_drop = nn.Dropout(proj_drop)
        self.pos_proj = nn.Linear(3, num_heads)
        self.gating_param = nn.Parameter(torch.ones(num_heads))
        self.locality_strength = locality_strength
        if local_init:
            trunc_normal_init(self)
            self.local_init()

    @torch.no_grad()
    def local_init(self) -> None:
        """V = identity; head (i, j) of a k x k grid (k = floor(sqrt(heads))) centred on offset (j - c, i - c)."""
        self.v.weight.copy_(torch.eye(self.channels))
        k = int(self.num_heads ** 0.5)
        center = (k - 1) / 2
        for i in range(k):
            for j in range(k):
                head = i + k * j
                self.pos_proj.weight[head] = torch.tensor([2 * (j - center), 2 * (i - center), -1.0])
        self.pos_proj.weight.mul_(self.locality_strength)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        return t.reshape(t.shape[0], t.shape[1], self.num_heads, -1).transpose(1, 2)

    def positional_attention(self, hw: tuple[int, int]) -> torch.Tensor:
        """softmax_j(v_pos . r_ij): (heads, L, L), the same for every input on this grid."""
        r = relative_offsets(hw, self.pos_proj.weight.device, self.pos_proj.weight.dtype)
        return self.pos_proj(r).permute(2, 0, 1).softmax(dim=-1)

    def attention_map(self, x: torch.Tensor, hw) -> torch.Tensor:
        """The gated attention (N, heads, L, L), computed explicitly for inspection and plots."""
        hw = check_hw(hw, x.shape[1])
        q, k = self.qk(x).chunk(2, dim=-1)
        q, k = self._heads(q), self._heads(k)
        content = (q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5).softmax(dim=-1)
        gate = torch.sigmoid(self.gating_param).view(-1, 1, 1)
        return (1 - gate) * content + gate * self.positional_attention(hw)

    def forward_tokens(self, x: torch.Tensor, hw: tuple[int, int] | None) -> torch.Tensor:
        hw = check_hw(hw, x.shape[1])
        q, k = self.qk(x).chunk(2, dim=-1)
        q, k, v = self._heads(q), self._heads(k), self._heads(self.v(x))
        gate = torch.sigmoid(self.gating_param).view(-1, 1, 1).to(v.dtype)
        drop = self.attn_drop.p if self.training else 0.0
        content = F.scaled_dot_product_attention(q, k, v, dropout_p=drop)
        positional = self.attn_drop(self.positional_attention(hw).to(v.dtype)) @ v
        y = ((1 - gate) * content + gate * positional).transpose(1, 2).reshape(x.shape)
        return self.proj_drop(self.proj(y))


class GPSABlock(Block):
    """A pre-norm transformer block whose attention is GPSA on the patch grid: ((N, L, D), hw) -> (N, L, D)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, locality_strength: float,
                 drop: float = 0.0, drop_path: float = 0.0):
        super().__init__(dim, num_heads, mlp_ratio, qkv_bias, drop, drop_path)
        self.attn = GatedPositionalSelfAttention(dim, num_heads, qkv_bias, 0.0, drop, locality_strength,
                                                 local_init=False)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), hw))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class ConViT(nn.Module):
    """(N, in_chans, H, W) -> (N, num_classes) logits; any H, W >= 1.

    Args:
        img_size: int or (H, W) for the position embeddings. patch_size: P. embed_dim: channels *per head* (48; the
        width is embed_dim * num_heads, as in the authors' code). depth, num_heads, mlp_ratio, qkv_bias.
        local_up_to_layer: number of GPSA blocks (10); the class token joins after them.
        locality_strength: alpha of the convolutional init. drop_rate, drop_path_rate (linear over blocks).
    """

    def __init__(self, img_size=224, patch_size: int = 16, in_chans: int = 3, num_classes: int = 1000,
                 embed_dim: int = 48, depth: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0,
                 qkv_bias: bool = False, local_up_to_layer: int = 10, locality_strength: float = 1.0,
                 drop_rate: float = 0.0, drop_path_rate: float = 0.0):
        super().__init__()
        for name, value in dict(num_classes=num_classes, depth=depth, embed_dim=embed_dim,
                                num_heads=num_heads).items():
            check_positive_int(name, value)
        self.grid = patch_grid(img_size, patch_size)
        if not 0 <= local_up_to_layer <= depth:
            raise ValueError(f"local_up_to_layer must be in [0, depth={depth}], got {local_up_to_layer}")
        dim = embed_dim * num_heads
        self.local_up_to_layer = local_up_to_layer
        self.patch_embed = PatchEmbed(patch_size, in_chans, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid[0] * self.grid[1], dim))
        self.pos_drop = nn.Dropout(drop_rate)
        rates = drop_path_rates(drop_path_rate, depth)
        self.blocks = nn.ModuleList([
            GPSABlock(dim, num_heads, mlp_ratio, qkv_bias, locality_strength, drop_rate, rates[i])
            if i < local_up_to_layer else Block(dim, num_heads, mlp_ratio, qkv_bias, drop_rate, rates[i])
            for i in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.num_features = dim
        self.head = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.apply(trunc_normal_init)
        for m in self.modules():
            if isinstance(m, GatedPositionalSelfAttention):
                m.local_init()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, 1 + L, D) normalized tokens, class token first."""
        x, hw = self.patch_embed(x)
        x = self.pos_drop(x + resize_pos_grid(self.pos_embed, self.grid, hw))
        for i, block in enumerate(self.blocks):
            if i == self.local_up_to_layer:
                x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
            x = block(x, hw) if i < self.local_up_to_layer else block(x)
        if self.local_up_to_layer == len(self.blocks):
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        return self.norm(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x)[:, 0])


# timm's ConVit (timm/models/convit.py): same names; GPSA's relative offsets are a non-persistent buffer there.
register_timm_rules(ConViT, renames=())

# Table 1: heads of 48 channels (Ti/S/B) or 64 (the "+" models); 12 blocks, the first 10 with GPSA.
_VARIANTS = {"tiny": (48, 4), "small": (48, 9), "base": (48, 16),
             "tiny_plus": (64, 4), "small_plus": (64, 9), "base_plus": (64, 16)}
for _name, (_per_head, _heads) in _VARIANTS.items():
    register_model(f"convit_{_name}", ConViT, timm=None if _name.endswith("plus") else f"convit_{_name}",
                   img_size=224, patch_size=16, embed_dim=_per_head, num_heads=_heads)
