"""Global filter (GFNet): a circular convolution at any size, identity filter, float32 FFT under autocast."""
import torch

from attnzoo import create_attention


def test_circular_shift_equivariance_at_odd_size():
    torch.manual_seed(0)
    m = create_attention("global_filter", 8)
    x = torch.randn(1, 7, 9, 8)
    with torch.no_grad():
        y = m(x.reshape(1, 63, 8), hw=(7, 9)).reshape(1, 7, 9, 8)
        ys = m(x.roll((2, 3), dims=(1, 2)).reshape(1, 63, 8), hw=(7, 9)).reshape(1, 7, 9, 8)
    torch.testing.assert_close(ys, y.roll((2, 3), dims=(1, 2)), rtol=1e-4, atol=1e-5)


def test_all_pass_filter_is_identity_at_every_size():
    m = create_attention("global_filter", 4)
    with torch.no_grad():
        m.complex_weight[..., 0] = 1.0
        m.complex_weight[..., 1] = 0.0
    for h, w in [(14, 14), (5, 11), (1, 1), (20, 3)]:
        x = torch.randn(2, h * w, 4)
        torch.testing.assert_close(m(x, hw=(h, w)), x, rtol=1e-4, atol=1e-5)


def test_filter_resizing_and_autocast():
    m = create_attention("global_filter", 4)
    stored = torch.view_as_complex(m.complex_weight.detach())
    torch.testing.assert_close(m.filter(14, 14).detach(), stored)  # native grid: untouched
    assert m.filter(7, 9).shape == (7, 5, 4)
    x = torch.randn(2, 35, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = m(x, hw=(5, 7))
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, m(x, hw=(5, 7)))  # the FFT path runs in float32 either way
