import pytest
import torch
import torch.nn.functional as F

from attnzoo import create_conv, create_model
from attnzoo.convs.dgc import DynamicGroupConv2d, dgc_lasso_loss, set_progress


def _reference(x, m):
    """The paper's equations one image and one head at a time (float64): saliency, zero the k smallest, convolve, interleave."""
    heads, per = m.heads, m.out_channels // m.heads
    k = m.inactive_channels
    outs = []
    for n in range(x.shape[0]):
        gap = x[n].mean(dim=(1, 2))
        ys = []
        for h in range(heads):
            s = torch.relu(m.fc2[h] @ torch.relu(m.fc1[h] @ gap) + m.fc2_bias[h])
            if k:
                drop = s.argsort()[:k]
                s = s.clone()
                s[drop] = 0
            ys.append(F.conv2d(x[n:n + 1] * s.view(1, -1, 1, 1), m.weight[h * per:(h + 1) * per], None, m.stride,
                               m.padding))
        y = torch.stack(ys, dim=2)                            # (1, per, heads, H, W): channel j * heads + h
        outs.append(y.reshape(1, m.out_channels, *y.shape[-2:]))
    return torch.cat(outs)


@pytest.mark.parametrize("cin,cout,heads,stride,progress", [(16, 24, 4, 1, 0.0), (16, 24, 4, 2, 0.5),
                                                            (32, 32, 2, 1, 1.0), (8, 12, 3, 2, 0.9)])
def test_grouped_implementation_equals_per_image_per_head_loop(cin, cout, heads, stride, progress):
    torch.manual_seed(0)
    m = create_conv("dgc", cin, cout, 3, stride=stride, heads=heads).double()
    torch.nn.init.normal_(m.fc2_bias)                         # spread the saliencies (no ties at zero)
    set_progress(m, progress)
    x = torch.rand(3, cin, 9, 14, dtype=torch.float64)
    m.eval()
    torch.testing.assert_close(m(x), _reference(x, m), rtol=1e-10, atol=1e-10)


def test_constant_saliency_is_a_static_convolution_with_interleaved_filters():
    """Saliency layers zero: every saliency is ReLU(1) = 1, no channel dropped, so y = (permuted W) * x."""
    torch.manual_seed(0)
    m = create_conv("dgc", 8, 12, 3, heads=4).eval()
    with torch.no_grad():
        m.fc1.zero_(); m.fc2.zero_()
    per = 3
    order = [h * per + j for j in range(per) for h in range(4)]  # output channel j * heads + h <- head h, filter j
    x = torch.randn(2, 8, 7, 10)
    torch.testing.assert_close(m(x), F.conv2d(x, m.weight[order], padding=1), rtol=1e-5, atol=1e-5)


def test_schedule_and_kept_channels():
    m = create_conv("dgc", 64, 64, 3)                       # gate_factor 1/4: 48 of 64 channels dropped at the end
    assert [m.target_inactive(p) for p in (0.0, 1 / 12, 0.5, 0.75, 1.0)] == [0, 0, 30, 48, 48]
    torch.manual_seed(0)
    torch.nn.init.normal_(m.fc2_bias)
    set_progress(m, 1.0)
    s = m.saliency(torch.rand(2, 64, 5, 5))
    kept = (m.gates(s) > 0).sum(dim=2)
    assert (kept <= 16).all() and (kept > 0).all()
    # training mode follows the progress; the value reached is kept for evaluation and in the state dict
    m.train(); m.progress = 0.5; m(torch.rand(2, 64, 5, 5)); m.eval()
    assert m.inactive_channels == 30
    fresh = create_conv("dgc", 64, 64, 3)
    fresh.load_state_dict(m.state_dict())
    assert fresh.inactive_channels == 30 and fresh.progress == 0.5


def test_dropped_channels_get_no_gradient():
    """The unbiased gate: a dropped channel contributes nothing, so its weights receive zero gradient."""
    torch.manual_seed(0)
    m = create_conv("dgc", 16, 8, 3, heads=2)
    torch.nn.init.normal_(m.fc2_bias)
    set_progress(m, 1.0)
    m.eval()
    x = torch.rand(1, 16, 6, 6)
    m(x).square().sum().backward()
    gates = m.gates(m.saliency(x))[0]                       # (heads, C_in)
    for h in range(2):
        dropped = gates[h] == 0
        assert dropped.sum() == 12
        assert (m.weight.grad[h * 4:(h + 1) * 4, dropped] == 0).all()
        assert (m.weight.grad[h * 4:(h + 1) * 4, ~dropped].abs().sum() > 0)


def test_lasso_loss_and_pre_activation():
    torch.manual_seed(0)
    model = create_model("resnet18", conv_layer="dgc", num_classes=10, layers=(1, 1, 1, 1))
    assert set_progress(model, 0.3) == 8
    layers = [m for m in model.modules() if isinstance(m, DynamicGroupConv2d)]
    seen = {}
    layers[3].register_forward_hook(lambda mod, args, out: seen.setdefault("x", args[0].detach()))
    model(torch.randn(2, 3, 33, 31))
    # the Lasso term of a layer: each head's mean saliency on the layer's input, summed over heads (code)
    x = seen["x"]
    gap = x.mean(dim=(2, 3))
    s = torch.stack([torch.relu(torch.relu(gap @ layers[3].fc1[h].T) @ layers[3].fc2[h].T + layers[3].fc2_bias[h])
                     for h in range(layers[3].heads)], dim=1)
    torch.testing.assert_close(layers[3].lasso_loss, sum(s[:, h].mean() for h in range(layers[3].heads)))
    torch.testing.assert_close(dgc_lasso_loss(model), torch.stack([m.lasso_loss for m in layers]).sum())
    pre = create_conv("dgc", 16, 16, 3, pre_act=True)
    assert isinstance(pre.pre_act[0], torch.nn.BatchNorm2d)
    assert pre(torch.randn(1, 16, 5, 7)).shape == (1, 16, 5, 7)


def test_bad_arguments():
    for kw in ({"heads": 5}, {"gate_factor": 0.0}, {"gate_factor": 1.5}, {"squeeze_rate": 0}):
        with pytest.raises(ValueError):
            create_conv("dgc", 16, 24, 3, **kw)
    with pytest.raises(ValueError, match="progress"):
        set_progress(create_conv("dgc", 16, 24, 3), 1.5)
    with pytest.raises(ValueError, match="forward"):
        dgc_lasso_loss(create_conv("dgc", 16, 24, 3))
