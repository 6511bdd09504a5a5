"""Res2Net: the hierarchical split of the bottleneck against a float64 reference written from the paper's
equations and the authors' res2net.py (normal and stage-first blocks), widths per stage, the growing receptive
field of the groups, and argument checks."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from attnzoo import create_model


def _k(x, conv, bn, stride):
    y = F.conv2d(x, conv.weight, stride=stride, padding=1)
    return F.relu(F.batch_norm(y, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps))


def _model(randomise_bn):
    model = create_model("res2net50_26w_4s", layers=(2, 2, 1, 1), base_width=8, num_classes=5).double().eval()
    randomise_bn(model)
    return model


def test_normal_block_is_the_hierarchy_of_the_paper(randomise_bn):
    blk = _model(randomise_bn).stages[1][1]            # 128 planes: w = 128 * 8 / 64 = 16, s = 4
    assert (blk.split, blk.scale, blk.stage_first) == (16, 4, False)
    x = torch.randn(2, 64, 7, 9, dtype=torch.float64)
    x1, x2, x3, x4 = x.split(16, 1)
    y1 = _k(x1, blk.convs[0], blk.bns[0], 1)
    y2 = _k(x2 + y1, blk.convs[1], blk.bns[1], 1)
    y3 = _k(x3 + y2, blk.convs[2], blk.bns[2], 1)
    torch.testing.assert_close(blk.hierarchy(x), torch.cat([y1, y2, y3, x4], 1))


def test_stage_first_block_has_parallel_strided_convs_and_a_pooled_last_group(randomise_bn):
    blk = _model(randomise_bn).stages[1][0]
    assert blk.stage_first
    x = torch.randn(1, 64, 7, 9, dtype=torch.float64)
    parts = x.split(16, 1)
    expected = [_k(p, c, b, 2) for p, c, b in zip(parts[:3], blk.convs, blk.bns)]
    expected.append(F.avg_pool2d(parts[3], 3, 2, 1))   # zeros counted, as nn.AvgPool2d's default
    got = blk.hierarchy(x)
    torch.testing.assert_close(got, torch.cat(expected, 1))
    assert got.shape == (1, 64, 4, 5)


def test_block_output_is_residual_plus_shortcut(randomise_bn):
    blk = _model(randomise_bn).stages[0][1]
    x = torch.randn(1, 256, 6, 5, dtype=torch.float64)
    with torch.no_grad():
        expected = F.relu(blk.conv3(blk.hierarchy(blk.conv1(x))) + x)
    torch.testing.assert_close(blk(x), expected)


def test_later_groups_see_larger_receptive_fields():
    blk = create_model("res2net50_26w_4s", base_width=4).stages[0][1].eval()   # w = 4, s = 4
    x = torch.randn(1, 16, 15, 15, requires_grad=True)
    out = blk.hierarchy(x)
    extents = []
    for i in range(4):
        x.grad = None
        out[0, 4 * i:4 * i + 4, 7, 7].sum().backward(retain_graph=True)
        rows = x.grad[0].abs().sum((0, 2)) > 0
        extents.append(int(rows.sum()))
    assert extents == [3, 5, 7, 1]     # 3x3, then 5x5, 7x7; the last group passes through


def test_widths_of_the_registered_variants():
    with torch.device("meta"):
        for name, w, s in (("res2net50_26w_4s", 26, 4), ("res2net50_48w_2s", 48, 2), ("res2net50_14w_8s", 14, 8),
                           ("res2net50_26w_8s", 26, 8)):
            model = create_model(name)
            for stage, planes in zip(model.stages, (64, 128, 256, 512)):
                blk = stage[0]
                assert blk.conv1[0].out_channels == planes * w // 64 * s
                assert len(blk.convs) == s - 1 and blk.conv3[0].out_channels == 4 * planes
        assert [len(st) for st in create_model("res2net101_26w_4s").stages] == [3, 4, 23, 3]


def test_scale_one_is_a_plain_bottleneck_unit():
    blk = create_model("res2net50_26w_4s", scale=1, base_width=64).stages[0][1]
    assert len(blk.convs) == 1 and blk.pool is None and blk.conv1[0].out_channels == 64


@pytest.mark.parametrize("kwargs", [dict(scale=0), dict(base_width=0), dict(attn_site="mid", attn_layer="se"),
                                    dict(mid_layer=lambda c, s: nn.Identity())])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        create_model("res2net50_26w_4s", **kwargs)
