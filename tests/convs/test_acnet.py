import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from attnzoo import create_conv, create_model
from attnzoo.convs.acnet import ACBlock


def _randomise_bns(m):
    """Trained-looking BN statistics and affine parameters (fresh ones would make the branches too alike)."""
    with torch.no_grad():
        for bn in m.modules():
            if isinstance(bn, nn.BatchNorm2d):
                bn.running_mean.uniform_(-1, 1)
                bn.running_var.uniform_(0.5, 2)
                bn.weight.uniform_(0.5, 1.5)
                bn.bias.uniform_(-1, 1)
    return m


def _reference(x, m):
    """Eval-mode ACB in float64, written independently of the module's padding: each asymmetric kernel is placed
    in a zero k x k kernel on the central column (k x 1) or row (1 x k), and each branch is a plain "same" conv
    followed by its BN's affine map; the three are summed."""
    c = m.kernel_size // 2
    out = 0
    for conv, bn, place in ((m.square_conv, m.square_bn, lambda z: z.weight),
                            (m.ver_conv, m.ver_bn, lambda z: F.pad(z.weight, (c, c, 0, 0))),
                            (m.hor_conv, m.hor_bn, lambda z: F.pad(z.weight, (0, 0, c, c)))):
        y = F.conv2d(x, place(conv), None, m.stride, m.padding, m.dilation, m.groups)
        scale = bn.weight / (bn.running_var + bn.eps).sqrt()
        out = out + (y - bn.running_mean[:, None, None]) * scale[:, None, None] + bn.bias[:, None, None]
    return out


CASES = [(8, 12, 3, 1, 1, 1), (8, 12, 3, 2, 1, 1), (8, 12, 5, 2, 4, 1), (6, 6, 3, 2, 6, 1), (8, 12, 3, 1, 2, 2)]


@pytest.mark.parametrize("cin,cout,k,stride,groups,dilation", CASES)
def test_branches_are_aligned_on_the_skeleton(cin, cout, k, stride, groups, dilation):
    torch.manual_seed(0)
    m = _randomise_bns(create_conv("acnet", cin, cout, k, stride=stride, groups=groups, dilation=dilation)).double()
    m.eval()
    for size in [(9, 14), (7, 5), (12, 11)]:
        x = torch.randn(2, cin, *size, dtype=torch.float64)
        torch.testing.assert_close(m(x), _reference(x, m))


@pytest.mark.parametrize("cin,cout,k,stride,groups,dilation", CASES)
def test_fuse_gives_the_same_outputs(cin, cout, k, stride, groups, dilation):
    torch.manual_seed(0)
    m = _randomise_bns(create_conv("acnet", cin, cout, k, stride=stride, groups=groups, dilation=dilation)).eval()
    xs = [torch.randn(2, cin, 9, 14), torch.randn(1, cin, 7, 5)]
    before = [m(x) for x in xs]
    m.fuse()
    assert [type(c) for c in m.children()] == [nn.Conv2d] and m.fused_conv.bias is not None
    assert sum(p.numel() for p in m.parameters()) == cout * cin // groups * k * k + cout
    for x, y in zip(xs, before):
        assert (m(x) - y).abs().max().item() < 1e-5
    m.fuse()                                                          # idempotent
    deployed = create_conv("acnet", cin, cout, k, stride=stride, groups=groups, dilation=dilation, deploy=True)
    deployed.load_state_dict(m.state_dict())
    torch.testing.assert_close(deployed(xs[0]), m(xs[0]))


def test_asymmetric_kernels_only_touch_the_central_cross():
    """The fused kernel's off-skeleton taps (corners) are the square branch's alone; the cross gets all three."""
    torch.manual_seed(0)
    m = _randomise_bns(create_conv("acnet", 4, 5, 3)).eval()
    kernel, bias = m.equivalent_kernel_bias()
    sq = m.square_bn.weight / (m.square_bn.running_var + m.square_bn.eps).sqrt()
    square = m.square_conv.weight * sq[:, None, None, None]
    corners = [(0, 0), (0, 2), (2, 0), (2, 2)]
    for i, j in corners:
        torch.testing.assert_close(kernel[..., i, j], square[..., i, j])
    ver = m.ver_bn.weight / (m.ver_bn.running_var + m.ver_bn.eps).sqrt()
    hor = m.hor_bn.weight / (m.hor_bn.running_var + m.hor_bn.eps).sqrt()
    centre = square[..., 1, 1] + (m.ver_conv.weight[..., 1, 0] * ver[:, None]) + m.hor_conv.weight[..., 0, 1] * hor[:, None]
    torch.testing.assert_close(kernel[..., 1, 1], centre)
    shift = lambda bn: bn.bias - bn.running_mean * bn.weight / (bn.running_var + bn.eps).sqrt()  # noqa: E731
    torch.testing.assert_close(bias, shift(m.square_bn) + shift(m.ver_bn) + shift(m.hor_bn))


def test_training_mode_normalises_each_branch_with_batch_statistics():
    torch.manual_seed(0)
    m = create_conv("acnet", 4, 6, 3).train()
    x = torch.randn(4, 4, 8, 7)
    y = m(x)
    branch = lambda conv: F.batch_norm(conv(x), None, None, training=True)  # noqa: E731  (gamma 1, beta 0)
    torch.testing.assert_close(y, branch(m.square_conv) + branch(m.ver_conv) + branch(m.hor_conv))


def test_gamma_init_and_state_dict_names():
    m = create_conv("acnet", 8, 8, 3, gamma_init=1 / 3)
    assert all(torch.allclose(bn.weight, torch.full((8,), 1 / 3)) for bn in (m.square_bn, m.ver_bn, m.hor_bn))
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items() if k.endswith("weight")}
    assert shapes == {"square_conv.weight": (8, 8, 3, 3), "square_bn.weight": (8,), "ver_conv.weight": (8, 8, 3, 1),
                      "ver_bn.weight": (8,), "hor_conv.weight": (8, 8, 1, 3), "hor_bn.weight": (8,)}


def test_official_structure_through_mid_layer():
    """The authors' ResNet-50 (ACB instead of the 3x3 conv-BN, then ReLU) via mid_layer; it fuses back into the
    plain ResNet-50 (16 ACBs, each a 3x3 conv with bias, the only difference from resnet50 being those biases)."""
    torch.manual_seed(0)
    model = create_model("resnet50", num_classes=10,
                         mid_layer=lambda c, s: nn.Sequential(create_conv("acnet", c, c, 3, stride=s), nn.ReLU()))
    blocks = [m for m in model.modules() if isinstance(m, ACBlock)]
    assert len(blocks) == 16
    model.eval()
    x = torch.randn(1, 3, 45, 37)
    before = model(x)
    for b in blocks:
        b.fuse()
    torch.testing.assert_close(model(x), before, rtol=1e-4, atol=1e-4)
    plain = create_model("resnet50", num_classes=10)
    mids = sum(b.out_channels for b in blocks)
    bn_params = sum(2 * b.out_channels for b in blocks)             # the plain model's 3x3 BNs (gamma, beta)
    count = lambda net: sum(p.numel() for p in net.parameters())    # noqa: E731
    assert count(model) == count(plain) + mids - bn_params


def test_official_structure_through_conv_layer_without_host_bn():
    """use_last_bn=False: the ACB declares has_norm and ConvNormAct drops the backbone's BN after it, so
    conv_layer gives the same network as the mid_layer form above (16 ACBs, no BN after them)."""
    with torch.device("meta"):
        unit = lambda c, s: nn.Sequential(create_conv("acnet", c, c, 3, stride=s), nn.ReLU())  # noqa: E731
        official = create_model("resnet50", num_classes=10, mid_layer=unit)
        drop_in = create_model("resnet50", num_classes=10, conv_layer="acnet", conv_kwargs=dict(use_last_bn=False))
        with_bn = create_model("resnet50", num_classes=10, conv_layer="acnet")
    count = lambda net: sum(p.numel() for p in net.parameters())    # noqa: E731
    assert count(drop_in) == count(official) == count(with_bn) - sum(2 * b.out_channels for b in drop_in.modules()
                                                                     if isinstance(b, ACBlock))
    unit = drop_in.stages[0][0].conv2
    assert isinstance(unit[0], ACBlock) and isinstance(unit[1], nn.Identity) and isinstance(unit[2], nn.ReLU)


def test_bad_arguments():
    for k in (1, 4):
        with pytest.raises(ValueError, match="odd kernel_size >= 3"):
            create_conv("acnet", 8, 8, k)
    with pytest.raises(ValueError, match="groups"):
        create_conv("acnet", 8, 12, 3, groups=5)


def test_no_graph_breaks():
    m = create_conv("acnet", 16, 16, 3, stride=2)
    assert torch._dynamo.explain(m)(torch.randn(2, 16, 9, 7)).graph_break_count == 0
