"""PyramidNet: additive widening (closed form and the README's output widths), the pyramidal units against a
float64 functional reference, the zero-padded, average-pooled shortcut, stage shapes, the attention slot and
argument checks."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from attnzoo import create_model
from attnzoo.registry import model_entry
from attnzoo.models.pyramidnet import PyramidBlock, pyramid_widths


def _bn(x, bn):
    return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)


def test_widths_grow_by_alpha_over_n_at_every_unit():
    widths = pyramid_widths(16, 48, (18, 18, 18))
    assert len(widths) == 54 and widths[-1] == 64
    assert widths == [int(16 + k * 48 / 54 + 0.5) for k in range(1, 55)]       # D_k = round(D_0 + k alpha / N)
    assert set(b - a for a, b in zip([16] + widths, widths)) <= {0, 1}         # never more than one channel a unit


def test_output_widths_are_the_readme_s():
    # "Output feat. dimension" of the tables in github.com/jhkim89/PyramidNet
    expected = {"pyramidnet110_a48": 64, "pyramidnet110_a84": 100, "pyramidnet110_a270": 286,
                "pyramidnet164_a48_bottleneck": 256, "pyramidnet272_a200_bottleneck": 864,
                "pyramidnet200_a300_imagenet": 1456}
    got = {}
    for name in expected:
        kw = model_entry(name).defaults
        start, factor = (64 if kw.get("stem") == "imagenet" else 16), (4 if kw.get("block") == "bottleneck" else 1)
        got[name] = pyramid_widths(start, kw["alpha"], kw["layers"])[-1] * factor
    assert got == expected
    # rows of the README not registered: bottleneck (n, alpha) -> width
    for n, alpha, width in ((18, 84, 400), (18, 270, 1144), (22, 240, 1024), (26, 220, 944)):
        assert pyramid_widths(16, alpha, (n, n, n))[-1] * 4 == width
    assert pyramid_widths(64, 450, (3, 24, 36, 3))[-1] * 4 == 2056
    with torch.device("meta"):
        bottleneck = create_model("pyramidnet272_a200_bottleneck")
    assert bottleneck.num_features == 864 and [len(s) for s in bottleneck.stages] == [30, 30, 30]   # depth 9n + 2


@pytest.mark.parametrize("block", ["basic", "bottleneck"])
def test_unit_matches_a_functional_reference(block, randomise_bn):
    unit = randomise_bn(PyramidBlock(6, 8 if block == "basic" else 3, stride=2, block=block)).double().eval()
    x = torch.randn(2, 6, 9, 7, dtype=torch.float64)
    r = unit.residual
    if block == "basic":   # BN - conv3x3/2 - BN - ReLU - conv3x3 - BN: no ReLU before the first convolution
        y = F.conv2d(_bn(x, r[0]), r[1].weight, stride=2, padding=1)
        y = _bn(F.conv2d(F.relu(_bn(y, r[2])), r[4].weight, padding=1), r[5])
    else:                  # BN - 1x1 - BN - ReLU - 3x3/2 - BN - ReLU - 1x1 (4 D) - BN
        y = F.relu(_bn(F.conv2d(_bn(x, r[0]), r[1].weight), r[2]))
        y = F.relu(_bn(F.conv2d(y, r[4].weight, stride=2, padding=1), r[5]))
        y = _bn(F.conv2d(y, r[7].weight), r[8])
    # shortcut: 2x2 average (the last, partial row/column averages what is there), then zero channels
    pooled = F.avg_pool2d(F.pad(x, (0, 1, 0, 1)), 2) / F.avg_pool2d(F.pad(torch.ones_like(x), (0, 1, 0, 1)), 2)
    shortcut = torch.cat([pooled, torch.zeros(2, y.shape[1] - 6, 5, 4, dtype=x.dtype)], 1)
    torch.testing.assert_close(unit(x), y + shortcut)
    assert unit(x).shape == (2, 8 if block == "basic" else 12, 5, 4)


def test_shortcut_is_the_input_padded_with_zero_channels():
    unit = PyramidBlock(4, 7).eval()
    nn.init.zeros_(unit.residual[-1].weight)   # last BN off: only the shortcut is left
    x = torch.randn(1, 4, 5, 6)
    with torch.no_grad():
        out = unit(x)
    assert torch.equal(out[:, :4], x) and torch.equal(out[:, 4:], torch.zeros(1, 3, 5, 6))


def test_cifar_stages_and_stem_without_relu():
    model = create_model("pyramidnet110_a48", layers=(2, 1, 1), alpha=6).eval()
    assert [type(m) for m in model.stem] == [nn.Conv2d, nn.BatchNorm2d]       # conv - BN, no ReLU
    shapes = []
    for stage in model.stages:
        stage.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape)))
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    assert shapes == [(1, 19, 32, 32), (1, 21, 16, 16), (1, 22, 8, 8)]        # 16 + 1.5 k: 17.5 -> 18, 19, 20.5 -> 21, 22


def test_imagenet_stem_and_stage_strides():
    model = create_model("pyramidnet200_a300_imagenet", layers=(1, 1, 1, 1), alpha=8, num_classes=3).eval()
    shapes = []
    for stage in model.stages:
        stage.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape)))
    with torch.no_grad():
        assert model(torch.randn(1, 3, 67, 45)).shape == (1, 3)
    assert shapes == [(1, 264, 17, 12), (1, 272, 9, 6), (1, 280, 5, 3), (1, 288, 3, 2)]


def test_attention_acts_on_the_residual_branch_after_its_last_bn():
    seen = []

    class Zero(nn.Module):
        def forward(self, x):
            seen.append(x.shape[1])
            return torch.zeros_like(x)

    model = create_model("pyramidnet110_a48", layers=(1, 1, 1), alpha=3, attn_layer=lambda c: Zero()).eval()
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        out = model.stages[0](model.stem(x))
    assert seen == [17]
    torch.testing.assert_close(out[:, :16], model.stem(x))   # residual attended to zero: the shortcut remains


def test_conv_layer_replaces_the_3x3_convolutions():
    made = []

    def conv(cin, cout, k, stride=1, groups=1):
        made.append((k, stride))
        return nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False)

    create_model("pyramidnet164_a48_bottleneck", layers=(1, 1, 1), conv_layer=conv)
    assert made == [(3, 1), (3, 2), (3, 2)]


@pytest.mark.parametrize("kwargs", [dict(layers=()), dict(layers=(2, 0)), dict(alpha=-1), dict(block="wide"),
                                    dict(stem="tiny"), dict(num_classes=0), dict(drop_rate=1.0)])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        create_model("pyramidnet110_a48", **kwargs)


def test_rejects_unbatched_input():
    with pytest.raises(ValueError, match="N, C, H, W"):
        create_model("pyramidnet110_a48", layers=(1, 1, 1))(torch.randn(3, 8, 8))
