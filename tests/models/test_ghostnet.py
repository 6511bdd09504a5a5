"""GhostNet: the Ghost bottleneck against a float64 reference of the authors' block (stride 1 and 2, SE with the
hard-sigmoid gate), Table 1 (widths, strides, SE slots), the head on the pooled vector, and argument checks."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from attnzoo import create_model


def _bn(x, bn):
    return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)


def _ghost(x, g, relu):
    act = F.relu if relu else (lambda t: t)
    p = act(_bn(F.conv2d(x, g.primary_conv[0].weight), g.primary_conv[1]))
    c = act(_bn(F.conv2d(p, g.cheap_operation[0].weight, padding=1, groups=p.shape[1]), g.cheap_operation[1]))
    return torch.cat([p, c], 1)[:, :g.out_channels]


def _se(x, se):
    z = x.mean((2, 3))
    z = F.relu(z @ se.fc1.weight.flatten(1).T + se.fc1.bias) @ se.fc2.weight.flatten(1).T + se.fc2.bias
    return x * (F.relu6(z + 3) / 6)[:, :, None, None]        # the authors' hard_sigmoid


def test_strided_bottleneck_with_se_matches_the_authors_block(randomise_bn):
    model = create_model("ghostnet_100").double().eval()
    randomise_bn(model)
    blk = model.blocks[3][0]                                   # k5, 24 -> 72 -> 40, SE, stride 2
    x = torch.randn(2, 24, 11, 9, dtype=torch.float64)
    y = _ghost(x, blk.ghost1, True)
    y = _bn(F.conv2d(y, blk.conv_dw.weight, stride=2, padding=2, groups=72), blk.bn_dw)
    y = _ghost(_se(y, blk.se), blk.ghost2, False)
    s = blk.shortcut
    short = _bn(F.conv2d(_bn(F.conv2d(x, s[0].weight, stride=2, padding=2, groups=24), s[1]), s[2].weight), s[3])
    torch.testing.assert_close(blk(x), y + short)
    assert blk.se.fc1.out_channels == 20                        # make_divisible(72 / 4, 4)


def test_stride_one_bottleneck_has_identity_shortcut(randomise_bn):
    model = create_model("ghostnet_100").double().eval()
    randomise_bn(model)
    blk = model.blocks[6][0]                                    # k3, 80 -> 200 -> 80, no SE
    x = torch.randn(1, 80, 5, 7, dtype=torch.float64)
    torch.testing.assert_close(blk(x), _ghost(_ghost(x, blk.ghost1, True), blk.ghost2, False) + x)


def test_table_1():
    model = create_model("ghostnet_100").eval()
    blocks = [b for stage in model.blocks[:-1] for b in stage]
    assert [b.ghost2.out_channels for b in blocks] == [16, 24, 24, 40, 40, 80, 80, 80, 80, 112, 112, 160, 160, 160,
                                                       160, 160]
    assert [b.ghost1.out_channels for b in blocks] == [16, 48, 72, 72, 120, 240, 200, 184, 184, 480, 672, 672, 960,
                                                       960, 960, 960]
    assert [not isinstance(b.se, nn.Identity) for b in blocks] == [False] * 3 + [True] * 2 + [False] * 4 + \
        [True] * 3 + [False, True, False, True]
    assert [i for i, b in enumerate(blocks) if not isinstance(b.conv_dw, nn.Identity)] == [1, 3, 5, 11]
    with torch.no_grad():
        feats = model.forward_features(torch.randn(1, 3, 67, 45))
    assert feats.shape == (1, 960, 3, 2)


def test_head_works_on_the_pooled_vector():
    model = create_model("ghostnet_100", num_classes=7).double().eval()
    feats = torch.randn(2, 960, 3, 2, dtype=torch.float64)
    pooled = feats.mean((2, 3))
    hidden = F.relu(pooled @ model.conv_head.weight.flatten(1).T + model.conv_head.bias)
    expected = hidden @ model.classifier.weight.T + model.classifier.bias
    model.forward_features = lambda x: feats
    torch.testing.assert_close(model(torch.zeros(1)), expected)


def test_attention_slots_take_other_modules_or_none():
    plain = create_model("ghostnet_050", attn_layer=None)
    assert all(isinstance(b.se, nn.Identity) for stage in plain.blocks[:-1] for b in stage)
    eca = create_model("ghostnet_050", attn_layer="eca")
    assert sum(not isinstance(b.se, nn.Identity) for stage in eca.blocks[:-1] for b in stage) == 7


@pytest.mark.parametrize("kwargs", [dict(width=0), dict(num_classes=0), dict(drop_rate=1.0), dict(attn_layer="nope")])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        create_model("ghostnet_100", **kwargs)
