"""Every registered attention module and model, parametrized over the registry."""
import inspect

import pytest
import torch

from attnzoo import create_attention, create_model, list_attention, list_models
from attnzoo.registry import attention_entry

ATTENTION = list_attention()
# Large models are covered by parameter counts (test_reported.py); forward/backward on small inputs here.
MODELS = list_models()
CHANNELS = 64


def _attn_input(name, batch, h, w, device):
    """A random input in the module's layout, plus hw=(H, W) for token modules whose forward takes it."""
    entry = attention_entry(name)
    if entry.layout == "nlc":
        takes_hw = "hw" in inspect.signature(entry.builder.forward if isinstance(entry.builder, type)
                                             else create_attention(name, CHANNELS).forward).parameters
        return torch.randn(batch, h * w, CHANNELS, device=device), ({"hw": (h, w)} if takes_hw else {})
    return torch.randn(batch, CHANNELS, h, w, device=device), {}


@pytest.mark.parametrize("name", ATTENTION)
@pytest.mark.parametrize("size", [(2, 16, 16), (2, 7, 9)], ids=["16x16", "7x9"])
def test_attention_shape_train_and_eval(name, size, device):
    torch.manual_seed(0)
    m = create_attention(name, CHANNELS).to(device)
    x, kw = _attn_input(name, *size, device)
    for mode in (m.train, m.eval):
        mode()
        y = m(x, **kw)
        assert y.shape == x.shape
        assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", ATTENTION)
def test_attention_batch_one_eval(name, device):
    m = create_attention(name, CHANNELS).to(device).eval()
    x, kw = _attn_input(name, 1, 5, 11, device)
    assert m(x, **kw).shape == x.shape


@pytest.mark.parametrize("name", ATTENTION)
def test_attention_backward(name, device):
    torch.manual_seed(0)
    m = create_attention(name, CHANNELS).to(device).train()
    x, kw = _attn_input(name, 2, 7, 9, device)
    x.requires_grad_(True)
    m(x, **kw).square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    grads = [p.grad for p in m.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads), "a parameter got no gradient"


@pytest.mark.parametrize("name", ATTENTION)
def test_attention_eval_deterministic(name, device):
    torch.manual_seed(0)
    m = create_attention(name, CHANNELS).to(device).eval()
    x, kw = _attn_input(name, 2, 7, 9, device)
    with torch.no_grad():
        torch.testing.assert_close(m(x, **kw), m(x, **kw))


@pytest.mark.parametrize("name", ATTENTION)
def test_attention_rejects_bad_channels(name):
    with pytest.raises(ValueError):
        create_attention(name, 0)


@pytest.mark.parametrize("name", ATTENTION)
def test_attention_autocast(name):
    m = create_attention(name, CHANNELS).eval()
    x, kw = _attn_input(name, 2, 7, 9, "cpu")
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        y = m(x, **kw)
    assert y.shape == x.shape and torch.isfinite(y.float()).all()


@pytest.mark.parametrize("name", MODELS)
def test_model_forward_backward(name, device):
    torch.manual_seed(0)
    m = create_model(name, num_classes=10).to(device)
    x = torch.randn(2, 3, 67, 45, device=device)  # non-square, odd, not a multiple of any stride
    out = m.train()(x)
    assert out.shape == (2, 10)
    out.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters() if p.requires_grad)
    m.eval()
    with torch.no_grad():
        one = torch.randn(1, 3, 33, 47, device=device)
        torch.testing.assert_close(m(one), m(one))
        assert m(one).shape == (1, 10)
