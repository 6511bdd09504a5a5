"""Strip pooling (hou2020strip): the strip pooling module "spm" and the mixed pooling module "mpm"."""
import pytest
import torch
import torch.nn.functional as F

from attnzoo import create_attention


def _bn(t, bn):
    return F.batch_norm(t, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)


@torch.no_grad()
def test_spm_gate_from_primitives(randomise_bn):
    torch.manual_seed(0)
    spm = create_attention("spm", 6).eval()
    randomise_bn(spm)
    x = torch.randn(2, 6, 7, 10)
    column = _bn(F.conv2d(x.mean(dim=3, keepdim=True), spm.conv1.weight, padding=(1, 0)), spm.bn1)  # (N, C, H, 1)
    row = _bn(F.conv2d(x.mean(dim=2, keepdim=True), spm.conv2.weight, padding=(0, 1)), spm.bn2)  # (N, C, 1, W)
    gate = torch.sigmoid(F.conv2d(F.relu(column + row), spm.conv3.weight, spm.conv3.bias))
    torch.testing.assert_close(spm(x), x * gate)


@torch.no_grad()
def test_spm_gate_depends_on_row_and_column_means_only():
    """Moving mass between the corners of a rectangle keeps every row and column mean: the gate is unchanged,
    the output changes only through x itself."""
    spm = create_attention("spm", 4).eval()
    x = torch.randn(1, 4, 6, 8)
    y = x.clone()
    d = torch.randn(4)
    y[0, :, 1, 2] += d
    y[0, :, 1, 5] -= d
    y[0, :, 4, 2] -= d
    y[0, :, 4, 5] += d
    torch.testing.assert_close(spm.weights(y), spm.weights(x))
    torch.testing.assert_close(spm(y) - spm(x), (y - x) * spm.weights(x))


@torch.no_grad()
def test_mpm_from_primitives(randomise_bn):
    torch.manual_seed(0)
    mpm = create_attention("mpm", 8, pool_size=(4, 3)).eval()
    randomise_bn(mpm)
    x = torch.randn(2, 8, 9, 7)

    def unit(t, u, pad, relu):
        t = _bn(F.conv2d(t, u[0].weight, padding=pad), u[1])
        return F.relu(t) if relu else t

    def up(t):
        return F.interpolate(t, size=(9, 7), mode="bilinear", align_corners=True)

    x1, x2 = unit(x, mpm.conv1_1, 0, True), unit(x, mpm.conv1_2, 0, True)
    short = (unit(x1, mpm.conv2_0, 1, False) + up(unit(F.adaptive_avg_pool2d(x1, 4), mpm.conv2_1, 1, False))
             + up(unit(F.adaptive_avg_pool2d(x1, 3), mpm.conv2_2, 1, False)))
    long = (unit(x2.mean(dim=2, keepdim=True), mpm.conv2_3, (0, 1), False).expand(-1, -1, 9, -1)  # 1 x W strip
            + unit(x2.mean(dim=3, keepdim=True), mpm.conv2_4, (1, 0), False).expand(-1, -1, -1, 7))
    cat = torch.cat([unit(F.relu(short), mpm.conv2_5, 1, True), unit(F.relu(long), mpm.conv2_6, 1, True)], dim=1)
    torch.testing.assert_close(mpm(x), F.relu(x + unit(cat, mpm.conv3, 0, False)))


def test_mpm_has_the_authors_parameter_names_and_shapes():
    sd = create_attention("mpm", 512).state_dict()
    assert sd["conv1_1.0.weight"].shape == (128, 512, 1, 1)
    assert sd["conv2_3.0.weight"].shape == (128, 128, 1, 3) and sd["conv2_4.0.weight"].shape == (128, 128, 3, 1)
    assert sd["conv3.0.weight"].shape == (512, 256, 1, 1) and "conv3.1.running_var" in sd
    assert not any(k.endswith(".0.bias") for k in sd)


def test_strip_pooling_argument_errors():
    with pytest.raises(ValueError, match="pool_size"):
        create_attention("mpm", 8, pool_size=(20,))
    with pytest.raises(ValueError, match="pool_size"):
        create_attention("mpm", 8, pool_size=(20, 0))
    with pytest.raises(ValueError, match="channels"):
        create_attention("spm", 0)
