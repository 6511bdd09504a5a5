import pytest
import torch
import torch.nn.functional as F

from attnzoo import create_conv


def _reference(x, m):
    """The authors' computation one example at a time (float64): reduce -> wn_fc1 -> sigmoid -> wn_fc2 as a
    grouped 1x1 convolution (MegEngine's layer), kernel reshaped to (C_out, C_in / g, k, k), one convolution."""
    groups, opg, ipg = m.wn_fc2.shape
    fc2 = m.wn_fc2.reshape(groups * opg, ipg, 1, 1)
    outs = []
    for n in range(x.shape[0]):
        gap = x[n].mean(dim=(1, 2)) @ m.reduce.weight.T + m.reduce.bias
        a = torch.sigmoid(gap @ m.wn_fc1.weight.T + m.wn_fc1.bias)
        w = F.conv2d(a.view(1, -1, 1, 1), fc2, groups=groups)
        w = w.view(m.out_channels, m.in_channels // m.groups, m.kernel_size, m.kernel_size)
        outs.append(F.conv2d(x[n:n + 1], w, None, m.stride, m.padding, m.dilation, m.groups))
    return torch.cat(outs)


@pytest.mark.parametrize("cin,cout,k,stride,groups", [(16, 24, 3, 1, 1), (16, 24, 3, 2, 4), (32, 32, 3, 2, 32),
                                                      (8, 12, 1, 1, 1)])
def test_grouped_implementation_equals_the_authors_per_example(cin, cout, k, stride, groups):
    torch.manual_seed(0)
    m = create_conv("weightnet", cin, cout, k, stride=stride, groups=groups).double()
    torch.nn.init.normal_(m.wn_fc1.bias)
    x = torch.randn(3, cin, 9, 14, dtype=torch.float64)
    torch.testing.assert_close(m(x), _reference(x, m), rtol=1e-10, atol=1e-10)


def test_constant_gates_give_a_static_convolution():
    """wn_fc1 weight 0, bias 0: every gate is sigmoid(0) = 1/2 for every input, so the kernel is fixed:
    W = 1/2 * (sum over each group's inputs of wn_fc2)."""
    torch.manual_seed(0)
    m = create_conv("weightnet", 8, 6, 3)
    torch.nn.init.zeros_(m.wn_fc1.weight)
    torch.nn.init.zeros_(m.wn_fc1.bias)
    kernel = (0.5 * m.wn_fc2.sum(-1)).reshape(6, 8, 3, 3)
    x = torch.randn(2, 8, 7, 10)
    torch.testing.assert_close(m(x), F.conv2d(x, kernel, padding=1), rtol=1e-5, atol=1e-5)


def test_m_equals_g_equals_one_is_an_se_gate_on_a_static_convolution():
    """M = G = 1: one gate per output channel scales its whole kernel, y_o = a_o(x) (V_o * x): SENet's form."""
    torch.manual_seed(0)
    m = create_conv("weightnet", 8, 6, 3, m=1, g=1).double()
    x = torch.randn(3, 8, 7, 5, dtype=torch.float64)
    a = torch.sigmoid(m.wn_fc1(m.reduce(x.mean(dim=(2, 3)))))                   # (N, C_out)
    static = F.conv2d(x, m.wn_fc2.reshape(6, 8, 3, 3), padding=1)
    torch.testing.assert_close(m(x), a[:, :, None, None] * static)


def test_layout_and_parameter_count_follow_the_authors():
    m = create_conv("weightnet", 64, 128, 3)                                   # WeightNet(inp, oup, k), M = G = 2
    gap = max(16, 64 // 16)
    assert m.wn_fc1.out_features == 2 * 128 and m.wn_fc2.shape == (2 * 128, 64 * 9 // 2, 1)
    assert sum(p.numel() for p in m.parameters()) == (64 * gap + gap) + (gap * 256 + 256) + 128 * 64 * 9
    dw = create_conv("weightnet", 64, 64, 3, groups=64)                         # WeightNet_DW
    assert dw.depthwise and dw.wn_fc1.out_features == 64 and dw.wn_fc2.shape == (64, 9, 1)
    big = create_conv("weightnet", 512, 512, 3)
    assert big.gap_channels == 32
    # the authors' init: std = 1 / (C_in k k / G) for wn_fc2
    assert big.wn_fc2.std().item() == pytest.approx(2 / (512 * 9), rel=0.05)


def test_shared_descriptor_and_batch_one(assert_examples_independent):
    torch.manual_seed(0)
    m = create_conv("weightnet", 16, 16, 3).eval()
    x = torch.randn(3, 16, 7, 5)
    torch.testing.assert_close(assert_examples_independent(m, x), m(x, x_gap=m.descriptor(x)))
    with pytest.raises(ValueError, match="x_gap must have shape"):
        m(x, x_gap=torch.zeros(3, 4))


def test_bad_arguments():
    with pytest.raises(ValueError, match="multiple of G"):
        create_conv("weightnet", 16, 16, 3, m=3, g=2)
    with pytest.raises(ValueError, match="g dividing"):
        create_conv("weightnet", 3, 16, 3, g=2)
    with pytest.raises(ValueError):
        create_conv("weightnet", 16, 16, 3, groups=3)
