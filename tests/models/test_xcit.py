"""XCiT: cross-covariance attention against a float64 reference and its token-permutation equivariance, the Fourier
positions against their formula, LPI's 5x5 receptive field, the authors' class-attention layer, sizes, arguments."""
import math

import pytest
import torch

from attnzoo import create_model
from attnzoo.models.xcit import (CrossCovarianceAttention, FourierPositions, LocalPatchInteraction, XCiT,
                                 XCiTClassAttentionBlock)


def _tiny(**kw):
    return XCiT(num_classes=5, embed_dim=32, depth=2, num_heads=4, **kw)


def test_xca_against_a_float64_reference():
    torch.manual_seed(0)
    m = CrossCovarianceAttention(12, num_heads=3).double().eval()
    with torch.no_grad():
        m.temperature.copy_(torch.tensor([0.5, 1.0, 2.0]).reshape(3, 1, 1))
    x = torch.randn(2, 10, 12, dtype=torch.float64)
    q, k, v = m.qkv(x).split(12, dim=-1)
    outs = []
    for h in range(3):
        sl = slice(4 * h, 4 * h + 4)
        qh, kh, vh = q[..., sl], k[..., sl], v[..., sl]                # (N, L, 4)
        qh, kh = qh / qh.norm(dim=1, keepdim=True), kh / kh.norm(dim=1, keepdim=True)  # columns over the tokens
        attn = torch.softmax(m.temperature[h] * qh.transpose(1, 2) @ kh, dim=-1)       # (N, 4, 4)
        outs.append(vh @ attn.transpose(1, 2))                         # V A^T: (N, L, 4)
    torch.testing.assert_close(m(x), m.proj(torch.cat(outs, dim=-1)))
    assert m.attention_map(x).shape == (2, 3, 4, 4)


def test_xca_is_equivariant_to_permuting_the_tokens():
    torch.manual_seed(0)
    m = CrossCovarianceAttention(16, num_heads=4).eval()
    x = torch.randn(1, 23, 16)
    perm = torch.randperm(23)
    torch.testing.assert_close(m(x)[:, perm], m(x[:, perm]), rtol=1e-5, atol=1e-6)


def test_xca_equals_timms_on_the_same_weights():
    timm_xcit = pytest.importorskip("timm.models.xcit")
    torch.manual_seed(0)
    ours, theirs = CrossCovarianceAttention(32, 4).eval(), timm_xcit.XCA(32, 4, qkv_bias=True).eval()
    with torch.no_grad():
        ours.temperature.uniform_(0.5, 2.0)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, 9, 32)
    torch.testing.assert_close(ours(x), theirs(x))


def test_fourier_positions_follow_their_formula():
    h, w, hidden = 3, 5, 4
    m = FourierPositions(2 * hidden, hidden_dim=hidden).double()
    with torch.no_grad():
        m.token_projection.weight.copy_(torch.eye(2 * hidden).reshape(2 * hidden, 2 * hidden, 1, 1))
        m.token_projection.bias.zero_()
    got = m((h, w)).reshape(h, w, 2 * hidden)
    for i in range(h):
        for j in range(w):
            for c, (coord, n) in enumerate([(i + 1, h)] * hidden + [(j + 1, w)] * hidden):
                slot = c % hidden
                angle = coord / (n + 1e-6) * 2 * math.pi / 10000 ** (2 * (slot // 2) / hidden)
                expected = math.sin(angle) if slot % 2 == 0 else math.cos(angle)
                assert got[i, j, c].item() == pytest.approx(expected, abs=1e-6)


def test_lpi_mixes_only_a_5x5_neighbourhood():
    torch.manual_seed(0)
    m = LocalPatchInteraction(8).eval()
    x = torch.randn(1, 9 * 11, 8)
    y = torch.randn(1, 9 * 11, 8)
    x2 = x.clone().reshape(1, 9, 11, 8)
    x2[0, 4, 5] += 1.0                                                    # change the token at (4, 5)
    diff = (m(x2.reshape(1, 99, 8), (9, 11)) - m(x, (9, 11))).reshape(9, 11, 8).abs().sum(-1)
    changed = (diff > 1e-6).nonzero().tolist()
    assert all(abs(r - 4) <= 2 and abs(c - 5) <= 2 for r, c in changed) and [4, 5] in changed
    with pytest.raises(ValueError, match="H \\* W must equal L"):
        m(y, (9, 10))


def test_class_attention_layer_as_the_authors_code():
    """The patches receive gamma1 * LN1(patch); with tokens_norm=False they are not normalised afterwards."""
    torch.manual_seed(0)
    block = XCiTClassAttentionBlock(16, 4, 4.0, True, eta=0.5, tokens_norm=False).eval()
    z = torch.randn(2, 7, 16)
    out = block(z)
    torch.testing.assert_close(out[:, 1:], z[:, 1:] + 0.5 * block.norm1(z)[:, 1:])
    cls = z[:, :1] + 0.5 * block.attn.attend(block.norm1(z))
    cls = block.norm2(cls)
    torch.testing.assert_close(out[:, :1], cls + 0.5 * block.mlp(cls))
    block.tokens_norm = True
    torch.testing.assert_close(block(z)[:, 1:], block.norm2(z[:, 1:] + 0.5 * block.norm1(z)[:, 1:]))


def test_any_size_gives_a_ceil_grid():
    torch.manual_seed(0)
    m = _tiny().eval()
    with torch.no_grad():
        patches, hw = m.forward_patches(torch.randn(1, 3, 33, 50))
        assert hw == (3, 4) and patches.shape == (1, 12, 32)
        assert m(torch.randn(2, 3, 17, 9)).shape == (2, 5)
    m8 = _tiny(patch_size=8).eval()
    assert len(m8.patch_embed.proj) == 5 and m8.forward_patches(torch.randn(1, 3, 33, 50))[1] == (5, 7)


def test_registered_variants():
    with torch.device("meta"):
        m = create_model("xcit_small_24_p16_224")
    assert (len(m.blocks), m.num_features, m.blocks[0].attn.num_heads, len(m.cls_attn_blocks)) == (24, 384, 8, 2)
    assert not create_model("xcit_nano_12_p16_224", depth=1).cls_attn_blocks[0].tokens_norm


def test_bad_arguments():
    with pytest.raises(ValueError, match="patch_size"):
        _tiny(patch_size=4)
    with pytest.raises(ValueError, match="num_heads"):
        CrossCovarianceAttention(30, num_heads=4)
    with pytest.raises(ValueError, match="embed_dim"):
        XCiT(embed_dim=36, num_heads=4)
    with pytest.raises(ValueError, match="expects"):
        CrossCovarianceAttention(16, 4)(torch.randn(2, 8, 4, 4))
