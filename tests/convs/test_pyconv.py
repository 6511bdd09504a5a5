import pytest
import torch
import torch.nn.functional as F

from attnzoo import create_conv, create_model
from attnzoo.convs.pyconv import PyConv2d, pyramid_split


def _dense_kernel(m: PyConv2d) -> torch.Tensor:
    """The whole pyramid as ONE dense k_max x k_max kernel: each level's grouped kernel is expanded to all input
    channels (zeros outside its group) and zero-padded to the largest size, centred."""
    kmax = max(m.kernel_sizes)
    rows = []
    for conv in m.levels:
        c_out, c_in_g, k, _ = conv.weight.shape
        g = conv.groups
        dense = torch.zeros(c_out, m.in_channels, kmax, kmax, dtype=conv.weight.dtype)
        pad = (kmax - k) // 2
        for o in range(c_out):
            grp = o // (c_out // g)
            dense[o, grp * c_in_g:(grp + 1) * c_in_g, pad:pad + k, pad:pad + k] = conv.weight[o]
        rows.append(dense)
    return torch.cat(rows)


@pytest.mark.parametrize("cin,cout,levels,stride,groups", [(64, 64, 4, 1, 1), (32, 64, 3, 2, 1), (16, 32, 2, 1, 2),
                                                           (8, 8, 1, 2, 1)])
def test_pyramid_equals_one_dense_convolution(cin, cout, levels, stride, groups):
    torch.manual_seed(0)
    m = create_conv("pyconv", cin, cout, 3, stride=stride, groups=groups, levels=levels, bias=True).double()
    for conv in m.levels:
        torch.nn.init.normal_(conv.bias)
    bias = torch.cat([conv.bias for conv in m.levels])
    kernel = _dense_kernel(m)
    x = torch.randn(2, cin, 11, 8, dtype=torch.float64)
    expected = F.conv2d(x, kernel, bias, stride, kernel.shape[-1] // 2)
    torch.testing.assert_close(m(x), expected, rtol=1e-10, atol=1e-10)


def test_authors_pyramids():
    m = create_conv("pyconv", 64, 64, 3)
    assert m.kernel_sizes == (3, 5, 7, 9) and m.level_groups == (1, 4, 8, 16)
    assert [c.out_channels for c in m.levels] == [16, 16, 16, 16]
    m3 = create_conv("pyconv", 128, 128, 3, levels=3)
    assert m3.kernel_sizes == (3, 5, 7) and m3.level_groups == (1, 4, 8)
    assert [c.out_channels for c in m3.levels] == [32, 32, 64]
    assert pyramid_split(10, (1, 1, 2)) == [2, 2, 6]
    # levels=None: the deepest of the authors' pyramids that divides the channels
    assert len(create_conv("pyconv", 16, 24, 3).levels) == 2
    assert len(create_conv("pyconv", 16, 24, 3, groups=4).levels) == 1
    assert len(create_conv("pyconv", 32, 32, 3).levels) == 3


def test_parameters_and_cost_do_not_exceed_a_plain_convolution():
    """sum_i k_i^2 (C_in / G_i) C_out_i; for the paper's pyramids at most the plain 3x3 convolution's."""
    for levels, c in ((4, 64), (3, 128), (2, 256), (1, 512)):
        m = create_conv("pyconv", c, c, 3, levels=levels)
        expected = sum(k * k * (c // g) * conv.out_channels
                       for k, g, conv in zip(m.kernel_sizes, m.level_groups, m.levels))
        assert sum(p.numel() for p in m.parameters()) == expected <= 9 * c * c


def test_one_level_is_a_plain_convolution():
    torch.manual_seed(0)
    m = create_conv("pyconv", 8, 12, 5, stride=2, levels=1)
    x = torch.randn(1, 8, 9, 7)
    torch.testing.assert_close(m(x), F.conv2d(x, m.levels[0].weight, None, 2, 2))


def test_pyconv_resnet50_stages():
    """PyConvResNet-50: 4, 3, 2 and 1 levels in stages 1-4 (authors' PyConvResNet.__init__); 24.85 M parameters."""
    with torch.device("meta"):
        model = create_model("pyconv_resnet50")
    for stage, levels in zip(model.stages, (4, 3, 2, 1)):
        for block in stage:
            assert len(block.conv2[0].levels) == levels
    assert sum(p.numel() for p in model.parameters()) == 24_847_720


def test_bad_arguments():
    with pytest.raises(ValueError, match="levels"):
        create_conv("pyconv", 64, 64, 3, levels=5)
    with pytest.raises(ValueError, match="multiples of 16"):
        create_conv("pyconv", 32, 32, 3, levels=4)               # the 9x9 level needs 16 groups
    with pytest.raises(ValueError, match="odd"):
        create_conv("pyconv", 16, 16, 3, kernel_sizes=(3, 4), level_groups=(1, 1), level_splits=(1, 1))
    with pytest.raises(ValueError, match="one entry per level"):
        create_conv("pyconv", 16, 16, 3, kernel_sizes=(3, 5), level_groups=(1,), level_splits=(1, 1))
