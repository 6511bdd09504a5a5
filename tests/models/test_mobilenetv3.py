"""MobileNetV3: the expansion widths of the paper's Tables 1 and 2, the SE settings (a quarter of the expanded width,
rounded to 8, ReLU and hard-sigmoid), ReLU/h-swish per row, the pooled 1x1 head against a reference, and the
PyTorch-padded option against timm's own mobilenetv3_large_100."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from attnzoo import create_model, load_timm_weights

# "exp size" column of Table 1 (Large) and Table 2 (Small), then the last 1x1 conv's width
TABLES = {"mobilenetv3_large": ([16, 64, 72, 72, 120, 120, 240, 200, 184, 184, 480, 672, 672, 960, 960], 960),
          "mobilenetv3_small": ([16, 72, 88, 96, 240, 240, 120, 144, 288, 576, 576], 576)}


def _blocks(model):
    return [b for stage in model.blocks for b in stage]


@pytest.mark.parametrize("name", sorted(TABLES))
def test_expansion_widths_are_the_papers(name):
    with torch.device("meta"):
        model = create_model(name)
    blocks = _blocks(model)
    assert [b.conv_dw.out_channels for b in blocks[:-1]] == TABLES[name][0]
    assert blocks[-1].conv.out_channels == TABLES[name][1] and model.conv_stem.out_channels == 16


def test_se_squeezes_a_quarter_of_the_expanded_width_rounded_to_8():
    blocks = _blocks(create_model("mobilenetv3_large"))[:-1]  # the last is a plain 1x1 conv
    se = blocks[3].se  # exp 72 -> 18, rounded to 8 without losing 10 %: 24 (16 would lose 11 %)
    assert (se.fc1.in_channels, se.fc1.out_channels) == (72, 24)
    assert isinstance(se.act, nn.ReLU) and isinstance(se.gate, nn.Hardsigmoid)
    assert [b.se.fc1.out_channels for b in blocks if not isinstance(b.se, nn.Identity)] == \
        [24, 32, 32, 120, 168, 168, 240, 240]
    assert all(isinstance(b.se, nn.Identity) for b in blocks[:3] + blocks[6:10])  # rows without SE in Table 1


def test_relu_in_the_first_rows_and_h_swish_after():
    model = create_model("mobilenetv3_large")
    blocks = _blocks(model)
    assert isinstance(model.act1, nn.Hardswish)
    assert all(isinstance(b.act1, nn.ReLU) for b in blocks[:6])
    assert all(isinstance(b.act1, nn.Hardswish) for b in blocks[6:])


def test_head_pools_before_its_1x1_convolution():
    model = create_model("mobilenetv3_small", num_classes=7).eval()
    feats = torch.randn(2, 576, 5, 3)
    pooled = feats.mean((2, 3))
    hidden = F.hardswish(pooled @ model.conv_head.weight[:, :, 0, 0].T + model.conv_head.bias)
    expected = hidden @ model.classifier.weight.T + model.classifier.bias
    torch.testing.assert_close(model.forward_head(feats), expected)
    assert not hasattr(model, "bn2")  # no BatchNorm in the head
    assert model.forward_features(torch.randn(1, 3, 67, 45)).shape == (1, 576, 3, 2)


def test_pytorch_padding_option_gives_timm_mobilenetv3_large_100_logits():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    theirs = timm.create_model("mobilenetv3_large_100").eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in theirs.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.5)
    ours = create_model("mobilenetv3_large", padding="symmetric", bn_eps=1e-5, bn_momentum=0.1).eval()
    load_timm_weights(ours, theirs)
    x = torch.randn(1, 3, 65, 47)
    with torch.no_grad():
        expected = theirs(x)
        torch.testing.assert_close(ours(x), expected, rtol=0, atol=1e-5 * expected.abs().max().item())
