"""ConvNeXt: the block and the downsampling layers against float64 references written from the paper's equations
and the authors' models/convnext.py, stage shapes, layer scale, stochastic depth and argument checks."""
import math

import pytest
import torch
import torch.nn.functional as F

from attnzoo import create_model


def _ln_channels_first(x, weight, bias, eps=1e-6):  # the authors' LayerNorm(data_format="channels_first")
    u = x.mean(1, keepdim=True)
    s = (x - u).pow(2).mean(1, keepdim=True)
    return weight[:, None, None] * (x - u) / torch.sqrt(s + eps) + bias[:, None, None]


def _gelu(x):
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def _randomise(module, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.3)


def test_block_is_the_inverted_bottleneck_with_layer_scale():
    model = create_model("convnext_tiny").double().eval()
    block = model.stages[1].blocks[0]
    _randomise(block)  # gamma away from 1e-6 so that the residual branch counts
    x = torch.randn(2, 192, 9, 11, dtype=torch.float64)
    y = F.conv2d(x, block.conv_dw.weight, block.conv_dw.bias, padding=3, groups=192)
    y = _ln_channels_first(y, block.norm.weight, block.norm.bias)
    y = torch.einsum("nchw,dc->ndhw", y, block.mlp.fc1.weight) + block.mlp.fc1.bias[:, None, None]
    y = torch.einsum("nchw,dc->ndhw", _gelu(y), block.mlp.fc2.weight) + block.mlp.fc2.bias[:, None, None]
    expected = x + block.gamma[:, None, None] * y
    torch.testing.assert_close(block(x), expected)


def test_stem_and_downsampling_normalise_over_channels():
    model = create_model("convnext_tiny").double().eval()
    _randomise(model.stem)
    _randomise(model.stages[2].downsample)
    x = torch.randn(1, 3, 37, 45, dtype=torch.float64)
    conv, norm = model.stem
    expected = _ln_channels_first(F.conv2d(x, conv.weight, conv.bias, stride=4), norm.weight, norm.bias)
    torch.testing.assert_close(model.stem(x), expected)
    assert expected.shape == (1, 96, 9, 11)  # 4x4 windows, stride 4: the incomplete last rows/columns are dropped
    norm, conv = model.stages[2].downsample
    z = torch.randn(1, 192, 9, 11, dtype=torch.float64)
    expected = F.conv2d(_ln_channels_first(z, norm.weight, norm.bias), conv.weight, conv.bias, stride=2)
    torch.testing.assert_close(model.stages[2].downsample(z), expected)
    assert expected.shape == (1, 384, 4, 5)


@pytest.mark.parametrize("size,grids", [((224, 224), [56, 28, 14, 7]), ((67, 45), [(16, 11), (8, 5), (4, 2), (2, 1)])])
def test_stage_shapes(size, grids):
    model = create_model("convnext_tiny").eval()
    x = torch.randn(1, 3, *size)
    shapes = []
    with torch.no_grad():
        x = model.stem(x)
        for stage in model.stages:
            x = stage(x)
            shapes.append(tuple(x.shape[1:]))
    grids = [g if isinstance(g, tuple) else (g, g) for g in grids]
    assert shapes == [(c, *g) for c, g in zip((96, 192, 384, 768), grids)]


def test_variants_are_the_papers_sizes():
    depths = {n: [len(s.blocks) for s in create_model(n).stages] for n in ("convnext_tiny", "convnext_small")}
    assert depths == {"convnext_tiny": [3, 3, 9, 3], "convnext_small": [3, 3, 27, 3]}
    with torch.device("meta"):
        base, large = create_model("convnext_base"), create_model("convnext_large")
    assert [s.blocks[0].conv_dw.in_channels for s in base.stages] == [128, 256, 512, 1024]
    assert [s.blocks[0].conv_dw.in_channels for s in large.stages] == [192, 384, 768, 1536]
    assert base.stages[0].blocks[0].mlp.fc1.out_features == 4 * 128 and base.stages[0].blocks[0].conv_dw.kernel_size == (7, 7)


def test_layer_scale_init_and_switch_off():
    model = create_model("convnext_tiny")
    gammas = [b.gamma for s in model.stages for b in s.blocks]
    assert all(torch.all(g == 1e-6) for g in gammas)
    without = create_model("convnext_tiny", layer_scale_init_value=0)
    assert all(b.gamma is None for s in without.stages for b in s.blocks)
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n(model) - n(without) == 3 * 96 + 3 * 192 + 9 * 384 + 3 * 768


def test_stochastic_depth_rises_linearly_over_all_blocks():
    model = create_model("convnext_tiny", drop_path_rate=0.4)
    rates = [b.drop_path.drop_prob for s in model.stages for b in s.blocks]
    assert len(rates) == 18
    assert rates == pytest.approx([0.4 * i / 17 for i in range(18)])


def test_head_init_scale_multiplies_the_initial_classifier():
    torch.manual_seed(0)
    ref = create_model("convnext_tiny", num_classes=10)
    torch.manual_seed(0)
    scaled = create_model("convnext_tiny", num_classes=10, head_init_scale=0.25)
    torch.testing.assert_close(scaled.head.weight, 0.25 * ref.head.weight)


def test_pooled_features_are_layer_normalised_before_the_head():
    model = create_model("convnext_tiny", num_classes=5).double().eval()
    feats = torch.randn(2, 768, 3, 4, dtype=torch.float64)
    pooled = feats.mean((2, 3))
    pooled = (pooled - pooled.mean(1, keepdim=True)) / torch.sqrt(pooled.var(1, unbiased=False, keepdim=True) + 1e-6)
    expected = (pooled * model.norm.weight + model.norm.bias) @ model.head.weight.T + model.head.bias
    torch.testing.assert_close(model.forward_head(feats), expected)


@pytest.mark.parametrize("kwargs", [dict(num_classes=0), dict(in_chans=0), dict(depths=(3, 3, 9)),
                                    dict(dims=(96, 192, 384, 0)), dict(drop_path_rate=1.0)])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        create_model("convnext_tiny", **kwargs)


def test_too_small_input_is_a_clear_error():
    model = create_model("convnext_tiny").eval()
    with pytest.raises(ValueError, match="at least 32x32"):
        model(torch.randn(1, 3, 31, 64))
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 1000)


def test_builds_on_the_meta_device():
    with torch.device("meta"):
        model = create_model("convnext_large", drop_path_rate=0.5)
    assert model.head.weight.is_meta
