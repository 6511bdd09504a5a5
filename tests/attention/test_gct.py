import pytest
import torch

from attnzoo import create_attention, create_model
from attnzoo.attention.gct import GatedChannelTransform


def _random_gct(c):
    gct = create_attention("gct", c)
    with torch.no_grad():
        for p in (gct.alpha, gct.gamma, gct.beta):
            p.copy_(torch.randn_like(p))
    return gct


def test_new_gct_is_identity():
    x = torch.randn(2, 8, 5, 7)
    torch.testing.assert_close(create_attention("gct", 8)(x), x)


def test_gct_matches_its_equations():
    torch.manual_seed(0)
    gct = _random_gct(8)
    x = torch.randn(2, 8, 5, 7)
    s = gct.alpha.flatten() * (x.square().sum(dim=(2, 3)) + 1e-5).sqrt()
    s_hat = 8 ** 0.5 * s / (s.square().sum(dim=1, keepdim=True) + 8e-5).sqrt()
    gate = 1 + torch.tanh(gct.gamma.flatten() * s_hat + gct.beta.flatten())
    torch.testing.assert_close(gct(x), x * gate[:, :, None, None])


def test_gate_is_invariant_to_input_scale():
    torch.manual_seed(0)
    gct = _random_gct(16)
    x = torch.randn(2, 16, 6, 6)
    torch.testing.assert_close(gct.weights(x), gct.weights(7.5 * x), atol=1e-5, rtol=1e-4)


def test_gct_resnet50_puts_a_gct_before_every_convolution():
    model = create_model("gct_resnet50")
    pairs = [m for m in model.modules() if isinstance(m, torch.nn.Sequential) and len(m) == 2
             and isinstance(m[0], GatedChannelTransform) and isinstance(m[1], torch.nn.Conv2d)]
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(pairs) == len(convs) == 53
    assert all(p[0].alpha.shape[1] == p[1].in_channels for p in pairs)


def test_bad_arguments():
    with pytest.raises(ValueError):
        create_attention("gct", 8, mode="l3")
