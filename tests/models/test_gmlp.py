"""gMLP: the block against a float64 reference written from the paper's equations, the near-identity gate at
initialisation, Table 1's sizes, the fixed patch grid (clear ValueError, img_size for other sizes) and bad arguments."""
import math

import pytest
import torch

from attnzoo import create_model
from attnzoo.registry import model_entry


def _ln(x, w, b, eps):
    mu = x.mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + eps) * w + b


def _gelu(x):
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def _small(**kw):
    return create_model("gmlp_ti16_224", img_size=(48, 32), depth=2, **kw).double().eval()


def test_block_is_gated_mlp_with_token_projection():
    model = _small()
    block = model.blocks[1]
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in block.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.3)
    x = torch.randn(2, 6, 128, dtype=torch.float64)  # a 3 x 2 patch grid
    m = block.mlp_channels
    z = _gelu(_ln(x, block.norm.weight, block.norm.bias, 1e-6) @ m.fc1.weight.T + m.fc1.bias)  # (2, 6, 768)
    z1, z2 = z[..., :384], z[..., 384:]
    w, b = m.gate.proj.weight, m.gate.proj.bias  # (6, 6) over tokens, (6,)
    gate = torch.einsum("ij,njc->nic", w, _ln(z2, m.gate.norm.weight, m.gate.norm.bias, 1e-5)) + b[None, :, None]
    expected = x + (z1 * gate) @ m.fc2.weight.T + m.fc2.bias
    torch.testing.assert_close(block(x, (3, 2)), expected)


def test_gate_starts_as_identity_so_blocks_start_as_ffns():
    torch.manual_seed(0)
    gate = _small().blocks[0].mlp_channels.gate
    z = torch.randn(2, 6, 768, dtype=torch.float64)
    assert torch.all(gate.proj.bias == 1) and gate.proj.weight.abs().max() < 1e-5
    torch.testing.assert_close(gate(z, (3, 2)), z[..., :384], rtol=0, atol=1e-4)


def test_head_pools_the_normalised_tokens():
    model = _small()
    x = torch.randn(1, 3, 48, 32, dtype=torch.float64)
    torch.nn.init.normal_(model.head.weight)
    torch.testing.assert_close(model(x), model.forward_features(x).mean(1) @ model.head.weight.T + model.head.bias)


def test_variants_are_table_1():
    for name, d_model in [("gmlp_ti16_224", 128), ("gmlp_s16_224", 256), ("gmlp_b16_224", 512)]:
        assert model_entry(name).defaults == dict(img_size=224, patch_size=16, embed_dim=d_model, depth=30,
                                                  mlp_ratio=6.0)
    with torch.device("meta"):
        model = create_model("gmlp_s16_224")
    mlp = model.blocks[0].mlp_channels
    assert (len(model.blocks), model.num_features) == (30, 256)
    assert (mlp.fc1.out_features, mlp.fc2.in_features) == (1536, 768)  # d_ffn 1536, split in two halves
    assert mlp.gate.proj.weight.shape == (196, 196) and model.stem.proj.kernel_size == (16, 16)


def test_gating_weights_are_resampled_bilinearly_on_another_grid():
    gate = create_model("gmlp_ti16_224", img_size=32, depth=1).double().blocks[0].mlp_channels.gate  # 2 x 2 grid
    with torch.no_grad():
        gate.proj.weight.copy_(torch.randn(4, 4, dtype=torch.float64))
        gate.proj.bias.copy_(torch.randn(4, dtype=torch.float64))
    # bilinear 2 -> 4 with half-pixel centres: source positions -0.25, 0.25, 0.75, 1.25, clamped at the edges
    up = torch.tensor([[1.0, 0.0], [0.75, 0.25], [0.25, 0.75], [0.0, 1.0]], dtype=torch.float64)
    resize = torch.kron(up, up)  # (16, 4): raster order over the 4 x 4 grid from the 2 x 2 grid
    w = resize @ gate.proj.weight @ resize.T * (4 / 16)
    b = resize @ gate.proj.bias
    z = torch.randn(2, 16, 768, dtype=torch.float64)
    v = torch.nn.functional.layer_norm(z[..., 384:], (384,), gate.norm.weight, gate.norm.bias, 1e-5)
    expected = z[..., :384] * (torch.einsum("ij,njc->nic", w, v) + b[None, :, None])
    torch.testing.assert_close(gate(z, (4, 4)), expected)


def test_grid_mismatch_error_is_the_papers_fixed_size_and_img_size_builds_for_another():
    model = create_model("gmlp_ti16_224", depth=1, grid_mismatch="error").eval()
    assert model(torch.randn(1, 3, 215, 210)).shape == (1, 1000)  # padded to the same 14 x 14 patches
    with pytest.raises(ValueError, match=r"built for a 14x14 patch grid, got 5x3"):
        model(torch.randn(1, 3, 67, 45))
    odd = create_model("gmlp_ti16_224", depth=1, img_size=(67, 45), num_classes=5, grid_mismatch="error")
    assert odd.blocks[0].mlp_channels.gate.proj.in_features == 5 * 3
    assert odd(torch.randn(1, 3, 67, 45)).shape == (1, 5)


@pytest.mark.parametrize("kwargs", [dict(num_classes=0), dict(img_size=0), dict(mlp_ratio=0.0), dict(depth=0),
                                    dict(embed_dim=3, mlp_ratio=1.0), dict(drop_path_rate=1.0),
                                    dict(grid_mismatch="crop")])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        create_model("gmlp_ti16_224", **kwargs)
