import pytest
import torch

from attnzoo import create_attention, create_model


def test_gate_is_separable_rows_times_columns():
    torch.manual_seed(0)
    m = create_attention("coord_attn", 16).eval()
    x = torch.rand(1, 16, 7, 11) + 0.5  # positive, so y / x is the gate
    with torch.no_grad():
        gate = m(x) / x
    for c in range(16):  # every channel's H x W gate is an outer product: rank one
        s = torch.linalg.svdvals(gate[0, c].double())
        assert s[1] < 1e-5 * s[0]


def test_flip_equivariance():
    torch.manual_seed(0)
    m = create_attention("coord_attn", 32).eval()
    x = torch.randn(2, 32, 6, 9)
    with torch.no_grad():
        for dim in (2, 3):
            torch.testing.assert_close(m(x.flip(dim)), m(x).flip(dim))


@pytest.mark.parametrize("channels,mid", [(64, 8), (512, 16), (96, 8)])
def test_width_is_max_of_8_and_c_over_32(channels, mid):
    m = create_attention("coord_attn", channels)
    assert m.conv_h.in_channels == mid
    expected = channels * mid + mid + 2 * mid + 2 * (mid * channels + channels)
    assert sum(p.numel() for p in m.parameters()) == expected


def test_mobilenetv2_has_a_block_after_each_expanded_depthwise():
    model = create_model("coord_attn_mobilenetv2")
    assert sum(type(m).__name__ == "CoordAttention" for m in model.modules()) == 16  # 17 blocks, first has t = 1
    with pytest.raises(ValueError):
        create_attention("coord_attn", 16, reduction=0)
