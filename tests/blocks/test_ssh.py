"""SSH detection and context modules (najibi2017ssh), registered as "ssh"."""
import pytest
import torch
import torch.nn.functional as F

from attnzoo import create_block


def test_branches_see_3x3_5x5_and_7x7_windows():
    """The 3x3 branch (first C/2 channels), the 5x5 and 7x7 context branches (C/4 each), measured by gradients."""
    block = create_block("ssh", 8, 16).eval()
    for m in block.modules():  # positive biases: every ReLU is active on a zero input, the block is linear
        if isinstance(m, torch.nn.Conv2d):
            m.bias.data.fill_(10.0)
    extents = []
    for channels in (slice(0, 8), slice(8, 12), slice(12, 16)):
        x = torch.zeros(1, 8, 21, 21, requires_grad=True)
        block(x)[0, channels, 10, 10].sum().backward()
        rows, cols = torch.nonzero(x.grad[0].abs().sum(dim=0), as_tuple=True)
        extents.append((int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)))
    assert extents == [(3, 3), (5, 5), (7, 7)]


@torch.no_grad()
def test_ssh_equals_the_prototxt_graph_built_from_primitives():
    torch.manual_seed(0)
    block = create_block("ssh", 6, 8, num_anchors=2).eval()

    def conv(t, unit):
        return F.conv2d(t, unit[0].weight, unit[0].bias, padding=1)

    x = torch.randn(2, 6, 9, 7)
    d = F.relu(conv(x, block.context_dimred))
    c = conv(F.relu(conv(d, block.context7x7[0])), block.context7x7[1])
    y = F.relu(torch.cat([conv(x, block.conv3x3), conv(d, block.context5x5), c], dim=1))
    torch.testing.assert_close(block(x), y)
    scores, deltas = block.predict(x)
    torch.testing.assert_close(scores, F.conv2d(y, block.cls_score.weight, block.cls_score.bias))
    assert scores.shape == (2, 4, 9, 7) and deltas.shape == (2, 8, 9, 7)


def test_m3_widths_of_the_released_model():
    """M3 on conv5_3 (512 channels): 3x3 to 256, context 128 + 128, heads for K = 2 anchors, all with biases."""
    with torch.device("meta"):
        block = create_block("ssh", 512, 512, num_anchors=2)
    convs = (512 * 9 + 1) * 256 + (512 * 9 + 1) * 128 + 3 * (128 * 9 + 1) * 128 + (512 + 1) * (4 + 8)
    assert sum(p.numel() for p in block.parameters()) == convs


def test_ssh_argument_errors():
    with pytest.raises(ValueError, match="divisible"):
        create_block("ssh", 8, 10)
    with pytest.raises(ValueError, match="num_anchors"):
        create_block("ssh", 8, 8).predict(torch.randn(1, 8, 5, 5))
    assert create_block("ssh", 8, 8, norm=True).conv3x3[1].num_features == 4
