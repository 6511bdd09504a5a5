import torch

from attnzoo import create_attention, create_model


def test_closed_form_matches_explicit_formula():
    torch.manual_seed(0)
    lam = 1e-4
    m = create_attention("simam", 8, e_lambda=lam)
    x = torch.randn(2, 8, 5, 7)
    d = (x - x.mean(dim=(2, 3), keepdim=True)) ** 2
    var = x.var(dim=(2, 3), keepdim=True, correction=1)  # sum of d over H W - 1 = M
    inv_energy = d / (4 * (var + lam)) + 0.5
    torch.testing.assert_close(m(x), x * torch.sigmoid(inv_energy))
    assert sum(p.numel() for p in m.parameters()) == 0


def test_weights_ignore_channel_shift_and_follow_scale_with_lambda():
    torch.manual_seed(0)
    x = torch.randn(1, 4, 6, 6)
    shift = torch.randn(1, 4, 1, 1) * 10
    m = create_attention("simam", 4, e_lambda=0.1)
    torch.testing.assert_close(m.weights(x + shift), m.weights(x), rtol=1e-4, atol=1e-5)
    s = 3.0  # scaling x by s is the same as scaling lambda by s^2
    m2 = create_attention("simam", 4, e_lambda=0.1 * s * s)
    torch.testing.assert_close(m2.weights(s * x), m.weights(x))


def test_more_distinct_neurons_get_larger_weights_and_1x1_is_finite():
    m = create_attention("simam", 1)
    x = torch.tensor([0.0, 0.1, -0.2, 0.5, -1.0, 2.0]).view(1, 1, 2, 3)
    w = m.weights(x).flatten()
    dist = (x.flatten() - x.mean()).abs()
    assert torch.equal(w.argsort(), dist.argsort())
    assert torch.isfinite(create_attention("simam", 3)(torch.randn(2, 3, 1, 1))).all()


def test_resnet_places_simam_after_the_3x3_conv_before_bn():
    model = create_model("simam_resnet50")
    conv2 = model.stages[0][0].conv2
    assert [type(m).__name__ for m in conv2] == ["Conv2d", "SimAM", "BatchNorm2d", "ReLU"]
    assert conv2[1].e_lambda == 0.1
