import torch

from attnzoo import create_attention


def _reference(m, x):
    """Pixel by pixel: softmax over the in-image keys of the query's block window, content + relative logits."""
    n, c, h, w = x.shape
    b, p, heads, d = m.block_size, m.halo_size, m.num_heads, m.head_dim
    q = m.q(x).reshape(n, heads, d, h, w) * d ** -0.5
    k, v = m.kv(x).reshape(n, 2, heads, d, h, w).unbind(1)
    out = torch.zeros(n, heads, d, h, w)
    for y in range(h):
        for xx in range(w):
            by, bx = y // b * b, xx // b * b                       # top-left of the query's block
            ys = range(max(by - p, 0), min(by + b + p, h))
            xs = range(max(bx - p, 0), min(bx + b + p, w))
            keys = [(ky, kx) for ky in ys for kx in xs]
            qv = q[:, :, :, y, xx]                                 # (N, heads, d)
            logits = torch.stack([
                (qv * (k[:, :, :, ky, kx] + m.rel_h[ky - y + b + p - 1] + m.rel_w[kx - xx + b + p - 1])).sum(-1)
                for ky, kx in keys], dim=-1)
            vals = torch.stack([v[:, :, :, ky, kx] for ky, kx in keys], dim=-1)  # (N, heads, d, K)
            out[:, :, :, y, xx] = (vals * logits.softmax(-1)[:, :, None]).sum(-1)
    return out.reshape(n, c, h, w)


def test_matches_pixelwise_reference_on_an_odd_size():
    torch.manual_seed(0)
    m = create_attention("halo", 8, num_heads=2, block_size=4, halo_size=1).eval()
    x = torch.randn(1, 8, 7, 9)
    with torch.no_grad():
        torch.testing.assert_close(m(x), _reference(m, x), atol=1e-5, rtol=1e-4)


def test_output_ignores_pixels_outside_the_halo():
    torch.manual_seed(0)
    m = create_attention("halo", 8, num_heads=2, block_size=4, halo_size=1).eval()
    x = torch.randn(1, 8, 12, 12)
    x2 = x.clone()
    x2[:, :, 9:, 9:] = torch.randn(1, 8, 3, 3)                     # far from the top-left block's window (0..4)
    with torch.no_grad():
        torch.testing.assert_close(m(x)[..., :4, :4], m(x2)[..., :4, :4])
        assert not torch.allclose(m(x)[..., 8:, 8:], m(x2)[..., 8:, 8:])


def test_weights_are_distributions_over_the_window():
    m = create_attention("halo", 8, num_heads=2, block_size=4, halo_size=2)
    a = m.attention_map(torch.randn(2, 8, 6, 5))
    assert a.shape == (2, 2, 4, 16, 64)
    torch.testing.assert_close(a.sum(-1), torch.ones(2, 2, 4, 16))
