import pytest
import torch

from attnzoo import create_attention


def test_fresh_block_is_identity():
    m = create_attention("double_attn", 16).eval()
    x = torch.randn(2, 16, 5, 7)
    torch.testing.assert_close(m(x), x)


def test_gather_distribute_matches_the_equations():
    torch.manual_seed(0)
    m = create_attention("double_attn", 16, c_m=6, c_n=3, zero_init=False).eval()
    x = torch.randn(2, 16, 5, 7)
    a = m.conv_a(x).flatten(2)                                     # (N, m, L)
    b = m.conv_b(x).flatten(2)
    v = m.conv_v(x).flatten(2)
    z = torch.zeros(2, 6, 35)
    for i in range(35):                                            # position by position, as in the paper
        g = torch.einsum("nml,nkl->nmk", a, b.softmax(dim=-1))     # gathered descriptors (N, m, n)
        z[:, :, i] = torch.einsum("nmk,nk->nm", g, v[:, :, i].softmax(dim=1))
    expected = x + m.proj(z.view(2, 6, 5, 7))
    torch.testing.assert_close(m(x), expected, atol=1e-5, rtol=1e-4)


def test_attention_maps_are_distributions():
    m = create_attention("double_attn", 16)
    gather, distribute = m.attention_maps(torch.randn(2, 16, 6, 4))
    torch.testing.assert_close(gather.sum(dim=(2, 3)), torch.ones(2, m.c_n))
    torch.testing.assert_close(distribute.sum(dim=1), torch.ones(2, 6, 4))


def test_bad_ratio_rejected():
    with pytest.raises(ValueError):
        create_attention("double_attn", 16, rd_ratio=2.0)
