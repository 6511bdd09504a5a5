import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from attnzoo import create_conv, create_model
from attnzoo.convs.do_conv import DOConv2d


def _randomise(m):
    """Trained-looking D (the layer starts with D = 0) and a bias, so the tests see the whole composition."""
    with torch.no_grad():
        if m.D is not None:
            m.D.normal_(0, 0.5)
        if m.bias is not None:
            m.bias.normal_()
    return m


def _feature_composition(x, m):
    """Paper's feature composition O = W * (D^T o P), float64, written from the definition: unfold the k x k
    patches P (N, C_in, k k, L), let every input channel c transform its patch with (D_c + I) into D_mul values,
    then apply W (C_out, C_in / g, D_mul) to the channels each output channel reads (group of o)."""
    k, s, g = m.kernel_size, m.stride, m.groups
    n, cin, h, w = x.shape
    patches = F.unfold(x, k, m.dilation, m.padding, s).view(n, cin, k * k, -1)          # (N, C_in, k k, L)
    d = m.D + m.d_diag                                                                      # (C_in, k k, D_mul)
    transformed = torch.einsum("ncml,cms->ncsl", patches, d)                               # (N, C_in, D_mul, L)
    cout, per_group = m.out_channels, cin // g
    out = torch.zeros(n, cout, transformed.shape[-1], dtype=x.dtype)
    for o in range(cout):
        grp = o // (cout // g)
        out[:, o] = torch.einsum("ncsl,cs->nl", transformed[:, grp * per_group:(grp + 1) * per_group], m.W[o])
    if m.bias is not None:
        out = out + m.bias[:, None]
    ho, wo = (h + 2 * m.padding - m.dilation * (k - 1) - 1) // s + 1, (w + 2 * m.padding - m.dilation * (k - 1) - 1) // s + 1
    return out.view(n, cout, ho, wo)


@pytest.mark.parametrize("cin,cout,k,stride,groups,d_mul,dilation", [
    (6, 8, 3, 1, 1, None, 1), (6, 8, 3, 2, 1, 12, 1), (6, 6, 3, 2, 6, None, 1), (6, 9, 3, 1, 3, 9, 1),
    (4, 6, 5, 2, 2, 30, 1), (4, 6, 3, 1, 1, None, 2)])
def test_do_conv_is_the_depthwise_then_conv_composition(cin, cout, k, stride, groups, d_mul, dilation):
    torch.manual_seed(0)
    m = _randomise(create_conv("do_conv", cin, cout, k, stride=stride, groups=groups, d_mul=d_mul, bias=True,
                               dilation=dilation).double())
    x = torch.randn(2, cin, 9, 8, dtype=torch.float64)
    torch.testing.assert_close(m(x), _feature_composition(x, m))


def test_starts_as_a_plain_convolution():
    """D = 0 and the fixed identity: the kernel is W itself (D_mul = k k) or, for D_mul = 2 k k + 2, the sum of
    W's two tiled k k blocks (the authors' d_diag repeats I and pads zero columns)."""
    torch.manual_seed(0)
    m = create_conv("do_conv", 8, 12, 3).double()
    assert torch.equal(m.D, torch.zeros(8, 9, 9))
    x = torch.randn(2, 8, 7, 9, dtype=torch.float64)
    torch.testing.assert_close(m(x), F.conv2d(x, m.W.view(12, 8, 3, 3), None, 1, 1))
    m = create_conv("do_conv", 8, 12, 3, d_mul=20).double()
    torch.testing.assert_close(m(x), F.conv2d(x, (m.W[..., :9] + m.W[..., 9:18]).reshape(12, 8, 3, 3), None, 1, 1))
    assert torch.equal(m.d_diag[3, :, 18:], torch.zeros(9, 2))


def test_pytorch_group_layout_uses_the_d_of_channel_o_mod_g():
    """group_d="pytorch" (the authors' PyTorch reshape): weight (o, j) composes with D[(o mod g) C_in/g + j];
    the default composes with the D of the channel it reads, D[(o // (C_out/g)) C_in/g + j]."""
    torch.manual_seed(0)
    cin, cout, g = 6, 9, 3
    for mode, index in (("pytorch", lambda o, j: (o % g) * (cin // g) + j),
                        ("input_channel", lambda o, j: (o // (cout // g)) * (cin // g) + j)):
        m = _randomise(create_conv("do_conv", cin, cout, 3, groups=g, group_d=mode).double())
        d = m.D + m.d_diag
        expected = torch.stack([torch.stack([d[index(o, j)] @ m.W[o, j] for j in range(cin // g)])
                                for o in range(cout)]).view(cout, cin // g, 3, 3)
        torch.testing.assert_close(m.kernel(), expected)


def test_group_layouts_agree_only_for_dense_and_plain_depthwise():
    """The two layouts pair every weight with the same D for groups = 1 and for depthwise with C_out = C_in; with
    a channel multiplier or 1 < groups < C_in the authors' PyTorch reshape uses other channels' D."""
    torch.manual_seed(0)
    for cin, cout, g, same in ((6, 8, 1, True), (6, 6, 6, True), (6, 12, 6, False), (6, 9, 3, False)):
        a = _randomise(create_conv("do_conv", cin, cout, 3, groups=g))
        b = create_conv("do_conv", cin, cout, 3, groups=g, group_d="pytorch")
        b.load_state_dict(a.state_dict())
        assert torch.allclose(a.kernel(), b.kernel()) == same


@pytest.mark.parametrize("cin,cout,k,stride,groups,bias", [(8, 12, 3, 1, 1, False), (8, 12, 3, 2, 4, True),
                                                           (8, 8, 5, 2, 8, True), (8, 12, 1, 2, 2, True)])
def test_fuse_folds_into_one_conv_with_the_same_outputs(cin, cout, k, stride, groups, bias):
    torch.manual_seed(0)
    m = _randomise(create_conv("do_conv", cin, cout, k, stride=stride, groups=groups, bias=bias)).eval()
    x = torch.randn(2, cin, 13, 9)
    before = m(x)
    m.fuse()
    assert isinstance(m.fused, nn.Conv2d) and not hasattr(m, "D")
    assert sum(p.numel() for p in m.parameters()) == cout * cin // groups * k * k + (cout if bias else 0)
    assert (m(x) - before).abs().max().item() < 1e-5
    m.fuse()                                                          # idempotent
    deployed = create_conv("do_conv", cin, cout, k, stride=stride, groups=groups, bias=bias, deploy=True)
    deployed.load_state_dict(m.state_dict())                        # strict: the same keys and shapes
    torch.testing.assert_close(deployed(x), m(x))


def test_state_dict_has_the_authors_names_and_shapes():
    m = create_conv("do_conv", 8, 12, 3, groups=2, d_mul=12, bias=True)
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert shapes == {"W": (12, 4, 12), "D": (8, 9, 12), "d_diag": (8, 9, 12), "bias": (12,)}
    assert sum(p.numel() for p in m.parameters()) == 12 * 4 * 12 + 8 * 9 * 12 + 12  # d_diag is not trained


def test_in_a_resnet_it_trains_and_fuses():
    torch.manual_seed(0)
    model = create_model("resnet18", conv_layer="do_conv", num_classes=10)
    model(torch.randn(2, 3, 45, 37)).sum().backward()
    assert model.stages[0][0].conv1[0].D.grad is not None
    model.eval()
    x = torch.randn(1, 3, 45, 37)
    before = model(x)
    convs = [m for m in model.modules() if isinstance(m, DOConv2d)]
    assert len(convs) == 16
    for m in convs:
        m.fuse()
    torch.testing.assert_close(model(x), before, rtol=1e-4, atol=1e-4)


def test_bad_arguments():
    with pytest.raises(ValueError, match="d_mul must be at least"):
        create_conv("do_conv", 8, 8, 3, d_mul=8)
    with pytest.raises(ValueError, match="no depthwise part"):
        create_conv("do_conv", 8, 8, 1, d_mul=4)
    with pytest.raises(ValueError, match="group_d"):
        create_conv("do_conv", 8, 8, 3, group_d="tf")
    with pytest.raises(ValueError, match="groups"):
        create_conv("do_conv", 8, 12, 3, groups=5)


def test_no_graph_breaks():
    m = create_conv("do_conv", 16, 16, 3, groups=4, stride=2)
    assert torch._dynamo.explain(m)(torch.randn(2, 16, 9, 7)).graph_break_count == 0
