"""BiFPN's fast normalised fusion node (tan2020efficientdet), registered as "bifpn_fusion"."""
import pytest
import torch

from attnzoo import create_block
from attnzoo.blocks.bifpn import resize_to


def test_fast_normalised_weights_are_non_negative_and_sum_to_about_one():
    node = create_block("bifpn_fusion", 8, 8, num_inputs=3)
    with torch.no_grad():
        node.edge_weights.copy_(torch.tensor([2.0, -1.0, 0.5]))
    w = node.weights()
    torch.testing.assert_close(w, torch.tensor([2.0, 0.0, 0.5]) / (2.5 + 1e-4))
    assert 0.9999 < w.sum() < 1.0
    soft = create_block("bifpn_fusion", 8, 8, weighting="softmax").weights()
    torch.testing.assert_close(soft, torch.tensor([0.5, 0.5]))


@torch.no_grad()
def test_fused_map_is_the_weighted_sum_of_the_resized_levels():
    """P_td = (w0 P_own + w1 Up(P_coarse)) / (w0 + w1 + eps), nearest upsampling = repeating each pixel 2x2."""
    node = create_block("bifpn_fusion", 4, 4)
    node.edge_weights.copy_(torch.tensor([3.0, 1.0]))
    own, coarse = torch.randn(2, 4, 6, 8), torch.randn(2, 4, 3, 4)
    up = coarse.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    torch.testing.assert_close(node.fused([own, coarse]), (3 * own + up) / (4 + 1e-4))


def test_downsampling_is_tensorflow_same_max_pooling():
    """8 x 7 -> 4 x 4, stride 2, kernel 3, TF SAME padding: rows need (4 - 1) * 2 + 3 - 8 = 1 pad (at the bottom),
    columns 2 (one on each side); window (i, j) covers padded rows 2i .. 2i+2 and padded columns 2j .. 2j+2."""
    x = torch.randn(1, 2, 8, 7)
    padded = torch.full((1, 2, 9, 9), float("-inf"))
    padded[..., :8, 1:8] = x
    ref = torch.empty(1, 2, 4, 4)
    for i in range(4):
        for j in range(4):
            ref[..., i, j] = padded[..., 2 * i:2 * i + 3, 2 * j:2 * j + 3].amax(dim=(-2, -1))
    torch.testing.assert_close(resize_to(x, (4, 4)), ref)


def test_inputs_of_other_widths_get_a_1x1_projection_and_odd_pyramids_work():
    node = create_block("bifpn_fusion", [8, 16, 4], 8).eval()
    assert isinstance(node.resample[0], torch.nn.Identity) and node.resample[1][0].in_channels == 16
    y = node([torch.randn(1, 8, 9, 5), torch.randn(1, 16, 5, 3), torch.randn(1, 4, 17, 9)])
    assert y.shape == (1, 8, 9, 5)


def test_sum_weighting_is_a_plain_fpn_sum_and_errors():
    node = create_block("bifpn_fusion", 4, 4, weighting="sum")
    a, b = torch.randn(1, 4, 5, 5), torch.randn(1, 4, 5, 5)
    torch.testing.assert_close(node.fused([a, b]), a + b)
    with pytest.raises(ValueError, match="takes 2 inputs"):
        node([a])
    with pytest.raises(ValueError, match="one axis only"):
        node([a, torch.randn(1, 4, 9, 3)])
    with pytest.raises(ValueError, match="weighting"):
        create_block("bifpn_fusion", 4, 4, weighting="attn")
    with pytest.raises(ValueError, match="at least 2 inputs"):
        create_block("bifpn_fusion", 4, 4, num_inputs=1)
