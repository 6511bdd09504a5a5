"""CCT: sequence pooling against its formula (and a class-token average for a constant score), the authors' layer
with LayerNorm on the residual stream, the tokenizer's grids, the position tables, other sizes, and checks."""
import pytest
import torch

from attnzoo import create_model
from attnzoo.models.cct import CCTLayer, CompactConvTransformer, ConvTokenizer, SequencePooling, sinusoidal_table


def _tiny(**kw):
    args = dict(img_size=32, embed_dim=8, depth=2, num_heads=2, mlp_ratio=2.0, kernel_size=3, tokenizer_layers=1,
                num_classes=5)
    return CompactConvTransformer(**{**args, **kw})


def test_sequence_pooling_is_a_softmax_weighted_mean_of_the_tokens():
    torch.manual_seed(0)
    pool = SequencePooling(6)
    x = torch.randn(3, 7, 6)
    score = x @ pool.attention_pool.weight[0] + pool.attention_pool.bias                 # (N, L)
    w = score.exp() / score.exp().sum(1, keepdim=True)
    torch.testing.assert_close(pool(x), (w[:, :, None] * x).sum(1))
    with torch.no_grad():
        pool.attention_pool.weight.zero_()                                               # a constant score: the mean
    torch.testing.assert_close(pool(x), x.mean(1))


def test_layer_normalises_the_residual_stream_between_attention_and_mlp():
    torch.manual_seed(0)
    layer = CCTLayer(8, 2, 2.0, 0.0, 0.0, 0.0).eval()
    assert layer.attn.qkv.bias is None
    x = torch.randn(2, 5, 8)
    with torch.no_grad():
        s = layer.norm1(x + layer.attn(layer.pre_norm(x)))
        torch.testing.assert_close(layer(x), s + layer.mlp(s))


def test_tokenizer_grids_and_model_forward():
    assert ConvTokenizer(3, 8, 3, 1).grid(32) == (16, 16)
    assert ConvTokenizer(3, 8, 7, 2).grid(224) == (14, 14)
    tok = ConvTokenizer(3, 8, 7, 2)
    x = torch.randn(1, 3, 45, 30)
    assert tok(x)[1] == tok.grid((45, 30)) == (3, 2)
    torch.manual_seed(0)
    m = _tiny().eval()
    with torch.no_grad():
        x = torch.randn(2, 3, 32, 32)
        tokens, hw = m.tokenizer(x)
        z = m.norm(m.blocks(tokens + m.pos_embed))
        torch.testing.assert_close(m(x), m.head(m.pool(z)))
        assert m(torch.randn(1, 3, 19, 45)).shape == (1, 5)                               # table resized
    assert m.train()(torch.randn(2, 3, 7, 3)).shape == (2, 5)


def test_sine_table_and_class_token_ablation():
    t = sinusoidal_table(5, 6)
    p, i = 3, 4
    assert t[0, p, i] == pytest.approx(torch.tensor(p / 10000 ** (2 * (i // 2) / 6)).sin().item())
    assert t[0, p, i + 1] == pytest.approx(torch.tensor(p / 10000 ** (2 * (i // 2) / 6)).cos().item())
    m = _tiny(pos_embed="sine").eval()
    assert not hasattr(m, "pos_embed") and m(torch.randn(1, 3, 20, 12)).shape == (1, 5)
    cls = _tiny(seq_pool=False).eval()
    assert cls.pos_embed.shape == (1, 1 + 256, 8) and not hasattr(cls, "pool")
    assert cls(torch.randn(1, 3, 13, 21)).shape == (1, 5)


def test_full_size_configuration():
    with torch.device("meta"):
        m = create_model("cct_14_7x2_224")
    assert m.grid == (14, 14) and m.pos_embed.shape == (1, 196, 384) and len(m.blocks) == 14
    assert m.tokenizer.layers[0][0].out_channels == 64 and m.tokenizer.layers[1][0].stride == (2, 2)


def test_bad_arguments():
    with pytest.raises(ValueError, match="pos_embed"):
        _tiny(pos_embed="rope")
    with pytest.raises(ValueError, match="tokenizer num_layers"):
        _tiny(tokenizer_layers=0)
