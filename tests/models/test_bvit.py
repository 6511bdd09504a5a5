"""BViT: broad attention against the authors' formulation (concatenated q/k/v, AdaptiveAvgPool1d), the whole
model against a reference written out from patches, the parameter-free claim, and argument checks."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from attnzoo import create_attention, create_model
from attnzoo.models.bvit import BViT, broad_attention


def _tiny(**kw):
    args = dict(img_size=32, patch_size=8, embed_dim=16, depth=3, num_heads=2, num_classes=5)
    return BViT(**{**args, **kw})


def _authors_broad(qkvs, dim):
    """The authors' computation: Q, K, V concatenated over layers, explicit softmax, heads flattened, then
    AdaptiveAvgPool1d(dim) over the channels."""
    q, k, v = (torch.cat(t, dim=-1) for t in zip(*qkvs))
    d = qkvs[0][0].shape[-1]
    attn = (q @ k.transpose(-1, -2) * d ** -0.5).softmax(dim=-1)
    out = attn @ v                                                            # (N, h, T, L d)
    out = out.permute(0, 2, 1, 3).flatten(2)                                  # (N, T, h L d)
    return nn.AdaptiveAvgPool1d(dim)(out)


def test_broad_attention_is_the_authors_concatenation_and_pooling():
    torch.manual_seed(0)
    qkvs = [tuple(torch.randn(2, 3, 7, 5) for _ in range(3)) for _ in range(4)]   # 4 layers, 3 heads of 5
    torch.testing.assert_close(broad_attention(qkvs), _authors_broad(qkvs, 15))
    # the logits are the sum of the layers' logits: one layer repeated L times attends like that layer alone with
    # its logits scaled by L, and gathers [A v, A v, A v]
    q, k, v = qkvs[0]
    y = F.scaled_dot_product_attention(q, k, v, scale=3 * 5 ** -0.5)
    expected = nn.AdaptiveAvgPool1d(15)(torch.cat([y] * 3, dim=-1).transpose(1, 2).flatten(2))
    torch.testing.assert_close(broad_attention([qkvs[0]] * 3), expected)


def _reference_logits(m, x):
    """BViT from the patches up, as the authors write it: patches flattened in (p1 p2 c) order into a linear
    layer, explicit attention per layer, broad attention, x_L + 0.4 * broad, LayerNorm, class token, head."""
    p, dim = m.patch_embed.patch_size, m.num_features
    n, c, h, w = x.shape
    patches = x.reshape(n, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1).reshape(n, -1, p * p * c)
    weight = m.patch_embed.proj.weight.permute(0, 2, 3, 1).reshape(dim, -1)
    t = patches @ weight.T + m.patch_embed.proj.bias
    t = torch.cat([m.cls_token.expand(n, -1, -1), t], dim=1) + m.pos_embed
    qkvs = []
    for blk in m.blocks:
        a = blk.attn
        q, k, v = F.linear(blk.norm1(t), a.qkv.weight).chunk(3, dim=-1)       # no bias
        q, k, v = (z.reshape(n, -1, a.num_heads, a.head_dim).transpose(1, 2) for z in (q, k, v))
        o = ((q @ k.transpose(-1, -2)) * a.head_dim ** -0.5).softmax(-1) @ v
        t = t + a.proj(o.transpose(1, 2).reshape(n, -1, dim))
        t = t + blk.mlp.fc2(F.gelu(blk.mlp.fc1(blk.norm2(t))))
        qkvs.append((q, k, v))
    t = t + 0.4 * _authors_broad(qkvs, dim)
    return m.head(F.layer_norm(t, (dim,), m.norm.weight, m.norm.bias, 1e-5)[:, 0])


def test_model_equals_the_reference_written_from_patches():
    torch.manual_seed(0)
    m = _tiny().eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(m(x), _reference_logits(m, x), atol=1e-5, rtol=1e-4)
        assert m(torch.randn(1, 3, 33, 17)).shape == (1, 5)                  # padded, position grid resized


def test_broad_attention_adds_no_parameters():
    """A BViT has exactly the parameters of the ViT it extends (the DeiT layouts without Q, K, V bias)."""
    with torch.device("meta"):
        ours = sum(p.numel() for p in create_model("bvit_5m").parameters())
        plain = sum(p.numel() for p in create_model("vit_tiny_patch16_224", qkv_bias=False).parameters())
    assert ours == plain == 5_710_504


def test_registered_module_is_the_encoder_with_broad_attention():
    torch.manual_seed(0)
    m = create_attention("broad_attention", 64, depth=3, broad_weight=0.25).eval()
    x = torch.randn(2, 64, 5, 7)
    tokens = x.flatten(2).transpose(1, 2)
    with torch.no_grad():
        t, qkvs = tokens, []
        for blk in m.blocks:
            t, qkv = blk(t)
            qkvs.append(qkv)
        expected = t + 0.25 * _authors_broad(qkvs, 64)
        torch.testing.assert_close(m(x), expected.transpose(1, 2).reshape(2, 64, 5, 7))
        torch.testing.assert_close(m(tokens, hw=(5, 7)), expected)
    assert m.blocks[0].attn.num_heads == 1                                    # heads of 64 channels


def test_bad_arguments():
    with pytest.raises(ValueError, match="head width 64"):
        create_attention("broad_attention", 96)
    with pytest.raises(ValueError, match="depth"):
        create_attention("broad_attention", 64, depth=0)
    with pytest.raises(ValueError, match="num_heads"):
        _tiny(num_heads=3)
    with pytest.raises(ValueError, match="multiple of patch_size"):
        _tiny(img_size=30)
