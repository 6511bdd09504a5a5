"""XCiT: cross-covariance image transformers (El-Nouby et al., NeurIPS 2021, arXiv:2106.09681).

**Cross-covariance attention** (XCA, Sec. 3.2) attends over channels instead of tokens. Per head, with the
(L, d_h) projections Q, K, V, each *column* of Q and K is L2-normalised over the L tokens, and

    XCA(Q, K, V) = V softmax(tau * K_hat^T Q_hat)     (a d_h x d_h map; our tokens-first layout: A = softmax(tau
                                                        Q_hat^T K_hat) applied as A V^T, then transposed back)

with a learned temperature tau per head. The cost is linear in L. The map is a plain softmax attention in the
transposed layout (the channels are the "sequence", the tokens the "features"), so it runs in
``F.scaled_dot_product_attention(tau * Q_hat^T, K_hat^T, V^T, scale=1)``.

An XCiT layer (Sec. 3.3) is three pre-norm residual branches with LayerScale: XCA, **local patch interaction**
(LPI: depthwise 3x3 conv, GELU, BatchNorm, depthwise 3x3 conv on the token grid, the only spatial mixing besides
the positions) and the MLP. The patches are embedded by a stack of stride-2 3x3 conv + BatchNorm layers with GELU in
between (4 for 16 x 16 patches, 3 for 8 x 8). Positions are **Fourier features** of the normalised (y, x) grid
coordinates (32 frequencies each, as in DETR), projected by a 1x1 conv: computed for any grid, so any input size
works. Two CaiT class-attention layers (Touvron et al., 2021) end the network (``attnzoo.models.cait``).

Faithful to the authors' code (facebookresearch/xcit, xcit.py), which the reported numbers come from, including
two details the paper does not state: in the class-attention layers the patch tokens also receive
gamma_1 * LN(x_patch) (the residual adds the concatenation [attention output; normalised patches]), and, except
for XCiT-N12, the second LayerNorm of those layers normalises every token (``tokens_norm=True``), the class token
alone otherwise. LayerScale starts at 1 for the 12-layer models and 1e-5 for the 24-layer ones (the authors' code).

Sizes: the paper's Table 1 models N12/T12/S12 and T24/S24/M24/L24 with 16 x 16 and 8 x 8 patches; timm's
``xcit_*_p16_224`` / ``xcit_*_p8_224`` (converted from the authors' weights) load one to one with
``load_timm_weights``; N12/T12/S12 p16 and N12 p8 are declared twins (``pretrained=True``, parity-tested), the larger
ones are not, to keep the test suite's time down.

Departures: none in the computation. The stride-2 convolutions of the patch embedding already give a
ceil(H / 16) x ceil(W / 16) grid for any input, as in the authors' code.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import (DropPath, Mlp, TokenAttention, cached_geometry, check_choice, check_divisible, check_hw,
                      check_positive_int, trunc_normal_init)
from ..layers.layer_scale import layer_scale
from ..registry import register_attention, register_model
from ..timm import register_timm_rules
from .cait import ClassAttention


@register_attention("xcit_xca", layout="nlc")
class CrossCovarianceAttention(TokenAttention):
    """XCA: (N, L, C) -> (N, L, C) (maps (N, C, H, W) -> same), a softmax over a (C/h x C/h) map per head."""

    def __init__(self, channels: int, num_heads: int = 8, qkv_bias: bool = True, attn_drop: float = 0.0,
                 proj_drop: float = 0.0):
        super().__init__(channels)
        check_positive_int("num_heads", num_heads)
        check_divisible("channels", channels, num_heads, "num_heads")
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv = nn.Linear(channels, 3 * channels, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(channels, channels)
        self.proj_drop = nn.Dropout(proj_drop)

    def _qkv(self, x: torch.Tensor):
        """Q_hat^T * tau, K_hat^T, V^T: each (N, h, C/h, L), Q and K normalised over the tokens."""
        n, length, c = x.shape
        q, k, v = self.qkv(x).reshape(n, length, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 4, 1)
        return F.normalize(q, dim=-1) * self.temperature.to(q.dtype), F.normalize(k, dim=-1), v  # autocast dtype

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """The channel-to-channel softmax map (N, h, C/h, C/h), for inspection and plots."""
        q, k, _ = self._qkv(x)
        return (q @ k.transpose(-2, -1)).softmax(dim=-1)

    def forward_tokens(self, x: torch.Tensor, hw: tuple[int, int] | None) -> torch.Tensor:
        q, k, v = (t.contiguous() for t in self._qkv(x))  # unit stride on L: SDPA's fused CPU kernel needs it
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0, scale=1.0)
        return self.proj_drop(self.proj(y.permute(0, 3, 1, 2).reshape(x.shape)))


class FourierPositions(nn.Module):
    """(H, W) grid -> (1, H * W, dim) position encodings: sin/cos of the normalised y and x coordinates at
    ``hidden_dim`` frequencies (temperature 10000, coordinates scaled to (0, 2 pi]), then a 1x1 projection."""

    def __init__(self, dim: int, hidden_dim: int = 32, temperature: float = 10000.0):
        super().__init__()
        self.hidden_dim, self.temperature = hidden_dim, temperature
        self.token_projection = nn.Conv2d(2 * hidden_dim, dim, 1)

    def forward(self, hw: tuple[int, int]) -> torch.Tensor:
        weight = self.token_projection.weight
        key = ("xcit_fourier", tuple(hw), self.hidden_dim, self.temperature, weight.device, weight.dtype)
        pos = cached_geometry(key, lambda: self.fourier_features(tuple(hw), weight.device).to(weight.dtype))
        return self.token_projection(pos).flatten(2).transpose(1, 2)

    def fourier_features(self, hw: tuple[int, int], dev) -> torch.Tensor:
        """(1, 2 * hidden_dim, H, W) sine/cosine features of the y then x coordinates (cached per grid)."""
        h, w = hw
        eps, scale = 1e-6, 2 * math.pi
        y = torch.arange(1, h + 1, device=dev, dtype=torch.float32) / (h + eps) * scale
        x = torch.arange(1, w + 1, device=dev, dtype=torch.float32) / (w + eps) * scale
        i = torch.arange(self.hidden_dim, device=dev, dtype=torch.float32)
        freqs = self.temperature ** (2 * torch.div(i, 2, rounding_mode="floor") / self.hidden_dim)

        def encode(coord):  # (n,) -> (n, hidden): sin at even, cos at odd frequency slots, interleaved
            angle = coord[:, None] / freqs
            return torch.stack([angle[:, 0::2].sin(), angle[:, 1::2].cos()], dim=-1).flatten(1)

        pos = torch.cat([encode(y)[:, None, :].expand(h, w, -1), encode(x)[None, :, :].expand(h, w, -1)], dim=-1)
        return pos.permute(2, 0, 1)[None]


class LocalPatchInteraction(nn.Module):
    """LPI: (N, L, C) tokens on an (H, W) grid -> same: depthwise 3x3 conv, GELU, BatchNorm, depthwise 3x3 conv."""

    def __init__(self, dim: int, kernel_size: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.act = nn.GELU()
        self.bn = nn.BatchNorm2d(dim)
        self.conv2 = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        n, length, c = x.shape
        h, w = check_hw(hw, length)
        y = self.conv2(self.bn(self.act(self.conv1(x.transpose(1, 2).reshape(n, c, h, w)))))
        return y.flatten(2).transpose(1, 2)


class XCABlock(nn.Module):
    """XCiT layer on (N, L, D) patch tokens: XCA, LPI and MLP branches, each with LayerScale."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, eta: float,
                 drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = CrossCovarianceAttention(dim, num_heads, qkv_bias, attn_drop, drop)
        self.norm3 = nn.LayerNorm(dim, eps=1e-6)
        self.local_mp = LocalPatchInteraction(dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)
        self.drop_path = DropPath(drop_path)
        self.gamma1, self.gamma3, self.gamma2 = layer_scale(dim, eta), layer_scale(dim, eta), layer_scale(dim, eta)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        x = x + self.drop_path(self.gamma1 * self.attn(self.norm1(x)))
        x = x + self.drop_path(self.gamma3 * self.local_mp(self.norm3(x), hw))
        return x + self.drop_path(self.gamma2 * self.mlp(self.norm2(x)))


class XCiTClassAttentionBlock(nn.Module):
    """The authors' class-attention layer: (N, 1 + L, D) -> same (see the module docstring for the patches)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, eta: float, tokens_norm: bool):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = ClassAttention(dim, num_heads, qkv_bias, own_token=False)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.gamma1, self.gamma2 = layer_scale(dim, eta), layer_scale(dim, eta)
        self.tokens_norm = tokens_norm

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        u = self.norm1(z)
        z = z + self.gamma1 * torch.cat([self.attn.attend(u), u[:, 1:]], dim=1)
        if self.tokens_norm:
            z = self.norm2(z)
        else:
            z = torch.cat([self.norm2(z[:, :1]), z[:, 1:]], dim=1)
        return torch.cat([z[:, :1] + self.gamma2 * self.mlp(z[:, :1]), z[:, 1:]], dim=1)


def conv_patch_embed(in_chans: int, embed_dim: int, patch_size: int) -> nn.Sequential:
    """Stride-2 (3x3 conv, BN) layers with GELU in between, widths D/8, D/4, D/2, D (p16) or D/4, D/2, D (p8)."""
    check_choice("patch_size", patch_size, (8, 16))
    steps = int(math.log2(patch_size))
    widths = [in_chans] + [embed_dim // 2 ** (steps - 1 - i) for i in range(steps)]
    layers: list[nn.Module] = []
    for i in range(steps):
        if i:
            layers.append(nn.GELU())
        layers.append(nn.Sequential(nn.Conv2d(widths[i], widths[i + 1], 3, 2, 1, bias=False),
                                    nn.BatchNorm2d(widths[i + 1])))
    return nn.Sequential(*layers)


class XCiT(nn.Module):
    """(N, in_chans, H, W) -> (N, num_classes) logits; any H, W >= 1 (grid ceil(H / P) x ceil(W / P)).

    Args:
        patch_size: 16 or 8. embed_dim, depth, num_heads, mlp_ratio, qkv_bias: the XCiT layers.
        eta: LayerScale's initial value (1 for 12 layers, 1e-5 for 24 in the authors' code).
        cls_attn_layers: class-attention layers (2). tokens_norm: see the module docstring.
        drop_rate, attn_drop_rate: dropout; drop_path_rate: stochastic depth, the same in every layer (authors).
    """

    def __init__(self, patch_size: int = 16, in_chans: int = 3, num_classes: int = 1000, embed_dim: int = 768,
                 depth: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 eta: float = 1.0, cls_attn_layers: int = 2, tokens_norm: bool = True, drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0, drop_path_rate: float = 0.0):
        super().__init__()
        for name, value in dict(in_chans=in_chans, num_classes=num_classes, depth=depth,
                                cls_attn_layers=cls_attn_layers).items():
            check_positive_int(name, value)
        check_divisible("embed_dim", embed_dim, 8, "8 (the patch embedding's first width is embed_dim / 8)")
        self.patch_embed = nn.Module()
        self.patch_embed.proj = conv_patch_embed(in_chans, embed_dim, patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = FourierPositions(embed_dim)
        self.pos_drop = nn.Dropout(drop_rate)
        self.blocks = nn.ModuleList([XCABlock(embed_dim, num_heads, mlp_ratio, qkv_bias, eta, drop_rate,
                                              attn_drop_rate, drop_path_rate) for _ in range(depth)])
        self.cls_attn_blocks = nn.Sequential(*[
            XCiTClassAttentionBlock(embed_dim, num_heads, mlp_ratio, qkv_bias, eta, tokens_norm)
            for _ in range(cls_attn_layers)])
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.num_features = embed_dim
        self.head = nn.Linear(embed_dim, num_classes)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.apply(trunc_normal_init)

    def forward_patches(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """(N, C, H, W) -> the XCiT layers' output (N, L, D) and its grid."""
        x = self.patch_embed.proj(x)
        hw = (x.shape[-2], x.shape[-1])
        x = self.pos_drop(x.flatten(2).transpose(1, 2) + self.pos_embed(hw))
        for block in self.blocks:
            x = block(x, hw)
        return x, hw

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, 1 + L, D) normalized tokens, class token first."""
        x, _ = self.forward_patches(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        return self.norm(self.cls_attn_blocks(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x)[:, 0])


# timm's Xcit (timm/models/xcit.py) uses the same names for every tensor.
register_timm_rules(XCiT, renames=())

# Table 1: width, heads, depth; LayerScale 1 (12 layers) or 1e-5 (24); N12 normalises the class token alone.
_VARIANTS = {
    "nano_12": dict(embed_dim=128, num_heads=4, depth=12, eta=1.0, tokens_norm=False),
    "tiny_12": dict(embed_dim=192, num_heads=4, depth=12, eta=1.0),
    "small_12": dict(embed_dim=384, num_heads=8, depth=12, eta=1.0),
    "tiny_24": dict(embed_dim=192, num_heads=4, depth=24, eta=1e-5),
    "small_24": dict(embed_dim=384, num_heads=8, depth=24, eta=1e-5),
    "medium_24": dict(embed_dim=512, num_heads=8, depth=24, eta=1e-5),
    "large_24": dict(embed_dim=768, num_heads=16, depth=24, eta=1e-5),
}
for _size, _cfg in _VARIANTS.items():
    for _p in (16, 8):
        _name = f"xcit_{_size}_p{_p}_224"
        register_model(_name, XCiT, timm=_name, patch_size=_p, **_cfg)
