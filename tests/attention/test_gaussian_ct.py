import pytest
import torch

from attnzoo import create_attention
from attnzoo.nbtools import count_params


def test_gate_is_a_gaussian_of_the_standardized_context():
    x = torch.randn(2, 10, 5, 7)
    for c in (0.5, 2.0):
        m = create_attention("gaussian_ct", 10, c=c)
        z = x.mean(dim=(2, 3))
        z_hat = (z - z.mean(1, keepdim=True)) / (z.var(1, correction=0, keepdim=True) + 1e-5).sqrt()
        torch.testing.assert_close(m(x), x * torch.exp(-z_hat**2 / (2 * c * c))[:, :, None, None])


def test_one_standard_deviation_gives_exp_minus_half_over_c_squared():
    x = torch.zeros(1, 2, 3, 3)
    x[0, 0] = 1.0
    x[0, 1] = -1.0  # standardized contexts are exactly +1 and -1
    g = create_attention("gaussian_ct", 2, c=2.0, eps=0.0).weights(x).flatten()
    torch.testing.assert_close(g, torch.full((2,), torch.exp(torch.tensor(-1 / 8)).item()))


def test_invariant_to_positive_affine_maps_of_the_input():
    torch.manual_seed(0)
    m = create_attention("gaussian_ct", 16, eps=0.0)  # eps would break the invariance very slightly
    x = torch.randn(2, 16, 6, 6)
    torch.testing.assert_close(m.weights(x), m.weights(4 * x - 3), atol=1e-5, rtol=1e-4)


def test_b0_is_parameter_free_and_b1_learns_its_width():
    assert count_params(create_attention("gaussian_ct", 64)) == 0
    b1 = create_attention("gaussian_ct_b1", 64)
    assert count_params(b1) == 1
    b1(torch.randn(2, 64, 4, 4)).square().sum().backward()
    assert b1.c.grad is not None and b1.c.grad != 0
    with pytest.raises(ValueError):
        create_attention("gaussian_ct", 64, c=0)
