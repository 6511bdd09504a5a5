import pytest
import torch

from attnzoo import create_attention
from attnzoo.attention.muse import convert_official_state_dict


def _official_reference(sd, x, num_heads, kernel_sizes):
    """The released ParallelMultiheadAttention (encoder, attn_dynamic_cat=1, dynamic_gate=1) in float64, written
    from its equations with explicit loops over positions: one sequence x of shape (L, C)."""
    sd = {k: v.double() for k, v in sd.items()}
    x = x.double()
    length, c = x.shape
    d = c // num_heads
    q, k, v = (x @ sd["in_proj_weight"].T + sd["in_proj_bias"]).chunk(3, dim=-1)
    attn = torch.zeros(length, c, dtype=torch.float64)
    for h in range(num_heads):
        s = slice(h * d, (h + 1) * d)
        attn[:, s] = torch.softmax(q[:, s] * d ** -0.5 @ k[:, s].T, dim=-1) @ v[:, s]
    gate = torch.softmax(sd["dynamic_gate_para"], dim=0)
    local = torch.zeros(length, c, dtype=torch.float64)
    for i, ks in enumerate(kernel_sizes):
        a = (v @ sd[f"dynamics.{i}.weight_linear.weight"].T).reshape(length, num_heads, ks).softmax(-1)
        for t in range(length):
            for j in range(ks):
                src = t - ks // 2 + j                       # centred window; outside the sequence: zero
                if 0 <= src < length:
                    local[t] += gate[i] * a[t, torch.arange(c) // d, j] * v[src]
    out = torch.cat([attn, local], dim=-1) @ sd["out_proj.weight"].T + sd["out_proj.bias"]
    return out.float()


def _random_official_state_dict(c, num_heads, kernel_sizes, prefix=""):
    g = torch.Generator().manual_seed(1)
    sd = {"in_proj_weight": torch.randn(3 * c, c, generator=g) * 0.3, "in_proj_bias": torch.randn(3 * c, generator=g),
          "out_proj.weight": torch.randn(c, 2 * c, generator=g) * 0.2, "out_proj.bias": torch.randn(c, generator=g),
          "dynamic_gate_para": torch.tensor([0.8, -0.4])}
    for i, k in enumerate(kernel_sizes):
        sd[f"dynamics.{i}.weight_linear.weight"] = torch.randn(num_heads * k, c, generator=g)
    return {prefix + k: v for k, v in sd.items()}


def test_matches_the_released_layer_and_loads_its_keys():
    kernel_sizes = (3, 15)
    official = _random_official_state_dict(16, 2, kernel_sizes, prefix="encoder.layers.0.self_attn.")
    official["encoder.layers.0.fc1.weight"] = torch.zeros(1)      # another module of the checkpoint: ignored
    m = create_attention("muse", 16, num_heads=2, kernel_sizes=kernel_sizes).eval()
    m.load_state_dict(convert_official_state_dict(official, prefix="encoder.layers.0.self_attn."), strict=True)
    x = torch.randn(2, 11, 16)                                  # L = 11 < 15: the wide kernel sees padding
    plain = {k.split("self_attn.")[1]: v for k, v in official.items() if "self_attn." in k}
    expected = torch.stack([_official_reference(plain, xi, 2, kernel_sizes) for xi in x])
    with torch.no_grad():
        torch.testing.assert_close(m(x), expected, atol=1e-4, rtol=1e-4)


def test_feature_map_is_one_raster_sequence():
    torch.manual_seed(0)
    m = create_attention("muse", 8, num_heads=2, kernel_sizes=(3,)).eval()
    x = torch.randn(1, 8, 3, 4)
    with torch.no_grad():
        tokens = m(x.flatten(2).transpose(1, 2))                # no grid needed: the window wraps across rows
        torch.testing.assert_close(m(x), tokens.transpose(1, 2).reshape(1, 8, 3, 4))


def test_released_defaults_and_trainable_gate():
    m = create_attention("muse", 16, num_heads=2)
    assert m.kernel_sizes == (3, 15)
    torch.testing.assert_close(m.gate.detach(), torch.full((2,), 0.5))      # 1 / len(kernel sizes)
    assert m.qkv.bias.abs().sum() == 0 and m.proj.bias.abs().sum() == 0
    # 3C^2 + 3C (q, k, v) + 2C*C + C (W_o) + C*h*(3 + 15) (kernel predictors) + 2 (gate)
    assert sum(p.numel() for p in m.parameters()) == 3 * 256 + 48 + 512 + 16 + 16 * 2 * 18 + 2
    m(torch.randn(1, 5, 16)).sum().backward()
    assert m.gate.grad is not None and all(p.grad is not None for p in m.kernel_proj.parameters())


def test_bad_arguments_rejected():
    with pytest.raises(ValueError, match="odd"):
        create_attention("muse", 16, kernel_sizes=(3, 4))
    with pytest.raises(ValueError, match="kernel_drop"):
        create_attention("muse", 16, kernel_drop=1.0)
    with pytest.raises(ValueError, match="divisible"):
        create_attention("muse", 10, num_heads=4)
