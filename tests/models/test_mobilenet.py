"""MobileNet V1: the depthwise-separable block against a float64 reference, its multiply-adds against the
paper's Eq. 5, the body of Table 1 (widths, strides, map sizes), width multipliers and argument checks."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from attnzoo import create_model
from attnzoo.nbtools import count_macs


def _bn(x, bn):
    return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)


def test_block_is_depthwise_then_pointwise():
    model = create_model("mobilenetv1_100", width_mult=0.25).double().eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g, dtype=torch.float64))
                m.running_var.copy_(torch.rand(m.num_features, generator=g, dtype=torch.float64) + 0.5)
    blk = model.blocks[1][0]                       # 16 -> 32 channels, stride 2
    x = torch.randn(2, 16, 9, 8, dtype=torch.float64) * 3
    y = F.conv2d(x, blk.conv_dw.weight, stride=2, padding=1, groups=16)
    y = F.conv2d(_bn(y, blk.bn1).clamp(0, 6), blk.conv_pw.weight)
    torch.testing.assert_close(blk(x), _bn(y, blk.bn2).clamp(0, 6))
    assert blk(x).shape == (2, 32, 5, 4)


def test_separable_cost_is_eq_5():
    blk = create_model("mobilenetv1_100").blocks[3][1].eval()      # M = N = 512 at 14 x 14
    m, n, k, f = 512, 512, 3, 14
    assert count_macs(blk, torch.zeros(1, m, f, f)) == k * k * m * f * f + m * n * f * f
    reduction = (k * k * m * n * f * f) / (k * k * m * f * f + m * n * f * f)
    assert 8 < reduction < 9    # "8 to 9 times less computation" for 3x3 kernels


def test_body_of_table_1():
    model = create_model("mobilenetv1_100").eval()
    blocks = [b for stage in model.blocks for b in stage]
    assert [b.conv_pw.out_channels for b in blocks] == [64, 128, 128, 256, 256] + [512] * 6 + [1024, 1024]
    assert [b.conv_dw.stride[0] for b in blocks] == [1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1]
    assert model.conv_stem.out_channels == 32 and model.conv_stem.stride == (2, 2)
    sizes = []
    for stage in model.blocks:
        stage.register_forward_hook(lambda mod, i, o: sizes.append(tuple(o.shape[1:])))
    with torch.no_grad():
        model(torch.randn(1, 3, 67, 45))
    assert sizes == [(64, 34, 23), (128, 17, 12), (256, 9, 6), (512, 5, 3), (1024, 3, 2)]


def test_width_multiplier_scales_every_layer():
    with torch.device("meta"):
        half = create_model("mobilenetv1_050")
    assert half.conv_stem.out_channels == 16
    assert [b.conv_pw.out_channels for stage in half.blocks for b in stage][-1] == 512 and half.num_features == 512


def test_paper_activation_option():
    model = create_model("mobilenetv1_025", act="relu")
    assert isinstance(model.blocks[0][0].act1, nn.ReLU) and not isinstance(model.blocks[0][0].act1, nn.ReLU6)
    assert isinstance(create_model("mobilenetv1_025").act1, nn.ReLU6)


def test_attention_after_each_depthwise_convolution():
    model = create_model("mobilenetv1_025", attn_layer="se")
    assert [b.se.fc1.in_channels for stage in model.blocks for b in stage][:3] == [8, 16, 32]


@pytest.mark.parametrize("kwargs", [dict(width_mult=0), dict(num_classes=0), dict(act="nope"), dict(drop_rate=1.0)])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        create_model("mobilenetv1_100", **kwargs)
