"""SETR: segmentation transformer (Zheng et al., CVPR 2021, arXiv:2012.15840).

Semantic segmentation as sequence-to-sequence prediction: a plain ViT (``models.vit``: 16 x 16 patches, learned
position embeddings, pre-norm blocks, no downsampling after the patch embedding) encodes the image into H/16 x W/16
tokens, and one of three decoders turns tokens back into per-pixel class logits at the input resolution:

* **Naive** (SETR-Naive): the last block's patch tokens -> LayerNorm -> reshape to the H/16 x W/16 map -> 1x1 conv
  (D -> 256) + BN + ReLU -> 1x1 conv (256 -> classes) -> bilinear upsampling x16.
* **PUP**, progressive upsampling: LayerNorm, then four 3x3 conv (-> 256) + BN + ReLU layers with a bilinear x2
  upsampling after each of the first three, a 1x1 classifier and a last x2 (16x in all, never more than 2x at once).
* **MLA**, multi-level feature aggregation: the outputs of blocks 6, 12, 18 and 24 (for depth 24: every quarter),
  each with its own LayerNorm, reshaped to maps; 1x1 conv (D -> 256) + BN + ReLU each, summed top-down (deepest
  first, cumulatively), 3x3 conv + BN + ReLU each; per level two 3x3 conv (-> 128) + BN + ReLU and a bilinear x4
  (corners aligned, as the authors' code); concat (4 x 128), 3x3 classifier, bilinear upsampling to the image.

Details from the authors' code (fudan-zvg/SETR: mmseg/models/backbones/vit.py, vit_mla.py, decode_heads/
vit_up_head.py, vit_mla_head.py, configs/SETR/*ade20k*): the encoder has no final LayerNorm (each decoder brings
its own); Naive and PUP carry the class token through the blocks and drop it before the decoder; MLA drops it right
after adding the position embeddings (the blocks see only patch tokens), so ``setr_mla_*`` have no class token;
convolutions before BN keep their biases in Naive/PUP and drop them in MLA; no dropout in the decoders (the heads
define one and never apply it). Sizes: T-Large = ViT-L/16 (1024 wide, 24 deep, 16 heads), the paper's main models;
T-Base = ViT-B/16 (768, 12, 12). Defaults: ADE20K's 150 classes and its 512 x 512 crops (the position table's grid).

Departures: the auxiliary heads used only for training losses (three or four extra Naive/MLA heads on intermediate
blocks) are left out. The authors' models accept exactly ``img_size`` (and infer by sliding windows); ours accept any
size: inputs are zero-padded to whole patches (``layers.PatchEmbed``), the position table is resized bicubically
(``VisionTransformer.position_embedding``; the authors resize the pre-trained table bilinearly once, at load time),
and the logits, computed for the padded image, are cropped back to (H, W). At ``img_size`` nothing differs.
For T-Base, MLA taps blocks 3, 6, 9, 12 (every quarter; the authors released no T-Base MLA configuration).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import check_images, ConvNormAct, check_choice, check_positive_int
from ..registry import register_model
from .vit import VisionTransformer


def _to_map(tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(N, L, D) patch tokens in raster order -> (N, D, gh, gw)."""
    return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, *grid)


def _up(x: torch.Tensor, factor: int, align_corners: bool = False) -> torch.Tensor:
    return F.interpolate(x, size=(x.shape[-2] * factor, x.shape[-1] * factor), mode="bilinear",
                         align_corners=align_corners)


class NaiveHead(nn.Module):
    """SETR-Naive: last block's tokens -> (N, classes, 16 gh, 16 gw)."""

    def __init__(self, embed_dim: int, num_classes: int, channels: int = 256, patch_size: int = 16):
        super().__init__()
        self.patch_size = patch_size
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.conv = ConvNormAct(embed_dim, channels, 1, bias=True)
        self.cls = nn.Conv2d(channels, num_classes, 1)

    def forward(self, feats: list[torch.Tensor], grid: tuple[int, int]) -> torch.Tensor:
        x = self.cls(self.conv(_to_map(self.norm(feats[-1]), grid)))
        return _up(x, self.patch_size)


class PUPHead(nn.Module):
    """SETR-PUP: last block's tokens -> four 3x3 conv-BN-ReLU with x2 upsampling between them -> 1x1 -> x2."""

    def __init__(self, embed_dim: int, num_classes: int, channels: int = 256, patch_size: int = 16):
        super().__init__()
        if patch_size != 16:
            raise ValueError(f"SETR-PUP upsamples 2x four times: it needs patch_size 16, got {patch_size}")
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.convs = nn.ModuleList([ConvNormAct(embed_dim if i == 0 else channels, channels, 3, bias=True)
                                    for i in range(4)])
        self.cls = nn.Conv2d(channels, num_classes, 1)

    def forward(self, feats: list[torch.Tensor], grid: tuple[int, int]) -> torch.Tensor:
        x = _to_map(self.norm(feats[-1]), grid)
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if i < 3:
                x = _up(x, 2)
        return _up(self.cls(x), 2)


class MLAHead(nn.Module):
    """SETR-MLA: four blocks' tokens -> per-level LN, 1x1 lateral convs summed top-down, 3x3 convs, per-level
    two 3x3 convs and x4, concat, 3x3 classifier -> (N, classes, 4 gh, 4 gw) (upsampled to the image by SETR)."""

    def __init__(self, embed_dim: int, num_classes: int, channels: int = 256, head_channels: int = 128):
        super().__init__()
        self.norms = nn.ModuleList([nn.LayerNorm(embed_dim, eps=1e-6) for _ in range(4)])
        self.lateral = nn.ModuleList([ConvNormAct(embed_dim, channels, 1) for _ in range(4)])
        self.smooth = nn.ModuleList([ConvNormAct(channels, channels, 3) for _ in range(4)])
        self.heads = nn.ModuleList([nn.Sequential(ConvNormAct(channels, head_channels, 3),
                                                  ConvNormAct(head_channels, head_channels, 3)) for _ in range(4)])
        self.cls = nn.Conv2d(4 * head_channels, num_classes, 3, padding=1)

    def forward(self, feats: list[torch.Tensor], grid: tuple[int, int]) -> torch.Tensor:
        lat = [conv(_to_map(norm(f), grid)) for f, norm, conv in zip(feats, self.norms, self.lateral)]
        for i in (2, 1, 0):  # top-down: each level adds the (already summed) deeper one
            lat[i] = lat[i] + lat[i + 1]
        outs = [_up(head(smooth(x)), 4, align_corners=True) for x, smooth, head in zip(lat, self.smooth, self.heads)]
        return self.cls(torch.cat(outs, dim=1))


class SETREncoder(VisionTransformer):
    """``models.vit.VisionTransformer`` without its final LayerNorm and head: images -> the patch tokens (N, L, D)
    after each requested block, and the patch grid. ``cls_token=False``: the blocks see only patch tokens (MLA)."""

    def __init__(self, cls_token: bool = True, **kwargs):
        super().__init__(num_classes=1, **kwargs)
        self.norm = self.head = None
        if not cls_token:
            self.cls_token = None

    def forward_blocks(self, x: torch.Tensor, taps: tuple[int, ...]) -> tuple[list[torch.Tensor], tuple[int, int]]:
        x, grid = self.patch_embed(x)
        pos = self.position_embedding(grid)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + pos
        else:
            x = x + pos[:, 1:]
        x = self.pos_drop(x)
        t = int(self.cls_token is not None)
        outs = {}
        for i, block in enumerate(self.blocks[:max(taps) + 1]):
            x = block(x)
            if i in taps:
                outs[i] = x[:, t:]
        return [outs[i] for i in taps], grid


class SETR(nn.Module):
    """(N, in_chans, H, W) images -> (N, num_classes, H, W) per-pixel logits (``output_stride`` 1).

    Args:
        decoder: "naive", "pup" or "mla". num_classes: 150 (ADE20K). img_size: the position table's resolution.
        patch_size, embed_dim, depth, num_heads, mlp_ratio, qkv_bias, drop_rate, drop_path_rate: the ViT encoder's.
    """

    output_stride = 1

    def __init__(self, decoder: str = "naive", num_classes: int = 150, img_size: int = 512, patch_size: int = 16,
                 in_chans: int = 3, embed_dim: int = 1024, depth: int = 24, num_heads: int = 16,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, drop_rate: float = 0.0, drop_path_rate: float = 0.0):
        super().__init__()
        self.decoder_name = check_choice("decoder", decoder, ("naive", "pup", "mla"))
        check_positive_int("num_classes", num_classes)
        self.encoder = SETREncoder(cls_token=decoder != "mla", img_size=img_size, patch_size=patch_size,
                                   in_chans=in_chans, embed_dim=embed_dim, depth=depth, num_heads=num_heads,
                                   mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop_rate=drop_rate,
                                   drop_path_rate=drop_path_rate)
        if decoder == "mla":
            self.taps = tuple(max(depth * (i + 1) // 4 - 1, 0) for i in range(4))
            self.decode_head = MLAHead(embed_dim, num_classes)
        else:
            self.taps = (depth - 1,)
            self.decode_head = (NaiveHead(embed_dim, num_classes, patch_size=patch_size) if decoder == "naive"
                                else PUPHead(embed_dim, num_classes, patch_size=patch_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_images("SETR", x)
        h, w = x.shape[-2:]
        feats, grid = self.encoder.forward_blocks(x, self.taps)
        logits = self.decode_head(feats, grid)
        p = self.encoder.patch_embed.patch_size
        size = (grid[0] * p, grid[1] * p)  # the padded image
        if logits.shape[-2:] != size:
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return logits[..., :h, :w]


_ENCODERS = {"vit_large": dict(embed_dim=1024, depth=24, num_heads=16),
             "vit_base": dict(embed_dim=768, depth=12, num_heads=12)}
for _decoder in ("naive", "pup", "mla"):
    for _enc, _cfg in _ENCODERS.items():
        register_model(f"setr_{_decoder}_{_enc}", SETR, decoder=_decoder, img_size=512, patch_size=16, **_cfg)
