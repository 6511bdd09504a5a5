import math

import pytest
import torch
import torch.nn.functional as F

from attnzoo import create_conv, create_model
from attnzoo.convs.dynamic_conv import DynamicConv2d, set_temperature, temperature_schedule


def _reference(x, m, stride, groups, dilation=1):
    """The paper's equations one example at a time, in float64: pi = softmax(FC2(ReLU(FC1(GAP x))) / tau)."""
    fc1, fc2 = m.attention[0], m.attention[2]
    k = m.weight.shape[-1]
    outs = []
    for n in range(x.shape[0]):
        z = fc2(torch.relu(fc1(x[n].mean(dim=(1, 2)))))
        e = torch.exp((z - z.max()) / m.temperature)
        pi = e / e.sum()
        kernel = sum(pi[i] * m.weight[i] for i in range(m.num_kernels))
        b = sum(pi[i] * m.bias[i] for i in range(m.num_kernels)) if m.bias is not None else None
        outs.append(F.conv2d(x[n:n + 1], kernel, b, stride, dilation * (k - 1) // 2, dilation, groups))
    return torch.cat(outs)


@pytest.mark.parametrize("cin,cout,k,stride,groups,bias,dilation,tau", [
    (16, 24, 3, 1, 1, False, 1, 30.0), (16, 24, 3, 2, 4, True, 1, 1.0), (12, 12, 5, 2, 12, True, 1, 0.5),
    (8, 10, 1, 1, 2, False, 2, 3.0)])
def test_grouped_implementation_equals_per_example_loop(cin, cout, k, stride, groups, bias, dilation, tau):
    torch.manual_seed(0)
    m = create_conv("dynamic_conv", cin, cout, k, stride=stride, groups=groups, bias=bias, dilation=dilation,
                    temperature=tau).double()
    if bias:
        torch.nn.init.normal_(m.bias)
    x = torch.randn(3, cin, 9, 14, dtype=torch.float64)
    torch.testing.assert_close(m(x), _reference(x, m, stride, groups, dilation), rtol=1e-10, atol=1e-10)


def test_one_kernel_is_a_static_convolution():
    """K = 1: the softmax is 1 whatever the input, so the layer is nn.Conv2d with that kernel and bias."""
    torch.manual_seed(0)
    m = create_conv("dynamic_conv", 6, 8, 3, stride=2, bias=True, num_kernels=1)
    torch.nn.init.normal_(m.bias)
    x = torch.randn(2, 6, 11, 7)
    torch.testing.assert_close(m(x), F.conv2d(x, m.weight[0], m.bias[0], 2, 1), rtol=1e-5, atol=1e-5)


def test_uniform_attention_is_the_mean_kernel_and_mixture_of_convolutions():
    """pi = 1/K: the aggregated kernel is the mean kernel, and by linearity the mean of the K convolutions."""
    torch.manual_seed(0)
    m = create_conv("dynamic_conv", 8, 8, 3, num_kernels=4).double()
    x = torch.randn(2, 8, 7, 10, dtype=torch.float64)
    uniform = torch.full((2, 4), 0.25, dtype=torch.float64)
    mean_kernel = F.conv2d(x, m.weight.mean(0), padding=1)
    mixture = sum(F.conv2d(x, m.weight[i], padding=1) for i in range(4)) / 4
    torch.testing.assert_close(m(x, attention=uniform), mean_kernel)
    torch.testing.assert_close(m(x, attention=uniform), mixture)
    # a huge temperature flattens the softmax towards uniform (why the paper starts training at tau = 30)
    m.temperature = 1e6
    torch.testing.assert_close(m.kernel_attention(x), uniform, rtol=0, atol=1e-5)


def test_attention_is_a_tempered_softmax():
    torch.manual_seed(0)
    m = create_conv("dynamic_conv", 16, 16, 3)
    torch.nn.init.normal_(m.attention[2].weight, std=3.0)
    x = torch.randn(4, 16, 5, 5)
    z = m.logits(x)
    for tau in (0.5, 1.0, 30.0):
        m.temperature = tau
        pi = m.kernel_attention(x)
        assert pi.shape == (4, 4)
        torch.testing.assert_close(pi.sum(1), torch.ones(4))
        torch.testing.assert_close(pi.log() - pi.log()[:, :1], (z - z[:, :1]) / tau, rtol=1e-4, atol=1e-4)
    m.temperature = 1.0
    sharp = m.kernel_attention(x).max(1).values
    m.temperature = 30.0
    assert (m.kernel_attention(x).max(1).values < sharp).all()


def test_examples_do_not_mix_and_batch_one(assert_examples_independent):
    torch.manual_seed(0)
    m = create_conv("dynamic_conv", 8, 8, 3, temperature=1.0).eval()
    torch.nn.init.normal_(m.attention[2].weight, std=2.0)
    x = torch.randn(3, 8, 7, 5)
    assert_examples_independent(m, x)
    pi = m.kernel_attention(x)
    assert not torch.allclose(pi[0], pi[1])


def test_temperature_annealing():
    """tau: 30 -> 1 linearly over the first 10 epochs, then 1 (paper)."""
    assert temperature_schedule(0) == 30.0
    assert temperature_schedule(5) == pytest.approx(15.5)
    assert temperature_schedule(10) == temperature_schedule(50) == 1.0
    with torch.device("meta"):
        model = create_model("dy_resnet18", num_classes=10)
    assert set_temperature(model, 2.5) == 16                      # the 16 3x3 convolutions of ResNet-18
    assert {m.temperature for m in model.modules() if isinstance(m, DynamicConv2d)} == {2.5}
    with pytest.raises(ValueError, match="temperature"):
        set_temperature(model, 0.0)


def test_parameter_count():
    m = create_conv("dynamic_conv", 16, 24, 3, groups=2, bias=True, num_kernels=4)
    hidden = 16 // 4
    assert sum(p.numel() for p in m.parameters()) == 4 * (24 * 8 * 9 + 24) + 16 * hidden + hidden + hidden * 4 + 4


def test_kernels_initialised_on_their_own():
    torch.manual_seed(0)
    m = create_conv("dynamic_conv", 64, 128, 3)
    std = math.sqrt(2.0 / (9 * 128))
    for k in range(4):
        assert m.weight[k].std().item() == pytest.approx(std, rel=0.05)
    assert not torch.allclose(m.weight[0], m.weight[1])


def test_backbones_place_the_dynamic_convolutions():
    with torch.device("meta"):
        mb = create_model("dy_mobilenetv2_100")
        rn = create_model("dy_resnet18")
    dy = [m for m in mb.modules() if isinstance(m, DynamicConv2d)]
    assert len(dy) == 50                                          # 17 blocks: 1 x (dw, pw) + 16 x (pw, dw, pw)
    assert type(mb.conv_stem) is torch.nn.Conv2d and type(mb.conv_head) is torch.nn.Conv2d   # stem, head plain
    assert all(m.num_kernels == 4 for m in dy)
    assert isinstance(rn.stem[0][0], torch.nn.Conv2d) and isinstance(rn.stages[1][0].shortcut[0], torch.nn.Conv2d)


def test_bad_arguments():
    for kw in ({"num_kernels": 0}, {"reduction": 0}, {"temperature": -1.0}, {"temperature": float("inf")},
               {"groups": 5}):
        with pytest.raises(ValueError):
            create_conv("dynamic_conv", 16, 24, 3, **kw)
    m = create_conv("dynamic_conv", 16, 24, 3)
    with pytest.raises(ValueError, match="attention must have shape"):
        m(torch.randn(2, 16, 5, 5), attention=torch.rand(2, 3))
    with pytest.raises(ValueError, match="epochs"):
        temperature_schedule(1, epochs=0)
