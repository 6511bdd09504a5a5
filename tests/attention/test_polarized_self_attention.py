import pytest
import torch

from attnzoo import create_attention


def _shuffle(t, perm):
    return t.flatten(2)[..., perm].view_as(t)


def test_channel_branch_ignores_pixel_order_and_spatial_branch_follows_it():
    torch.manual_seed(0)
    m = create_attention("polarized_parallel", 16).eval()
    x = torch.randn(2, 16, 5, 6)
    perm = torch.randperm(30)
    with torch.no_grad():
        torch.testing.assert_close(m.channel(_shuffle(x, perm)), m.channel(x))
        torch.testing.assert_close(m.spatial(_shuffle(x, perm)), _shuffle(m.spatial(x), perm))


def test_parallel_and_sequential_layouts():
    torch.manual_seed(0)
    p = create_attention("polarized_parallel", 8).eval()
    s = create_attention("polarized_sequential", 8).eval()
    s.load_state_dict(p.state_dict())
    x = torch.randn(2, 8, 4, 7)
    with torch.no_grad():
        a_ch, a_sp = p.channel(x), p.spatial(x)
        assert a_ch.shape == (2, 8, 1, 1) and a_sp.shape == (2, 1, 4, 7)
        torch.testing.assert_close(p(x), x * a_ch + x * a_sp)
        y = x * a_ch
        torch.testing.assert_close(s(x), y * p.spatial(y))


def test_channel_pooling_is_a_softmax_over_positions():
    torch.manual_seed(0)
    m = create_attention("polarized_parallel", 8)
    x = torch.randn(1, 8, 3, 3)
    with torch.no_grad():
        m.channel.wq.weight.zero_()
        m.channel.wq.bias.zero_()  # uniform softmax: the pooled vector is the plain mean of W_v(x)
        z = m.channel.wz(m.channel.wv(x).mean(dim=(2, 3), keepdim=True)).flatten(1)
        expected = torch.sigmoid(m.channel.ln(z))[:, :, None, None]
        torch.testing.assert_close(m.channel(x), expected)
    with pytest.raises(ValueError):
        create_attention("polarized_sequential", 8, rd_ratio=2.0)
