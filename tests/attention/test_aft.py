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


def _l1_bias(h, w):
    """-|dy| - |dx| between the raster positions of an h x w grid, (hw, hw), float64."""
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    ys, xs = ys.flatten().double(), xs.flatten().double()
    return -(ys[:, None] - ys[None]).abs() - (xs[:, None] - xs[None]).abs()


def test_full_matches_reference_at_its_length():
    torch.manual_seed(0)
    free = create_attention("aft_full", 8, seq_len=10, pos_dim=None).eval()      # no grid: 10 is not a square
    with torch.no_grad():
        free.pos_bias.normal_(std=2.0)
    x = torch.randn(2, 10, 8) * 3
    torch.testing.assert_close(free(x), _aft_reference(free, x, free.pos_bias), atol=1e-5, rtol=1e-4)
    factored = create_attention("aft_full", 8, seq_len=10, pos_dim=3).eval()     # the paper's w = u v^T
    with torch.no_grad():
        factored.pos_u.normal_()
        factored.pos_v.normal_()
    w = factored.pos_u.detach().double() @ factored.pos_v.detach().double().T
    torch.testing.assert_close(factored(x), _aft_reference(factored, x, w), atol=1e-5, rtol=1e-4)


def test_full_resizes_w_on_the_grid():
    # w = -|dy| - |dx| learned on 14 x 14, used on 7 x 9: resizing the flattened 196 x 196 matrix mixes rows of
    # the raster order (correlation 0.63, the largest bias of query (3, 4) on key (3, 0)); on the grid it is kept
    m = create_attention("aft_full", 4, seq_len=196, pos_dim=None)
    with torch.no_grad():
        m.pos_bias.copy_(_l1_bias(14, 14))
        w = m.position_bias((7, 9)).double()
    target = _l1_bias(7, 9)
    assert torch.corrcoef(torch.stack([w.flatten(), target.flatten()]))[0, 1] > 0.99
    assert torch.equal(w.argmax(dim=1), torch.arange(63))
    torch.testing.assert_close(m.position_bias((14, 14)).double(), _l1_bias(14, 14))   # same grid: unchanged


def test_factorised_resize_equals_resizing_the_full_matrix():
    torch.manual_seed(0)
    factored = create_attention("aft_full", 4, seq_len=20, grid=(4, 5), pos_dim=6)
    free = create_attention("aft_full", 4, seq_len=20, grid=(4, 5), pos_dim=None)
    with torch.no_grad():
        free.pos_bias.copy_(factored.pos_u @ factored.pos_v.T)
        torch.testing.assert_close(factored.position_bias((7, 3)), free.position_bias((7, 3)), atol=1e-6, rtol=1e-5)


def test_full_needs_the_grid_for_other_lengths():
    m = create_attention("aft_full", 8, seq_len=16)
    with pytest.raises(ValueError, match="hw"):
        m(torch.randn(1, 12, 8))                                     # tokens, L != T, no grid
    assert m(torch.randn(1, 12, 8), hw=(3, 4)).shape == (1, 12, 8)   # resized from 4 x 4
    assert m(torch.randn(1, 8, 3, 5)).shape == (1, 8, 3, 5)          # a feature map gives the grid
    seq = create_attention("aft_full", 8, seq_len=10)
    with pytest.raises(ValueError, match="grid"):
        seq(torch.randn(1, 12, 8), hw=(3, 4))
    with pytest.raises(ValueError, match="grid"):
        create_attention("aft_full", 8, seq_len=10, grid=(3, 4))


def test_zero_bias_variants_reduce_to_aft_simple():
    torch.manual_seed(0)
    simple = create_attention("aft_simple", 8).eval()
    full = create_attention("aft_full", 8, seq_len=9).eval()
    conv = create_attention("aft_conv", 8, num_heads=2, kernel_size=3).eval()   # gamma = beta = 0 at init
    full.qkv.load_state_dict(simple.qkv.state_dict())
    conv.qkv.load_state_dict(simple.qkv.state_dict())
    with torch.no_grad():
        full.pos_u.zero_()
    x = torch.randn(2, 12, 8)
    torch.testing.assert_close(full(x, hw=(3, 4)), simple(x), atol=1e-5, rtol=1e-4)   # resized zero bias
    torch.testing.assert_close(conv(x, hw=(3, 4)), simple(x), atol=1e-5, rtol=1e-4)


def test_conv_equals_full_aft_with_the_windowed_bias():
    torch.manual_seed(0)
    h, w = 5, 6
    m = create_attention("aft_conv", 4, num_heads=2, kernel_size=3).eval()
    with torch.no_grad():
        m.pos_bias.normal_(std=1.5)
        m.pos_gain.copy_(torch.tensor([1.3, -0.7]))
        m.pos_shift.copy_(torch.tensor([0.4, 0.2]))
    raw = m.pos_bias.detach().double()                             # the paper's gamma (w - mean) / std + beta
    mean, std = raw.mean(dim=(1, 2), keepdim=True), raw.std(dim=(1, 2), keepdim=True, unbiased=False)
    kernel = torch.tensor([1.3, -0.7]).double()[:, None, None] * (raw - mean) / std \
        + torch.tensor([0.4, 0.2]).double()[:, None, None]
    x = torch.randn(2, h * w, 4) * 2
    q, k, v = (t.double() for t in m.qkv(x).chunk(3, dim=-1))
    out = []
    for c in range(4):                                             # channel c belongs to head c // 2
        wc = _conv_bias_as_full_matrix(kernel[c // 2], h, w)
        e = torch.exp(k[:, None, :, c] + wc[None])                 # (N, L, L')
        out.append(torch.sigmoid(q[..., c]) * (e * v[:, None, :, c]).sum(-1) / e.sum(-1))
    torch.testing.assert_close(m(x, hw=(h, w)), torch.stack(out, -1).float(), atol=1e-5, rtol=1e-4)


def test_conv_without_reparam_learns_w_directly():
    m = create_attention("aft_conv", 4, num_heads=2, kernel_size=3, reparam=False)
    assert not hasattr(m, "pos_gain") and torch.equal(m.kernel(), torch.zeros(2, 3, 3))


def test_conv_needs_the_grid_and_odd_kernel():
    m = create_attention("aft_conv", 8)
    with pytest.raises(ValueError, match="hw"):
        m(torch.randn(1, 6, 8))
    with pytest.raises(ValueError, match="odd"):
        create_attention("aft_conv", 8, kernel_size=4)
