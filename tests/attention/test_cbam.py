import pytest
import torch

from attnzoo import create_attention


def test_channel_gate_uses_avg_and_max_through_one_mlp():
    torch.manual_seed(0)
    cbam = create_attention("cbam", 16, rd_ratio=1 / 4, use_spatial=False)
    x = torch.randn(2, 16, 5, 9)
    mlp = cbam.channel.mlp
    expected = torch.sigmoid(mlp(x.mean((2, 3), keepdim=True)) + mlp(x.amax((2, 3), keepdim=True)))
    torch.testing.assert_close(cbam(x), x * expected)


def test_spatial_gate_equation_without_norm():
    torch.manual_seed(0)
    cbam = create_attention("cbam", 8, spatial_norm=False)
    x = torch.randn(1, 8, 6, 7)
    refined = x * cbam.channel(x)
    desc = torch.cat([refined.mean(1, keepdim=True), refined.amax(1, keepdim=True)], 1)
    torch.testing.assert_close(cbam(x), refined * torch.sigmoid(cbam.spatial.conv(desc)))


def test_even_kernel_is_rejected():
    with pytest.raises(ValueError, match="odd"):
        create_attention("cbam", 8, kernel_size=6)
