import pytest
import torch

from attnzoo import create_attention, create_model


@pytest.mark.parametrize("channels,groups", [(64, 32), (128, 64), (2048, 64), (96, 48), (6, 3)])
def test_default_groups(channels, groups):
    m = create_attention("shuffle_attn", channels)
    assert m.groups == groups
    assert sum(p.numel() for p in m.parameters()) == 3 * channels // groups


def test_at_init_output_is_shuffled_input_times_sigmoid_one():
    torch.manual_seed(0)
    m = create_attention("shuffle_attn", 16, groups=2)
    x = torch.randn(2, 16, 5, 3)
    y = m(x)
    # reshape to (2 halves, 8) and interleave: output channel 2i is input channel i, 2i+1 is channel 8 + i
    expected = x.view(2, 2, 8, 5, 3).transpose(1, 2).reshape(2, 16, 5, 3) * torch.sigmoid(torch.tensor(1.0))
    torch.testing.assert_close(y, expected)


def test_spatial_gate_is_high_where_a_channel_is_above_its_mean():
    m = create_attention("shuffle_attn", 4, groups=1)
    with torch.no_grad():
        m.s_weight.fill_(5.0)
    x = torch.randn(1, 4, 6, 6)
    _, g_s = m.gates(x)
    x2 = x[:, 2:]
    above = x2 > x2.mean(dim=(2, 3), keepdim=True)
    assert (g_s[above] > g_s[~above].max()).all()


def test_bad_groups_and_resnet():
    with pytest.raises(ValueError):
        create_attention("shuffle_attn", 64, groups=64)  # needs C divisible by 128
    with pytest.raises(ValueError):
        create_attention("shuffle_attn", 7)
    model = create_model("sa_resnet50")
    assert all(m.groups == 64 for m in model.modules() if type(m).__name__ == "ShuffleAttention")
