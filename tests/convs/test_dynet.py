"""Checks specific to DyNet's dynamic convolution (zhang2020dynet), registered as "dynet". The registry-wide tests
(tests/test_registry_modules.py) already cover what every registered name must do."""
import pytest
import torch
import torch.nn.functional as F

from attnzoo import create_conv


def _reference(m, x):
    """Eq. 1 one example and one output kernel at a time, in float64: eta = sigmoid(FC(GAP x)),
    w~_t = sum_i eta_t^i w_t^i, then a plain convolution of the example with its own C_out kernels."""
    outs = []
    for n in range(x.shape[0]):
        eta = torch.sigmoid(m.coefficients_fc(x[n].mean(dim=(1, 2))[None]))[0].view(m.out_channels, m.group_size)
        kernel = torch.stack([sum(eta[t, i] * m.weight[t, i] for i in range(m.group_size))
                              for t in range(m.out_channels)])
        outs.append(F.conv2d(x[n:n + 1], kernel, m.bias, m.stride, m.padding, m.dilation, m.groups))
    return torch.cat(outs)


@pytest.mark.parametrize("cin,cout,k,stride,groups,dilation,g_t,hidden,bias", [
    (6, 12, 3, 1, 1, 1, 6, None, False), (8, 6, 3, 2, 2, 1, 3, 0.25, True), (12, 12, 3, 2, 2, 2, 6, None, False),
    (6, 6, 5, 1, 6, 1, 2, None, True)])
def test_kernel_fusion_matches_eq1_and_the_feature_fusion_of_eq2(cin, cout, k, stride, groups, dilation, g_t, hidden,
                                                                  bias):
    torch.manual_seed(0)
    m = create_conv("dynet", cin, cout, k, stride=stride, groups=groups, dilation=dilation, group_size=g_t,
                    hidden_ratio=hidden, bias=bias).double()
    if bias:
        torch.nn.init.normal_(m.bias)
    x = torch.randn(3, cin, 9, 14, dtype=torch.float64)
    y = m(x)
    torch.testing.assert_close(y, _reference(m, x), rtol=1e-10, atol=1e-10)
    # Eq. 2: mixing the C_out g_t feature maps of the fixed kernels gives the same output
    torch.testing.assert_close(m.feature_fusion(x), y, rtol=1e-10, atol=1e-10)


def test_one_hot_coefficients_pick_one_fixed_kernel():
    """With eta_t^i = [i == j] the dynamic layer is the plain convolution with the j-th fixed kernels."""
    torch.manual_seed(0)
    m = create_conv("dynet", 8, 10, 3, stride=2, group_size=4).double()
    x = torch.randn(2, 8, 11, 7, dtype=torch.float64)
    for j in range(4):
        eta = F.one_hot(torch.full((2, 10), j), 4).double()
        torch.testing.assert_close(m(x, coefficients=eta), F.conv2d(x, m.weight[:, j], None, 2, 1))
    # uniform coefficients: the convolution with the sum of the fixed kernels, scaled (linearity of Eq. 1)
    eta = torch.full((2, 10, 4), 0.5, dtype=torch.float64)
    torch.testing.assert_close(m(x, coefficients=eta), 0.5 * F.conv2d(x, m.weight.sum(1), None, 2, 1))


def test_examples_get_their_own_kernels(assert_examples_independent):
    torch.manual_seed(0)
    m = create_conv("dynet", 8, 8, 3).eval()
    x = torch.randn(4, 8, 7, 5)
    assert_examples_independent(m, x)
    eta = m.coefficients(x)
    assert eta.shape == (4, 8, 6) and (eta > 0).all() and (eta < 1).all()
    assert not torch.allclose(m.kernels(eta)[0], m.kernels(eta)[1])


def test_parameter_count():
    """C_out g_t fixed kernels plus the coefficient layer(s) C_in -> C_out g_t (Section 3.2, 3.3)."""
    m = create_conv("dynet", 16, 24, 3, groups=2, group_size=6)
    assert sum(p.numel() for p in m.parameters()) == 24 * 6 * 8 * 9 + (16 + 1) * 24 * 6
    two = create_conv("dynet", 64, 32, 3, hidden_ratio=0.25, group_size=6, bias=True)   # Dy-ResNet form, C_in / 4
    assert sum(p.numel() for p in two.parameters()) == 32 * 6 * 64 * 9 + 32 + (64 + 1) * 16 + (16 + 1) * 32 * 6


def test_macs_are_those_of_the_thin_convolution():
    """The dynamic layer convolves once with C_out kernels: its MACs are a plain C_in -> C_out convolution's plus
    the kernel mix and the coefficient layer, independent of g_t for the convolution itself."""
    from attnzoo.nbtools import count_macs
    x = torch.randn(1, 16, 16, 16)
    plain = count_macs(torch.nn.Conv2d(16, 32, 3, padding=1, bias=False), x)
    for g_t in (2, 6):
        m = create_conv("dynet", 16, 32, 3, group_size=g_t)
        assert count_macs(m, x) == plain + 32 * g_t * 16 * 9 + 16 * 32 * g_t


def test_bad_arguments():
    with pytest.raises(ValueError, match="group_size"):
        create_conv("dynet", 16, 24, 3, group_size=0)
    with pytest.raises(ValueError, match="hidden_ratio"):
        create_conv("dynet", 16, 24, 3, hidden_ratio=0)
    with pytest.raises(ValueError, match="groups"):
        create_conv("dynet", 16, 24, 3, groups=5)
    m = create_conv("dynet", 16, 24, 3)
    with pytest.raises(ValueError, match="C=16"):
        m(torch.randn(2, 8, 5, 5))
    with pytest.raises(ValueError, match="coefficients must have shape"):
        m(torch.randn(2, 16, 5, 5), coefficients=torch.rand(2, 24, 3))
