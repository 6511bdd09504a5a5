"""Outlook attention (VOLO): the unfold/fold implementation against an explicit per-window computation."""
import pytest
import torch
import torch.nn.functional as F

from attnzoo import create_attention


def _reference(m, x, hw):
    """Loop over windows: softmax(A) V on each K x K window (zero padded), summed back into the pixels."""
    n, _, c = x.shape
    h, w = hw
    k, p, s, heads = m.kernel_size, m.padding, m.stride, m.num_heads
    d = c // heads
    grid = x.reshape(n, h, w, c)
    v = m.v(grid)  # (N, H, W, C)
    pooled = F.avg_pool2d(grid.permute(0, 3, 1, 2), s, s, ceil_mode=True).permute(0, 2, 3, 1) if s > 1 else grid
    out = torch.zeros(n, h, w, c)
    for i in range(pooled.shape[1]):
        for j in range(pooled.shape[2]):
            a = (m.attn(pooled[:, i, j]).reshape(n, heads, k * k, k * k) * d ** -0.5).softmax(-1)
            rows = [i * s - p + di for di in range(k)]
            cols = [j * s - p + dj for dj in range(k)]
            win = torch.zeros(n, k * k, c)
            for a_i, r in enumerate(rows):
                for b_i, q in enumerate(cols):
                    if 0 <= r < h and 0 <= q < w:
                        win[:, a_i * k + b_i] = v[:, r, q]
            y = (a @ win.reshape(n, k * k, heads, d).transpose(1, 2)).transpose(1, 2).reshape(n, k * k, c)
            for a_i, r in enumerate(rows):
                for b_i, q in enumerate(cols):
                    if 0 <= r < h and 0 <= q < w:
                        out[:, r, q] += y[:, a_i * k + b_i]
    return m.proj(out).reshape(n, h * w, c)


@pytest.mark.parametrize("stride,kernel,padding", [(1, 3, 1), (2, 3, 1), (2, 5, 2), (3, 3, 1)])
def test_matches_explicit_windows(stride, kernel, padding):
    torch.manual_seed(0)
    m = create_attention("outlook", 16, stride=stride, kernel_size=kernel, padding=padding).eval()
    hw = (5, 7)
    x = torch.randn(2, 35, 16)
    with torch.no_grad():
        torch.testing.assert_close(m(x, hw=hw), _reference(m, x, hw), rtol=1e-4, atol=1e-5)


def test_stride1_output_is_local():
    """With stride 1 and K = 3 a pixel only sees inputs at most 2 rows/columns away (two window hops)."""
    torch.manual_seed(0)
    m = create_attention("outlook", 16, stride=1).eval()
    x = torch.randn(1, 9 * 9, 16)
    x2 = x.clone().reshape(1, 9, 9, 16)
    x2[:, 0, 0] += 5.0
    with torch.no_grad():
        y, y2 = m(x, hw=(9, 9)).reshape(9, 9, 16), m(x2.reshape(1, 81, 16), hw=(9, 9)).reshape(9, 9, 16)
    changed = (y - y2).abs().amax(-1) > 1e-6
    assert changed[:3, :3].any() and not changed[3:, :].any() and not changed[:, 3:].any()


def test_weights_are_distributions_and_bad_args():
    m = create_attention("outlook", 32)
    a = m.attention_weights(torch.randn(2, 7 * 9, 32), hw=(7, 9))
    assert a.shape == (2, 2, 4 * 5, 9, 9)
    torch.testing.assert_close(a.sum(-1), torch.ones_like(a.sum(-1)))
    with pytest.raises(ValueError):
        create_attention("outlook", 32, padding=3)
    with pytest.raises(ValueError):
        m(torch.randn(1, 10, 32))  # hw missing
