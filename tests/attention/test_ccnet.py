import torch

from attnzoo import create_attention


def _reference_step(m, x):
    """Criss-cross attention with explicit loops over pixels (the centre counted once)."""
    q, k, v = m.query(x), m.key(x), m.value(x)
    n, c, h, w = x.shape
    out = torch.zeros_like(v)
    for i in range(h):
        for j in range(w):
            cand = [(r, j) for r in range(h) if r != i] + [(i, s) for s in range(w)]  # H + W - 1 pixels
            keys = torch.stack([k[:, :, r, s] for r, s in cand], dim=-1)  # (N, C', H+W-1)
            vals = torch.stack([v[:, :, r, s] for r, s in cand], dim=-1)
            a = torch.softmax((q[:, :, i, j].unsqueeze(-1) * keys).sum(1), dim=-1)  # (N, H+W-1)
            out[:, :, i, j] = (vals * a.unsqueeze(1)).sum(-1)
    return x + m.gamma * out


def test_vectorized_step_equals_pixel_loop():
    torch.manual_seed(0)
    m = create_attention("criss_cross", 16, recurrence=1)
    with torch.no_grad():
        m.gamma.fill_(0.8)
    x = torch.randn(2, 16, 4, 5)
    torch.testing.assert_close(m(x), _reference_step(m, x), rtol=1e-4, atol=1e-5)
    dense = m.dense_attention(x)  # rows: a distribution over exactly H + W - 1 pixels
    torch.testing.assert_close(dense.sum(-1), torch.ones(2, 20))
    assert ((dense > 0).sum(-1) == 4 + 5 - 1).all()


def _input_gradient(m, x, i, j):
    x = x.clone().requires_grad_(True)
    m(x)[:, :, i, j].sum().backward()
    return x.grad.abs().sum(dim=(0, 1))


def test_one_step_sees_the_cross_two_steps_see_everything():
    torch.manual_seed(0)
    x = torch.randn(1, 8, 5, 6)
    for r in (1, 2):
        m = create_attention("criss_cross", 8, recurrence=r)
        with torch.no_grad():
            m.gamma.fill_(1.0)
        g = _input_gradient(m, x, 2, 3)
        cross = torch.zeros(5, 6, dtype=torch.bool)
        cross[2, :] = True
        cross[:, 3] = True
        if r == 1:
            assert (g[~cross] == 0).all() and (g[cross] > 0).all()
        else:
            assert (g > 0).all()


def test_gamma_zero_is_identity_and_weights_are_shared_across_steps():
    x = torch.randn(2, 8, 3, 7)
    m = create_attention("criss_cross", 8)
    torch.testing.assert_close(m(x), x)
    assert sum(p.numel() for p in create_attention("criss_cross", 8, recurrence=1).parameters()) == \
        sum(p.numel() for p in m.parameters())
