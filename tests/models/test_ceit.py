"""CeiT: LeFF against a per-token reference, the class token's update in the LeFF block (authors' code and the
paper's option), LCA over the per-layer class tokens, the I2T stem's stride, other input sizes, and checks."""
import pytest
import torch
import torch.nn.functional as F

from attnzoo import create_model
from attnzoo.models.ceit import CeiT, LeFFBlock, LocallyEnhancedFeedForward


def _tiny(**kw):
    args = dict(img_size=32, embed_dim=8, depth=2, num_heads=2, stem_channels=4, num_classes=5)
    return CeiT(**{**args, **kw})


def _bn(x, bn):
    return (x - bn.running_mean[:, None, None]) / (bn.running_var[:, None, None] + bn.eps).sqrt() \
        * bn.weight[:, None, None] + bn.bias[:, None, None]


def test_leff_is_pointwise_depthwise_pointwise_with_batchnorm(randomise_bn):
    torch.manual_seed(0)
    m = randomise_bn(LocallyEnhancedFeedForward(4, mlp_ratio=2)).eval()
    h, w = 3, 5
    x = torch.randn(2, h * w, 4)
    (c1, b1), (c2, b2), (c3, b3) = [(s[0], s[1]) for s in (m.conv1, m.conv2, m.conv3)]
    hid = F.gelu(_bn((x @ c1.weight[:, :, 0, 0].T + c1.bias).transpose(1, 2).reshape(2, 8, h, w), b1))
    pad = F.pad(hid, (1, 1, 1, 1))
    dw = sum(pad[:, :, i:i + h, j:j + w] * c2.weight[:, 0, i, j][:, None, None] for i in range(3) for j in range(3))
    dw = F.gelu(_bn(dw + c2.bias[:, None, None], b2))
    out = _bn(torch.einsum("nchw,oc->nohw", dw, c3.weight[:, :, 0, 0]) + c3.bias[:, None, None], b3)
    with torch.no_grad():
        torch.testing.assert_close(m(x, hw=(h, w)), out.flatten(2).transpose(1, 2))


def test_class_token_update_in_the_leff_block():
    torch.manual_seed(0)
    x = torch.randn(2, 1 + 12, 8)
    for update in ("norm", "identity"):
        block = LeFFBlock(8, 2, cls_update=update).eval()
        with torch.no_grad():
            mid = x + block.attn(block.norm1(x))
            y = block(x, (3, 4))
            expected_cls = mid[:, 0] + (block.norm2(mid)[:, 0] if update == "norm" else 0)
            torch.testing.assert_close(y[:, 0], expected_cls)
            torch.testing.assert_close(y[:, 1:], mid[:, 1:] + block.leff(block.norm2(mid)[:, 1:], (3, 4)))


def test_lca_attends_over_the_class_token_of_every_block():
    torch.manual_seed(0)
    m = _tiny().eval()
    with torch.no_grad():
        m.pos_layer_embed.normal_()
        x = torch.randn(2, 3, 32, 32)
        tokens, hw = m.patch_embed(x)
        assert hw == (2, 2)                                                 # total stride 16
        z = torch.cat([m.cls_token.expand(2, -1, -1), tokens], 1) + m.pos_embed
        classes = []
        for block in m.blocks:
            z = block(z, hw)
            classes.append(z[:, 0])
        seq = torch.stack(classes, 1) + m.pos_layer_embed
        last = seq[:, -1:] + m.lca.attn(m.lca.norm1(seq))[:, -1:]          # the last token's output only
        last = last + m.lca.mlp(m.lca.norm2(last))
        torch.testing.assert_close(m(x), m.head(m.norm(last[:, 0])))
        plain = _tiny(lca=False).eval()
        assert plain.lca is None and plain(x).shape == (2, 5)


def test_any_input_size_resizes_the_position_table():
    torch.manual_seed(0)
    m = _tiny().eval()
    with torch.no_grad():
        assert m(torch.randn(1, 3, 37, 70)).shape == (1, 5)                 # grid ceil(ceil(37/2)/2/4) etc.
        assert m.patch_embed(torch.randn(1, 3, 37, 70))[1] == (3, 5)
    assert m.train()(torch.randn(2, 3, 21, 9)).shape == (2, 5)


def test_full_size_parameters_and_grid():
    with torch.device("meta"):
        m = create_model("ceit_t")
        assert m.pos_embed.shape == (1, 197, 192) and m.pos_layer_embed.shape == (1, 12, 192)
        assert m.blocks[0].leff.conv1[0].out_channels == 768 and m.patch_embed.stem[0].out_channels == 64
        assert m.patch_embed(torch.zeros(1, 3, 224, 224))[1] == (14, 14)


def test_bad_arguments():
    with pytest.raises(ValueError, match="multiple of the stem's 4"):
        _tiny(patch_size=6, img_size=36)
    with pytest.raises(ValueError, match="cls_update"):
        _tiny(cls_update="drop")
    with pytest.raises(ValueError, match="odd"):
        LocallyEnhancedFeedForward(8, kernel_size=2)
    with pytest.raises(ValueError, match="hw"):
        LocallyEnhancedFeedForward(8)(torch.randn(1, 6, 8))
