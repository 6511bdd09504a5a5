"""PVT: spatial-reduction attention against a reference written with unfold and an explicit softmax and against timm's
(PVT v2's) attention on the same weights, its key count, the four stages' grids and widths, the bilinearly resized
position tables, and argument checks."""
import pytest
import torch
import torch.nn.functional as F

from attnzoo import create_attention, create_model
from attnzoo.models.pvt import PyramidVisionTransformer, SpatialReductionAttention


def _tiny(**kw):
    args = dict(img_size=64, embed_dims=(8, 8, 16, 16), num_heads=(1, 2, 2, 4), depths=(1, 1, 1, 1), num_classes=5)
    return PyramidVisionTransformer(**{**args, **kw})


def _reference_sra(m: SpatialReductionAttention, x: torch.Tensor, hw) -> torch.Tensor:
    """Keys/values from R x R windows as unfolded patches times the flattened conv kernel; explicit softmax."""
    n, length, c = x.shape
    h, w = hw
    r, heads, d = m.sr_ratio, m.num_heads, m.head_dim
    grid = x.transpose(1, 2).reshape(n, c, h, w)[:, :, : h // r * r, : w // r * r]
    patches = F.unfold(grid, r, stride=r).transpose(1, 2)                     # (N, L', C R R)
    reduced = patches @ m.sr.weight.reshape(c, -1).T + m.sr.bias
    reduced = F.layer_norm(reduced, (c,), m.norm.weight, m.norm.bias, m.norm.eps)
    q = (x @ m.q.weight.T + m.q.bias).reshape(n, length, heads, d).transpose(1, 2)
    k, v = (reduced @ m.kv.weight.T + m.kv.bias).reshape(n, -1, 2, heads, d).permute(2, 0, 3, 1, 4)
    attn = torch.softmax(q @ k.transpose(-1, -2) / d ** 0.5, dim=-1)
    y = (attn @ v).transpose(1, 2).reshape(n, length, c)
    return y @ m.proj.weight.T + m.proj.bias


@pytest.mark.parametrize("hw,ratio", [((7, 9), 2), ((8, 13), 4)])
def test_sra_matches_the_reference_and_attends_to_the_reduced_grid(hw, ratio):
    torch.manual_seed(0)
    m = SpatialReductionAttention(16, num_heads=2, sr_ratio=ratio).eval()
    x = torch.randn(2, hw[0] * hw[1], 16, dtype=torch.float64)
    m = m.double()
    with torch.no_grad():
        torch.testing.assert_close(m(x, hw=hw), _reference_sra(m, x, hw))
    assert m.attention_map(x, hw).shape == (2, 2, hw[0] * hw[1], (hw[0] // ratio) * (hw[1] // ratio))


def test_sra_equals_timms_pvt_v2_attention_on_the_same_weights():
    timm_pvt = pytest.importorskip("timm.models.pvt_v2")
    torch.manual_seed(0)
    theirs = timm_pvt.Attention(16, num_heads=2, sr_ratio=2, qkv_bias=True).eval()
    ours = SpatialReductionAttention(16, num_heads=2, sr_ratio=2).eval()
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(2, 7 * 9, 16)
    with torch.no_grad():
        torch.testing.assert_close(ours(x, hw=(7, 9)), theirs(x, [7, 9]))


def test_sra_without_reduction_is_plain_attention_and_needs_no_grid():
    torch.manual_seed(0)
    m = create_attention("pvt_sra", 16, num_heads=4, sr_ratio=1).eval()
    assert m.sr is None
    x = torch.randn(2, 10, 16)
    q = m.q(x).reshape(2, 10, 4, 4).transpose(1, 2)
    k, v = m.kv(x).reshape(2, 10, 2, 4, 4).permute(2, 0, 3, 1, 4)
    ref = m.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(2, 10, 16))
    with torch.no_grad():
        torch.testing.assert_close(m(x), ref)


def test_stages_have_the_pyramid_grids_and_widths():
    with torch.device("meta"):
        m = create_model("pvt_tiny")
        x = torch.zeros(1, 3, 224, 224)
        shapes = [tuple(o.shape) for o in m.forward_features(x)]
        large = create_model("pvt_large")
    assert shapes == [(1, 64, 56, 56), (1, 128, 28, 28), (1, 320, 14, 14), (1, 1 + 49, 512)]
    assert [s.blocks[0].attn.sr_ratio for s in m.stages] == [8, 4, 2, 1]
    assert [len(s.blocks) for s in large.stages] == [3, 8, 27, 3]
    # the un-padded patch embeddings drop what does not fill a patch (floor), as the authors' code
    small = _tiny().eval()
    with torch.no_grad():
        assert [tuple(o.shape[-2:]) for o in small.forward_features(torch.randn(1, 3, 67, 45))[:3]] == \
            [(16, 11), (8, 5), (4, 2)]


def test_other_sizes_use_bilinearly_resized_position_tables():
    torch.manual_seed(0)
    m = _tiny().eval()
    other = _tiny(img_size=(40, 96)).eval()
    state = m.state_dict()
    for i, stage in enumerate(m.stages):
        t = int(stage.cls_token is not None)
        grid = stage.pos_embed[:, t:].detach().reshape(1, *stage.grid, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=other.stages[i].grid, mode="bilinear", align_corners=False)
        state[f"stages.{i}.pos_embed"] = torch.cat([stage.pos_embed[:, :t].detach(),
                                                    grid.flatten(2).transpose(1, 2)], dim=1)
    other.load_state_dict(state)
    x = torch.randn(2, 3, 40, 96)
    with torch.no_grad():
        torch.testing.assert_close(m(x), other(x))


def test_bad_arguments_and_inputs():
    with pytest.raises(ValueError, match="at least 32x32"):
        _tiny()(torch.randn(1, 3, 31, 64))
    with pytest.raises(ValueError, match="needs sr_ratio 1"):
        _tiny(sr_ratios=(8, 4, 2, 2))
    with pytest.raises(ValueError, match="num_heads needs 4"):
        _tiny(num_heads=(1, 2, 4))
    with pytest.raises(ValueError, match="smaller than the smallest input"):
        _tiny(img_size=16)
    m = SpatialReductionAttention(8, sr_ratio=4)
    with pytest.raises(ValueError, match="needs the token grid"):
        m(torch.randn(1, 12, 8))
    with pytest.raises(ValueError, match="at least 4x4"):
        m(torch.randn(1, 8, 3, 9))
    with pytest.raises(ValueError, match="num_heads"):
        SpatialReductionAttention(10, num_heads=4)
