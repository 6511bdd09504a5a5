import pytest
import torch

from attnzoo import create_attention, create_model


def test_branch_weights_are_a_softmax_over_branches():
    torch.manual_seed(0)
    m = create_attention("pyramid_squeeze", 64)
    feats = torch.stack([conv(torch.randn(2, 64, 6, 6)) for conv in m.convs], dim=1)
    w = m.branch_weights(feats)
    assert w.shape == (2, 4, 16, 1, 1)
    torch.testing.assert_close(w.sum(dim=1), torch.ones(2, 16, 1, 1))


def test_output_is_concatenation_of_weighted_branches():
    torch.manual_seed(0)
    m = create_attention("pyramid_squeeze", 32, groups=(1, 2, 4, 8)).eval()
    x = torch.randn(1, 32, 5, 7)
    with torch.no_grad():
        feats = [conv(x) for conv in m.convs]
        z = torch.stack([m.se(f.mean(dim=(2, 3), keepdim=True)) for f in feats], dim=1).softmax(dim=1)
        expected = torch.cat([f * z[:, i] for i, f in enumerate(feats)], dim=1)
        torch.testing.assert_close(m(x), expected)


def test_parameter_count_from_the_grouped_convolutions():
    c = 64
    m = create_attention("pyramid_squeeze", c)
    conv = sum(c * (c // 4) // g * k * k for k, g in zip((3, 5, 7, 9), (1, 4, 8, 16)))
    se = 2 * 16 * 1 + 1 + 16  # 16 -> 1 -> 16 with biases
    assert sum(p.numel() for p in m.parameters()) == conv + se


def test_stride_errors_and_model():
    m = create_attention("pyramid_squeeze", 64, stride=2)
    assert m(torch.randn(1, 64, 9, 8)).shape == (1, 64, 5, 4)
    with pytest.raises(ValueError):
        create_attention("pyramid_squeeze", 66)
    model = create_model("epsanet50")
    assert sum(type(m).__name__ == "PyramidSqueezeAttention" for m in model.modules()) == 16
