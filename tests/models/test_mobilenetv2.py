"""MobileNetV2 (Sandler et al., CVPR 2018) as registered: Table 2's widths and strides, and the sizes of the authors'
released checkpoints (TF-slim nets/mobilenet/README.md: parameters without BatchNorm's scale and shift, 1001 classes,
and multiply-adds at 224 x 224)."""
import pytest
import torch
import torch.nn as nn

from attnzoo import create_model
from attnzoo.nbtools import count_macs, count_params

# width -> (parameters in M, MMACs) of mobilenet_v2_<width>_224 in the authors' checkpoint table
README = {"035": (1.66, 59), "050": (1.95, 97), "075": (2.61, 209), "100": (3.47, 300), "140": (6.06, 582)}


@pytest.mark.parametrize("width", sorted(README))
def test_sizes_match_the_authors_checkpoints(width):
    model = create_model(f"mobilenetv2_{width}", num_classes=1001)
    bn = sum(p.numel() for m in model.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters())
    params, macs = README[width]
    assert round((count_params(model) - bn) / 1e6, 2) == params
    assert count_macs(model, torch.zeros(1, 3, 224, 224)) / 1e6 == pytest.approx(macs, rel=0.01)


def test_widths_and_strides_follow_table_2():
    model = create_model("mobilenetv2_100").eval()
    # Table 2: (t, c, n, s) rows after a 32-channel stride-2 stem; sizes for a 224 x 224 input.
    rows = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
    expected, size, channels = [], 112, 32
    for t, c, n, s in rows:
        for i in range(n):
            size //= s if i == 0 else 1
            expected.append((channels * t, c, size))
            channels = c
    outputs = []
    blocks = [b for row in model.blocks for b in row]
    hooks = [b.register_forward_hook(lambda m, i, o: outputs.append(o.shape)) for b in blocks]
    with torch.no_grad():
        model(torch.zeros(1, 3, 224, 224))
    for h in hooks:
        h.remove()
    hidden = [(b.conv_pwl if hasattr(b, "conv_pwl") else b.conv_pw).in_channels for b in blocks]
    assert [(h, o[1], o[2]) for h, o in zip(hidden, outputs)] == expected
    assert [len(row) for row in model.blocks] == [n for _, _, n, _ in rows]
    assert model.conv_head.out_channels == 1280


@pytest.mark.parametrize("width,features", [("035", 1280), ("050", 1280), ("075", 1280), ("100", 1280), ("140", 1792)])
def test_last_layer_keeps_1280_channels_below_width_one(width, features):
    model = create_model(f"mobilenetv2_{width}")
    assert model.num_features == features and model.classifier.in_features == features


def test_dropout_is_the_slim_training_scope_s():
    assert create_model("mobilenetv2_100").dropout.p == pytest.approx(0.2)


def test_blocks_are_the_shared_mbconv_ones_with_the_attention_after_the_depthwise_conv():
    from attnzoo.layers.mbconv import DepthwiseSeparable, MBConv

    seen = []
    model = create_model("mobilenetv2_035", attn_layer=lambda c: seen.append(c) or nn.Identity())
    assert isinstance(model.blocks[0][0], DepthwiseSeparable) and isinstance(model.blocks[0][0].se, nn.Identity)
    assert all(isinstance(b, MBConv) for row in model.blocks[1:] for b in row)
    assert seen == [b.conv_dw.out_channels for row in model.blocks[1:] for b in row]   # t = 6 blocks only
    assert [b.has_skip for b in model.blocks[2]] == [False, True, True]


def test_conv_layer_replaces_every_convolution_of_the_blocks():
    made = []

    def conv(cin, cout, k, stride=1, groups=1):
        made.append(k)
        return nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False)

    model = create_model("mobilenetv2_035", conv_layer=conv)
    assert len(made) == 2 + 3 * 16 and made.count(3) == 17                 # expand, depthwise, project per block
    assert type(model.conv_stem) is nn.Conv2d and type(model.conv_head) is nn.Conv2d   # stem and head stay plain
