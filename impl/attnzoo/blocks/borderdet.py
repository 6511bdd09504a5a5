"""BorderDet: Border Feature for Dense Object Detection (Qiu, Ma, Li, Liu & Sun, ECCV 2020, arXiv:2007.11056).

A dense detector (FCOS) predicts a box at every position of a feature map, but scores and refines it from the
feature of that one point, which sees little of the object's extremes. BorderDet adds a *border branch*: for the
box B_p = (x1, y1, x2, y2) predicted at position p, **BorderAlign** pools, for each of its four edges, the maximum
of the feature along that edge,

    F_side(p) = max_{k = 0..K} f_side(s_side(p, k / K)),        side in {top, left, bottom, right},

where f_side is the side's own group of C channels (the input has 4C: [top; left; bottom; right]) sampled
bilinearly, and the K + 1 points run along the edge: top from (x1, y1) to (x2, y1), left from (x1, y1) to
(x1, y2), bottom from (x2, y2) to (x2 - w, y2), right from (x2, y2) to (x2, y2 - h) (K = ``pool_size`` = 10).
The border branch then concatenates the four pooled maps with the point's own feature and mixes them:

    y = ReLU(W_out [BorderAlign(ReLU(IN(W_ltrb x)), B); ReLU(IN(W_pt x))])        (N, C_out, H, W)

with 1x1 convolutions W_pt: C_in -> C_b, W_ltrb: C_in -> 4 C_b, W_out: 5 C_b -> C_out and instance norms
(the authors' ``BorderBranch``, cvpods playground borderdet.py; C_b = 256 in the classification branch, 128 in the
regression branch, C_out = C_in = 256). The boxes are given in feature-map coordinates, one per position
(N, H*W, 4), clamped to the map (the head divides the predicted boxes by the level's stride and clamps them,
``compute_border``), and detached: no gradient flows into the box prediction, as in the head (``torch.no_grad``).

BorderAlign is a CUDA kernel in the authors' code (cvpods ``border_align``, ported to mmcv), one thread per (box,
channel, side) with a loop over the K + 1 samples. Here it is one ``grid_sample`` over all boxes, sides and samples
(bilinear, ``align_corners=True``, i.e. pixel centres at integer coordinates as in the kernel's
``bilinear_interpolate``; border padding, which equals the kernel's clamping for the clamped boxes) and a max over
the samples; the gradient reaches the maximising sample's four neighbours, as in the kernel's backward.
Departure: none in the computation; the detector around the branch (FCOS head, losses, box decoding) is not part
of this block.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import check_positive_int
from ..registry import register_block


def border_align(x: torch.Tensor, boxes: torch.Tensor, pool_size: int = 10) -> torch.Tensor:
    """BorderAlign: (N, 4C, H, W) features, (N, L, 4) boxes (x1, y1, x2, y2; feature-map pixels) -> (N, 4, C, L).

    Channel groups [0, C), [C, 2C), [2C, 3C), [3C, 4C) are pooled along the top, left, bottom and right edge of each
    box: the maximum over ``pool_size + 1`` evenly spaced bilinear samples, ends included.
    """
    n, c4, h, w = x.shape
    if c4 % 4:
        raise ValueError(f"border_align needs 4C channels (top, left, bottom, right groups), got {c4}")
    if boxes.dim() != 3 or boxes.shape[0] != n or boxes.shape[2] != 4:
        raise ValueError(f"boxes must be (N={n}, L, 4) as (x1, y1, x2, y2), got {tuple(boxes.shape)}")
    c = c4 // 4
    t = torch.linspace(0, 1, pool_size + 1, device=x.device, dtype=boxes.dtype)        # (K+1,)
    x1, y1, x2, y2 = (v[..., None] for v in boxes.unbind(-1))                          # (N, L, 1) each
    bw, bh = (x2 - x1) * t, (y2 - y1) * t                                              # (N, L, K+1)
    xs = torch.stack([x1 + bw, x1.expand_as(bw), x2 - bw, x2.expand_as(bw)], dim=1)    # (N, 4, L, K+1)
    ys = torch.stack([y1.expand_as(bh), y1 + bh, y2.expand_as(bh), y2 - bh], dim=1)

    def normalise(v, size):  # pixel index -> [-1, 1] with align_corners=True
        return v * (2.0 / (size - 1)) - 1.0 if size > 1 else torch.zeros_like(v)

    grid = torch.stack([normalise(xs, w), normalise(ys, h)], dim=-1).to(x.dtype)       # (N, 4, L, K+1, 2)
    samples = F.grid_sample(x.reshape(n * 4, c, h, w), grid.flatten(0, 1), mode="bilinear",
                            padding_mode="border", align_corners=True)                 # (4N, C, L, K+1)
    return samples.max(dim=-1).values.view(n, 4, c, -1)


@register_block("borderdet")
class BorderBranch(nn.Module):
    """(N, C_in, H, W) features and (N, H*W, 4) boxes -> (N, C_out, H, W): the point's feature and its box's four
    border-max features, mixed by a 1x1 convolution.

    Args:
        in_channels: C_in. out_channels: C_out (authors: C_in = 256). border_channels: C_b per side (authors: 256
            in the classification branch, 128 in the regression branch; default C_in). pool_size: K, samples per
            edge minus one (authors: 10).
    """

    def __init__(self, in_channels: int, out_channels: int, border_channels: int | None = None,
                 pool_size: int = 10):
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels), ("pool_size", pool_size)):
            check_positive_int(name, value)
        cb = in_channels if border_channels is None else check_positive_int("border_channels", border_channels)
        self.in_channels, self.pool_size = in_channels, pool_size
        self.point = nn.Sequential(nn.Conv2d(in_channels, cb, 1), nn.InstanceNorm2d(cb), nn.ReLU())
        self.ltrb = nn.Sequential(nn.Conv2d(in_channels, 4 * cb, 1), nn.InstanceNorm2d(4 * cb), nn.ReLU())
        self.fuse = nn.Sequential(nn.Conv2d(5 * cb, out_channels, 1), nn.ReLU())

    def forward(self, x: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        if boxes.shape != (n, h * w, 4):
            raise ValueError(f"boxes must be (N, H*W, 4) = {(n, h * w, 4)} (one box per position, x1, y1, x2, y2 in "
                             f"feature-map pixels), got {tuple(boxes.shape)}")
        limit = boxes.new_tensor([w - 1, h - 1, w - 1, h - 1])
        boxes = torch.minimum(boxes.detach().clamp(min=0), limit)
        sides = border_align(self.ltrb(x), boxes, self.pool_size)                          # (N, 4, C_b, H*W)
        return self.fuse(torch.cat([sides.reshape(n, -1, h, w), self.point(x)], dim=1))

    def example_inputs(self, n: int, h: int, w: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """A feature map and, at each position, a random box around it (feature-map pixels)."""
        ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
        centre = torch.stack([xs, ys], -1).reshape(1, h * w, 2).float()
        half = torch.rand(n, h * w, 2, device=device) * torch.tensor([w, h], device=device) / 2
        return torch.randn(n, self.in_channels, h, w, device=device), torch.cat([centre - half, centre + half], -1)
