"""Context Gating (miech2017learnable), registered as "context_gating"."""
import pytest
import torch

from attnzoo import create_attention


@torch.no_grad()
def test_gating_equation_at_every_position():
    """Y = sigmoid(W X + b) * X for the C-vector X of each position (norm=False: the paper's bias form)."""
    torch.manual_seed(0)
    m = create_attention("context_gating", 6, norm=False)
    x = torch.randn(2, 6, 4, 5)
    w, b = m.fc.weight.flatten(1), m.fc.bias
    vectors = x.permute(0, 2, 3, 1)  # (N, H, W, C)
    expected = torch.sigmoid(vectors @ w.T + b) * vectors
    torch.testing.assert_close(m(x), expected.permute(0, 3, 1, 2))


@torch.no_grad()
def test_batchnorm_replaces_the_bias_as_in_the_authors_code():
    m = create_attention("context_gating", 6).eval()
    assert m.fc.bias is None
    m.bn.running_mean.uniform_(-1, 1)
    m.bn.running_var.uniform_(0.5, 2)
    x = torch.randn(1, 6, 3, 3)
    lin = torch.einsum("oc,nchw->nohw", m.fc.weight.flatten(1), x)
    bn = m.bn
    normed = (lin - bn.running_mean.view(1, -1, 1, 1)) / (bn.running_var.view(1, -1, 1, 1) + bn.eps).sqrt()
    torch.testing.assert_close(m(x), x * torch.sigmoid(normed * bn.weight.view(1, -1, 1, 1) + bn.bias.view(1, -1, 1, 1)))


@torch.no_grad()
def test_without_the_diagonal_a_gate_ignores_its_own_feature():
    m = create_attention("context_gating", 5, remove_diag=True).eval()
    x = torch.randn(2, 5, 3, 4)
    y = x.clone()
    y[:, 2] += 3.0
    torch.testing.assert_close(m.weights(y)[:, 2], m.weights(x)[:, 2])
    assert not torch.allclose(m.weights(y)[:, 1], m.weights(x)[:, 1])


def test_pooled_gate_is_one_value_per_channel():
    m = create_attention("context_gating", 8, pool=True).eval()
    assert m.weights(torch.randn(2, 8, 5, 7)).shape == (2, 8, 1, 1)
    with pytest.raises(ValueError, match="batch of at least 2"):
        m.train()(torch.randn(1, 8, 5, 7))
    create_attention("context_gating", 8, pool=True, norm=False).train()(torch.randn(1, 8, 5, 7))


def test_initialisation_follows_the_authors_scale():
    w = create_attention("context_gating", 1024).fc.weight.detach()
    assert abs(float(w.std()) - 1024 ** -0.5) < 0.05 * 1024 ** -0.5
