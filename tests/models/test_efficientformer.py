"""EfficientFormer: the attention against a float64 reference with its |dy|, |dx| bias table, the clamped table on
other grids, the pooling MetaBlock, stage shapes, the two heads, timm's attention on the same weights, arguments."""
import pytest
import torch

from attnzoo import create_model
from attnzoo.models.efficientformer import (EfficientFormer, EfficientFormerAttention, MetaBlock2d,
                                            offset_bias_index)


def _tiny(**kw):
    args = dict(depths=(1, 1, 1, 2), embed_dims=(8, 16, 24, 32), num_vit=1, num_classes=5)
    return EfficientFormer(**{**args, **kw})


def test_attention_against_a_float64_reference():
    torch.manual_seed(0)
    m = EfficientFormerAttention(12, key_dim=4, num_heads=2, attn_ratio=2, resolution=3).double().eval()
    with torch.no_grad():
        m.attention_biases.normal_()
    hw, x = (2, 3), torch.randn(2, 6, 12, dtype=torch.float64)
    coords = [(y, xx) for y in range(2) for xx in range(3)]
    qkv = m.qkv(x).reshape(2, 6, 2, 16)
    outs = []
    for h in range(2):
        q, k, v = qkv[:, :, h, :4], qkv[:, :, h, 4:8], qkv[:, :, h, 8:]
        bias = torch.tensor([[float(m.attention_biases.detach()[h, abs(yi - yj) * 3 + abs(xi - xj)]) for (yj, xj) in coords]
                             for (yi, xi) in coords], dtype=torch.float64)
        outs.append(torch.softmax(q @ k.transpose(1, 2) / 2.0 + bias, dim=-1) @ v)
    torch.testing.assert_close(m(x, hw=hw), m.proj(torch.cat(outs, dim=-1)))


def test_bias_index_is_exact_inside_the_table_and_clamped_beyond():
    idx = offset_bias_index((2, 9), (7, 7))
    assert idx[0, 1].item() == 1 and idx[0, 9].item() == 7 and idx[0, 10].item() == 8   # (0,1), (1,0), (1,1)
    assert idx[0, 8].item() == 6                                    # dx = 8 > 6: the table's last column
    torch.testing.assert_close(idx, idx.T)                          # |offsets|: symmetric
    with pytest.raises(ValueError, match="hw"):
        EfficientFormerAttention(16)(torch.randn(1, 4, 16))


def test_attention_equals_timms_on_the_same_weights():
    timm_ef = pytest.importorskip("timm.models.efficientformer")
    torch.manual_seed(0)
    ours, theirs = EfficientFormerAttention(32).eval(), timm_ef.Attention(32)
    theirs.eval()                                                   # timm's train() returns None
    with torch.no_grad():
        ours.attention_biases.normal_()
    state = dict(ours.state_dict(), attention_bias_idxs=theirs.attention_bias_idxs)
    theirs.load_state_dict(state)
    x = torch.randn(2, 49, 32)
    torch.testing.assert_close(ours(x, hw=(7, 7)), theirs(x), rtol=1e-5, atol=1e-5)


def test_pooling_metablock_with_zero_layer_scale_is_the_identity_and_mixes_3x3_otherwise():
    torch.manual_seed(0)
    block = MetaBlock2d(4, 4.0, ls_init=0.0).eval()
    x = torch.randn(1, 4, 6, 7)
    torch.testing.assert_close(block(x), x)
    mixer = block.token_mixer
    corner = torch.zeros(1, 1, 3, 3)
    corner[0, 0, 0, 0] = 4.0
    torch.testing.assert_close(mixer(corner)[0, 0, 0, 0], torch.tensor(4.0 / 4 - 4.0))   # 2x2 window, pad not counted


def test_stage_shapes_and_heads():
    torch.manual_seed(0)
    m = _tiny().eval()
    x = torch.randn(2, 3, 67, 45)
    with torch.no_grad():
        feats = m.stem(x)
        assert feats.shape == (2, 8, 17, 12)
        for stage, shape in zip(m.stages, [(2, 8, 17, 12), (2, 16, 9, 6), (2, 24, 5, 3), (2, 6, 32)]):
            feats = stage(feats)
            assert feats.shape == shape
        pooled = m.forward_features(x).mean(1)
        torch.testing.assert_close(m(x), (m.head(pooled) + m.head_dist(pooled)) / 2)
        pair = m.train().set_distilled_training(True)(x)
    assert isinstance(pair, tuple) and pair[1].shape == (2, 5)


def test_registered_variants():
    with torch.device("meta"):
        m = create_model("efficientformer_l3")
    last = m.stages[3].blocks
    assert sum(type(b).__name__ == "MetaBlock1d" for b in last) == 4 and type(last[2]).__name__ == "Flat"


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_vit"):
        _tiny(num_vit=0)
    blocks = _tiny(num_vit=3).stages[3].blocks                     # capped at the stage's depth, as timm
    assert [type(b).__name__ for b in blocks] == ["Flat", "MetaBlock1d", "MetaBlock1d"]
    with pytest.raises(ValueError, match="depths"):
        EfficientFormer(depths=(1, 1, 1), embed_dims=(8, 16, 24))
