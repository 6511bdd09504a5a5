"""``layers.DropPath``: per-sample stochastic depth with the survivors rescaled by 1 / keep."""
import pytest
import torch

from attnzoo.layers import DropPath


def test_each_sample_is_dropped_or_rescaled_whole_and_gradients_follow():
    torch.manual_seed(0)
    layer = DropPath(0.25).train()
    x = torch.randn(400, 3, 5, 2, requires_grad=True)
    y = layer(x)
    scale = (y / x).flatten(1)
    assert torch.allclose(scale, scale[:, :1].expand_as(scale))  # one factor per sample
    factors = scale[:, 0]
    kept = factors != 0
    assert torch.allclose(factors[kept], torch.full_like(factors[kept], 1 / 0.75))
    assert 0.65 < kept.float().mean() < 0.85  # about 75 % kept (400 samples)
    y.sum().backward()
    assert torch.allclose(x.grad.flatten(1), factors[:, None].expand(-1, 30))


@pytest.mark.parametrize("prob,training", [(0.0, True), (0.3, False)])
def test_identity_when_off(prob, training):
    x = torch.randn(4, 6)
    assert DropPath(prob).train(training)(x) is x


def test_bad_probability():
    with pytest.raises(ValueError, match="drop_prob"):
        DropPath(1.0)
