import torch

from attnzoo import create_attention


def test_matches_cross_normalized_product():
    torch.manual_seed(0)
    m = create_attention("ufo", 16, num_heads=2).eval()
    with torch.no_grad():
        m.gamma_q.uniform_(0.5, 2.0)
        m.gamma_kv.uniform_(0.5, 2.0)
    x = torch.randn(2, 15, 16)
    q, k, v = (t.reshape(2, 15, 2, 8).transpose(1, 2) for t in m.qkv(x).chunk(3, dim=-1))
    kv = k.transpose(-2, -1) @ v
    qn = q / q.norm(dim=-1, keepdim=True) * m.gamma_q
    kvn = kv / kv.norm(dim=-2, keepdim=True) * m.gamma_kv
    expected = m.proj((qn @ kvn).transpose(1, 2).reshape(2, 15, 16))
    torch.testing.assert_close(m(x), expected, atol=1e-5, rtol=1e-4)


def test_attention_output_is_a_bounded_cosine():
    torch.manual_seed(0)
    m = create_attention("ufo", 16, num_heads=4).eval()
    q, kv = m.normalized_factors(torch.randn(2, 200, 16) * 50)
    assert (q @ kv).abs().max() <= 1.0 + 1e-5                     # gamma = 1: cosines, whatever L and scale


def test_invariant_to_the_input_scale_without_biases():
    torch.manual_seed(0)
    m = create_attention("ufo", 16, num_heads=2, qkv_bias=False).eval()
    x = torch.randn(2, 9, 16)
    torch.testing.assert_close(m(x), m(7.5 * x), atol=1e-5, rtol=1e-4)
