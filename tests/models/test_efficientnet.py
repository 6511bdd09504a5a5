"""EfficientNet and the shared MBConv blocks: TF "SAME" padding against hand-padded convolutions, an MBConv block
against a float64 reference written from the paper's equations, compound scaling against the official widths and
depths, the SE settings, stochastic depth, the PyTorch-padded option against timm's efficientnet_b0, errors."""
import functools
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from attnzoo import create_attention, create_model, load_timm_weights
from attnzoo.layers.mbconv import Conv2dSame, MBConv, conv2d


def _randomise_bn(model: nn.Module) -> None:
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.randn(m.num_features, generator=g) * 0.5 + 1)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.5)


@pytest.mark.parametrize("size,k,pads", [((8, 8), 3, (0, 1, 0, 1)), ((9, 7), 3, (1, 1, 1, 1)),
                                         ((8, 10), 5, (1, 2, 1, 2)), ((5, 6), 5, (1, 2, 2, 2))])
def test_same_padding_puts_the_extra_pixel_at_the_bottom_right(size, k, pads):
    """TF "SAME", stride 2: ceil(H/2) outputs, total padding (ceil(H/2) - 1) 2 + k - H, the odd pixel last."""
    conv = conv2d(3, 4, k, stride=2, padding="same")
    assert isinstance(conv, Conv2dSame)
    x = torch.randn(1, 3, *size)
    left, right, top, bottom = pads
    expected = F.conv2d(F.pad(x, (left, right, top, bottom)), conv.weight, stride=2)
    torch.testing.assert_close(conv(x), expected)
    assert expected.shape[-2:] == (math.ceil(size[0] / 2), math.ceil(size[1] / 2))


def test_same_and_symmetric_agree_at_stride_1_and_differ_at_stride_2():
    assert type(conv2d(3, 4, 3, 1, padding="same")) is nn.Conv2d
    sym = conv2d(3, 4, 3, 2, padding="symmetric")
    same = conv2d(3, 4, 3, 2, padding="same")
    same.weight.data.copy_(sym.weight.data)
    x = torch.randn(1, 3, 8, 8)
    assert sym(x).shape == same(x).shape == (1, 4, 4, 4)
    assert not torch.allclose(sym(x), same(x))  # PyTorch pads top/left by one, TF bottom/right


def test_mbconv_matches_a_float64_reference():
    """1x1 expand -> BN -> SiLU -> 5x5 depthwise -> BN -> SiLU -> SE -> 1x1 -> BN, plus the input (Sandler et al.;
    Tan & Le Table 1), with TF padding at stride 1 (symmetric for odd kernels)."""
    se = functools.partial(create_attention, "se", rd_channels=7, act="silu")
    block = MBConv(16, 16, 48, kernel_size=5, act="silu", attn=se).double().eval()
    _randomise_bn(block)
    x = torch.randn(2, 16, 9, 7, dtype=torch.float64)

    def bn(m, y):
        return (y - m.running_mean[:, None, None]) / torch.sqrt(m.running_var[:, None, None] + m.eps) \
            * m.weight[:, None, None] + m.bias[:, None, None]

    y = F.silu(bn(block.bn1, F.conv2d(x, block.conv_pw.weight)))
    y = F.silu(bn(block.bn2, F.conv2d(y, block.conv_dw.weight, padding=2, groups=48)))
    z = y.mean((2, 3), keepdim=True)
    z = F.silu(F.conv2d(z, block.se.fc1.weight, block.se.fc1.bias))
    y = y * torch.sigmoid(F.conv2d(z, block.se.fc2.weight, block.se.fc2.bias))
    expected = x + bn(block.bn3, F.conv2d(y, block.conv_pwl.weight))
    torch.testing.assert_close(block(x), expected)


# The official efficientnet_builder.py's round_filters/round_repeats applied by hand to Table 1:
# (stem, stage widths, head, blocks per stage)
OFFICIAL = {
    "efficientnet_b0": (32, (16, 24, 40, 80, 112, 192, 320), 1280, (1, 2, 2, 3, 3, 4, 1)),
    "efficientnet_b3": (40, (24, 32, 48, 96, 136, 232, 384), 1536, (2, 3, 3, 5, 5, 6, 2)),
    "efficientnet_b7": (64, (32, 48, 80, 160, 224, 384, 640), 2560, (4, 7, 7, 10, 10, 13, 4)),
}


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_compound_scaling_gives_the_official_widths_and_depths(name):
    stem, widths, head, depths = OFFICIAL[name]
    with torch.device("meta"):
        model = create_model(name)
    assert model.conv_stem.out_channels == stem
    assert tuple(len(s) for s in model.blocks) == depths
    assert tuple(s[-1].conv_pwl.out_channels if hasattr(s[-1], "conv_pwl") else s[-1].conv_pw.out_channels
                 for s in model.blocks) == widths
    assert model.conv_head.out_channels == model.num_features == head


def test_each_scale_has_its_official_dropout():
    with torch.device("meta"):
        assert [create_model(f"efficientnet_b{i}").dropout.p for i in (1, 2, 5, 6)] == [0.2, 0.3, 0.4, 0.5]
        assert create_model("efficientnet_b0", width=1.3, drop_rate=0.25).dropout.p == 0.25
        with pytest.raises(ValueError, match="no rate for width=1.3"):
            create_model("efficientnet_b0", width=1.3)


def test_se_squeezes_a_quarter_of_the_block_input_with_silu_and_sigmoid():
    model = create_model("efficientnet_b0")
    block = model.blocks[2][0]  # input 24 channels, expanded 144
    assert block.conv_dw.out_channels == 144
    assert block.se.fc1.out_channels == 6 and block.se.fc2.out_channels == 144
    assert isinstance(block.se.act, nn.SiLU) and isinstance(block.se.gate, nn.Sigmoid)
    assert model.blocks[0][0].se.fc1.out_channels == 8  # first block: 32 -> max(1, int(0.25 * 32))


def test_attn_layer_swaps_the_se_for_any_registered_attention():
    model = create_model("efficientnet_b0", attn_layer="eca", num_classes=10)
    blocks = [b for s in model.blocks for b in s]
    assert all(type(b.se).__name__ != "SqueezeExcite" and not isinstance(b.se, nn.Identity) for b in blocks)
    assert model(torch.randn(1, 3, 33, 47)).shape == (1, 10)
    plain = create_model("efficientnet_b0", attn_layer=None, num_classes=10)
    assert all(isinstance(b.se, nn.Identity) for s in plain.blocks for b in s)


def test_stochastic_depth_rises_with_the_block_index():
    model = create_model("efficientnet_b0", drop_path_rate=0.2)
    blocks = [b for s in model.blocks for b in s]
    rates = {i: b.drop_path.drop_prob for i, b in enumerate(blocks) if b.has_skip}
    assert rates == {i: pytest.approx(0.2 * i / 16) for i in rates}
    assert not blocks[0].has_skip and blocks[2].has_skip  # 32 -> 16 at the first block; 24 -> 24 in stage 2


def test_stage_strides_at_odd_sizes():
    model = create_model("efficientnet_b0", num_classes=10).eval()
    x = torch.randn(1, 3, 67, 45)
    sizes, h = [], model.act1(model.bn1(model.conv_stem(x)))
    for stage in model.blocks:
        h = stage(h)
        sizes.append(tuple(h.shape[-2:]))
    assert sizes == [(34, 23), (17, 12), (9, 6), (5, 3), (5, 3), (3, 2), (3, 2)]  # ceil at each stride 2


def test_pytorch_padding_option_gives_timm_efficientnet_b0_logits():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    theirs = timm.create_model("efficientnet_b0").eval()
    _randomise_bn(theirs)
    ours = create_model("efficientnet_b0", padding="symmetric", bn_eps=1e-5, bn_momentum=0.1).eval()
    load_timm_weights(ours, theirs)
    x = torch.randn(1, 3, 65, 47)
    with torch.no_grad():
        expected = theirs(x)
        scale = expected.abs().max().item()
        torch.testing.assert_close(ours(x), expected, rtol=0, atol=1e-5 * scale)
        tf = create_model("efficientnet_b0").eval()
        load_timm_weights(tf, theirs)
        assert (tf(x) - expected).abs().max() > 1e-3 * scale  # "SAME" padding computes something else


@pytest.mark.parametrize("kwargs", [dict(padding="valid"), dict(width=0), dict(depths=(1,) * 8), dict(depths=(1, 0)),
                                    dict(head="mlp"), dict(se_from="out"), dict(drop_rate=1.0)])
def test_bad_arguments_are_value_errors(kwargs):
    with pytest.raises(ValueError):
        create_model("efficientnet_b0", **kwargs)


def test_wrong_input_rank_is_a_value_error():
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        create_model("efficientnet_b0")(torch.randn(3, 32, 32))


def test_conv_layer_replaces_the_depthwise_convolutions():
    model = create_model("efficientnet_b0", conv_layer="mixconv", depths=(1,) * 7, num_classes=10).eval()
    blocks = [b for s in model.blocks for b in s]
    assert all(type(b.conv_dw).__name__ == "MixConv2d" for b in blocks)
    assert type(model.conv_stem).__name__ == "Conv2dSame"  # the stem and the 1x1 convs stay plain
    assert model(torch.randn(1, 3, 33, 47)).shape == (1, 10)
