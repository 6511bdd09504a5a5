"""ConViT: GPSA against a float64 reference with offsets built by hand, the convolutional init (each head peaks at
its offset), the class token joining after the GPSA blocks, timm's GPSA on the same weights, and arguments."""
import pytest
import torch

from attnzoo import create_model
from attnzoo.models.convit import ConViT, GatedPositionalSelfAttention, relative_offsets


def test_relative_offsets_on_a_non_square_grid():
    r = relative_offsets((2, 3))
    coords = [(y, x) for y in range(2) for x in range(3)]
    for i, (yi, xi) in enumerate(coords):
        for j, (yj, xj) in enumerate(coords):
            assert r[i, j].tolist() == [xj - xi, yj - yi, (xj - xi) ** 2 + (yj - yi) ** 2]


def test_gpsa_against_a_float64_reference():
    torch.manual_seed(0)
    m = GatedPositionalSelfAttention(8, num_heads=2).double().eval()
    with torch.no_grad():
        m.gating_param.copy_(torch.tensor([-0.5, 2.0]))
        m.pos_proj.bias.copy_(torch.tensor([0.3, -0.2]))
        m.v.weight.add_(0.1 * torch.randn(8, 8, dtype=torch.float64))
    hw, x = (2, 3), torch.randn(2, 6, 8, dtype=torch.float64)
    q, k = m.qk(x).split(8, dim=-1)
    v = m.v(x)
    coords = [(yy, xx) for yy in range(2) for xx in range(3)]
    r = torch.tensor([[[xj - xi, yj - yi, (xj - xi) ** 2 + (yj - yi) ** 2] for (yj, xj) in coords]
                      for (yi, xi) in coords], dtype=torch.float64)
    outs = []
    for h in range(2):
        sl = slice(4 * h, 4 * h + 4)
        content = torch.softmax(q[..., sl] @ k[..., sl].transpose(1, 2) / 2.0, dim=-1)
        positional = torch.softmax(r @ m.pos_proj.weight[h] + m.pos_proj.bias[h], dim=-1)
        g = torch.sigmoid(m.gating_param[h])
        outs.append(((1 - g) * content + g * positional) @ v[..., sl])
    expected = m.proj(torch.cat(outs, dim=-1))
    torch.testing.assert_close(m(x, hw=hw), expected)
    torch.testing.assert_close(m.attention_map(x, hw).sum(-1), torch.ones(2, 2, 6, dtype=torch.float64))


def test_convolutional_init_points_each_head_at_its_offset():
    m = GatedPositionalSelfAttention(18, num_heads=9)
    assert torch.equal(m.v.weight, torch.eye(18))
    with torch.no_grad():
        attn = m.positional_attention((5, 5))                            # (9, 25, 25)
    centre = 2 * 5 + 2
    peaks = {divmod(int(attn[h, centre].argmax()), 5) for h in range(9)}
    assert peaks == {(2 + dy, 2 + dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)}   # a 3x3 "kernel" of heads


def test_gpsa_equals_timms_on_the_same_weights():
    timm_convit = pytest.importorskip("timm.models.convit")
    torch.manual_seed(0)
    ours = GatedPositionalSelfAttention(32, num_heads=4).eval()
    theirs = timm_convit.GPSA(32, num_heads=4).eval()
    with torch.no_grad():
        ours.gating_param.uniform_(-1, 1)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, 16, 32)
    torch.testing.assert_close(ours(x, hw=(4, 4)), theirs(x), rtol=1e-5, atol=1e-6)


def test_the_class_token_joins_after_the_gpsa_blocks():
    torch.manual_seed(0)
    m = ConViT(img_size=32, num_classes=5, embed_dim=8, depth=2, num_heads=4, local_up_to_layer=2).eval()
    x = torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        before = m.forward_features(x)
        m.cls_token.add_(torch.randn_like(m.cls_token))
        after = m.forward_features(x)
    torch.testing.assert_close(before[:, 1:], after[:, 1:])               # the patches never saw the class token
    torch.testing.assert_close(after[:, 0], m.norm(m.cls_token[:, 0]))
    assert m(torch.randn(2, 3, 33, 17)).shape == (2, 5)


def test_registered_sizes():
    with torch.device("meta"):
        m = create_model("convit_small")
    assert m.num_features == 432 and len(m.blocks) == 12
    assert [type(b.attn).__name__ for b in m.blocks].count("GatedPositionalSelfAttention") == 10


def test_bad_arguments():
    with pytest.raises(ValueError, match="hw"):
        GatedPositionalSelfAttention(16)(torch.randn(1, 9, 16))
    with pytest.raises(ValueError, match="local_up_to_layer"):
        ConViT(depth=2, local_up_to_layer=3)
    with pytest.raises(ValueError, match="multiple of patch_size"):
        ConViT(img_size=100)
    with pytest.raises(ValueError, match="num_heads"):
        GatedPositionalSelfAttention(10, num_heads=4)
