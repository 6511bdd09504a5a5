"""DilateFormer: multi-scale dilated attention against a dense float64 reference written from the definition (each head
group attends to the k x k neighbours at its own dilation, zero-padded at the border), the receptive field of each
head group, the stages that use it, stage shapes of the variants and argument checks."""
import math

import pytest
import torch

from attnzoo import create_attention, create_model
from attnzoo.layers import MultiHeadSelfAttention
from attnzoo.models.dilateformer import MultiScaleDilatedAttention, split_heads


def _dense_reference(m: MultiScaleDilatedAttention, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(N, H*W, C) -> same with full L x L logits: key j is allowed for query i in group g iff j = i + r_g * o for a
    kernel offset o inside the map; the neighbours that fall outside are zero keys (logit 0) with zero values, one
    extra key of logit log(count) and value 0 stands for all of them."""
    n, length, c = x.shape
    q, k, v = (x @ m.qkv.weight.T + m.qkv.bias).reshape(n, length, 3, c).unbind(2)
    ys, xs = torch.arange(h).repeat_interleave(w), torch.arange(w).repeat(h)
    half = m.kernel_size // 2
    offsets = [(a, b) for a in range(-half, half + 1) for b in range(-half, half + 1)]
    outs, start = [], 0
    for heads, r in zip(m.group_heads, m.dilations):
        allowed = torch.zeros(length, length, dtype=torch.bool)
        outside = torch.zeros(length)
        for a, b in offsets:
            ny, nx = ys + r * a, xs + r * b
            inside = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
            allowed[torch.arange(length)[inside], (ny * w + nx)[inside]] = True
            outside += (~inside).double()
        width = heads * m.head_dim
        split = lambda t: t[..., start:start + width].reshape(n, length, heads, m.head_dim).transpose(1, 2)  # noqa
        qg, kg, vg = split(q), split(k), split(v)
        logits = (qg @ kg.transpose(-2, -1) / math.sqrt(m.head_dim)).masked_fill(~allowed, float("-inf"))
        pad_logit = outside.log().expand(n, heads, length)[..., None]                   # log(0) = -inf: none
        weights = torch.cat([logits, pad_logit], dim=-1).softmax(dim=-1)[..., :length]
        outs.append((weights @ vg).transpose(1, 2).reshape(n, length, width))
        start += width
    return torch.cat(outs, dim=-1) @ m.proj.weight.T + m.proj.bias


@pytest.mark.parametrize("channels,heads,dilations,kernel,size", [
    (12, 3, (1, 2, 3), 3, (7, 5)),        # DilateFormer's layout: one head per dilation
    (16, 4, (1, 2, 3), 3, (6, 9)),        # uneven groups: heads (2, 1, 1)
    (16, 4, (1, 3), 5, (4, 11)),          # a 5 x 5 kernel, neighbourhoods wider than the map
    (12, 6, (1, 2, 3), 3, (1, 1)),        # a single token: every neighbour but itself is padding
])
def test_msda_matches_dense_reference(channels, heads, dilations, kernel, size):
    torch.manual_seed(0)
    m = MultiScaleDilatedAttention(channels, heads, dilations, kernel).double().eval()
    torch.nn.init.normal_(m.qkv.bias, std=0.5)
    h, w = size
    x = torch.randn(2, h * w, channels, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(m(x, hw=(h, w)), _dense_reference(m, x, h, w))
        maps = m.attention_map(x, (h, w))
    assert [t.shape for t in maps] == [(2, g, h * w, kernel ** 2) for g in m.group_heads]
    for t in maps:                                       # the padded neighbours hold their share of the weights
        torch.testing.assert_close(t.sum(-1), torch.ones_like(t[..., 0]))


def test_each_head_group_sees_its_dilated_neighbourhood_only():
    """With an identity projection, output channels of group g at a position move only with the inputs at that
    position plus dilations[g] times the kernel offsets."""
    torch.manual_seed(0)
    m = MultiScaleDilatedAttention(12, 3, (1, 2, 3)).double()
    with torch.no_grad():
        m.proj.weight.copy_(torch.eye(12))
        m.proj.bias.zero_()
    h, w, (py, px) = 9, 11, (4, 5)
    for g, r in enumerate(m.dilations):
        x = torch.randn(1, 12, h, w, dtype=torch.float64, requires_grad=True)
        m(x)[0, 4 * g:4 * g + 4, py, px].sum().backward()
        seen = x.grad[0].abs().sum(0) > 0
        expected = torch.zeros(h, w, dtype=torch.bool)
        for a in (-1, 0, 1):
            for b in (-1, 0, 1):
                expected[py + r * a, px + r * b] = True
        assert torch.equal(seen, expected), f"dilation {r}"


def test_stages_shapes_and_attention_kinds():
    torch.manual_seed(0)
    one_block = create_model("dilateformer_tiny", depths=(1, 1, 1, 1)).eval()   # DilateFormer-T's widths
    with torch.no_grad():
        x = one_block.stem(torch.randn(1, 3, 61, 45))                            # odd: strides 2 round up
        shapes = [tuple(x.shape)]
        for stage in one_block.stages:
            x = stage(x)
            shapes.append(tuple(x.shape))
    assert shapes == [(1, 72, 16, 12), (1, 144, 8, 6), (1, 288, 4, 3), (1, 576, 2, 2), (1, 576, 2, 2)]
    with torch.device("meta"):
        m = create_model("dilateformer_tiny")
    kinds = [{type(b.attn) for b in s.blocks} for s in m.stages]
    assert kinds == [{MultiScaleDilatedAttention}] * 2 + [{MultiHeadSelfAttention}] * 2
    assert [m.stages[i].blocks[0].attn.group_heads for i in (0, 1)] == [(1, 1, 1), (2, 2, 2)]
    assert [len(s.blocks) for s in m.stages] == [2, 2, 6, 2]
    with torch.device("meta"):
        small, base = create_model("dilateformer_small"), create_model("dilateformer_base")
    assert [len(s.blocks) for s in small.stages] == [3, 5, 8, 3]
    assert [len(s.blocks) for s in base.stages] == [4, 8, 10, 3] and base.num_features == 768


def test_heads_split_over_dilations():
    assert split_heads(6, 3) == (2, 2, 2) and split_heads(4, 3) == (2, 1, 1) and split_heads(5, 2) == (3, 2)
    assert create_attention("dilateformer_msda", 64).group_heads == (2, 1, 1)     # 4 heads: the fewest dividing 64
    assert create_attention("dilateformer_msda", 72).num_heads == 3               # DilateFormer's first stage


def test_bad_arguments_and_inputs():
    with pytest.raises(ValueError, match="odd"):
        MultiScaleDilatedAttention(12, 3, kernel_size=4)
    with pytest.raises(ValueError, match="at least the number of dilations"):
        MultiScaleDilatedAttention(12, 2)
    with pytest.raises(ValueError, match="divisible"):
        MultiScaleDilatedAttention(12, 5)
    with pytest.raises(ValueError, match="cannot give one head"):
        MultiScaleDilatedAttention(2)
    with pytest.raises(ValueError, match="hw"):
        MultiScaleDilatedAttention(12, 3)(torch.randn(1, 6, 12))
    with pytest.raises(ValueError, match="one entry per stage"):
        create_model("dilateformer_tiny", depths=(1, 1, 1))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\) images"):
        create_model("dilateformer_tiny", depths=(1, 1, 1, 1))(torch.randn(3, 32, 32))
