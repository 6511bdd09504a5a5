"""BorderDet (qiu2020borderdet): BorderAlign against the authors' kernel written out sample by sample, and the
border branch. The registry-wide tests cover shapes, batch 1, odd sizes, train/eval and gradients."""
import math

import pytest
import torch

from attnzoo import create_block
from attnzoo.blocks.borderdet import border_align


def _bilinear(f, y, x):
    """The kernel's bilinear_interpolate on one (H, W) plane (nested lists; pixel centres at integers, clamped)."""
    h, w = len(f), len(f[0])
    if y < -1 or y > h or x < -1 or x > w:
        return 0.0
    y, x = max(y, 0.0), max(x, 0.0)
    y0, x0 = int(math.floor(y)), int(math.floor(x))
    if y0 >= h - 1:
        y0 = y1 = h - 1
        y = float(y0)
    else:
        y1 = y0 + 1
    if x0 >= w - 1:
        x0 = x1 = w - 1
        x = float(x0)
    else:
        x1 = x0 + 1
    ly, lx = y - y0, x - x0
    return ((1 - ly) * (1 - lx) * f[y0][x0] + (1 - ly) * lx * f[y0][x1]
            + ly * (1 - lx) * f[y1][x0] + ly * lx * f[y1][x1])


def _reference(x, boxes, pool):
    n, c4, _, _ = x.shape
    c = c4 // 4
    out, planes = torch.zeros(n, 4, c, boxes.shape[1], dtype=x.dtype), x.tolist()
    for b in range(n):
        for i, (x1, y1, x2, y2) in enumerate(boxes[b].tolist()):
            w, h = x2 - x1, y2 - y1
            starts = [(x1, y1, w / pool, 0), (x1, y1, 0, h / pool), (x2, y2, -w / pool, 0), (x2, y2, 0, -h / pool)]
            for side, (sx, sy, dx, dy) in enumerate(starts):
                for ch in range(c):
                    f = planes[b][side * c + ch]
                    out[b, side, ch, i] = max(_bilinear(f, sy + k * dy, sx + k * dx) for k in range(pool + 1))
    return out


def test_border_align_matches_the_kernel_sample_by_sample():
    torch.manual_seed(0)
    x = torch.randn(2, 8, 5, 7, dtype=torch.float64)
    xy1 = torch.rand(2, 6, 2, dtype=torch.float64) * torch.tensor([6.0, 4.0], dtype=torch.float64)
    xy2 = xy1 + torch.rand(2, 6, 2, dtype=torch.float64) * (torch.tensor([6.0, 4.0], dtype=torch.float64) - xy1)
    boxes = torch.cat([xy1, xy2], -1)
    boxes[0, 0] = torch.tensor([0.0, 0.0, 6.0, 4.0], dtype=torch.float64)          # the whole map, edges included
    boxes[1, 1] = torch.tensor([2.5, 1.5, 2.5, 1.5], dtype=torch.float64)          # a point
    torch.testing.assert_close(border_align(x, boxes, 4), _reference(x, boxes, 4))


def test_each_side_sees_only_its_channel_group_and_its_edge():
    """A spike on the top edge of a box reaches the top group only, and only for boxes whose top edge passes it."""
    x = torch.zeros(1, 4, 9, 9)
    x[0, 0, 2, 4] = 1.0                                   # top group, pixel (y=2, x=4)
    x[0, 2, 2, 4] = 1.0                                   # bottom group, same pixel
    boxes = torch.tensor([[[1.0, 2.0, 7.0, 6.0],          # top edge y=2 through x=4 (sample k=3 of 6 at x=4)
                           [1.0, 3.0, 7.0, 6.0]]])        # top edge y=3: misses it
    out = border_align(x, boxes, 6)[0, :, 0]              # (4 sides, 2 boxes)
    torch.testing.assert_close(out, torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]))


def test_branch_clamps_detaches_and_mixes():
    torch.manual_seed(0)
    block = create_block("borderdet", 8, 6, border_channels=4, pool_size=3).eval()
    x, boxes = block.example_inputs(2, 5, 6)
    boxes.requires_grad_(True)
    y = block(x, boxes)
    assert y.shape == (2, 6, 5, 6) and (y >= 0).all()
    y.sum().backward()
    assert boxes.grad is None                                           # no gradient into the box prediction
    limit = torch.tensor([5.0, 4.0, 5.0, 4.0])
    torch.testing.assert_close(block(x, boxes.detach() * 10), block(x, torch.minimum((boxes.detach() * 10)
                                                                                       .clamp(min=0), limit)))


def test_errors():
    block = create_block("borderdet", 8, 8)
    with pytest.raises(ValueError, match="H\\*W"):
        block(torch.randn(1, 8, 4, 4), torch.rand(1, 15, 4))
    with pytest.raises(ValueError, match="4C"):
        border_align(torch.randn(1, 6, 4, 4), torch.rand(1, 16, 4))
