import pytest
import torch
import torch.nn.functional as F

from attnzoo import create_attention


def test_attention_plus_mixed_convolutions_on_the_shared_values():
    torch.manual_seed(0)
    m = create_attention("muse", 16, num_heads=2, kernel_sizes=(1, 3, 5)).eval()
    with torch.no_grad():
        m.branch_logits.copy_(torch.tensor([0.3, -0.2, 1.0]))
    x = torch.randn(2, 11, 16)
    q, k, v = m.qkv(x).chunk(3, dim=-1)
    heads = lambda t: t.reshape(2, 11, 2, 8).transpose(1, 2)
    att = (heads(q) @ heads(k).transpose(-2, -1) / 8 ** 0.5).softmax(-1) @ heads(v)
    expected = m.proj(att.transpose(1, 2).reshape(2, 11, 16))
    alpha = torch.softmax(torch.tensor([0.3, -0.2, 1.0]), 0)
    vt = v.transpose(1, 2)
    for a, kern, conv in zip(alpha, (1, 3, 5), m.convs):
        t = vt if kern == 1 else F.conv1d(vt, conv.depthwise.weight, conv.depthwise.bias, padding=kern // 2,
                                          groups=16)
        expected = expected + a * F.conv1d(t, conv.pointwise.weight, conv.pointwise.bias).transpose(1, 2)
    torch.testing.assert_close(m(x), expected, atol=1e-5, rtol=1e-4)


def test_mixing_weights_stay_a_trainable_parameter():
    # the public collection overwrites its parameter with softmax(parameter) at each call
    m = create_attention("muse", 16, num_heads=2)
    param, before = m.branch_logits, m.branch_logits.detach().clone()
    m(torch.randn(1, 5, 16)).sum().backward()
    m(torch.randn(1, 5, 16))
    assert m.branch_logits is param and torch.equal(param.detach(), before) and param.grad is not None
    torch.testing.assert_close(m.branch_weights().sum(), torch.tensor(1.0))


def test_even_kernel_rejected():
    with pytest.raises(ValueError, match="odd"):
        create_attention("muse", 16, kernel_sizes=(1, 4))
