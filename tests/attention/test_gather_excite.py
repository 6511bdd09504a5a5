import pytest
import torch

from attnzoo import create_attention


def test_parameter_free_global_is_sigmoid_of_the_mean():
    x = torch.randn(2, 8, 5, 7)
    ge = create_attention("ge_theta_minus", 8)
    torch.testing.assert_close(ge(x), x * torch.sigmoid(x.mean(dim=(2, 3), keepdim=True)))


def test_parameter_free_extent_two():
    x = torch.randn(2, 8, 6, 4)
    ge = create_attention("ge_theta_minus", 8, extent=2)
    pooled = x.view(2, 8, 3, 2, 2, 2).mean(dim=(3, 5))
    gate = torch.sigmoid(pooled.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3))
    torch.testing.assert_close(ge(x), x * gate)


@pytest.mark.parametrize("size", [(7, 7), (14, 10), (3, 5)])
def test_uniform_global_kernel_is_an_average_at_any_size(size):
    ge = create_attention("ge_theta", 4, feat_size=7).eval()
    with torch.no_grad():
        ge.gather[0].weight.fill_(1 / 49)
    x = torch.randn(2, 4, *size)
    torch.testing.assert_close(ge.gathered(x).flatten(1), x.mean(dim=(2, 3)) / (1 + 1e-5) ** 0.5,
                               atol=1e-5, rtol=1e-4)


def test_bad_arguments():
    with pytest.raises(ValueError):
        create_attention("ge_theta_minus", 8, extent=3)
    with pytest.raises(ValueError):
        create_attention("ge_theta_minus", 8, param_excite=True)
