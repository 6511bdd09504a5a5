import pytest
import torch

from attnzoo import create_attention


def _explicit(q, k, v):
    return (q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5).softmax(dim=-1) @ v


def test_mhsa_matches_explicit_softmax_attention():
    torch.manual_seed(0)
    m = create_attention("mhsa", 32, num_heads=4).eval()
    x = torch.randn(2, 21, 32)
    q, k, v = m.qkv(x).reshape(2, 21, 3, 4, 8).permute(2, 0, 3, 1, 4)
    expected = m.proj(_explicit(q, k, v).transpose(1, 2).reshape(2, 21, 32))
    torch.testing.assert_close(m(x), expected, atol=1e-5, rtol=1e-4)


def test_simplified_mhsa_uses_the_input_as_query_key_and_value():
    torch.manual_seed(0)
    m = create_attention("simplified_mhsa", 32, num_heads=4).eval()
    assert sum(p.numel() for p in m.parameters()) == 32 * 32 + 32  # only the output projection
    x = torch.randn(2, 13, 32)
    t = x.reshape(2, 13, 4, 8).transpose(1, 2)
    expected = m.proj(_explicit(t, t, t).transpose(1, 2).reshape(2, 13, 32))
    torch.testing.assert_close(m(x), expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(m.attention_map(x).sum(-1), torch.ones(2, 4, 13))


@pytest.mark.parametrize("name", ["mhsa", "simplified_mhsa"])
def test_permutation_equivariance(name):
    torch.manual_seed(0)
    m = create_attention(name, 16, num_heads=2).eval()
    x = torch.randn(1, 10, 16)
    perm = torch.randperm(10)
    torch.testing.assert_close(m(x)[:, perm], m(x[:, perm]), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", ["mhsa", "simplified_mhsa"])
def test_heads_must_divide_channels(name):
    with pytest.raises(ValueError):
        create_attention(name, 30, num_heads=8)
