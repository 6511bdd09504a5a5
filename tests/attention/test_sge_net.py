import pytest
import torch

from attnzoo import create_attention


def test_matches_explicit_group_computation():
    torch.manual_seed(0)
    g = 4
    m = create_attention("sge", 16, groups=g)
    with torch.no_grad():
        m.weight.normal_()
        m.bias.normal_()
    x = torch.randn(2, 16, 5, 6)
    xg = x.view(2 * g, 4, 5, 6)
    sim = (xg * xg.mean(dim=(2, 3), keepdim=True)).sum(1).view(2 * g, -1)
    n = (sim - sim.mean(1, keepdim=True)) / (sim.std(1, keepdim=True) + 1e-5)
    a = n.view(2, g, 5, 6) * m.weight + m.bias
    expected = (xg * torch.sigmoid(a).view(2 * g, 1, 5, 6)).view_as(x)
    torch.testing.assert_close(m(x), expected, rtol=1e-4, atol=1e-5)


def test_initial_gate_is_constant_and_scale_equivariance():
    torch.manual_seed(0)
    x = torch.randn(2, 64, 7, 9)
    m = create_attention("sge", 64)
    torch.testing.assert_close(m(x), x * torch.sigmoid(torch.tensor(1.0)))
    m = create_attention("sge", 64, groups=8, eps=0.0)  # without eps the normalized similarity is scale-free
    with torch.no_grad():
        m.weight.normal_()
    torch.testing.assert_close(m(3.0 * x), 3.0 * m(x), rtol=1e-4, atol=1e-4)


def test_parameters_and_errors():
    assert sum(p.numel() for p in create_attention("sge", 128, groups=32).parameters()) == 64
    assert torch.isfinite(create_attention("sge", 64)(torch.randn(1, 64, 1, 1))).all()
    with pytest.raises(ValueError):
        create_attention("sge", 48, groups=64)
