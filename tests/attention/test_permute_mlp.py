"""Weighted Permute-MLP (Vision Permutator): the paper's operator at H = W = G and the padded/windowed extension."""
import pytest
import torch

from attnzoo import create_attention


def test_equals_paper_operator_when_grid_equals_segments():
    torch.manual_seed(0)
    g, c = 4, 12
    s = c // g
    m = create_attention("permute_mlp", c, segment_dim=g).eval()
    x = torch.randn(2, g, g, c)
    # The paper's permutation: fold H (or W) into the channels of each segment, one linear layer, unfold.
    xh = x.reshape(2, g, g, g, s).permute(0, 3, 2, 1, 4).reshape(2, g, g, g * s)
    xh = m.mlp_h(xh).reshape(2, g, g, g, s).permute(0, 3, 2, 1, 4).reshape(2, g, g, c)
    xw = x.reshape(2, g, g, g, s).permute(0, 1, 3, 2, 4).reshape(2, g, g, g * s)
    xw = m.mlp_w(xw).reshape(2, g, g, g, s).permute(0, 1, 3, 2, 4).reshape(2, g, g, c)
    xc = m.mlp_c(x)
    a = m.reweight((xh + xw + xc).mean(dim=(1, 2))).reshape(2, c, 3).permute(2, 0, 1).softmax(0)
    ref = m.proj(xh * a[0][:, None, None] + xw * a[1][:, None, None] + xc * a[2][:, None, None])
    with torch.no_grad():
        torch.testing.assert_close(m(x.reshape(2, g * g, c), hw=(g, g)), ref.reshape(2, g * g, c))


def test_short_axis_uses_top_left_block_of_the_weight():
    torch.manual_seed(0)
    g, c, h, w = 4, 8, 3, 6  # H < G: zero padding; W > G: two windows
    s = c // g
    m = create_attention("permute_mlp", c, segment_dim=g).eval()
    x = torch.randn(1, h, w, c)
    with torch.no_grad():
        x_h, _, _ = m.branches(x.reshape(1, h * w, c), hw=(h, w))
        wt = m.mlp_h.weight[: h * s, : h * s]
        for col in range(w):
            for seg in range(g):
                vec = x[0, :, col, seg * s:(seg + 1) * s].reshape(-1)
                torch.testing.assert_close(x_h[0, :, col, seg * s:(seg + 1) * s].reshape(-1), wt @ vec)


def test_fusion_weights_and_errors():
    m = create_attention("permute_mlp", 64)
    parts = m.branches(torch.randn(2, 35, 64), hw=(5, 7))
    a = m.branch_weights(parts)
    torch.testing.assert_close(a.sum(0), torch.ones(2, 64))
    with pytest.raises(ValueError):
        create_attention("permute_mlp", 60, segment_dim=8)
    with pytest.raises(ValueError):
        m(torch.randn(1, 35, 64), hw=(5, 6))
