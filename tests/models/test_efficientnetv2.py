"""EfficientNetV2: Fused-MBConv against a float64 reference written from the paper's Fig. 2, the block type of each
stage (Table 4), the official depths/widths of S/M/L, SE on a quarter of the block input width, errors."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from attnzoo import create_model
from attnzoo.layers.mbconv import ConvBnAct, FusedMBConv, MBConv

OFFICIAL = {"efficientnetv2_s": ((2, 4, 4, 6, 9, 15), (24, 48, 64, 128, 160, 256), 24),
            "efficientnetv2_m": ((3, 5, 5, 7, 14, 18, 5), (24, 48, 80, 160, 176, 304, 512), 24),
            "efficientnetv2_l": ((4, 7, 7, 10, 19, 25, 7), (32, 64, 96, 192, 224, 384, 640), 32)}


def _bn(m, y):
    return (y - m.running_mean[:, None, None]) / torch.sqrt(m.running_var[:, None, None] + m.eps) \
        * m.weight[:, None, None] + m.bias[:, None, None]


def test_fused_mbconv_matches_a_float64_reference():
    """3x3 conv expanding C -> 4C (the fused expansion + depthwise) -> BN -> SiLU -> 1x1 -> BN, plus the input."""
    block = FusedMBConv(16, 16, 64, kernel_size=3, act="silu").double().eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in (block.bn1, block.bn2):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g, dtype=torch.float64))
            m.running_var.copy_(torch.rand(m.num_features, generator=g, dtype=torch.float64) + 0.5)
            m.weight.copy_(torch.randn(m.num_features, generator=g, dtype=torch.float64))
    x = torch.randn(2, 16, 9, 7, dtype=torch.float64)
    y = F.silu(_bn(block.bn1, F.conv2d(x, block.conv_exp.weight, padding=1)))
    expected = x + _bn(block.bn2, F.conv2d(y, block.conv_pwl.weight))
    torch.testing.assert_close(block(x), expected)


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_depths_and_widths_are_the_official_configs(name):
    depths, widths, stem = OFFICIAL[name]
    with torch.device("meta"):
        model = create_model(name)
    assert tuple(len(s) for s in model.blocks) == depths
    out = [s[-1].conv.out_channels if isinstance(s[-1], ConvBnAct) else s[-1].conv_pwl.out_channels
           for s in model.blocks]
    assert tuple(out) == widths and model.conv_stem.out_channels == stem and model.num_features == 1280


def test_stage_types_of_table_4():
    model = create_model("efficientnetv2_s")
    kinds = [{type(b) for b in stage} for stage in model.blocks]
    assert kinds == [{ConvBnAct}, {FusedMBConv}, {FusedMBConv}, {MBConv}, {MBConv}, {MBConv}]
    assert all(b.has_skip for b in model.blocks[0])  # 24 -> 24, stride 1: the conv-BN-SiLU keeps a residual
    assert [b.conv_exp.out_channels for b in model.blocks[1][:2]] == [96, 192]  # expansion 4 of 24, then of 48
    assert all(isinstance(b.se, nn.Identity) for s in model.blocks[1:3] for b in s)
    first_se = model.blocks[3][0]
    assert (first_se.conv_dw.out_channels, first_se.se.fc1.out_channels) == (256, 16)  # 4 x 64; 64 / 4


def test_odd_sizes_and_errors():
    model = create_model("efficientnetv2_s", num_classes=10, depths=(1,) * 6).eval()
    assert model(torch.randn(1, 3, 33, 47)).shape == (1, 10)
    with pytest.raises(ValueError, match="depths"):
        create_model("efficientnetv2_s", depths=(1,) * 8)
    with pytest.raises(ValueError, match="widths"):
        create_model("efficientnetv2_s", widths=(24, 0, 64))
