import torch
import torch.nn.functional as F

from attnzoo import create_attention


def test_matches_separable_attention_equations():
    torch.manual_seed(0)
    m = create_attention("separable_attn", 16).eval()
    x = torch.randn(2, 10, 16)
    w, b = m.qkv.weight, m.qkv.bias
    scores = (x @ w[:1].t() + b[:1]).softmax(dim=1)                # (N, L, 1)
    context = (scores * (x @ w[1:17].t() + b[1:17])).sum(dim=1, keepdim=True)
    expected = m.out_proj(F.relu(x @ w[17:].t() + b[17:]) * context)
    torch.testing.assert_close(m(x), expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(m.context_scores(x).sum(dim=1), torch.ones(2, 1))


def test_repeating_the_sequence_leaves_every_token_unchanged():
    # one context vector from a softmax-weighted mean: duplicating all tokens does not change it
    torch.manual_seed(0)
    m = create_attention("separable_attn", 16).eval()
    x = torch.randn(1, 7, 16)
    y = m(x)
    torch.testing.assert_close(m(torch.cat([x, x], dim=1)), torch.cat([y, y], dim=1), atol=1e-5, rtol=1e-4)
