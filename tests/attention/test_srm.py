import torch

from attnzoo import create_attention


def _srm_with_random_integration():
    """An SRM in eval mode whose style-integration weights are random (they start constant)."""
    torch.manual_seed(0)
    srm = create_attention("srm", 8).eval()
    with torch.no_grad():
        srm.cfc.copy_(torch.randn(8, 2))
    return srm


def test_srm_matches_style_pooling_and_integration():
    srm = _srm_with_random_integration()
    x = torch.randn(3, 8, 5, 6)
    mu, sd = x.mean(dim=(2, 3)), (x.flatten(2).var(dim=2) + 1e-5).sqrt()
    z = srm.cfc[:, 0] * mu + srm.cfc[:, 1] * sd
    bn = srm.norm
    g = torch.sigmoid((z - bn.running_mean) / (bn.running_var + bn.eps).sqrt() * bn.weight + bn.bias)
    torch.testing.assert_close(srm(x), x * g[:, :, None, None])


def test_srm_does_not_mix_channels():
    srm = _srm_with_random_integration()
    x = torch.randn(1, 8, 6, 6)
    x2 = x.clone()
    x2[:, 5] = 10 * torch.randn(6, 6)
    changed = (srm.weights(x) - srm.weights(x2)).flatten().abs() > 0
    assert changed.tolist() == [c == 5 for c in range(8)]


def test_srm_single_pixel_is_finite():
    srm = create_attention("srm", 4).train()
    x = torch.randn(2, 4, 1, 1, requires_grad=True)
    srm(x).sum().backward()
    assert torch.isfinite(x.grad).all()
