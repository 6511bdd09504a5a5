"""PoolFormer / MetaFormer (Yu, Luo, Zhou, Si, Zhou, Wang, Feng & Yan, CVPR 2022, arXiv:2111.11418).

MetaFormer is the transformer block with its token mixer left open: x = x + TokenMixer(Norm(x)), then
x = x + MLP(Norm(x)). PoolFormer fills the slot with the simplest mixer the authors could think of, a 3x3 average
pooling of stride 1 minus its input (Eq. 4: the input is subtracted because the block adds it back), with no
parameters, and still beats DeiT/ResMLP of similar size: the argument that the general layout matters more than
attention. ``poolformer_pool`` registers the mixer as an attention, so it can be studied and plugged alone.

The network follows the authors' code (sail-sg/poolformer, models/poolformer.py): four stages at strides 4, 8, 16,
32; a 7x7 convolution of stride 4 and padding 2 as the stem and 3x3 convolutions of stride 2 and padding 1 between
stages (PatchEmbed, lines 64-83 and 274-299); blocks with GroupNorm of one group (normalising over C, H and W
together, eps 1e-5, lines 106-112), the pooling with ``count_include_pad=False`` (lines 115-126: border pixels
average only the pixels inside the image), an MLP of ratio 4 with GELU, and a learnable per-channel layer scale on
both branches (lines 160-209; 1e-5 for S12/S24, 1e-6 for S36/M36/M48, lines 433-527). Stochastic depth rises
linearly over all blocks (lines 223-224). The 1x1 convolutions of their MLP are the shared ``layers.Mlp`` here, run
on a channels-last view: the same numbers.

The head, where the authors' code and timm's differ: the authors normalise the last feature map with the same
one-group GroupNorm, then average it and apply the linear classifier (lines 319-320 and 409-410), which is what
their reported accuracies come from; this is ``head_norm="map"``, the default. timm's ``poolformer_*``
(timm/models/metaformer.py) loads the same released weights into a LayerNorm over channels (eps 1e-6) applied
after the pooling: ``head_norm="pooled"`` reproduces it (timm's weights give timm's logits only then). The two
share the mean but not the scale: the GroupNorm also divides by the spatial spread of the last map.

Sizes (Table 1 / the released code): S12 (2, 2, 6, 2), S24 (4, 4, 12, 4), S36 (6, 6, 18, 6) at widths
(64, 128, 320, 512); M36 (6, 6, 18, 6) and M48 (8, 8, 24, 8) at (96, 192, 384, 768). Every convolution is padded,
so any input of at least 3 x 3 pixels works (the stem needs 3 to produce one position).

``token_mixer`` plugs any registered attention (or a callable ``f(channels)``) into the MetaFormer in place of
the pooling, the paper's general claim made runnable; ``None`` (default) is the pooling of size ``pool_size``.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from ..layers import (check_images, DropPath, Mlp, check_choice, check_positive_int, check_stages,
                      stage_drop_path_rates, trunc_normal_init, layer_scale)
from ..registry import get_attn, register_attention, register_model
from ..timm import register_timm_rules


@register_attention("poolformer_pool")
class Pooling(nn.Module):
    """PoolFormer's token mixer: (N, C, H, W) -> AvgPool_{k x k, stride 1}(x) - x, same shape, no parameters.

    The average counts only pixels inside the map (``count_include_pad=False``), as in the authors' code.

    Args:
        channels: C (only validated). pool_size: k, odd (an even window would change the map's size).
    """

    def __init__(self, channels: int, pool_size: int = 3):
        super().__init__()
        self.channels = check_positive_int("channels", channels)
        check_positive_int("pool_size", pool_size)
        if pool_size % 2 == 0:
            raise ValueError(f"pool_size must be odd so that the map keeps its size, got {pool_size}")
        self.pool = nn.AvgPool2d(pool_size, stride=1, padding=pool_size // 2, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(x) - x


class GroupNorm1(nn.GroupNorm):
    """GroupNorm with one group: normalises each sample over (C, H, W) together, per-channel affine."""

    def __init__(self, num_channels: int, eps: float = 1e-5):
        super().__init__(1, num_channels, eps=eps)


class PoolFormerBlock(nn.Module):
    """x + ls1 * TokenMixer(GN(x)), then x + ls2 * MLP(GN(x)), on (N, C, H, W) maps."""

    def __init__(self, dim: int, mixer: Callable[[int], nn.Module], mlp_ratio: float = 4.0, drop: float = 0.0,
                 drop_path: float = 0.0, layer_scale_init_value: float | None = 1e-5):
        super().__init__()
        self.norm1 = GroupNorm1(dim)
        self.token_mixer = mixer(dim)
        self.norm2 = GroupNorm1(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act="gelu", drop=drop)
        self.drop_path = DropPath(drop_path)
        if layer_scale_init_value:
            self.layer_scale1 = layer_scale(dim, layer_scale_init_value)
            self.layer_scale2 = layer_scale(dim, layer_scale_init_value)
        else:
            self.layer_scale1 = self.layer_scale2 = None

    def _scale(self, y: torch.Tensor, scale: torch.Tensor | None) -> torch.Tensor:
        return y if scale is None else y * scale[:, None, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self._scale(self.token_mixer(self.norm1(x)), self.layer_scale1))
        y = self.mlp(self.norm2(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # 1x1 convs as linear layers
        return x + self.drop_path(self._scale(y, self.layer_scale2))


class Downsampling(nn.Module):
    """Overlapping patch embedding: a k x k convolution of the given stride and padding (no norm in PoolFormer)."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, stride: int, padding: int):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size, stride, padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class PoolFormerStage(nn.Module):
    def __init__(self, in_dim: int, dim: int, rates: list[float], downsample: bool, **block_kwargs):
        super().__init__()
        self.downsample = Downsampling(in_dim, dim, 3, 2, 1) if downsample else nn.Identity()
        self.blocks = nn.Sequential(*[PoolFormerBlock(dim, drop_path=r, **block_kwargs) for r in rates])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


class PoolFormer(nn.Module):
    """(N, in_chans, H, W) -> (N, num_classes) logits, for H, W >= 3.

    Args:
        depths, dims: blocks and channels of the four stages. mlp_ratio: MLP hidden width / dims.
        pool_size: the pooling window. token_mixer: None (pooling) or a registered attention / callable f(channels).
        layer_scale_init_value: initial layer scale (1e-5 or 1e-6 in the released models; 0/None: none).
        drop_rate: dropout in the MLPs. drop_path_rate: stochastic depth of the last block.
        head_norm: "map" (authors: GroupNorm on the last map, then pooling) or "pooled" (timm: LayerNorm after).
    """

    def __init__(self, in_chans: int = 3, num_classes: int = 1000, depths=(2, 2, 6, 2), dims=(64, 128, 320, 512),
                 mlp_ratio: float = 4.0, pool_size: int = 3, token_mixer=None,
                 layer_scale_init_value: float | None = 1e-5, drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                 head_norm: str = "map"):
        super().__init__()
        check_positive_int("in_chans", in_chans)
        check_positive_int("num_classes", num_classes)
        self.head_norm = check_choice("head_norm", head_norm, ("map", "pooled"))
        depths, dims = check_stages(depths, dims)
        if not mlp_ratio > 0:
            raise ValueError(f"mlp_ratio must be positive, got {mlp_ratio!r}")
        if not 0.0 <= drop_rate < 1.0 or not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"drop_rate and drop_path_rate must be in [0, 1), got {drop_rate!r}, {drop_path_rate!r}")
        if token_mixer is None:
            Pooling(dims[0], pool_size)  # validates pool_size now
            mixer = lambda c: Pooling(c, pool_size)  # noqa: E731
        else:
            mixer = get_attn(token_mixer)
        self.stem = Downsampling(in_chans, dims[0], 7, 4, 2)
        rates = stage_drop_path_rates(drop_path_rate, depths)
        self.stages = nn.Sequential(*[
            PoolFormerStage(dims[max(i - 1, 0)], dims[i], rates[i], i > 0, mixer=mixer, mlp_ratio=mlp_ratio,
                            drop=drop_rate, layer_scale_init_value=layer_scale_init_value) for i in range(4)])
        self.num_features = dims[-1]
        self.norm = GroupNorm1(dims[-1]) if head_norm == "map" else nn.LayerNorm(dims[-1], eps=1e-6)
        self.head = nn.Linear(dims[-1], num_classes)
        self.apply(trunc_normal_init)  # the authors': linear layers (their 1x1 MLP convs too), std 0.02, zero bias

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> the last stage's (N, dims[-1], ceil(H/32)-ish, ...) map, before the head's norm."""
        check_images("PoolFormer", x, 3, "the 7x7 stem, stride 4, padding 2")
        return self.stages(self.stem(x))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        if self.head_norm == "map":
            return self.head(self.norm(x).mean((-2, -1)))
        return self.head(self.norm(x.mean((-2, -1))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# timm's MetaFormer (timm/models/metaformer.py, poolformer_*): stem.conv, stages.i.downsample.conv and the block
# names are ours; its layer scales are Scale modules, its head a Sequential (global_pool, norm, flatten, fc).
register_timm_rules(PoolFormer, renames=((r"\.layer_scale(\d)\.scale$", r".layer_scale\1"),
                                         (r"^head\.norm\.", "norm."), (r"^head\.fc\.", "head.")))

_S, _M = (64, 128, 320, 512), (96, 192, 384, 768)
_VARIANTS = {
    "poolformer_s12": dict(depths=(2, 2, 6, 2), dims=_S, layer_scale_init_value=1e-5),
    "poolformer_s24": dict(depths=(4, 4, 12, 4), dims=_S, layer_scale_init_value=1e-5),
    "poolformer_s36": dict(depths=(6, 6, 18, 6), dims=_S, layer_scale_init_value=1e-6),
    "poolformer_m36": dict(depths=(6, 6, 18, 6), dims=_M, layer_scale_init_value=1e-6),
    "poolformer_m48": dict(depths=(8, 8, 24, 8), dims=_M, layer_scale_init_value=1e-6),
}
for _name, _cfg in _VARIANTS.items():
    register_model(_name, PoolFormer, timm=_name, **_cfg)
