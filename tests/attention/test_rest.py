import pytest
import torch
import torch.nn as nn

from attnzoo import create_attention


def test_emsa_matches_conv_softmax_instance_norm():
    torch.manual_seed(0)
    m = create_attention("emsa", 32, num_heads=4, sr_ratio=2).eval()
    x = torch.randn(2, 7 * 9, 32)
    q = m.q(x).reshape(2, 63, 4, 8).transpose(1, 2)
    grid = m.sr(x.transpose(1, 2).reshape(2, 32, 7, 9))
    assert grid.shape[-2:] == (4, 5)                               # kernel 3, stride 2, padding 1
    kv = m.kv(m.sr_norm(grid.flatten(2).transpose(1, 2))).reshape(2, 20, 2, 4, 8).permute(2, 0, 3, 1, 4)
    attn = m.transform_conv(q @ kv[0].transpose(-2, -1) / 8 ** 0.5).softmax(dim=-1)
    attn = nn.InstanceNorm2d(4)(attn)                              # torch's instance norm as the reference
    expected = m.proj((attn @ kv[1]).transpose(1, 2).reshape(2, 63, 32))
    torch.testing.assert_close(m(x, hw=(7, 9)), expected, atol=1e-5, rtol=1e-4)


def test_single_head_without_reduction_is_plain_softmax_attention():
    torch.manual_seed(0)
    m = create_attention("emsa", 16, num_heads=1, sr_ratio=1).eval()
    assert not m.transform
    x = torch.randn(2, 12, 16)
    q, k, v = m.q(x), *m.kv(x).chunk(2, dim=-1)
    expected = m.proj((q @ k.transpose(1, 2) / 4).softmax(-1) @ v)
    torch.testing.assert_close(m(x), expected, atol=1e-5, rtol=1e-4)


def test_grid_is_required_and_checked():
    m = create_attention("emsa", 16)
    x = torch.randn(1, 12, 16)
    with pytest.raises(ValueError, match="hw"):
        m(x)
    with pytest.raises(ValueError, match="hw"):
        m(x, hw=(3, 5))


def test_single_token_map_is_handled():
    m = create_attention("emsa", 16, num_heads=2, sr_ratio=2).eval()
    y = m(torch.randn(1, 1, 16), hw=(1, 1))                        # a 1 x 1 attention map
    assert torch.isfinite(y).all()


def test_instance_norm_maps_keeps_float64():
    from attnzoo.attention.rest import instance_norm_maps
    torch.manual_seed(0)
    a = torch.rand(2, 3, 5, 4, dtype=torch.float64)
    y = instance_norm_maps(a)
    assert y.dtype == torch.float64
    # float64 reference: (a - mean) / sqrt(population variance + 1e-5) per (L, L') map; the float32 round trip
    # of the old code is off by about 1e-7, far above this tolerance
    mean = a.mean(dim=(-2, -1), keepdim=True)
    var = ((a - mean) ** 2).mean(dim=(-2, -1), keepdim=True)
    torch.testing.assert_close(y, (a - mean) / torch.sqrt(var + 1e-5), rtol=1e-13, atol=1e-13)
    half = instance_norm_maps(a.to(torch.bfloat16))
    assert half.dtype == torch.bfloat16  # low precision: statistics in float32, result in the input's dtype
