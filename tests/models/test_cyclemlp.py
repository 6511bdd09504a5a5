"""CycleMLP: Cycle FC (shifted channels + one channel FC) against the authors' deformable-convolution form, its
staircase receptive field, the token mixer against a reference written on NCHW maps, stage shapes at odd sizes,
the variants of the authors' code and bad arguments."""
import pytest
import torch
import torch.nn.functional as F

from attnzoo import create_attention, create_model
from attnzoo.models.cyclemlp import CycleFC, cycle_offsets
from attnzoo.registry import model_entry

deform_conv2d = pytest.importorskip("torchvision.ops").deform_conv2d


def _deformable_reference(fc: CycleFC, maps: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, C_out, H, W): the authors' form, a 1 x 1 deformable convolution whose offset tensor holds
    one (dy, dx) pair per input channel (dx for a 1 x S Cycle FC, dy for an S x 1 one)."""
    n, c, h, w = maps.shape
    pairs = torch.zeros(c, 2, dtype=maps.dtype)
    pairs[:, 1 if fc.axis == "w" else 0] = torch.tensor(cycle_offsets(c, fc.pseudo_kernel), dtype=maps.dtype)
    offset = pairs.reshape(1, 2 * c, 1, 1).expand(n, -1, h, w)
    return deform_conv2d(maps, offset, fc.weight, fc.bias)


@pytest.mark.parametrize("axis,kernel,channels", [("w", 3, 7), ("h", 3, 8), ("w", 5, 11), ("h", 2, 6)])
def test_cycle_fc_equals_the_deformable_convolution_of_the_authors(axis, kernel, channels):
    torch.manual_seed(0)
    fc = CycleFC(channels, 5, kernel, axis=axis).double()
    torch.nn.init.normal_(fc.bias)
    maps = torch.randn(2, channels, 5, 7, dtype=torch.float64)
    ours = fc(maps.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    torch.testing.assert_close(ours, _deformable_reference(fc, maps))


def test_offsets_cycle_as_the_authors_code():
    assert cycle_offsets(7, 3) == [0, 1, -1, 0, 1, -1, 0]
    assert cycle_offsets(6, 5) == [0, 1, 2, -2, -1, 0]


def test_cycle_fc_reads_each_channel_at_one_shifted_position():
    """Output (h, w) depends on channel c only at (h, w + delta(c)); nothing else (zero beyond the border)."""
    fc = CycleFC(6, 4, 3, axis="w").double()
    x = torch.randn(1, 4, 5, 6, dtype=torch.float64, requires_grad=True)
    fc(x)[0, 2, 4].sum().backward()
    reach = x.grad[0].abs() > 0                                       # (H, W, C)
    expected = torch.zeros(4, 5, 6, dtype=torch.bool)
    for c, d in enumerate(cycle_offsets(6, 3)):
        if 0 <= 4 + d < 5:
            expected[2, 4 + d, c] = True
    assert torch.equal(reach, expected) and expected.sum() == 4  # channels 1 and 4 (+1) leave the map


def test_mixer_is_two_cycle_fcs_and_a_channel_fc_fused_by_softmax_weights():
    torch.manual_seed(0)
    m = create_attention("cycle_mlp", 12).double().eval()
    maps = torch.randn(2, 12, 5, 3, dtype=torch.float64)
    xw, xh = _deformable_reference(m.sfc_h, maps), _deformable_reference(m.sfc_w, maps)
    xc = torch.einsum("oc,nchw->nohw", m.mlp_c.weight, maps)
    pooled = (xw + xh + xc).mean((2, 3))
    logits = m.reweight.fc2(F.gelu(m.reweight.fc1(pooled))).reshape(2, 12, 3)
    alpha = logits.softmax(-1)[..., None, None]                       # (N, C, 3, 1, 1)
    fused = alpha[:, :, 0] * xw + alpha[:, :, 1] * xh + alpha[:, :, 2] * xc
    expected = torch.einsum("oc,nchw->nohw", m.proj.weight, fused) + m.proj.bias[:, None, None]
    torch.testing.assert_close(m(maps), expected)
    tokens = maps.flatten(2).transpose(1, 2)
    torch.testing.assert_close(m(tokens, hw=(5, 3)), expected.flatten(2).transpose(1, 2))


def test_stage_shapes_at_an_odd_size_and_the_smallest_input():
    model = create_model("cyclemlp_b1", layers=(1, 1, 1, 1), embed_dims=(8, 16, 16, 24), num_classes=4).eval()
    x = torch.randn(1, 3, 67, 45)
    with torch.no_grad():
        t = model.patch_embed(x)
        shapes = []
        for layer in model.network:
            t = layer(t)
            shapes.append(tuple(t.shape[1:]))
        assert shapes[::2] == [(17, 11, 8), (9, 6, 16), (5, 3, 16), (3, 2, 24)]
        torch.testing.assert_close(model(x), model.head(model.norm(t).mean((1, 2))))
        assert model(torch.randn(1, 3, 3, 4)).shape == (1, 4)
    with pytest.raises(ValueError, match="at least 3x3 pixels"):
        model(torch.randn(1, 3, 2, 40))


@pytest.mark.parametrize("name,layers,dims,ratios", [
    ("cyclemlp_b1", (2, 2, 4, 2), (64, 128, 320, 512), (4, 4, 4, 4)),
    ("cyclemlp_b2", (2, 3, 10, 3), (64, 128, 320, 512), (4, 4, 4, 4)),
    ("cyclemlp_b3", (3, 4, 18, 3), (64, 128, 320, 512), (8, 8, 4, 4)),
    ("cyclemlp_b4", (3, 8, 27, 3), (64, 128, 320, 512), (8, 8, 4, 4)),
    ("cyclemlp_b5", (3, 4, 24, 3), (96, 192, 384, 768), (4, 4, 4, 4))])
def test_variants_are_the_authors(name, layers, dims, ratios):
    assert model_entry(name).defaults == dict(layers=layers, embed_dims=dims, mlp_ratios=ratios)


def test_shared_layout_and_tensor_names_of_the_authors_code():
    with torch.device("meta"):
        model = create_model("cyclemlp_b1")
    conv = model.patch_embed.proj
    assert (conv.kernel_size, conv.stride, conv.padding) == ((7, 7), (4, 4), (2, 2))
    assert (model.network[1].proj.kernel_size, model.network[1].proj.stride) == ((3, 3), (2, 2))
    attn = model.network[0][0].attn
    assert attn.sfc_h.weight.shape == (64, 64, 1, 1) and attn.mlp_c.bias is None
    assert (attn.sfc_h.axis, attn.sfc_w.axis, attn.reweight.fc1.out_features) == ("w", "h", 16)
    assert "network.6.1.attn.sfc_w.bias" in model.state_dict()


@pytest.mark.parametrize("kwargs", [dict(layers=(1, 1, 1)), dict(embed_dims=(8, 16, 0, 24)),
                                    dict(mlp_ratios=(4, 4, 4)), dict(num_classes=0), dict(drop_path_rate=1.0)])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        create_model("cyclemlp_b1", **kwargs)


def test_cycle_fc_bad_arguments():
    with pytest.raises(ValueError):
        CycleFC(8, 8, 3, axis="x")
    with pytest.raises(ValueError):
        create_attention("cycle_mlp", 8, pseudo_kernel=0)


def test_stochastic_depth_rises_linearly_over_all_blocks_as_the_authors_code():
    with torch.device("meta"):
        model = create_model("cyclemlp_b1", layers=(2, 1, 1, 1), drop_path_rate=0.4)
    rates = [b.drop_path.drop_prob for s in model.network[::2] for b in s]
    assert rates == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
