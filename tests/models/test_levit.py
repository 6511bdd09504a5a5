"""LeViT: the attention and the shrink attention against float64 references with their offset-bias tables, timm's
attention modules on the same weights, residual branches that start as the identity (BN weight 0), stage grids at
an odd size, the bias tables of LeViT-128S, the two heads, arguments."""
import pytest
import torch

from attnzoo import create_model
from attnzoo.models.levit import LeViT, LeViTAttention, LeViTBlock, LeViTShrinkAttention


def _randomise(module):
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.normal_(0, 0.5 if p.dim() > 1 else 1.0)
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return module


def _reference(q, k, v, table, q_pos, k_pos, width):
    """softmax(q k^T / sqrt(D) + b[|dy| * width + |dx|]) v for one head, with explicit loops over positions."""
    bias = torch.tensor([[float(table[abs(yq - yk) * width + abs(xq - xk)]) for (yk, xk) in k_pos]
                         for (yq, xq) in q_pos], dtype=torch.float64)
    return torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5 + bias, dim=-1) @ v


def test_attention_against_a_float64_reference():
    torch.manual_seed(0)
    m = _randomise(LeViTAttention(12, key_dim=4, num_heads=2, attn_ratio=2, resolution=3)).double().eval()
    hw, x = (2, 3), torch.randn(2, 6, 12, dtype=torch.float64)
    pos = [(y, xx) for y in range(2) for xx in range(3)]
    qkv = m.qkv(x).view(2, 6, 2, 16)
    table = m.heads.attention_biases.detach()
    outs = [_reference(qkv[:, :, h, :4], qkv[:, :, h, 4:8], qkv[:, :, h, 8:], table[h], pos, pos, 3)
            for h in range(2)]
    torch.testing.assert_close(m(x, hw=hw), m.proj(torch.cat(outs, dim=-1)))


def test_shrink_attention_queries_the_subsampled_grid_against_a_float64_reference():
    torch.manual_seed(0)
    m = _randomise(LeViTShrinkAttention(8, 12, key_dim=4, num_heads=2, attn_ratio=4, resolution=5)).double().eval()
    x = torch.randn(2, 15, 8, dtype=torch.float64)                       # a 5 x 3 grid
    k_pos = [(y, xx) for y in range(5) for xx in range(3)]
    q_pos = [(y, xx) for y in range(0, 5, 2) for xx in range(0, 3, 2)]  # 3 x 2 queries at even positions
    kv = m.kv(x).view(2, 15, 2, 20)
    q = m.q(x.view(2, 5, 3, 8)[:, ::2, ::2].reshape(2, 6, 8)).view(2, 6, 2, 4)
    table = m.heads.attention_biases.detach()
    outs = [_reference(q[:, :, h], kv[:, :, h, :4], kv[:, :, h, 4:], table[h], q_pos, k_pos, 5) for h in range(2)]
    y, hw = m(x, (5, 3))
    assert hw == (3, 2) and y.shape == (2, 6, 12)
    torch.testing.assert_close(y, m.proj(torch.cat(outs, dim=-1)))


def test_attentions_equal_timms_on_the_same_weights():
    timm_levit = pytest.importorskip("timm.models.levit")
    torch.manual_seed(0)
    ours = _randomise(LeViTAttention(32, key_dim=8, num_heads=4, attn_ratio=2, resolution=4)).eval()
    theirs = timm_levit.Attention(32, 8, 4, attn_ratio=2, resolution=4, act_layer=torch.nn.Hardswish)
    state = {k.replace("heads.", "").replace("proj.1.", "proj.ln."): v for k, v in ours.state_dict().items()}
    theirs.load_state_dict(state)
    theirs.eval()
    x = torch.randn(2, 16, 32)
    torch.testing.assert_close(ours(x, hw=(4, 4)), theirs(x), rtol=1e-5, atol=1e-5)

    shrink = _randomise(LeViTShrinkAttention(32, 48, key_dim=8, num_heads=4, resolution=4)).eval()
    theirs = timm_levit.AttentionDownsample(32, 48, 8, 4, attn_ratio=4, resolution=4, act_layer=torch.nn.Hardswish)
    state = {k.replace("heads.", "").replace("proj.1.", "proj.ln.").replace("q.", "q.ln."): v
             for k, v in shrink.state_dict().items()}
    theirs.load_state_dict(state)
    theirs.eval()
    torch.testing.assert_close(shrink(x, (4, 4))[0], theirs(x), rtol=1e-5, atol=1e-5)


def test_residual_branches_start_as_the_identity():
    """The last BatchNorm of each residual branch starts at weight 0 (the authors' bn_weight_init=0)."""
    torch.manual_seed(0)
    block = LeViTBlock(16, key_dim=4, num_heads=2, attn_ratio=2, mlp_ratio=2, resolution=4).eval()
    x = torch.randn(2, 12, 16)
    torch.testing.assert_close(block(x, (3, 4)), x)


def test_stage_grids_at_an_odd_size_and_the_two_heads():
    torch.manual_seed(0)
    m = LeViT(embed_dims=(16, 24, 32), depths=(1, 1, 1), num_heads=(2, 3, 4), key_dim=8, num_classes=5).eval()
    x = torch.randn(2, 3, 67, 45)
    with torch.no_grad():
        assert m.stem(x).shape == (2, 16, 5, 3)                             # 67 -> 34 -> 17 -> 9 -> 5
        feats, hw = m.forward_features(x)
        assert hw == (2, 1) and feats.shape == (2, 2, 32)                   # 5 x 3 -> 3 x 2 -> 2 x 1
        pooled = feats.mean(1)
        torch.testing.assert_close(m(x), (m.head(pooled) + m.head_dist(pooled)) / 2)
    pair = m.train().set_distilled_training(True)(x)
    assert isinstance(pair, tuple) and pair[1].shape == (2, 5)
    with pytest.raises(ValueError, match="batch of at least 2"):
        m(x[:1])


def test_levit_128s_bias_tables_and_shrink_heads():
    """LeViT-128S at 224: 14 x 14, 7 x 7, 4 x 4 grids; shrink attentions with C_i / D = 8 and 16 heads."""
    with torch.device("meta"):
        m = create_model("levit_128s")
    tables = {n: tuple(p.shape) for n, p in m.named_parameters() if n.endswith("attention_biases")}
    assert tables["stages.0.0.attn.heads.attention_biases"] == (4, 196)
    assert tables["stages.1.0.attn.heads.attention_biases"] == (8, 196)   # shrink: the keys' 14 x 14 table
    assert tables["stages.1.1.attn.heads.attention_biases"] == (6, 49)
    assert tables["stages.2.0.attn.heads.attention_biases"] == (16, 49)
    assert tables["stages.2.1.attn.heads.attention_biases"] == (8, 16)
    assert len(tables) == 2 + 3 + 4 + 2


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="multiple of key_dim"):
        LeViT(embed_dims=(20, 32, 48), key_dim=8)
    with pytest.raises(ValueError, match="num_heads needs 3"):
        LeViT(num_heads=(4, 6))
    with pytest.raises(ValueError, match="hw"):
        LeViTAttention(16)(torch.randn(1, 4, 16))
