import pytest
import torch

from attnzoo import create_attention


def _aft_reference(m, x, w):
    """Y_t = sigmoid(Q_t) * sum_t' exp(K_t' + w_tt') V_t' / sum_t' exp(K_t' + w_tt'), in float64."""
    q, k, v = (t.double() for t in m.qkv(x).chunk(3, dim=-1))
    e = torch.exp(k[:, None, :, :] + w.double()[None, :, :, None])  # (N, L, L', C)
    return (torch.sigmoid(q) * (e * v[:, None]).sum(2) / e.sum(2)).float()


def _conv_bias_as_full_matrix(kernel, h, w):
    """The L x L bias of AFT-conv with a k x k kernel: w_tt' = kernel[dy, dx] inside the window, else 0."""
    k = kernel.shape[-1]
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    dy = ys.flatten()[None, :] - ys.flatten()[:, None] + k // 2
    dx = xs.flatten()[None, :] - xs.flatten()[:, None] + k // 2
    inside = (dy >= 0) & (dy < k) & (dx >= 0) & (dx < k)
    return torch.where(inside, kernel[dy.clamp(0, k - 1), dx.clamp(0, k - 1)], torch.zeros(()))


def test_full_matches_reference_at_its_length():
    torch.manual_seed(0)
    m = create_attention("aft_full", 8, max_len=10).eval()
    with torch.no_grad():
        m.pos_bias.normal_(std=2.0)
    x = torch.randn(2, 10, 8) * 3
    torch.testing.assert_close(m(x), _aft_reference(m, x, m.pos_bias), atol=1e-5, rtol=1e-4)


def test_zero_bias_variants_reduce_to_aft_simple():
    torch.manual_seed(0)
    simple = create_attention("aft_simple", 8).eval()
    full = create_attention("aft_full", 8, max_len=7).eval()
    conv = create_attention("aft_conv", 8, num_heads=2, kernel_size=3).eval()
    full.qkv.load_state_dict(simple.qkv.state_dict())
    conv.qkv.load_state_dict(simple.qkv.state_dict())
    x = torch.randn(2, 12, 8)
    torch.testing.assert_close(full(x), simple(x), atol=1e-5, rtol=1e-4)       # resized zero bias
    torch.testing.assert_close(conv(x, hw=(3, 4)), simple(x), atol=1e-5, rtol=1e-4)


def test_conv_equals_full_aft_with_the_windowed_bias():
    torch.manual_seed(0)
    h, w = 5, 6
    m = create_attention("aft_conv", 4, num_heads=2, kernel_size=3).eval()
    with torch.no_grad():
        m.pos_bias.normal_(std=1.5)
    x = torch.randn(2, h * w, 4) * 2
    q, k, v = (t.double() for t in m.qkv(x).chunk(3, dim=-1))
    out = []
    for c in range(4):                                             # channel c belongs to head c // 2
        wc = _conv_bias_as_full_matrix(m.pos_bias[c // 2].detach(), h, w).double()
        e = torch.exp(k[:, None, :, c] + wc[None])                 # (N, L, L')
        out.append(torch.sigmoid(q[..., c]) * (e * v[:, None, :, c]).sum(-1) / e.sum(-1))
    torch.testing.assert_close(m(x, hw=(h, w)), torch.stack(out, -1).float(), atol=1e-5, rtol=1e-4)


def test_conv_needs_the_grid_and_odd_kernel():
    m = create_attention("aft_conv", 8)
    with pytest.raises(ValueError, match="hw"):
        m(torch.randn(1, 6, 8))
    with pytest.raises(ValueError, match="odd"):
        create_attention("aft_conv", 8, kernel_size=4)
