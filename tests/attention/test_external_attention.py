import pytest
import torch

from attnzoo import create_attention


def test_matches_the_double_normalization_written_out():
    torch.manual_seed(0)
    m = create_attention("external_attn", 16, memory_size=8).eval()
    x = torch.randn(2, 30, 16)
    logits = x @ m.mk.weight.t()                                   # (N, L, S)
    a = torch.exp(logits) / torch.exp(logits).sum(dim=1, keepdim=True)  # softmax over the tokens
    a = a / a.sum(dim=2, keepdim=True)                             # L1 over the memory slots
    torch.testing.assert_close(m(x), a @ m.mv.weight.t(), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(m.attention_map(x).sum(-1), torch.ones(2, 30))


@pytest.mark.parametrize("name", ["external_attn", "external_attn_mh"])
def test_samples_do_not_interact(name):
    # the softmax runs over the tokens of one sample, never over the batch
    torch.manual_seed(0)
    m = create_attention(name, 16, **({"num_heads": 2} if name.endswith("mh") else {})).eval()
    x = torch.randn(3, 12, 16)
    torch.testing.assert_close(m(x)[1:2], m(x[1:2]), atol=1e-5, rtol=1e-4)


def test_multi_head_weights_are_normalized_per_head():
    m = create_attention("external_attn_mh", 32, num_heads=2, coef=4, memory_size=16).eval()
    a = m.attention_map(torch.randn(2, 9, 32))
    assert a.shape == (2, 8, 9, 16)
    torch.testing.assert_close(a.sum(-1), torch.ones(2, 8, 9))


def test_bad_memory_size_rejected():
    with pytest.raises(ValueError, match="memory_size"):
        create_attention("external_attn", 16, memory_size=0)
