"""Contextual Transformer: the unfold-based local aggregation, the fusion, and the CoTNet-50 placement."""
import pytest
import torch

from attnzoo import create_attention, create_model
from attnzoo.attention.cotnet import CoTAttention, local_aggregation


def test_local_aggregation_matches_explicit_sum():
    torch.manual_seed(0)
    n, c, g, h, w, k = 2, 8, 2, 4, 5, 3
    v = torch.randn(n, c, h, w)
    kern = torch.randn(n, g, k * k, h, w)
    ref = torch.zeros(n, c, h, w)
    vp = torch.nn.functional.pad(v, (1, 1, 1, 1))
    for ch in range(c):
        for i in range(h):
            for j in range(w):
                patch = vp[:, ch, i:i + k, j:j + k].reshape(n, k * k)
                ref[:, ch, i, j] = (patch * kern[:, ch % g, :, i, j]).sum(-1)  # channel c uses kernel group c % G
    torch.testing.assert_close(local_aggregation(v, kern, k), ref)


def test_fusion_weights_sum_to_one_and_bad_channels():
    m = create_attention("cot", 64).eval()
    x = torch.randn(2, 64, 7, 9)
    k1 = m.key_embed(x)
    a = m.branch_weights(k1 * 2, k1)
    torch.testing.assert_close(a.sum(1), torch.ones(2, 64, 1, 1))
    with pytest.raises(ValueError):
        create_attention("cot", 60)  # not divisible by share_planes = 8


def test_cotnet50_replaces_every_3x3_and_keeps_strides():
    m = create_model("cotnet50")
    blocks = [b for stage in m.stages for b in stage]
    assert len(blocks) == 16 and all(isinstance(b.conv2[1], CoTAttention) for b in blocks)
    pooled = [isinstance(b.conv2[0], torch.nn.AvgPool2d) for b in blocks]
    assert pooled == [False] * 3 + [True] + [False] * 3 + [True] + [False] * 5 + [True] + [False] * 2
    with torch.no_grad():
        assert m.eval().forward_features(torch.randn(1, 3, 64, 64)).shape == (1, 2048, 2, 2)
