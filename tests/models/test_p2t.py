"""P2T: pooling-based MHSA against a reference with pooling written as reshape-and-mean and an explicit softmax, the
pyramid's sizes (Python rounding, at least 1), the stage-owned depthwise convs shared by its blocks, the stage shapes
of P2T-Tiny, and argument checks."""
import pytest
import torch
import torch.nn.functional as F

from attnzoo import create_model
from attnzoo.models.p2t import PoolingAttention, PyramidPoolingTransformer, pooled_sizes


def test_pooling_attention_matches_a_reference():
    torch.manual_seed(0)
    m = PoolingAttention(8, num_heads=2, pool_ratios=(1, 2, 4)).double().eval()
    h, w = 12, 8
    x = torch.randn(2, h * w, 8, dtype=torch.float64)
    grid = x.transpose(1, 2).reshape(2, 8, h, w)
    levels = []
    for r, conv in zip((1, 2, 4), m.d_convs):
        p = grid.reshape(2, 8, h // r, r, w // r, r).mean(dim=(3, 5))            # r x r average pooling
        p = p + F.conv2d(p, conv.weight, conv.bias, padding=1, groups=8)
        levels.append(p.flatten(2))
    pooled = F.layer_norm(torch.cat(levels, 2).transpose(1, 2), (8,), m.norm.weight, m.norm.bias, m.norm.eps)
    assert pooled.shape[1] == 96 + 24 + 6
    q = (x @ m.q.weight.T + m.q.bias).reshape(2, -1, 2, 4).transpose(1, 2)
    k, v = (pooled @ m.kv.weight.T + m.kv.bias).reshape(2, -1, 2, 2, 4).permute(2, 0, 3, 1, 4)
    y = (torch.softmax(q @ k.transpose(-1, -2) / 2.0, dim=-1) @ v).transpose(1, 2).reshape(2, -1, 8)
    with torch.no_grad():
        torch.testing.assert_close(m(x, hw=(h, w)), y @ m.proj.weight.T + m.proj.bias)


def test_pyramid_sizes_round_as_python_and_never_vanish():
    # 224 x 224: 5^2 + 4^2 + 3^2 + 2^2 = 54 keys in stages 1-3, 7^2 + 4^2 + 2^2 + 2^2 = 73 in stage 4
    keys = [sum(a * b for a, b in pooled_sizes((side, side), ratios)) for side, ratios in
            zip((56, 28, 14, 7), ((12, 16, 20, 24), (6, 8, 10, 12), (3, 4, 5, 6), (1, 2, 3, 4)))]
    assert keys == [54, 54, 54, 73]
    assert pooled_sizes((14, 10), (4,)) == [(4, 2)]              # round(3.5) = 4, round(2.5) = 2 (to even)
    assert pooled_sizes((3, 5), (12, 1)) == [(1, 1), (3, 5)]


def test_stages_own_the_depthwise_convs_their_blocks_share():
    torch.manual_seed(0)
    m = PyramidPoolingTransformer(num_classes=3, embed_dims=(8, 8, 16, 16), depths=(2, 1, 1, 1),
                                  num_heads=(1, 1, 2, 2)).eval()
    stage = m.stages[0]
    assert all(b.attn.d_convs is None for b in stage.blocks) and len(stage.d_convs) == 4
    x = torch.randn(1, 3, 64, 48)
    with torch.no_grad():
        before = m(x)
        stage.d_convs[0].weight.add_(torch.randn_like(stage.d_convs[0].weight))
        assert not torch.allclose(before, m(x))


def test_stage_shapes_of_p2t_tiny():
    with torch.device("meta"):
        m = create_model("p2t_tiny")
        feats = m.forward_features(torch.zeros(1, 3, 224, 224))
    assert [tuple(f.shape[1:]) for f in feats] == [(48, 56, 56), (96, 28, 28), (240, 14, 14), (384, 7, 7)]


def test_bad_arguments():
    with pytest.raises(ValueError, match="pool_ratios"):
        PoolingAttention(8, pool_ratios=(1, 0))
    with pytest.raises(ValueError, match="num_heads"):
        PoolingAttention(10, num_heads=4)
    with pytest.raises(ValueError, match="one depthwise conv per pooling ratio"):
        PoolingAttention(8, own_convs=False)(torch.randn(1, 8, 4, 4))
    with pytest.raises(ValueError, match="pool_ratios needs 4"):
        PyramidPoolingTransformer(pool_ratios=((1,),) * 3)
