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


def test_constant_channel_uses_the_authors_eps():
    # the authors' style pooling: sqrt(unbiased var + 1e-5); a constant channel gives sqrt(1e-5), not 0 or NaN
    from attnzoo.attention.srm import style_pool
    x = torch.full((1, 2, 3, 4), 7.0, dtype=torch.float64)
    x[0, 1] = torch.arange(12.0, dtype=torch.float64).reshape(3, 4)
    t = style_pool(x)
    torch.testing.assert_close(t[0, 0], torch.tensor([7.0, 1e-5 ** 0.5], dtype=torch.float64))
    # 0..11: mean 5.5, unbiased variance 13
    torch.testing.assert_close(t[0, 1], torch.tensor([5.5, (13.0 + 1e-5) ** 0.5], dtype=torch.float64))


def test_training_at_batch_one_is_a_clear_error():
    import pytest
    srm = create_attention("srm", 4)
    assert srm.min_train_batch == 2
    x = torch.randn(1, 4, 5, 6)
    with pytest.raises(ValueError, match="SRM"):
        srm.train()(x)
    assert srm.eval()(x).shape == x.shape
