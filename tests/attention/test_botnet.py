"""BoTNet: the MHSA against timm's BottleneckAttn on the same weights (both position scalings), the relative logits
against an explicit double loop, smaller maps reading the tables' centre, BoT50's c5 units, and checks."""
import pytest
import torch

from attnzoo import create_attention, create_model
from attnzoo.attention.botnet import BoTMHSA

timm_layers = pytest.importorskip("timm.layers.bottleneck_attn")


@pytest.mark.parametrize("scale_pos", [True, False])
def test_matches_timm_bottleneck_attn(scale_pos):
    torch.manual_seed(0)
    theirs = timm_layers.BottleneckAttn(16, feat_size=(5, 7), num_heads=4, scale_pos_embed=scale_pos).eval()
    ours = BoTMHSA(16, 4, (5, 7), scale_pos=scale_pos).eval()
    ours.load_state_dict({"qkv.weight": theirs.qkv.weight, "rel_h": theirs.pos_embed.height_rel,
                          "rel_w": theirs.pos_embed.width_rel})
    x = torch.randn(2, 16, 5, 7)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x))


def test_relative_logits_depend_on_the_offset_only():
    torch.manual_seed(0)
    m = BoTMHSA(8, 2, 4)
    h, w = 3, 4
    q = torch.randn(1, 2, h * w, 4)
    bias = m.relative_logits(q, (h, w))
    for a in range(h * w):
        for b in range(h * w):
            (y, x), (y2, x2) = divmod(a, w), divmod(b, w)
            expected = q[0, :, a] @ (m.rel_h[y2 - y + 3] + m.rel_w[x2 - x + 3])
            torch.testing.assert_close(bias[0, :, a, b], expected)


def test_a_smaller_map_uses_the_centre_of_the_tables():
    torch.manual_seed(0)
    big, small = BoTMHSA(8, 2, 6).eval(), BoTMHSA(8, 2, (3, 4)).eval()
    small.load_state_dict({"qkv.weight": big.qkv.weight, "rel_h": big.rel_h[3:8], "rel_w": big.rel_w[2:9]})
    x = torch.randn(1, 8, 3, 4)
    with torch.no_grad():
        torch.testing.assert_close(big(x), small(x))
    with pytest.raises(ValueError, match="up to 6x6"):
        big(torch.randn(1, 8, 7, 2))


def test_bot50_replaces_the_c5_convolutions_only():
    with torch.device("meta"):
        m = create_model("botnet50")
    units = [block.conv2 for stage in m.stages for block in stage]
    assert [isinstance(u[0], BoTMHSA) for u in units] == [False] * 13 + [True] * 3
    assert units[13][0].max_hw == (14, 14) and units[14][0].max_hw == (7, 7)
    assert isinstance(units[13][1], torch.nn.AvgPool2d) and len(units[14]) == 3


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_heads"):
        create_attention("bot_mhsa", 10, num_heads=4)
