import math

import pytest
import torch
import torch.nn.functional as F

from attnzoo import create_conv
from attnzoo.convs.condconv import load_timm_condconv, weight_from_tensorflow


def _reference(x, weight, bias, routing_w, routing_b, stride, groups, dilation=1):
    """Eq. 1-2 of the paper one example at a time, in float64: r = sigmoid(GAP(x) R + b), kernel = sum_i r_i W_i."""
    outs = []
    k = weight.shape[-1]
    for n in range(x.shape[0]):
        r = torch.sigmoid(x[n].mean(dim=(1, 2)) @ routing_w.T + routing_b)
        kernel = sum(r[i] * weight[i] for i in range(weight.shape[0]))
        b = sum(r[i] * bias[i] for i in range(weight.shape[0])) if bias is not None else None
        outs.append(F.conv2d(x[n:n + 1], kernel, b, stride, dilation * (k - 1) // 2, dilation, groups))
    return torch.cat(outs)


@pytest.mark.parametrize("cin,cout,k,stride,groups,bias,dilation", [
    (16, 24, 3, 1, 1, False, 1), (16, 24, 3, 2, 4, True, 1), (12, 12, 5, 2, 12, True, 1), (8, 10, 3, 1, 2, False, 2)])
def test_condconv_is_a_per_example_mixture_of_experts(cin, cout, k, stride, groups, bias, dilation):
    torch.manual_seed(0)
    m = create_conv("condconv", cin, cout, k, stride=stride, groups=groups, bias=bias, dilation=dilation,
                    num_experts=5).double()
    if bias:
        torch.nn.init.normal_(m.bias)
    torch.nn.init.normal_(m.routing.bias)
    x = torch.randn(3, cin, 9, 14, dtype=torch.float64)
    expected = _reference(x, m.weight, m.bias, m.routing.weight, m.routing.bias, stride, groups, dilation)
    torch.testing.assert_close(m(x), expected, rtol=1e-10, atol=1e-10)


def test_examples_do_not_mix(assert_examples_independent):
    """The batch is folded into the channels of one grouped convolution: each example must only see its kernel."""
    torch.manual_seed(0)
    m = create_conv("condconv", 8, 8, 3).eval()
    x = torch.randn(4, 8, 7, 5)
    assert_examples_independent(m, x)
    # and the kernels do differ between examples (routing depends on the input)
    r = m.routing_weights(x)
    assert r.shape == (4, 8) and (r > 0).all() and (r < 1).all()
    assert not torch.allclose(m.kernels(r)[0], m.kernels(r)[1])


@pytest.mark.parametrize("cin,cout,k,stride,groups,bias", [(16, 24, 3, 1, 1, False), (16, 24, 3, 2, 4, True),
                                                           (16, 16, 5, 2, 16, True)])
def test_parity_with_timm_condconv(cin, cout, k, stride, groups, bias):
    """timm keeps expert i as a flat row (E, C_out * C_in/g * k * k); load_timm_condconv reshapes it into ours."""
    timm_layers = pytest.importorskip("timm.layers")
    torch.manual_seed(0)
    theirs = timm_layers.CondConv2d(cin, cout, k, stride, groups=groups, bias=bias, num_experts=8)
    if bias:
        torch.nn.init.normal_(theirs.bias)
    routing = torch.nn.Linear(cin, 8)
    ours = load_timm_condconv(create_conv("condconv", cin, cout, k, stride=stride, groups=groups, bias=bias),
                              theirs, routing)
    x = torch.randn(3, cin, 9, 14)
    r = torch.sigmoid(routing(x.mean(dim=(2, 3))))           # timm's CondConvResidual routing
    assert torch.equal(ours(x), theirs(x, r))
    assert torch.equal(ours(x, routing_weights=r), theirs(x, r))
    with pytest.raises(ValueError, match="does not fit"):
        load_timm_condconv(create_conv("condconv", cin, cout, k, groups=groups, bias=bias, num_experts=4), theirs)


def test_tensorflow_kernel_layout():
    """The authors' condconv_kernel is (E, kh kw C_in C_out) in HWIO order; check against an explicit HWIO sum."""
    torch.manual_seed(0)
    e, cin, cout, k = 3, 4, 5, 3
    tf_kernel = torch.randn(e, k * k * cin * cout, dtype=torch.float64)
    m = create_conv("condconv", cin, cout, k, num_experts=e).double()
    with torch.no_grad():
        m.weight.copy_(weight_from_tensorflow(tf_kernel, cout, cin, k))
    r = torch.rand(2, e, dtype=torch.float64)
    x = torch.randn(2, cin, 6, 5, dtype=torch.float64)
    hwio = (r @ tf_kernel).view(2, k, k, cin, cout)               # the authors' per-example kernel
    xp = F.pad(x, (1, 1, 1, 1))
    expected = torch.zeros(2, cout, 6, 5, dtype=torch.float64)
    for dy in range(k):
        for dx in range(k):
            expected += torch.einsum("nchw,nco->nohw", xp[:, :, dy:dy + 6, dx:dx + 5], hwio[:, dy, dx])
    torch.testing.assert_close(m(x, routing_weights=r), expected)
    # depthwise: (E, kh kw C_in m), output channel c m + j
    dw = torch.randn(e, k * k * cin * 2, dtype=torch.float64)
    ours = weight_from_tensorflow(dw, 2 * cin, cin, k, depthwise=True)
    tf = dw.view(e, k, k, cin, 2)
    assert torch.equal(ours[1, 2 * 3 + 1, 0], tf[1, :, :, 3, 1])


def test_initialisation_follows_the_authors():
    torch.manual_seed(0)
    m = create_conv("condconv", 64, 128, 3, num_experts=8)
    std = math.sqrt(2.0 / (3 * 3 * 128))                             # conv_kernel_initializer: fan_out = k k C_out
    assert m.weight.std().item() == pytest.approx(std, rel=0.02)
    for e in range(8):                                               # each expert on its own
        assert m.weight[e].std().item() == pytest.approx(std, rel=0.05)
    assert torch.equal(m.routing.bias, torch.zeros(8))
    bound = math.sqrt(6 / (64 + 8))                                  # Glorot-uniform (Keras Dense default)
    assert m.routing.weight.abs().max().item() <= bound
    dw = create_conv("condconv", 64, 64, 3, groups=64)               # depthwise: fan_out = k k (multiplier 1)
    assert dw.weight.std().item() == pytest.approx(math.sqrt(2.0 / 9), rel=0.05)


def test_parameter_count():
    m = create_conv("condconv", 16, 24, 3, groups=2, num_experts=8, bias=True)
    assert sum(p.numel() for p in m.parameters()) == 8 * 24 * 8 * 9 + 8 * 24 + 16 * 8 + 8


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_experts"):
        create_conv("condconv", 16, 24, 3, num_experts=0)
    with pytest.raises(ValueError, match="groups"):
        create_conv("condconv", 16, 24, 3, groups=5)
    m = create_conv("condconv", 16, 24, 3)
    with pytest.raises(ValueError, match="routing_weights must have shape"):
        m(torch.randn(2, 16, 5, 5), routing_weights=torch.rand(2, 4))


def test_no_graph_breaks():
    m = create_conv("condconv", 16, 16, 3, stride=2)
    assert torch._dynamo.explain(m)(torch.randn(2, 16, 9, 7)).graph_break_count == 0
