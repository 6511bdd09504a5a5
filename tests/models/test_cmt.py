"""CMT: the lightweight MHSA against an explicit computation, the bias resize (its closed forms and the model at
another size), the stage grids and bias shapes of CMT-S, the smallest input, and argument checks."""
import pytest
import torch
import torch.nn.functional as F

from attnzoo import create_model
from attnzoo.models.cmt import CMT, LightweightMHSA, resize_attn_bias


def _tiny(**kw):
    args = dict(img_size=64, dims=(8, 16, 16, 16), depths=(1, 1, 1, 1), num_heads=(1, 2, 2, 2), stem_width=8,
                head_dim=16, num_classes=5)
    return CMT(**{**args, **kw})


def _reference_lmhsa(m: LightweightMHSA, x: torch.Tensor, hw, bias: torch.Tensor) -> torch.Tensor:
    """softmax(Q K^T / sqrt(C / heads) + B) V with K, V from the grid reduced by the strided depthwise conv + BN."""
    n, length, c = x.shape
    grid = x.transpose(1, 2).reshape(n, c, *hw)
    reduced = m.sr[1](F.conv2d(grid, m.sr[0].weight, m.sr[0].bias, stride=m.sr_ratio, groups=c))
    kv = reduced.flatten(2).transpose(1, 2)
    heads = m.num_heads
    split = lambda t: t.reshape(n, t.shape[1], heads, -1).permute(0, 2, 1, 3)  # noqa: E731
    q, k, v = split(m.q(x)), split(m.k(kv)), split(m.v(kv))
    logits = torch.einsum("nhid,nhjd->nhij", q, k) / (c / heads) ** 0.5 + bias
    out = torch.einsum("nhij,nhjd->nhid", logits.softmax(-1), v)
    return m.proj(out.permute(0, 2, 1, 3).reshape(n, length, c))


def test_lightweight_mhsa_is_softmax_attention_on_strided_keys_with_the_learned_bias():
    torch.manual_seed(0)
    m = LightweightMHSA(16, num_heads=2, sr_ratio=4, grid=(9, 13)).eval()
    m.sr[1].running_mean.uniform_(-1, 1)
    m.sr[1].running_var.uniform_(0.5, 2)
    x = torch.randn(2, 9 * 13, 16)
    with torch.no_grad():
        assert m.pos_bias.shape == (2, 9 * 13, 2 * 3)                         # keys: (9 // 4) x (13 // 4)
        torch.testing.assert_close(m(x, hw=(9, 13)), _reference_lmhsa(m, x, (9, 13), m.pos_bias))
        other = torch.randn(1, 11 * 17, 16)                                   # another grid: the resized bias
        bias = resize_attn_bias(m.pos_bias, (9, 13), (2, 3), (11, 17), (2, 4))
        torch.testing.assert_close(m(other, hw=(11, 17)), _reference_lmhsa(m, other, (11, 17), bias))


def test_bias_resize_is_bicubic_along_keys_then_queries_and_keeps_constants():
    torch.manual_seed(0)
    bias = torch.randn(2, 4 * 6, 3 * 2, dtype=torch.float64)
    assert resize_attn_bias(bias, (4, 6), (3, 2), (4, 6), (3, 2)) is bias
    out = resize_attn_bias(bias, (4, 6), (3, 2), (7, 5), (2, 3))
    assert out.shape == (2, 35, 6)
    one_query = bias[:, 5].reshape(2, 1, 3, 2)                                # query 5's bias over the key grid
    keys_first = F.interpolate(one_query, size=(2, 3), mode="bicubic", align_corners=False).flatten(1)
    torch.testing.assert_close(resize_attn_bias(bias, (4, 6), (3, 2), (4, 6), (2, 3))[:, 5], keys_first)
    constant = torch.full((2, 24, 6), 0.7, dtype=torch.float64)               # bicubic weights sum to one
    torch.testing.assert_close(resize_attn_bias(constant, (4, 6), (3, 2), (9, 2), (5, 1)),
                               torch.full((2, 18, 5), 0.7, dtype=torch.float64))


def test_other_input_sizes_use_the_resized_stage_biases():
    torch.manual_seed(0)
    m = _tiny().eval()
    other = _tiny(img_size=(96, 40)).eval()
    state = m.state_dict()
    for i, stage in enumerate(m.stages):
        grid, new = stage.grid, other.stages[i].grid
        k = stage.sr_ratio
        state[f"stages.{i}.pos_bias"] = resize_attn_bias(stage.pos_bias.detach(), grid, (grid[0] // k, grid[1] // k),
                                                         new, (new[0] // k, new[1] // k))
    other.load_state_dict(state)
    x = torch.randn(2, 3, 96, 40)
    with torch.no_grad():
        torch.testing.assert_close(m(x), other(x))


def test_cmt_s_stage_grids_and_bias_shapes_at_224():
    with torch.device("meta"):
        m = create_model("cmt_s")
        x = m.stem(torch.zeros(1, 3, 224, 224))
        assert x.shape == (1, 32, 112, 112)
        shapes = []
        for stage in m.stages:  # a stage keeps its patch embedding's shape (the blocks are residual)
            x = stage.patch_embed(x)
            shapes.append(tuple(x.shape))
    assert shapes == [(1, 64, 56, 56), (1, 128, 28, 28), (1, 256, 14, 14), (1, 512, 7, 7)]
    # every stage attends to 7 x 7 reduced keys (reductions 8, 4, 2, 1); heads 1, 2, 4, 8
    assert [tuple(s.pos_bias.shape) for s in m.stages] == [(1, 3136, 49), (2, 784, 49), (4, 196, 49), (8, 49, 49)]
    assert [len(s.blocks) for s in m.stages] == [3, 3, 16, 3]
    with torch.device("meta"):
        assert create_model("cmt_ti").stages[0].pos_bias.shape == (1, 1600, 25)  # trained at 160: 40 x 40 -> 5 x 5


def test_smallest_input_and_bad_arguments():
    m = _tiny().eval()
    assert m.min_input_size == 31                                             # stage 1: 8 x 8 tokens for one key
    with torch.no_grad():
        assert m(torch.randn(1, 3, 31, 50)).shape == (1, 5)
        with pytest.raises(ValueError, match="at least 31x31"):
            m(torch.randn(1, 3, 30, 50))
    with pytest.raises(ValueError, match="sr_ratio=4 needs a grid of at least 4x4"):
        LightweightMHSA(16, 2, sr_ratio=4, grid=None)(torch.randn(1, 3 * 8, 16), hw=(3, 8))
    with pytest.raises(ValueError, match="divisible by num_heads"):
        LightweightMHSA(18, num_heads=4)
    with pytest.raises(ValueError, match="smaller than its sr_ratio"):
        _tiny(img_size=16)
    with pytest.raises(ValueError, match="4 entries"):
        _tiny(sr_ratios=(8, 4, 2))
