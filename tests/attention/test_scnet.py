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


def _reference_scconv(m, x):
    """Float64 forward of the authors' SCConv-based branch pair (MCG-NKU/SCNet scnet.py), written from their code:
    k2 = AvgPool2d(r) (floor mode) -> conv -> BN; Y2 = ReLU(BN(conv(BN(conv(X2)) * sigmoid(X2 + Up(k2(X2)))))."""
    def conv_bn(seq, t, act):
        conv, bn = seq[0], seq[1]
        t = torch.nn.functional.conv2d(t, conv.weight.double(), None, conv.stride, conv.padding)
        scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
        t = (t - bn.running_mean.double()[:, None, None]) * scale[:, None, None] + bn.bias.double()[:, None, None]
        return t.clamp_min(0) if act else t

    x1, x2 = x.double().chunk(2, dim=1)
    h, w = x2.shape[-2:]
    r = 4
    hp, wp = h // r, w // r  # floor mode: the last h % r rows / w % r columns are dropped
    pooled = x2[..., :hp * r, :wp * r].reshape(*x2.shape[:2], hp, r, wp, r).mean(dim=(3, 5))
    small = conv_bn(m.k2, pooled, False)
    rows = torch.arange(h) * hp // h  # nearest-neighbour upsampling back to h x w
    cols = torch.arange(w) * wp // w
    up = small[..., rows[:, None], cols[None, :]]
    gate = torch.sigmoid(x2 + up)
    y2 = conv_bn(m.k4, conv_bn(m.k3, x2, False) * gate, True)
    return torch.cat([conv_bn(m.k1, x1, True), y2], dim=1)


@pytest.mark.parametrize("size", [(14, 14), (7, 7), (13, 10), (8, 8)])
def test_matches_authors_floor_mode_pooling(size):
    # 14 x 14 and 7 x 7 are the stage-3/4 maps of SCNet-50 at 224 px: not multiples of r = 4
    torch.manual_seed(0)
    m = create_attention("scconv", 16)
    for bn in [mod for mod in m.modules() if isinstance(mod, torch.nn.BatchNorm2d)]:
        bn.running_mean.normal_(0, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.data.normal_(1, 0.3)
        bn.bias.data.normal_(0, 0.3)
    m = m.eval().double()
    x = torch.randn(2, 16, *size, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(m(x), _reference_scconv(m, x), rtol=1e-10, atol=1e-10)


def test_sides_shorter_than_r_are_averaged_whole():
    torch.manual_seed(0)
    m = create_attention("scconv", 8, act=None).eval().double()
    x2 = torch.randn(1, 4, 3, 6, dtype=torch.float64)  # H = 3 < r: one window over all rows; W = 6: one of 4
    with torch.no_grad():
        pooled = x2[..., :, :4].mean(dim=(2, 3), keepdim=True)
        expected = torch.sigmoid(x2 + m.k2(pooled).expand_as(x2))
        torch.testing.assert_close(m.calibration(x2), expected)
