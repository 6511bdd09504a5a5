import pytest
import torch
import torch.nn.functional as F

from attnzoo import create_attention, create_model


def _gate(gate, t):
    """Reference Z-pool gate on a tensor whose dim 1 is the collapsed axis."""
    pooled = torch.cat([t.max(dim=1, keepdim=True).values, t.mean(dim=1, keepdim=True)], dim=1)
    return torch.sigmoid(gate.norm(F.conv2d(pooled, gate.conv.weight, gate.conv.bias, padding=3)))


def test_three_branches_are_cross_dimension_gates_averaged():
    torch.manual_seed(0)
    m = create_attention("triplet", 6).eval()
    x = torch.randn(2, 6, 5, 9)
    cw = _gate(m.gate_cw, x.permute(0, 2, 1, 3)).permute(0, 2, 1, 3)  # collapse H: a C x W map
    ch = _gate(m.gate_ch, x.permute(0, 3, 2, 1)).permute(0, 3, 2, 1)  # collapse W: an H x C map
    hw = _gate(m.gate_hw, x)  # collapse C: an H x W map
    assert cw.shape == (2, 6, 1, 9) and ch.shape == (2, 6, 5, 1) and hw.shape == (2, 1, 5, 9)
    torch.testing.assert_close(m(x), (x * cw + x * ch + x * hw) / 3)


@pytest.mark.parametrize("channels", [8, 64, 512])
def test_parameter_count_does_not_depend_on_channels(channels):
    k = 7
    m = create_attention("triplet", channels, kernel_size=k)
    assert sum(p.numel() for p in m.parameters()) == 3 * (2 * k * k + 2)
    m2 = create_attention("triplet", channels, no_spatial=True)
    assert sum(p.numel() for p in m2.parameters()) == 2 * (2 * k * k + 2)


def test_even_kernel_rejected_and_resnet_has_a_module_per_block():
    with pytest.raises(ValueError, match="odd"):
        create_attention("triplet", 8, kernel_size=4)
    model = create_model("triplet_resnet50")
    assert sum(type(m).__name__ == "TripletAttention" for m in model.modules()) == 16
