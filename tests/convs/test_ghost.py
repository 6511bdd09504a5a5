"""Ghost module: the primary/cheap split against a float64 reference of Eq. 3-4 (authors' GhostModule), the
channel counts and the cost ratio of Eq. 5, its use as a drop-in convolution, and argument checks."""
import math

import pytest
import torch
import torch.nn.functional as F

from attnzoo import create_conv, create_model
from attnzoo.nbtools import count_macs


def _bn(x, bn):
    return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)


@pytest.mark.parametrize("out_ch,relu", [(24, True), (25, False)])
def test_ghost_module_is_primary_maps_and_their_cheap_ghosts(out_ch, relu):
    m = create_conv("ghost", 16, out_ch, 3, stride=2, relu=relu).double().eval()
    with torch.no_grad():
        for bn in (m.primary_conv[1], m.cheap_operation[1]):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 1.5)
    act = F.relu if relu else (lambda t: t)
    x = torch.randn(2, 16, 9, 8, dtype=torch.float64)
    primary = act(_bn(F.conv2d(x, m.primary_conv[0].weight, stride=2, padding=1), m.primary_conv[1]))
    m_ch = math.ceil(out_ch / 2)
    assert primary.shape[1] == m_ch
    ghosts = act(_bn(F.conv2d(primary, m.cheap_operation[0].weight, padding=1, groups=m_ch), m.cheap_operation[1]))
    expected = torch.cat([primary, ghosts], 1)[:, :out_ch]
    torch.testing.assert_close(m(x), expected)
    assert expected.shape == (2, out_ch, 5, 4)


@pytest.mark.parametrize("ratio", [2, 3, 4])
def test_cost_ratio_of_eq_5(ratio):
    c, n, k, d, h = 64, 96, 3, 3, 10
    m = create_conv("ghost", c, n, k, ratio=ratio).eval()
    m_ch = n // ratio
    macs = count_macs(m, torch.zeros(1, c, h, h))
    assert macs == m_ch * c * k * k * h * h + (ratio - 1) * m_ch * d * d * h * h
    speedup = (n * c * k * k * h * h) / macs
    assert speedup == pytest.approx(ratio * c / (c + ratio - 1), rel=1e-6)   # ~ s when c >> s (Eq. 5)


def test_ghost_as_the_conv_layer_of_a_backbone():
    model = create_model("resnet18", conv_layer="ghost", num_classes=3).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 37, 29)).shape == (1, 3)


@pytest.mark.parametrize("kwargs", [dict(ratio=1), dict(ratio=2.5), dict(dw_size=0), dict(groups=5), dict(groups=0)])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        create_conv("ghost", 16, 24, 1, **kwargs)
