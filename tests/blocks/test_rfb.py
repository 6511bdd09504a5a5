"""Receptive Field Block (liu2018receptive), registered as "rfb" and "rfb_s"."""
import pytest
import torch

from attnzoo import create_block


def _linear_regime(block):
    """Eval mode with every BN shifted by +10: on a zero input every ReLU is active, the block is linear."""
    block.eval()
    for m in block.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.bias.data.fill_(10.0)
    return block


def _extent(branch, channels=16, size=41):
    """Height and width of the input region one output pixel of ``branch`` depends on (measured by gradients)."""
    x = torch.zeros(1, channels, size, size, requires_grad=True)
    branch(x)[0, :, size // 2, size // 2].sum().backward()
    rows, cols = torch.nonzero(x.grad[0].abs().sum(dim=0), as_tuple=True)
    return int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)


@pytest.mark.parametrize("visual", [1, 2])
def test_rfb_branch_receptive_fields_grow_with_the_rate(visual):
    """1x1 -> 3x3 rate v: 2v + 1; 3x3 -> rate v + 1: 2v + 5; two 3x3 -> rate 2v + 1: 4v + 7 pixels wide."""
    block = _linear_regime(create_block("rfb", 16, 16, visual=visual))
    v = visual
    assert block.rates == (v, v + 1, 2 * v + 1)
    for branch, width in zip(block.branches, (2 * v + 1, 2 * v + 5, 4 * v + 7)):
        assert _extent(branch) == (width, width)


def test_rfb_s_branches_are_rectangular_before_the_dilated_conv():
    """RFB-s: 3; 3x1 then rate 3: 9 x 7; 1x3 then rate 3: 7 x 9; 1x3, 3x1 then rate 5: 13 x 13."""
    block = _linear_regime(create_block("rfb_s", 16, 16))
    assert [_extent(b) for b in block.branches] == [(3, 3), (9, 7), (7, 9), (13, 13)]


@torch.no_grad()
def test_rfb_output_is_relu_of_scaled_branches_plus_shortcut():
    torch.manual_seed(0)
    block = create_block("rfb", 32, 24, scale=0.1).eval()
    x = torch.randn(2, 32, 9, 7)
    mixed = block.ConvLinear(torch.cat([b(x) for b in block.branches], dim=1))
    torch.testing.assert_close(block(x), torch.relu(0.1 * mixed + block.shortcut(x)))


def test_rfb_widths_follow_the_authors_code():
    """in 1024 -> out 1024 (w = 128): branch widths 2w, the 3w/2 = 192 middle conv, 6w -> out, shortcut."""
    with torch.device("meta"):
        block = create_block("rfb", 1024, 1024)
    w = 128
    convs = [1024 * 2 * w, 2 * w * 2 * w * 9,
             1024 * w, w * 2 * w * 9, 2 * w * 2 * w * 9,
             1024 * w, w * 192 * 9, 192 * 2 * w * 9, 2 * w * 2 * w * 9,
             6 * w * 1024, 1024 * 1024]
    bn = 2 * (2 * w * 2 + (w + 2 * w * 2) + (w + 192 + 2 * w * 2) + 1024 * 2)
    assert sum(p.numel() for p in block.parameters()) == sum(convs) + bn


def test_stride_two_and_argument_errors():
    y = create_block("rfb", 16, 8, stride=2).eval()(torch.randn(1, 16, 9, 14))
    assert y.shape == (1, 8, 5, 7)
    with pytest.raises(ValueError, match="stride=1"):
        create_block("rfb_s", 16, 16, stride=2)
    with pytest.raises(ValueError, match="in_channels >= 16"):
        create_block("rfb", 8, 8)
