import torch

from attnzoo import create_attention


def test_se_matches_its_equation():
    torch.manual_seed(0)
    se = create_attention("se", 32)
    x = torch.randn(3, 32, 5, 7)
    z = x.mean(dim=(2, 3))
    w1, b1 = se.fc1.weight.flatten(1), se.fc1.bias
    w2, b2 = se.fc2.weight.flatten(1), se.fc2.bias
    s = torch.sigmoid(torch.relu(z @ w1.T + b1) @ w2.T + b2)
    torch.testing.assert_close(se(x), x * s[:, :, None, None])


def test_se_gate_ignores_spatial_arrangement():
    se = create_attention("se", 16)
    x = torch.randn(2, 16, 6, 6)
    perm = torch.randperm(36)
    shuffled = x.flatten(2)[:, :, perm].reshape_as(x)
    torch.testing.assert_close(se.weights(x), se.weights(shuffled))


def test_se_bottleneck_width():
    assert create_attention("se", 256).fc1.out_channels == 16
    assert create_attention("se", 256, rd_channels=10).fc1.out_channels == 10
