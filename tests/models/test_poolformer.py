"""PoolFormer: the pooling token mixer, the MetaFormer block and the two heads against float64 references written from
Eq. 4 of the paper and the authors' models/poolformer.py, stage shapes, variants and argument checks."""
import math

import pytest
import torch

from attnzoo import create_attention, create_model


def _pool_minus_x(x, k=3):
    """Eq. 4 written out with loops over the window: mean over the in-image pixels of the k x k window, minus x."""
    n, c, h, w = x.shape
    r = k // 2
    out = torch.empty_like(x)
    for i in range(h):
        for j in range(w):
            win = x[:, :, max(i - r, 0):i + r + 1, max(j - r, 0):j + r + 1]
            out[:, :, i, j] = win.mean((2, 3)) - x[:, :, i, j]
    return out


def _gn1(x, weight, bias, eps=1e-5):  # GroupNorm with one group: statistics over (C, H, W) of each sample
    mu = x.mean((1, 2, 3), keepdim=True)
    var = x.var((1, 2, 3), unbiased=False, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * weight[:, None, None] + bias[:, None, None]


def _gelu(x):
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def _randomise(module, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.3)


@pytest.mark.parametrize("k", [3, 5])
def test_pooling_is_average_over_pixels_inside_the_map_minus_input(k):
    x = torch.randn(2, 4, 6, 7, dtype=torch.float64)
    mixer = create_attention("poolformer_pool", 4, pool_size=k)
    torch.testing.assert_close(mixer(x), _pool_minus_x(x, k))
    # a constant map is a fixed point of the average, border included: the mixer outputs zeros
    torch.testing.assert_close(mixer(torch.full((1, 4, 5, 3), 2.5)), torch.zeros(1, 4, 5, 3))
    assert sum(p.numel() for p in mixer.parameters()) == 0


def test_pooling_arguments():
    with pytest.raises(ValueError, match="odd"):
        create_attention("poolformer_pool", 8, pool_size=4)
    with pytest.raises(ValueError):
        create_attention("poolformer_pool", 0)


def test_block_is_two_layer_scaled_residual_branches():
    model = create_model("poolformer_s12").double().eval()
    block = model.stages[1].blocks[1]
    _randomise(block)
    x = torch.randn(2, 128, 7, 9, dtype=torch.float64)
    x1 = x + block.layer_scale1[:, None, None] * _pool_minus_x(_gn1(x, block.norm1.weight, block.norm1.bias))
    y = _gn1(x1, block.norm2.weight, block.norm2.bias)
    y = torch.einsum("nchw,dc->ndhw", y, block.mlp.fc1.weight) + block.mlp.fc1.bias[:, None, None]
    y = torch.einsum("nchw,dc->ndhw", _gelu(y), block.mlp.fc2.weight) + block.mlp.fc2.bias[:, None, None]
    expected = x1 + block.layer_scale2[:, None, None] * y
    torch.testing.assert_close(block(x), expected)


def test_head_norm_map_is_the_authors_and_pooled_is_timms():
    feats = torch.randn(2, 512, 3, 4, dtype=torch.float64) * 3 + 1
    ours = create_model("poolformer_s12", num_classes=7).double().eval()
    _randomise(ours.norm)
    # authors: GroupNorm(1) on the map, then the spatial mean, then the classifier
    pooled = _gn1(feats, ours.norm.weight, ours.norm.bias).mean((2, 3))
    torch.testing.assert_close(ours.forward_head(feats), pooled @ ours.head.weight.T + ours.head.bias)
    timm_like = create_model("poolformer_s12", num_classes=7, head_norm="pooled").double().eval()
    timm_like.load_state_dict(ours.state_dict())
    v = feats.mean((2, 3))
    v = (v - v.mean(1, keepdim=True)) / torch.sqrt(v.var(1, unbiased=False, keepdim=True) + 1e-6)
    v = v * ours.norm.weight + ours.norm.bias
    torch.testing.assert_close(timm_like.forward_head(feats), v @ ours.head.weight.T + ours.head.bias)
    assert not torch.allclose(ours.forward_head(feats), timm_like.forward_head(feats))
    with pytest.raises(ValueError, match="head_norm"):
        create_model("poolformer_s12", head_norm="layer")


@pytest.mark.parametrize("size,grids", [((224, 224), [(56, 56), (28, 28), (14, 14), (7, 7)]),
                                        ((67, 45), [(17, 11), (9, 6), (5, 3), (3, 2)]),
                                        ((3, 5), [(1, 1)] * 4)])
def test_stage_shapes(size, grids):
    # stem: floor((H + 4 - 7) / 4) + 1; between stages: floor((H + 2 - 3) / 2) + 1 = ceil(H / 2)
    model = create_model("poolformer_s12").eval()
    x = torch.randn(1, 3, *size)
    shapes = []
    with torch.no_grad():
        x = model.stem(x)
        for stage in model.stages:
            x = stage(x)
            shapes.append(tuple(x.shape[1:]))
        assert model.forward_head(x).shape == (1, 1000)
    assert shapes == [(c, *g) for c, g in zip((64, 128, 320, 512), grids)]


def test_variants_depths_widths_and_layer_scale():
    expected = {"poolformer_s12": ([2, 2, 6, 2], 64, 1e-5), "poolformer_s24": ([4, 4, 12, 4], 64, 1e-5),
                "poolformer_s36": ([6, 6, 18, 6], 64, 1e-6), "poolformer_m36": ([6, 6, 18, 6], 96, 1e-6),
                "poolformer_m48": ([8, 8, 24, 8], 96, 1e-6)}
    for name, (depths, width, ls) in expected.items():
        with torch.device("meta"):
            model = create_model(name)
        assert [len(s.blocks) for s in model.stages] == depths, name
        assert model.stem.conv.out_channels == width and model.stem.conv.kernel_size == (7, 7)
        assert model.stem.conv.stride == (4, 4) and model.stem.conv.padding == (2, 2)
        assert model.stages[0].blocks[0].layer_scale1.shape == (width,)
        assert model.stages[0].blocks[0].mlp.fc1.out_features == 4 * width
    # layer-scale values need real tensors
    assert torch.all(create_model("poolformer_s12").stages[0].blocks[0].layer_scale2 == 1e-5)
    assert torch.all(create_model("poolformer_s36").stages[0].blocks[0].layer_scale2 == 1e-6)


def test_layer_scale_can_be_switched_off_and_drop_path_is_linear():
    model = create_model("poolformer_s12", layer_scale_init_value=0, drop_path_rate=0.1)
    blocks = [b for s in model.stages for b in s.blocks]
    assert all(b.layer_scale1 is None and b.layer_scale2 is None for b in blocks)
    assert [b.drop_path.drop_prob for b in blocks] == pytest.approx([0.1 * i / 11 for i in range(12)])


def test_any_registered_attention_can_be_the_token_mixer():
    model = create_model("poolformer_s12", token_mixer="simam", num_classes=3).eval()
    assert type(model.stages[0].blocks[0].token_mixer).__name__ == "SimAM"
    assert model(torch.randn(1, 3, 40, 50)).shape == (1, 3)


@pytest.mark.parametrize("kwargs", [dict(num_classes=0), dict(in_chans=-1), dict(depths=(2, 2, 6)),
                                    dict(dims=(64, 128, 320)), dict(pool_size=2), dict(mlp_ratio=0),
                                    dict(drop_path_rate=1.5)])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        create_model("poolformer_s12", **kwargs)


def test_too_small_input_is_a_clear_error():
    with pytest.raises(ValueError, match="at least 3x3"):
        create_model("poolformer_s12").eval()(torch.randn(1, 3, 2, 9))
