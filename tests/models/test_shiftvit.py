"""ShiftViT: the shift operation against an index-by-index reference, its zero-parameter receptive field, the
block's equation, stage shapes, variants as data and argument checks."""
import pytest
import torch

from attnzoo import create_attention, create_model
from attnzoo.models.shiftvit import Shift, ShiftBlock, ShiftViT, shift_channels


def _shift_reference(x: torch.Tensor, n_div: int) -> torch.Tensor:
    """Output pixel (y, x) of group k reads input pixel (y, x + 1), (y, x - 1), (y + 1, x), (y - 1, x) (left, right,
    up, down), or zero where that pixel is off the map; channels from 4g on are copied."""
    n, c, h, w = x.shape
    g = c // n_div
    out = x.clone()
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    for k, (dy, dx) in enumerate([(0, 1), (0, -1), (1, 0), (-1, 0)]):
        sy, sx = ys + dy, xs + dx
        inside = (sy >= 0) & (sy < h) & (sx >= 0) & (sx < w)
        src = x[:, k * g:(k + 1) * g, sy.clamp(0, h - 1), sx.clamp(0, w - 1)]
        out[:, k * g:(k + 1) * g] = src * inside
    return out


@pytest.mark.parametrize("channels,n_div,size", [(24, 12, (5, 7)), (64, 12, (3, 2)), (32, 16, (1, 4)), (8, 4, (6, 6))])
def test_shift_matches_reference(channels, n_div, size):
    x = torch.randn(2, channels, *size)
    torch.testing.assert_close(shift_channels(x, n_div), _shift_reference(x, n_div), rtol=0, atol=0)


def test_shift_has_no_parameters_and_a_plus_shaped_receptive_field():
    """Summed over channels, an output pixel depends on itself and on its four neighbours only; a third of the
    channels (n_div = 12) move, two thirds stay."""
    m = create_attention("shiftvit_shift", 48)
    assert sum(p.numel() for p in m.parameters()) == 0
    x = torch.randn(1, 48, 7, 7, requires_grad=True)
    m(x)[0, :, 3, 3].sum().backward()
    seen = x.grad[0].abs().sum(0) > 0
    plus = torch.zeros(7, 7, dtype=torch.bool)
    plus[3, 2:5] = plus[2:5, 3] = True
    assert torch.equal(seen, plus)
    moved = (x.grad[0, :, 3, 3] == 0).sum()  # channels whose output at (3, 3) came from a neighbour
    assert moved == 16  # 4 groups of 48 // 12


def test_block_is_shift_then_residual_mlp():
    torch.manual_seed(0)
    block = ShiftBlock(24, 12, 2.0, 0.0, 0.0).eval()
    x = torch.randn(2, 24, 5, 6)
    with torch.no_grad():
        s = shift_channels(x, 12)
        mean = s.mean(dim=(1, 2, 3), keepdim=True)
        var = s.var(dim=(1, 2, 3), keepdim=True, unbiased=False)
        normed = (s - mean) / (var + 1e-5).sqrt()  # GroupNorm with one group: over C, H and W
        ref = s + block.mlp(normed.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        torch.testing.assert_close(block(x), ref)


def test_stage_shapes_and_sizes(output_shapes):
    model = ShiftViT(num_classes=10, embed_dim=16, depths=(1, 1, 1, 1), n_div=4).eval()
    shapes, y = output_shapes(model, [model.patch_embed, *model.stages], torch.randn(1, 3, 67, 45))
    assert y.shape == (1, 10)
    # floor(67 / 4) x floor(45 / 4) = 16 x 11, then floored halvings at the end of stages 1-3
    assert shapes == [(1, 16, 16, 11), (1, 32, 8, 5), (1, 64, 4, 2), (1, 128, 2, 1), (1, 128, 2, 1)]
    with pytest.raises(ValueError, match="at least 32x32"):
        model(torch.randn(1, 3, 31, 64))


def test_variants_are_data():
    with torch.device("meta"):
        light, r2, base = (create_model(n) for n in ("shiftvit_light_tiny", "shiftvit_r2_tiny", "shiftvit_r2_base"))
    blocks = lambda m: [sum(isinstance(b, ShiftBlock) for b in st) for st in m.stages]  # noqa: E731
    assert blocks(light) == [2, 2, 6, 2] and blocks(r2) == [6, 8, 18, 6] and blocks(base) == [10, 18, 36, 10]
    assert light.stages[0][0].mlp.fc1.out_features == 384 and r2.stages[0][0].mlp.fc1.out_features == 192
    assert base.stages[0][0].shift.n_div == 16 and base.num_features == 1024
    # the released definitions' counts (microsoft/SPACH models/registry.py, built on the CPU): 19.61 M and 28.57 M
    assert [round(sum(p.numel() for p in m.parameters()) / 1e4) for m in (light, r2)] == [1961, 2857]


@pytest.mark.parametrize("kwargs,match", [
    (dict(channels=8), "channels >= n_div"),
    (dict(channels=64, n_div=3), "n_div >= 4"),
    (dict(channels=64, n_div=0), "n_div"),
])
def test_bad_shift_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Shift(**kwargs)


@pytest.mark.parametrize("kwargs,match", [
    (dict(depths=(2, 2, 6)), "one per stage"),
    (dict(embed_dim=0), "embed_dim"),
    (dict(patch_size=0), "patch_size"),
])
def test_bad_model_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        create_model("shiftvit_light_tiny", **kwargs)
