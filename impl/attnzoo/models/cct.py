"""CCT: compact convolutional transformers (Hassani et al., 2021, arXiv:2104.05704).

Small transformers that train from scratch on small datasets (CIFAR at 32 x 32) with two changes to ViT:

* a **convolutional tokenizer** instead of patches: n blocks of conv k x k (no bias) -> ReLU -> max-pool 3x3/2, the
  last with D output channels; its map's positions are the tokens (Sec. 3.3). "CCT-7/3x1" has 7 encoder layers and one
  3x3 tokenizer block (stride 1, padding 1: 256 tokens at 32 x 32), "CCT-14/7x2" two 7x7 blocks of stride 2 (padding
  3: 196 tokens at 224), 64 channels between them;
* **sequence pooling** instead of a class token (Sec. 3.2): after the final LayerNorm, the L output tokens X_L
  (N, L, D) are averaged with weights learned from themselves,

      z = softmax(g(X_L)^T) X_L,  g a linear map D -> 1 (softmax over the L tokens),

  and z (N, D) feeds the linear head.

Faithful to the authors' code (SHI-Labs/Compact-Transformers, src/utils/transformers.py and tokenizer.py): the
encoder layer is x = x + DropPath(MSA(LN_0(x))); x = LN_1(x); x = x + DropPath(MLP(x)): the second LayerNorm
*replaces* the residual stream before the MLP instead of normalising only the MLP's input; Q, K, V without bias;
GELU MLP of width e D; attention dropout 0.1 and stochastic depth 0.1 (linear over layers) by default, as their ``CCT``;
a learnable position table initialised N(0, 0.2^2) truncated (their std 0.2), or the fixed 1D sinusoidal one
("sine" variants); tokenizer convolutions initialised He-normal (fan-in), linear layers truncated-normal (0.02).
Sizes from their ``cct_*`` functions: CCT-7 = 7 layers, 4 heads, width 256, e = 2; CCT-14 = 14 layers, 6 heads,
width 384, e = 3. The authors' ``*_sine`` models are ``create_model("cct_7_3x1_32", pos_embed="sine")`` (not
registered apart: the same network with a fixed table, which saves the suite a family). There is no CCT in timm.

Departures: any input size. The learnable table (laid out for ``img_size``'s token grid) is resized bicubically to the
actual grid (the authors resize it bilinearly only when loading a checkpoint for another size, ``pe_check``); the
sinusoidal table is computed for the actual number of tokens (the authors store it as a frozen parameter of one
length, so it is not in our state dict).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..layers import (DropPath, Mlp, MultiHeadSelfAttention, cached_geometry, check_choice, check_positive_int,
                      drop_path_rates, resize_pos_grid, resolve_device, to_2tuple, trunc_normal_init)
from ..registry import register_model


class ConvTokenizer(nn.Module):
    """(N, C_in, H, W) -> (tokens (N, h * w, D), (h, w)): n x [conv k x k (stride s, padding p, no bias), ReLU,
    max-pool 3x3 stride 2 padding 1]; s = max(1, k // 2 - 1), p = max(1, k // 2) (the authors' ``_cct``)."""

    def __init__(self, in_chans: int, embed_dim: int, kernel_size: int = 3, num_layers: int = 1,
                 hidden_chans: int = 64):
        super().__init__()
        check_positive_int("kernel_size", kernel_size)
        check_positive_int("tokenizer num_layers", num_layers)
        stride, padding = max(1, kernel_size // 2 - 1), max(1, kernel_size // 2)
        widths = [in_chans] + [hidden_chans] * (num_layers - 1) + [embed_dim]
        self.layers = nn.Sequential(*[nn.Sequential(
            nn.Conv2d(widths[i], widths[i + 1], kernel_size, stride, padding, bias=False), nn.ReLU(),
            nn.MaxPool2d(3, 2, 1)) for i in range(num_layers)])
        self.stride = (stride * 2) ** num_layers

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        x = self.layers(x)
        return x.flatten(2).transpose(1, 2), (x.shape[-2], x.shape[-1])

    def grid(self, img_size) -> tuple[int, int]:
        """The token grid of an input of ``img_size`` (computed by the layers' arithmetic, no forward pass)."""
        hw = to_2tuple(img_size)
        for seq in self.layers:
            conv = seq[0]
            hw = tuple((s + 2 * conv.padding[0] - conv.kernel_size[0]) // conv.stride[0] + 1 for s in hw)
            hw = tuple((s + 2 - 3) // 2 + 1 for s in hw)
        return hw


class CCTLayer(nn.Module):
    """The authors' encoder layer on (N, L, D): x + DropPath(MSA(LN0(x))), then LN1 of the stream, then + MLP."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, drop: float, attn_drop: float, drop_path: float):
        super().__init__()
        self.pre_norm = nn.LayerNorm(dim)
        self.attn = MultiHeadSelfAttention(dim, num_heads, qkv_bias=False, attn_drop=attn_drop, proj_drop=drop)
        self.norm1 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.drop_path(self.attn(self.pre_norm(x))))
        return x + self.drop_path(self.mlp(x))


class SequencePooling(nn.Module):
    """(N, L, D) -> (N, D): softmax over the L tokens of a linear score g(x_l), then the weighted sum of the tokens."""

    def __init__(self, dim: int):
        super().__init__()
        self.attention_pool = nn.Linear(dim, 1)

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """The pooling weights (N, L), summing to 1 over the tokens."""
        return self.attention_pool(x).squeeze(-1).softmax(dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.weights(x).unsqueeze(1) @ x).squeeze(1)


def sinusoidal_table(length: int, dim: int, device=None) -> torch.Tensor:
    """(1, length, dim): the authors' 1D table, sin at even and cos at odd channels of p / 10000^(2 (i // 2) / dim).
    Cached per length, width and device (``cached_geometry``)."""
    device = resolve_device(device)
    return cached_geometry(("cct_sinusoidal", length, dim, device), lambda: _sinusoidal_table(length, dim, device))


def _sinusoidal_table(length: int, dim: int, device) -> torch.Tensor:
    p = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    i = torch.arange(dim, device=device)
    angle = p / 10000 ** (2 * torch.div(i, 2, rounding_mode="floor").float() / dim)
    return torch.where(i % 2 == 0, angle.sin(), angle.cos()).unsqueeze(0)


class CompactConvTransformer(nn.Module):
    """CCT: (N, in_chans, H, W) -> (N, num_classes) logits; any H, W >= 1.

    Args:
        img_size: the size the learnable position table is laid out for. in_chans, num_classes.
        embed_dim, depth, num_heads, mlp_ratio: the encoder. kernel_size, tokenizer_layers: the tokenizer (k, n).
        pos_embed: "learnable", "sine" or "none". seq_pool: sequence pooling (True) or a class token (False, the
            authors' ``seq_pool=False`` ablation). drop_rate, attn_drop_rate, drop_path_rate: 0, 0.1, 0.1 as the
            authors' ``CCT``.
    """

    def __init__(self, img_size=224, in_chans: int = 3, num_classes: int = 1000, embed_dim: int = 384,
                 depth: int = 14, num_heads: int = 6, mlp_ratio: float = 3.0, kernel_size: int = 7,
                 tokenizer_layers: int = 2, pos_embed: str = "learnable", seq_pool: bool = True,
                 drop_rate: float = 0.0, attn_drop_rate: float = 0.1, drop_path_rate: float = 0.1):
        super().__init__()
        for name, value in dict(in_chans=in_chans, num_classes=num_classes, depth=depth).items():
            check_positive_int(name, value)
        self.pos_embed_kind = check_choice("pos_embed", pos_embed, ("learnable", "sine", "none"))
        self.tokenizer = ConvTokenizer(in_chans, embed_dim, kernel_size, tokenizer_layers)
        self.grid = self.tokenizer.grid(img_size)
        if min(self.grid) < 1:
            raise ValueError(f"img_size={img_size} gives no token")
        self.seq_pool = bool(seq_pool)
        self.num_prefix_tokens = 0 if self.seq_pool else 1
        if self.seq_pool:
            self.pool = SequencePooling(embed_dim)
        else:
            self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        if self.pos_embed_kind == "learnable":
            length = self.num_prefix_tokens + self.grid[0] * self.grid[1]
            self.pos_embed = nn.Parameter(torch.empty(1, length, embed_dim))
            if not self.pos_embed.is_meta:
                nn.init.trunc_normal_(self.pos_embed, std=0.2)
        self.pos_drop = nn.Dropout(drop_rate)
        self.blocks = nn.Sequential(*[CCTLayer(embed_dim, num_heads, mlp_ratio, drop_rate, attn_drop_rate, r)
                                      for r in drop_path_rates(drop_path_rate, depth)])
        self.norm = nn.LayerNorm(embed_dim)
        self.num_features = embed_dim
        self.head = nn.Linear(embed_dim, num_classes)
        self.apply(trunc_normal_init)
        for m in self.tokenizer.modules():
            if isinstance(m, nn.Conv2d) and not m.weight.is_meta:
                nn.init.kaiming_normal_(m.weight)

    def position_embedding(self, hw: tuple[int, int], device) -> torch.Tensor | None:
        """(1, [1 +] h * w, D) position embeddings for a token grid, or None (``pos_embed="none"``)."""
        if self.pos_embed_kind == "none":
            return None
        if self.pos_embed_kind == "sine":
            return sinusoidal_table(self.num_prefix_tokens + hw[0] * hw[1], self.num_features, device)
        k = self.num_prefix_tokens
        grid = resize_pos_grid(self.pos_embed[:, k:], self.grid, hw)
        return torch.cat([self.pos_embed[:, :k], grid], dim=1) if k else grid

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, [1 +] L, D) normalised output tokens."""
        x, hw = self.tokenizer(x)
        if not self.seq_pool:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        pos = self.position_embedding(hw, x.device)
        if pos is not None:
            x = x + pos.to(x.dtype)
        return self.norm(self.blocks(self.pos_drop(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x)
        return self.head(self.pool(x) if self.seq_pool else x[:, 0])


_CCT_7 = dict(depth=7, num_heads=4, mlp_ratio=2.0, embed_dim=256)
_CCT_14 = dict(depth=14, num_heads=6, mlp_ratio=3.0, embed_dim=384)
register_model("cct_7_3x1_32", CompactConvTransformer, img_size=32, num_classes=10, kernel_size=3,
               tokenizer_layers=1, **_CCT_7)
register_model("cct_14_7x2_224", CompactConvTransformer, img_size=224, kernel_size=7, tokenizer_layers=2, **_CCT_14)
register_model("cct_14_7x2_384", CompactConvTransformer, img_size=384, kernel_size=7, tokenizer_layers=2, **_CCT_14)
