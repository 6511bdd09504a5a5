"""Pyramid pooling module (zhao2017pyramid), registered as "ppm"."""
import pytest
import torch
import torch.nn.functional as F

from attnzoo import create_block


def test_bins_are_grid_averages_at_divisible_sizes():
    """The b x b pooling is the mean over each (H/b) x (W/b) cell, the Caffe model's fixed-kernel pooling."""
    block = create_block("ppm", 4, 8)
    x = torch.randn(2, 4, 12, 18)
    for b, stage in zip(block.bins, block.features):
        cells = x.reshape(2, 4, b, 12 // b, b, 18 // b).mean(dim=(3, 5))
        torch.testing.assert_close(stage[0](x), cells)


@torch.no_grad()
def test_ppm_equals_its_equations_built_from_primitives(randomise_bn):
    torch.manual_seed(0)
    block = randomise_bn(create_block("ppm", 9, 6, bins=(1, 2, 3)).eval())

    def cbr(t, unit, pad=0):
        conv, bn = unit[0], unit[1]
        t = F.conv2d(t, conv.weight, padding=pad)
        return F.relu(F.batch_norm(t, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps))

    x = torch.randn(2, 9, 7, 11)
    levels = [F.interpolate(cbr(F.adaptive_avg_pool2d(x, b), f[1]), (7, 11), mode="bilinear", align_corners=True)
              for b, f in zip((1, 2, 3), block.features)]
    z = torch.cat([x] + levels, dim=1)
    torch.testing.assert_close(block.pyramid(x), z)
    torch.testing.assert_close(block(x), cbr(z, block.bottleneck, pad=1))


@torch.no_grad()
def test_global_level_is_constant_and_the_input_passes_through():
    block = create_block("ppm", 8, 4).eval()
    x = torch.randn(1, 8, 5, 9)
    z = block.pyramid(x)
    assert z.shape == (1, 16, 5, 9)
    torch.testing.assert_close(z[:, :8], x)
    global_level = z[:, 8:10]
    torch.testing.assert_close(global_level, global_level[..., :1, :1].expand_as(global_level))


def test_pspnet_widths_on_resnet_features():
    """PSPNet on ResNet's 2048 channels: four 1x1 reductions to 512, a 3x3 bottleneck 4096 -> 512 (no biases)."""
    with torch.device("meta"):
        block = create_block("ppm", 2048, 512)
    expected = 4 * (2048 * 512 + 2 * 512) + 4096 * 512 * 9 + 2 * 512
    assert sum(p.numel() for p in block.parameters()) == expected


def test_ppm_argument_errors():
    with pytest.raises(ValueError, match="bins"):
        create_block("ppm", 8, 8, bins=())
    with pytest.raises(ValueError, match="divisible"):
        create_block("ppm", 10, 8)
    assert create_block("ppm", 10, 8, reduction_channels=3).bottleneck[0].in_channels == 22
    with pytest.raises(ValueError, match="batch of at least 2"):
        create_block("ppm", 8, 8).train()(torch.randn(1, 8, 5, 5))
