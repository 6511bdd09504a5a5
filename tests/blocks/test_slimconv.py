"""SlimConv (qiu2021slimconv): reweight, flip, fold and convolve; its ResNet-50 bottleneck.

The registry-wide tests cover shapes, batch 1 (eval), odd sizes, train/eval and gradients."""
import pytest
import torch
import torch.nn.functional as F

from attnzoo import create_block
from attnzoo.blocks.slimconv import SlimConv, slim_unit
from attnzoo.models.resnet import ResNet


def _bn(x, bn):
    return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)


def _conv_bn(x, unit, stride=1, padding=0, groups=1):
    return _bn(F.conv2d(x, unit[0].weight, None, stride, padding, 1, groups), unit[1])


def test_against_channel_by_channel_reference(randomise_bn):
    """Fold by index: top_j = w_j x_j + w_{j+C/2} x_{j+C/2}, bottom_j = w_{C-1-j} x_j + w_{C/2-1-j} x_{j+C/2};
    top -> 3x3 conv-BN, bottom -> 1x1 conv-BN-ReLU -> 3x3 conv-BN; concatenated (authors' slim_conv_3x3)."""
    torch.manual_seed(0)
    m = randomise_bn(SlimConv(16, stride=2)).double().eval()
    x = torch.randn(2, 16, 9, 7, dtype=torch.float64)
    g = m.gate
    z = F.relu(_conv_bn(x.mean(dim=(2, 3), keepdim=True), g[0]))
    w = torch.sigmoid(F.conv2d(z, g[1].weight, g[1].bias))[:, :, 0, 0]          # (N, C)
    j = torch.arange(8)
    top = w[:, j, None, None] * x[:, j] + w[:, j + 8, None, None] * x[:, j + 8]
    bottom = w[:, 15 - j, None, None] * x[:, j] + w[:, 7 - j, None, None] * x[:, j + 8]
    y_top = _conv_bn(top, m.top, 2, 1)
    y_bottom = _conv_bn(F.relu(_conv_bn(bottom, m.cheap[0])), m.cheap[1], 2, 1)
    y = m(x)
    assert y.shape == (2, 12, 5, 4)                                               # 3C/4 channels (k = 4/3)
    torch.testing.assert_close(y, torch.cat([y_top, y_bottom], 1))


def test_general_widths_and_groups():
    m = create_block("slimconv", 32, 20, groups=2).eval()        # cheap path 20 // 3 = 6, 3x3 path 14
    assert (m.top[0].out_channels, m.cheap[1][0].out_channels, m.top[0].groups) == (14, 6, 2)
    assert m(torch.randn(1, 32, 5, 3)).shape == (1, 20, 5, 3)


def test_resnet_bottleneck_takes_three_quarters():
    """sc_resnet50's bottleneck: SlimConv + ReLU, the last 1x1 conv reads 3/4 of the width."""
    model = ResNet(layers=(1, 1, 1, 1), mid_layer=slim_unit, num_classes=3).eval()
    for stage, width in zip(model.stages, (64, 128, 256, 512)):
        block = stage[0]
        assert isinstance(block.conv2[0], SlimConv) and block.conv3[0].in_channels == 3 * width // 4
    assert model(torch.randn(1, 3, 37, 29)).shape == (1, 3)


def test_errors():
    with pytest.raises(ValueError, match="even"):
        SlimConv(15)
    with pytest.raises(ValueError, match="groups"):
        SlimConv(16, groups=3)
    with pytest.raises(ValueError, match="batch"):
        SlimConv(16).train()(torch.randn(1, 16, 4, 4))
