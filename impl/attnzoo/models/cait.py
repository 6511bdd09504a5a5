"""CaiT: class-attention image transformers (Touvron et al., ICCV 2021, arXiv:2103.17239).

Two changes let ViTs grow deeper without saturating:

* **LayerScale** (Sec. 2.1): each residual branch is multiplied by a learned per-channel vector
  diag(lambda_1..lambda_d), initialised to a small epsilon (1e-5 up to depth 24 in the paper, 1e-6 deeper; the
  authors' code uses 1e-5 for XXS/XS/S-24 and 1e-6 for S-36/M):
  x' = x + diag(lambda) SA(LN(x)),  x'' = x' + diag(lambda') FFN(LN(x')).
* **Class attention** (Sec. 2.2): the class token is *not* in the self-attention stage. After the depth-L
  stage on the patches alone, two class-attention layers update only the class token x_class: with
  z = [x_class; x_patches], Q = W_q x_class, K = W_k z, V = W_v z, and
  x_class <- x_class + diag(lambda) softmax(Q K^T / sqrt(d / h)) V (then an FFN on x_class); the patches are frozen.

The self-attention stage uses **talking-heads attention** (Shazeer et al., 2020), as the authors' code does
(cait_models.py, ``Attention_talking_head``): the h heads' logits are mixed by a learned h x h linear map before the
softmax (``proj_l``) and the h attention maps by another after it (``proj_w``). Those mixes sit between the logits
and the softmax, so this attention cannot use the fused SDPA kernel; class attention is plain softmax attention and
runs in ``F.scaled_dot_product_attention``.

Sizes: the paper's models XXS/XS/S/M with 24/36/48 blocks (widths 192/288/384/768, heads 4/6/8/16, 2 class-attention
layers, MLP ratio 4, 16 x 16 patches). timm's ``cait_*`` (ported from the authors' weights) have the same tensors
under the same names. timm's 384/448 models (``cait_xxs24_384`` ... ``cait_m48_448``) are the same networks with a larger
position table: build ours with ``img_size=384`` (or 448) and load them with ``load_timm_weights``.

Departures: any input size works. Inputs whose sides are not multiples of the patch are zero-padded on the right
and bottom, and the position table (learned for ``img_size``) is resized bicubically to the actual patch grid,
which is what the authors do when fine-tuning at 384 (deit's main.py interpolates the patch positions); the
authors' and timm's models only accept ``img_size`` itself. Stochastic depth has the same rate in every block, as
in the authors' code (the paper's table of hyper-parameters does not vary it over depth either).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import (DropPath, check_choice, Mlp, PatchEmbed, TokenAttention, check_divisible, check_positive_int,
                      patch_grid, resize_pos_grid, trunc_normal_init)
from ..layers.layer_scale import layer_scale
from ..registry import register_attention, register_model
from ..timm import register_timm_rules


@register_attention("cait_talking_heads", layout="nlc")
class TalkingHeadsAttention(TokenAttention):
    """Talking-heads self-attention: (N, L, C) -> (N, L, C) (maps (N, C, H, W) -> same through TokenAttention).

    A_raw = Q K^T / sqrt(C / h) per head (N, h, L, L); logits mixed across heads by ``proj_l`` (h x h), softmax over
    keys, maps mixed across heads by ``proj_w`` (h x h), then A V and the output projection.
    """

    def __init__(self, channels: int, num_heads: int = 8, qkv_bias: bool = True, attn_drop: float = 0.0,
                 proj_drop: float = 0.0):
        super().__init__(channels)
        check_positive_int("num_heads", num_heads)
        check_divisible("channels", channels, num_heads, "num_heads")
        self.num_heads = num_heads
        self.scale = (channels // num_heads) ** -0.5
        self.qkv = nn.Linear(channels, 3 * channels, bias=qkv_bias)
        self.proj_l = nn.Linear(num_heads, num_heads)
        self.proj_w = nn.Linear(num_heads, num_heads)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(channels, channels)
        self.proj_drop = nn.Dropout(proj_drop)

    def attention_map(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(attention maps after the post-softmax head mix (N, h, L, L), values (N, h, L, C / h))."""
        n, length, c = x.shape
        q, k, v = self.qkv(x).reshape(n, length, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        logits = (q * self.scale) @ k.transpose(-2, -1)
        logits = self.proj_l(logits.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        attn = self.proj_w(logits.softmax(dim=-1).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return attn, v

    def forward_tokens(self, x: torch.Tensor, hw: tuple[int, int] | None) -> torch.Tensor:
        attn, v = self.attention_map(x)
        y = (self.attn_drop(attn) @ v).transpose(1, 2).reshape(x.shape)
        return self.proj_drop(self.proj(y))


@register_attention("cait_class_attn", layout="nlc")
class ClassAttention(TokenAttention):
    """Class attention: a class token queries [class token; tokens] (plain softmax attention, fused SDPA).

    ``attend(z)``: z = [x_class; x_patches] (N, 1 + L, C) -> the class token's update (N, 1, C); this is what CaiT's
    class-attention layers call. As a stand-alone attention module (``own_token=True``, the registry's default)
    it carries its own learned class token: on (N, L, C) tokens (or an (N, C, H, W) map) it computes that token's
    update from the tokens and adds it to every token, a global-context read-out in the manner of GC-Net's
    additive fusion (our adaptation: in CaiT the patches are never updated by class attention).
    """

    def __init__(self, channels: int, num_heads: int = 8, qkv_bias: bool = True, attn_drop: float = 0.0,
                 proj_drop: float = 0.0, own_token: bool = True):
        super().__init__(channels)
        check_positive_int("num_heads", num_heads)
        check_divisible("channels", channels, num_heads, "num_heads")
        self.num_heads = num_heads
        self.q = nn.Linear(channels, channels, bias=qkv_bias)
        self.k = nn.Linear(channels, channels, bias=qkv_bias)
        self.v = nn.Linear(channels, channels, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(channels, channels)
        self.proj_drop = nn.Dropout(proj_drop)
        self.cls_token = nn.Parameter(torch.randn(1, 1, channels) * 0.02) if own_token else None

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        return t.reshape(t.shape[0], t.shape[1], self.num_heads, -1).transpose(1, 2)

    def attend(self, z: torch.Tensor) -> torch.Tensor:
        """(N, 1 + L, C) with the class token first -> (N, 1, C): its attention output."""
        q, k, v = self._heads(self.q(z[:, :1])), self._heads(self.k(z)), self._heads(self.v(z))
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        return self.proj_drop(self.proj(y.transpose(1, 2).reshape(z.shape[0], 1, z.shape[2])))

    @torch.no_grad()
    def attention_map(self, z: torch.Tensor) -> torch.Tensor:
        """The class token's softmax weights over [class; tokens]: (N, h, 1 + L), for plots."""
        q, k = self._heads(self.q(z[:, :1])), self._heads(self.k(z))
        return (q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5).softmax(dim=-1)[:, :, 0]

    def forward_tokens(self, x: torch.Tensor, hw: tuple[int, int] | None) -> torch.Tensor:
        if self.cls_token is None:
            raise ValueError("ClassAttention(own_token=False) is CaiT's layer: call attend([x_class; tokens])")
        cls = self.cls_token.expand(x.shape[0], -1, -1).to(x.dtype)
        return x + self.attend(torch.cat([cls, x], dim=1))


class LayerScaleBlock(nn.Module):
    """Pre-norm block with LayerScale on both branches, on (N, L, D) patch tokens (talking-heads attention)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, init_values: float,
                 drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = TalkingHeadsAttention(dim, num_heads, qkv_bias, attn_drop, drop)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)
        self.gamma_1, self.gamma_2 = layer_scale(dim, init_values), layer_scale(dim, init_values)  # LayerScale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.gamma_1 * self.attn(self.norm1(x)))
        return x + self.drop_path(self.gamma_2 * self.mlp(self.norm2(x)))


class ClassAttentionBlock(nn.Module):
    """Class-attention layer: z = [class token; patches] (N, 1 + L, D) -> the updated class token (N, 1, D)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, init_values: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = ClassAttention(dim, num_heads, qkv_bias, own_token=False)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.gamma_1, self.gamma_2 = layer_scale(dim, init_values), layer_scale(dim, init_values)  # LayerScale

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x_cls = z[:, :1] + self.gamma_1 * self.attn.attend(self.norm1(z))
        return x_cls + self.gamma_2 * self.mlp(self.norm2(x_cls))


class CaiT(nn.Module):
    """(N, in_chans, H, W) -> (N, num_classes) logits; any H, W >= 1.

    Args:
        img_size: int or (H, W), the resolution the position table is laid out for. patch_size: P.
        embed_dim, depth, num_heads, mlp_ratio, qkv_bias: the self-attention stage.
        init_values: LayerScale's initial value (1e-5 or 1e-6, see the module docstring).
        depth_token_only, mlp_ratio_token_only: the class-attention stage (2 layers, ratio 4 in the paper).
        drop_rate, attn_drop_rate: dropout in the self-attention stage; drop_path_rate: stochastic depth, the same in
            every self-attention block (the authors' code). pos_embed_interp: "bicubic" (authors) or "bilinear".
    """

    def __init__(self, img_size=224, patch_size: int = 16, in_chans: int = 3, num_classes: int = 1000,
                 embed_dim: int = 768, depth: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, init_values: float = 1e-5, depth_token_only: int = 2,
                 mlp_ratio_token_only: float = 4.0, drop_rate: float = 0.0, attn_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, pos_embed_interp: str = "bicubic"):
        super().__init__()
        for name, value in dict(in_chans=in_chans, num_classes=num_classes, depth=depth,
                                depth_token_only=depth_token_only).items():
            check_positive_int(name, value)
        self.pos_embed_interp = check_choice("pos_embed_interp", pos_embed_interp, ("bicubic", "bilinear"))
        self.grid = patch_grid(img_size, patch_size)
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid[0] * self.grid[1], embed_dim))  # patches only
        self.pos_drop = nn.Dropout(drop_rate)
        self.blocks = nn.Sequential(*[
            LayerScaleBlock(embed_dim, num_heads, mlp_ratio, qkv_bias, init_values, drop_rate, attn_drop_rate,
                            drop_path_rate) for _ in range(depth)])
        self.blocks_token_only = nn.ModuleList([
            ClassAttentionBlock(embed_dim, num_heads, mlp_ratio_token_only, qkv_bias, init_values)
            for _ in range(depth_token_only)])
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.num_features = embed_dim
        self.head = nn.Linear(embed_dim, num_classes)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.apply(trunc_normal_init)

    def forward_patches(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """(N, C, H, W) -> the self-attention stage's output (N, L, D) and its patch grid."""
        x, grid_hw = self.patch_embed(x)
        x = self.pos_drop(x + resize_pos_grid(self.pos_embed, self.grid, grid_hw, self.pos_embed_interp))
        return self.blocks(x), grid_hw

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, 1 + L, D) normalized tokens, class token first."""
        x, _ = self.forward_patches(x)
        x_cls = self.cls_token.expand(x.shape[0], -1, -1)
        for block in self.blocks_token_only:
            x_cls = block(torch.cat([x_cls, x], dim=1))
        return self.norm(torch.cat([x_cls, x], dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x)[:, 0])


# timm's Cait (timm/models/cait.py, from the authors' cait_models.py) has the same tensors under the same names.
register_timm_rules(CaiT, renames=())

# The paper's models (XXS/XS/S/M: width, heads; depth 24/36/48) at 224; LayerScale init as the authors' code.
_SIZES = {"xxs": (192, 4), "xs": (288, 6), "s": (384, 8), "m": (768, 16)}
_DEPTHS = {"xxs": (24, 36), "xs": (24, 36), "s": (24, 36, 48), "m": (24, 36, 48)}
_TIMM_224 = {"cait_xxs24_224", "cait_xxs36_224", "cait_s24_224"}
for _size, (_dim, _heads) in _SIZES.items():
    for _depth in _DEPTHS[_size]:
        _name = f"cait_{_size}{_depth}_224"
        register_model(_name, CaiT, timm=_name if _name in _TIMM_224 else None, img_size=224, patch_size=16,
                       embed_dim=_dim, depth=_depth, num_heads=_heads,
                       init_values=1e-5 if _depth == 24 or _size in ("xxs", "xs") else 1e-6)
