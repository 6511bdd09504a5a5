"""CaiT: talking-heads and class attention against explicit float64 references, LayerScale, the frozen patches of
the class-attention stage, position-table resizing and argument checks."""
import pytest
import torch
import torch.nn.functional as F

from attnzoo import create_attention, create_model
from attnzoo.registry import model_entry
from attnzoo.models.cait import CaiT, ClassAttention, TalkingHeadsAttention


def _small(**kw):
    return CaiT(img_size=32, patch_size=8, num_classes=5, embed_dim=24, depth=2, num_heads=3, **kw)


def test_talking_heads_against_an_explicit_reference():
    torch.manual_seed(0)
    m = TalkingHeadsAttention(12, num_heads=3).double().eval()
    x = torch.randn(2, 7, 12, dtype=torch.float64)
    q, k, v = m.qkv(x).split(12, dim=-1)
    heads = lambda t: t.reshape(2, 7, 3, 4).transpose(1, 2)  # noqa: E731
    q, k, v = heads(q), heads(k), heads(v)
    logits = q @ k.transpose(-2, -1) / 2.0                          # sqrt(head dim 4)
    wl, bl, ww, bw = m.proj_l.weight, m.proj_l.bias, m.proj_w.weight, m.proj_w.bias
    mixed = torch.einsum("gh,nhij->ngij", wl, logits) + bl[:, None, None]
    attn = torch.einsum("gh,nhij->ngij", ww, mixed.softmax(-1)) + bw[:, None, None]
    expected = m.proj((attn @ v).transpose(1, 2).reshape(2, 7, 12))
    torch.testing.assert_close(m(x), expected)


def test_talking_heads_with_identity_mixing_is_plain_multi_head_attention():
    torch.manual_seed(0)
    m = TalkingHeadsAttention(16, num_heads=4).eval()
    with torch.no_grad():
        for lin in (m.proj_l, m.proj_w):
            lin.weight.copy_(torch.eye(4))
            lin.bias.zero_()
    x = torch.randn(1, 9, 16)
    q, k, v = m.qkv(x).reshape(1, 9, 3, 4, 4).permute(2, 0, 3, 1, 4)
    expected = m.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(1, 9, 16))
    torch.testing.assert_close(m(x), expected, rtol=1e-5, atol=1e-6)


def test_class_attention_against_an_explicit_reference():
    torch.manual_seed(0)
    m = ClassAttention(8, num_heads=2, own_token=False).double()
    z = torch.randn(3, 6, 8, dtype=torch.float64)
    out = m.attend(z)
    expected = []
    for h in range(2):
        sl = slice(4 * h, 4 * h + 4)
        q, k, v = m.q(z[:, :1])[..., sl], m.k(z)[..., sl], m.v(z)[..., sl]
        w = torch.softmax(q @ k.transpose(1, 2) / 2.0, dim=-1)
        expected.append(w @ v)
    torch.testing.assert_close(out, m.proj(torch.cat(expected, dim=-1)))
    assert out.shape == (3, 1, 8)
    torch.testing.assert_close(m.attention_map(z).sum(-1), torch.ones(3, 2, dtype=torch.float64))


def test_standalone_class_attention_adds_one_global_vector_to_every_token():
    torch.manual_seed(0)
    m = create_attention("cait_class_attn", 16, num_heads=4).eval()
    x = torch.randn(2, 16, 5, 7)
    delta = m(x) - x
    torch.testing.assert_close(delta, delta[:, :, :1, :1].expand_as(delta))
    # A permutation of the positions leaves the global vector unchanged (attention is a weighted sum).
    perm = torch.randperm(35)
    tokens = x.flatten(2).transpose(1, 2)
    torch.testing.assert_close(m(tokens[:, perm])[:, 0] - tokens[:, perm][:, 0], delta[:, :, 0, 0])
    with pytest.raises(ValueError, match="attend"):
        ClassAttention(16, own_token=False)(tokens)


def test_class_attention_stage_leaves_the_patches_unchanged_and_reads_them():
    torch.manual_seed(0)
    m = _small().eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        patches, _ = m.forward_patches(x)
        tokens = m.forward_features(x)
        torch.testing.assert_close(tokens[:, 1:], m.norm(patches))   # the patches pass the class stage untouched
        for block in m.blocks_token_only:                            # large LayerScale: a visible class update
            block.gamma_1.fill_(1.0)
            block.gamma_2.fill_(1.0)
        x2 = x.clone()
        x2[..., :8, :8] = 0                                          # change one patch: the class output follows
        assert (m(x2) - m(x)).abs().max() > 1e-3


def test_layer_scale_zero_makes_every_block_the_identity():
    torch.manual_seed(0)
    m = _small(init_values=0.0).eval()
    x = torch.randn(2, 3, 32, 24)
    with torch.no_grad():
        emb, grid = m.patch_embed(x)
        expected = emb + F.interpolate(m.pos_embed.reshape(1, 4, 4, 24).permute(0, 3, 1, 2), size=grid,
                                       mode="bicubic", align_corners=False).flatten(2).transpose(1, 2)
        patches, _ = m.forward_patches(x)
        tokens = m.forward_features(x)
    torch.testing.assert_close(patches, expected)
    torch.testing.assert_close(tokens[:, 0], m.norm(m.cls_token[:, 0]).expand(2, -1))
    assert m.blocks[0].gamma_1.shape == (24,)


def test_any_size_pads_to_whole_patches_and_resizes_the_position_table():
    torch.manual_seed(0)
    m = _small().eval()
    with torch.no_grad():
        assert m(torch.randn(1, 3, 33, 17)).shape == (1, 5)
        x = torch.randn(1, 3, 30, 21)
        padded = F.pad(x, (0, 3, 0, 2))
        torch.testing.assert_close(m(x), m(padded))
    rect = CaiT(img_size=(32, 16), patch_size=8, num_classes=5, embed_dim=24, depth=1, num_heads=3)
    assert rect.pos_embed.shape == (1, 8, 24)


def test_registered_variants_have_the_paper_sizes():
    with torch.device("meta"):
        m = create_model("cait_s36_224")
    assert (len(m.blocks), len(m.blocks_token_only), m.num_features, m.blocks[0].attn.num_heads) == (36, 2, 384, 8)
    assert m.pos_embed.shape == (1, 196, 384)
    assert model_entry("cait_s36_224").defaults["init_values"] == 1e-6          # deeper than 24: 1e-6
    assert model_entry("cait_xxs36_224").defaults["init_values"] == 1e-5        # the authors' XXS-36


def test_bad_arguments():
    with pytest.raises(ValueError, match="multiple of patch_size"):
        CaiT(img_size=30, patch_size=8)
    with pytest.raises(ValueError, match="num_heads"):
        TalkingHeadsAttention(10, num_heads=3)
    with pytest.raises(ValueError, match="pos_embed_interp"):
        _small(pos_embed_interp="nearest")
    with pytest.raises(ValueError, match="depth_token_only"):
        _small(depth_token_only=0)


def test_attention_layers_equal_timms_on_the_same_weights():
    timm_cait = pytest.importorskip("timm.models.cait")
    torch.manual_seed(0)
    x = torch.randn(2, 10, 32)
    ours, theirs = TalkingHeadsAttention(32, num_heads=4).eval(), timm_cait.TalkingHeadAttn(32, 4, qkv_bias=True).eval()
    theirs.load_state_dict(ours.state_dict())
    torch.testing.assert_close(ours(x), theirs(x))
    ours, theirs = ClassAttention(32, 4, own_token=False).eval(), timm_cait.ClassAttn(32, 4, qkv_bias=True).eval()
    theirs.load_state_dict(ours.state_dict())
    torch.testing.assert_close(ours.attend(x), theirs(x))
