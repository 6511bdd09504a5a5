import pytest
import torch

from attnzoo import create_attention, create_model


def test_same_weight_count_as_a_plain_3x3_convolution():
    c = 32
    m = create_attention("scconv", c)
    convs = [p for n, p in m.named_parameters() if p.dim() == 4]
    assert sum(p.numel() for p in convs) == 9 * c * c  # four C/2 x C/2 kernels = one C x C kernel


def test_halves_are_processed_separately():
    torch.manual_seed(0)
    m = create_attention("scconv", 16).eval()
    x = torch.randn(2, 16, 8, 12)
    x1_changed = x.clone()
    x1_changed[:, :8] += torch.randn(2, 8, 8, 12)
    x2_changed = x.clone()
    x2_changed[:, 8:] += torch.randn(2, 8, 8, 12)
    with torch.no_grad():
        y, y_a, y_b = m(x), m(x1_changed), m(x2_changed)
    torch.testing.assert_close(y_a[:, 8:], y[:, 8:])  # the calibrated half ignores X1
    torch.testing.assert_close(y_b[:, :8], y[:, :8])  # the plain half ignores X2


def test_calibration_uses_context_and_small_maps_work():
    torch.manual_seed(0)
    m = create_attention("scconv", 8, act=None).eval()
    x2 = torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        gate = m.calibration(x2)
        far = x2.clone()
        far[..., 0, 0] += 5.0  # inside the same 4x4 pooling window as (3, 3)
        assert not torch.allclose(m.calibration(far)[..., 3, 3], gate[..., 3, 3])
        for shape in [(1, 8, 1, 1), (1, 8, 3, 2), (2, 8, 5, 11)]:
            assert m(torch.randn(shape)).shape == shape
    with pytest.raises(ValueError, match="even"):
        create_attention("scconv", 7)


def test_scnet50_replaces_every_bottleneck_conv():
    model = create_model("scnet50")
    assert sum(type(m).__name__ == "SelfCalibratedConv" for m in model.modules()) == 16
    strides = [m.k1[0].stride[0] for m in model.modules() if type(m).__name__ == "SelfCalibratedConv"]
    assert strides.count(2) == 3
