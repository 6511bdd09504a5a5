"""MLP-Mixer: the Mixer layer against a float64 reference written from Eq. 1 (with the authors' tanh GELU), the flax
"SAME" patch padding, the resampled token-mixing weights against a hand-computed bilinear matrix, variants and
argument checks."""
import math

import pytest
import torch
import torch.nn.functional as F

from attnzoo import create_model


def _gelu_tanh(x):  # JAX's default jax.nn.gelu (approximate=True), used by flax's nn.gelu
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def _ln(x, w, b, eps=1e-6):
    mu = x.mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + eps) * w + b


def _mlp(x, m):
    return _gelu_tanh(x @ m.fc1.weight.T + m.fc1.bias) @ m.fc2.weight.T + m.fc2.bias


def _randomise(module, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.2)


def _small(**kw):
    return create_model("mixer_s16_224", img_size=32, depth=2, **kw).double().eval()


def test_mixer_layer_is_token_then_channel_mixing():
    model = _small()
    block = model.blocks[1]
    _randomise(block)
    x = torch.randn(2, 4, 512, dtype=torch.float64)  # 2 x 2 patches
    u = x + _mlp(_ln(x, block.norm1.weight, block.norm1.bias).transpose(1, 2), block.mlp_tokens).transpose(1, 2)
    expected = u + _mlp(_ln(u, block.norm2.weight, block.norm2.bias), block.mlp_channels)
    torch.testing.assert_close(block(x, (2, 2)), expected)


def test_gelu_is_the_authors_tanh_form_by_default_and_exact_on_request():
    assert create_model("mixer_s16_224").blocks[0].mlp_tokens.act.approximate == "tanh"
    assert create_model("mixer_s16_224", gelu="exact").blocks[0].mlp_channels.act.approximate == "none"


def test_stem_pads_like_flax_same_and_head_pools_all_patches():
    model = _small()
    _randomise(model)
    x = torch.randn(1, 3, 40, 50, dtype=torch.float64)  # pads 8 rows (4 + 4) and 14 columns (7 + 7)
    padded = torch.zeros(1, 3, 48, 64, dtype=torch.float64)
    padded[:, :, 4:44, 7:57] = x
    conv = model.stem.proj
    tokens, grid = model.stem(x)
    assert grid == (3, 4)
    torch.testing.assert_close(tokens, F.conv2d(padded, conv.weight, conv.bias, stride=16).flatten(2).transpose(1, 2))
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    feats = model.forward_features(x)
    torch.testing.assert_close(model(x), feats.mean(1) @ model.head.weight.T + model.head.bias)


def test_token_mixing_weights_are_resampled_bilinearly_on_another_grid():
    model = _small()
    block = model.blocks[0]
    _randomise(block)
    m = block.mlp_tokens
    # bilinear 2 -> 4 with half-pixel centres: source positions -0.25, 0.25, 0.75, 1.25, clamped at the edges
    up = torch.tensor([[1.0, 0.0], [0.75, 0.25], [0.25, 0.75], [0.0, 1.0]], dtype=torch.float64)
    resize = lambda t: torch.einsum("ih,jw,...hw->...ij", up, up, t.reshape(*t.shape[:-1], 2, 2)).flatten(-2)  # noqa
    w1 = resize(m.fc1.weight) * (4 / 16)
    w2 = resize(m.fc2.weight.T).T
    b2 = resize(m.fc2.bias)
    x = torch.randn(2, 16, 512, dtype=torch.float64)
    y = x.transpose(1, 2)
    expected = (_gelu_tanh(y @ w1.T + m.fc1.bias) @ w2.T + b2).transpose(1, 2)
    torch.testing.assert_close(block.token_mixing(x, (4, 4)), expected)
    assert model(torch.randn(1, 3, 64, 64, dtype=torch.float64)).shape == (1, 1000)


def test_grid_mismatch_error_is_the_authors_behaviour():
    model = create_model("mixer_s16_224", grid_mismatch="error").eval()
    assert model(torch.randn(1, 3, 224, 224)).shape == (1, 1000)
    assert model(torch.randn(1, 3, 220, 210)).shape == (1, 1000)  # padded to the same 14 x 14 patches
    with pytest.raises(ValueError, match="14x14 patch grid, got 5x4"):
        model(torch.randn(1, 3, 67, 61))


@pytest.mark.parametrize("name,cfg", [("mixer_s16_224", (8, 512, 256, 2048)), ("mixer_b16_224", (12, 768, 384, 3072)),
                                      ("mixer_l16_224", (24, 1024, 512, 4096))])
def test_variants_are_table_1(name, cfg):
    with torch.device("meta"):
        model = create_model(name)
    depth, c, ds, dc = cfg
    blk = model.blocks[0]
    assert (len(model.blocks), model.num_features) == (depth, c)
    assert (blk.mlp_tokens.fc1.in_features, blk.mlp_tokens.fc1.out_features) == (196, ds)
    assert blk.mlp_channels.fc1.out_features == dc and model.stem.proj.kernel_size == (16, 16)


def test_head_starts_at_zero_and_kernels_are_lecun_normal():
    torch.manual_seed(0)
    model = create_model("mixer_b16_224")
    assert not model.head.weight.any() and not model.head.bias.any()
    w = model.blocks[0].mlp_channels.fc1.weight  # fan_in 768: std 1/sqrt(768), cut at 2 std of the unit normal
    assert w.std().item() == pytest.approx(768 ** -0.5, rel=0.02)
    assert w.abs().max().item() <= 2 * 768 ** -0.5 / 0.87962566103423978 + 1e-6


@pytest.mark.parametrize("kwargs", [dict(num_classes=0), dict(img_size=230), dict(gelu="relu"),
                                    dict(grid_mismatch="crop"), dict(depth=0), dict(drop_path_rate=1.0)])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        create_model("mixer_s16_224", **kwargs)
