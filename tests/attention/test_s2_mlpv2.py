"""S^2-MLPv2: the spatial shifts and the resolution-independent split attention."""
import pytest
import torch

from attnzoo import create_attention
from attnzoo.attention.s2_mlpv2 import spatial_shift


def test_shift_moves_each_quarter_by_one_pixel():
    h, w, c = 4, 5, 8
    x = torch.arange(h * w * c, dtype=torch.float32).reshape(1, h, w, c)
    y = spatial_shift(x, 1, 2)
    for i in range(h):
        for j in range(w):
            torch.testing.assert_close(y[0, i, j, 0:2], x[0, max(i - 1, 0), j, 0:2])      # down
            torch.testing.assert_close(y[0, i, j, 2:4], x[0, min(i + 1, h - 1), j, 2:4])  # up
            torch.testing.assert_close(y[0, i, j, 4:6], x[0, i, max(j - 1, 0), 4:6])      # right
            torch.testing.assert_close(y[0, i, j, 6:8], x[0, i, min(j + 1, w - 1), 6:8])  # left
    z = spatial_shift(x, 2, 1)  # shift_2 swaps the order of the axes
    torch.testing.assert_close(z[0, 1:, :, 4:6], x[0, :-1, :, 4:6])
    torch.testing.assert_close(z[0, :, 1:, 0:2], x[0, :, :-1, 0:2])


def test_split_attention_is_a_distribution_independent_of_resolution():
    torch.manual_seed(0)
    m = create_attention("s2_mlpv2", 16).eval()
    token = torch.randn(1, 1, 16)
    with torch.no_grad():
        a_small = m.split_attention.weights(m.parts(token.expand(1, 16, 16), hw=(4, 4)))
        a_large = m.split_attention.weights(m.parts(token.expand(1, 81, 16), hw=(9, 9)))
    torch.testing.assert_close(a_small.sum(1), torch.ones(1, 16))
    torch.testing.assert_close(a_small, a_large)  # mean pooling: a constant map gives the same weights at any size


def test_requires_hw():
    m = create_attention("s2_mlpv2", 16)
    with pytest.raises(ValueError):
        m(torch.randn(1, 12, 16))
