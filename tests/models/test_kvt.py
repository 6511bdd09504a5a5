"""KVT: k-NN attention against a float64 reference that thresholds each row at its k-th largest score, its two limits
(k >= L is plain attention, k = 1 copies the value of the best key), exactly k weights per query, and DeiT's weights:
timm's DeiT logits when k keeps every token, other logits when it does not."""
import pytest
import torch

from attnzoo import create_model, load_timm_weights
from attnzoo.layers import MultiHeadSelfAttention
from attnzoo.models.kvt import KNNAttention, KNNVisionTransformer


def _qkv(m: KNNAttention, x: torch.Tensor):
    n, length, c = x.shape
    qkv = (x @ m.qkv.weight.T + m.qkv.bias).reshape(n, length, 3, m.num_heads, m.head_dim)
    return qkv.permute(2, 0, 3, 1, 4)  # (3, N, heads, L, d)


def _reference(m: KNNAttention, x: torch.Tensor) -> torch.Tensor:
    """Scores below the k-th largest of their row set to -inf, softmax, values, projection (float64)."""
    q, k, v = _qkv(m, x)
    scores = q @ k.transpose(-2, -1) / m.head_dim ** 0.5
    kth = scores.sort(dim=-1, descending=True).values[..., m.topk - 1:m.topk]
    out = scores.masked_fill(scores < kth, float("-inf")).softmax(-1) @ v
    n, length, c = x.shape
    return out.transpose(1, 2).reshape(n, length, c) @ m.proj.weight.T + m.proj.bias


@pytest.mark.parametrize("topk,length", [(5, 23), (1, 9), (22, 23)])
def test_knn_attention_matches_reference(topk, length):
    torch.manual_seed(0)
    m = KNNAttention(24, 3, topk).double().eval()
    x = torch.randn(2, length, 24, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(m(x), _reference(m, x))
        weights = m.attention_map(x)
    assert torch.equal((weights > 0).sum(-1), torch.full((2, 3, length), topk))      # exactly k keys per query
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 3, length, dtype=torch.float64))


def test_k_at_least_the_tokens_is_plain_attention():
    torch.manual_seed(0)
    m = KNNAttention(24, 3, topk=9).eval()
    plain = MultiHeadSelfAttention(24, 3).eval()
    plain.load_state_dict(m.state_dict())
    x = torch.randn(2, 9, 24)
    with torch.no_grad():
        assert torch.equal(m(x), plain(x))
        m.topk = 100                                     # more than the tokens: every key kept (the authors' fails)
        assert torch.equal(m(x), plain(x))


def test_k_equal_one_copies_the_value_of_the_best_key():
    torch.manual_seed(0)
    m = KNNAttention(24, 3, topk=1).double().eval()
    with torch.no_grad():
        m.proj.weight.copy_(torch.eye(24))
        m.proj.bias.zero_()
    x = torch.randn(2, 11, 24, dtype=torch.float64)
    q, k, v = _qkv(m, x)
    best = (q @ k.transpose(-2, -1)).argmax(-1)                                   # (N, heads, L)
    expected = torch.gather(v, 2, best[..., None].expand(-1, -1, -1, m.head_dim))  # (N, heads, L, d)
    with torch.no_grad():
        torch.testing.assert_close(m(x), expected.transpose(1, 2).reshape(2, 11, 24))


def test_deit_weights_give_deits_logits_only_when_every_key_is_kept():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    cfg = dict(img_size=64, patch_size=16, embed_dim=48, depth=2, num_heads=3)
    deit = timm.models.vision_transformer.VisionTransformer(**cfg, num_classes=5).eval()   # DeiT's ViT, small
    x = torch.randn(2, 3, 64, 64)                                                          # 1 + 16 tokens
    with torch.no_grad():
        expected = deit(x)
        every = load_timm_weights(KNNVisionTransformer(**cfg, num_classes=5, topk=17).eval(), deit)
        torch.testing.assert_close(every(x), expected, rtol=0, atol=1e-5)
        fewer = load_timm_weights(KNNVisionTransformer(**cfg, num_classes=5, topk=4).eval(), deit)
        assert not torch.allclose(fewer(x), expected, atol=1e-3)


def test_variants_have_deits_parameters_and_k_100():
    with torch.device("meta"):
        for size in ("tiny", "small", "base"):
            kvt, deit = create_model(f"kvt_deit_{size}"), create_model(f"deit_{size}_patch16_224")
            assert [p.shape for p in kvt.parameters()] == [p.shape for p in deit.parameters()]
            assert {b.attn.topk for b in kvt.blocks} == {100}


def test_bad_arguments():
    with pytest.raises(ValueError, match="topk"):
        KNNAttention(24, 3, topk=0)
    with pytest.raises(ValueError, match="divisible"):
        KNNAttention(24, 5)
    with pytest.raises(ValueError, match="head width 64"):
        KNNAttention(24)
    with pytest.raises(ValueError, match="topk"):
        create_model("kvt_deit_tiny", topk=-1)
