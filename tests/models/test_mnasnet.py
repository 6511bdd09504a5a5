"""MnasNet: the widths of the official mnasnet_a1/mnasnet_b1 rows, SE on a quarter of the block *input* width with
ReLU and sigmoid only in A1's three SE stages, the official "SAME"/eps 1e-3 option, and the first block's lack of
a skip."""
import pytest
import torch
import torch.nn as nn

from attnzoo import create_model


def _blocks(model):
    return [b for stage in model.blocks for b in stage]


# expanded (depthwise) width of every block, from the official rows (expansion x input width)
EXPANDED = {"mnasnet_a1": [32, 96, 144, 72, 120, 120, 240, 480, 480, 480, 480, 672, 672, 960, 960, 960],
            "mnasnet_b1": [32, 48, 72, 72, 72, 120, 120, 240, 480, 480, 480, 576, 576, 1152, 1152, 1152, 1152]}


@pytest.mark.parametrize("name", sorted(EXPANDED))
def test_expanded_widths(name):
    with torch.device("meta"):
        model = create_model(name)
    assert [b.conv_dw.out_channels for b in _blocks(model)] == EXPANDED[name]
    assert model.conv_stem.out_channels == 32 and model.num_features == 1280


def test_se_only_in_a1s_se_stages_squeezing_the_block_input():
    blocks = _blocks(create_model("mnasnet_a1"))
    widths = [(b.conv_pw.in_channels, b.se.fc1.out_channels) for b in blocks if not isinstance(b.se, nn.Identity)]
    assert widths == [(24, 6), (40, 10), (40, 10), (80, 20), (112, 28), (112, 28), (160, 40), (160, 40)]
    se = blocks[3].se
    assert isinstance(se.act, nn.ReLU) and isinstance(se.gate, nn.Sigmoid)
    assert all(isinstance(b.se, nn.Identity) for b in _blocks(create_model("mnasnet_b1")))


def test_first_block_has_no_skip_and_relu_everywhere():
    model = create_model("mnasnet_b1", num_classes=10)
    blocks = _blocks(model)
    assert not blocks[0].has_skip and blocks[2].has_skip
    assert all(isinstance(m, (nn.ReLU, nn.Identity)) for b in blocks for m in (b.act1, b.act2))
    assert model(torch.randn(1, 3, 33, 47)).shape == (1, 10)


def test_official_tf_settings_are_an_option_with_the_same_counts():
    with torch.device("meta"):
        ours = create_model("mnasnet_a1")
        official = create_model("mnasnet_a1", padding="same", bn_eps=1e-3, bn_momentum=0.01)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in official.parameters())
    assert official.bn1.eps == 1e-3 and type(official.conv_stem).__name__ == "Conv2dSame"
    assert type(ours.conv_stem) is nn.Conv2d and ours.conv_stem.padding == (1, 1)
