"""ULSAM (saini2020ulsam), registered as "ulsam"."""
import pytest
import torch
import torch.nn.functional as F

from attnzoo import create_attention


@torch.no_grad()
def test_ulsam_equals_the_per_subspace_computation(randomise_bn):
    """One subspace at a time, as the authors' ModuleList: depthwise 1x1 - BN - ReLU - maxpool - 1x1 to one map -
    BN - ReLU - softmax over positions; x_i * a_i + x_i."""
    torch.manual_seed(0)
    m = randomise_bn(create_attention("ulsam", 12, num_splits=3).eval())
    x = torch.randn(2, 12, 5, 7)

    def bn(t, layer, idx):
        return F.batch_norm(t, layer.running_mean[idx], layer.running_var[idx], layer.weight[idx], layer.bias[idx],
                            False, 0.0, layer.eps)

    outs = []
    for i, xi in enumerate(x.chunk(3, dim=1)):
        ch = slice(4 * i, 4 * i + 4)
        d = xi * m.conv_dws.weight[ch].view(1, 4, 1, 1) + m.conv_dws.bias[ch].view(1, 4, 1, 1)
        d = F.max_pool2d(F.relu(bn(d, m.bn_dws, ch)), 3, 1, 1)
        p = F.conv2d(d, m.conv_point.weight[i:i + 1], m.conv_point.bias[i:i + 1])
        a = torch.softmax(F.relu(bn(p, m.bn_point, slice(i, i + 1))).flatten(1), dim=1).view(2, 1, 5, 7)
        outs.append(xi * a + xi)
    torch.testing.assert_close(m(x), torch.cat(outs, dim=1))


def test_attention_maps_are_distributions_over_positions():
    m = create_attention("ulsam", 16, num_splits=8)
    a = m.weights(torch.randn(3, 16, 6, 9))
    assert a.shape == (3, 8, 6, 9) and (a >= 0).all()
    torch.testing.assert_close(a.sum(dim=(2, 3)), torch.ones(3, 8))


def test_ulsam_parameters_are_a_handful_per_channel():
    """Per subspace of c = C/g channels: depthwise 2c, BN 2c, pointwise c + 1, BN 2: 5C + 3g in all."""
    assert sum(p.numel() for p in create_attention("ulsam", 256, num_splits=4).parameters()) == 5 * 256 + 3 * 4


def test_ulsam_rejects_splits_that_do_not_divide_the_channels():
    with pytest.raises(ValueError, match="num_splits"):
        create_attention("ulsam", 10, num_splits=4)
