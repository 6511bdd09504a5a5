import math

import pytest
import torch

from attnzoo import create_attention


def _cos(freq, length):
    pos = torch.arange(length, dtype=torch.float32) + 0.5
    scale = math.sqrt(2 / length) if freq else math.sqrt(1 / length)
    return scale * torch.cos(math.pi * freq * pos / length)


def test_lowest_frequency_is_scaled_average_pooling():
    fca = create_attention("fca", 32, num_freq=1)
    x = torch.randn(2, 32, 6, 10)
    torch.testing.assert_close(fca.pooled(x), x.mean(dim=(2, 3)) * math.sqrt(60))


def test_each_group_picks_out_its_own_frequency():
    fca = create_attention("fca", 16)  # one channel per frequency
    u, v = fca.freq_u.tolist(), fca.freq_v.tolist()
    for h in (7, 14):  # at 14 x 14 the 7 x 7 frequencies double (same fraction of the spectrum)
        scale = h // 7
        k = 6  # frequency (1, 2)
        pattern = _cos(u[k] * scale, h)[:, None] * _cos(v[k] * scale, h)[None, :]
        desc = fca.pooled(pattern.expand(1, 16, h, h)).flatten()
        expected = torch.tensor([1.0 if (u[i], v[i]) == (u[k], v[k]) else 0.0 for i in range(16)])
        torch.testing.assert_close(desc, expected, atol=1e-5, rtol=0)


def test_any_size_uses_valid_frequencies():
    fca = create_attention("fca", 32)
    for h, w in [(1, 1), (3, 5), (9, 13)]:
        bh, bw = fca.basis(h, w)
        assert bh.shape == (16, h) and bw.shape == (16, w)
        torch.testing.assert_close(bh.square().sum(1), torch.ones(16))


def test_bad_arguments():
    with pytest.raises(ValueError):
        create_attention("fca", 40)  # not divisible by 16 frequencies
