"""LocalViT: the locality FFN against a reference computation (hard-swish, SE with a hard-sigmoid gate, its own
residual), the block without a second LayerNorm and with the class token bypassing the FFN, locality of the update,
the variants' widths and heads, other input sizes, and argument checks."""
import pytest
import torch
import torch.nn.functional as F

from attnzoo import create_attention, create_model
from attnzoo.models.localvit import LocalityBlock, LocalityFeedForward, LocalViT


def _bn(x, bn):
    return (x - bn.running_mean[:, None, None]) / (bn.running_var[:, None, None] + bn.eps).sqrt() \
        * bn.weight[:, None, None] + bn.bias[:, None, None]


def test_locality_ffn_matches_a_reference_computation(randomise_bn):
    torch.manual_seed(0)
    m = randomise_bn(LocalityFeedForward(4, mlp_ratio=2, se_reduction=2)).eval()
    h, w = 4, 3
    x = torch.randn(2, h * w, 4)
    (c1, b1), (c2, b2), (c3, b3) = [(m.conv[i][0], m.conv[i][1]) for i in (0, 1, 3)]
    se = m.conv[2]
    grid = x.transpose(1, 2).reshape(2, 4, h, w)
    hid = F.hardswish(_bn(torch.einsum("nchw,oc->nohw", grid, c1.weight[:, :, 0, 0]), b1))
    hid = F.hardswish(_bn(F.conv2d(hid, c2.weight, padding=1, groups=8), b2))
    z = hid.mean((2, 3)) @ se.fc1.weight[:, :, 0, 0].T + se.fc1.bias
    gate = F.hardsigmoid(F.relu(z) @ se.fc2.weight[:, :, 0, 0].T + se.fc2.bias)          # (N, 8)
    assert se.fc1.out_channels == 4                                                        # 8 hidden / r = 2
    out = _bn(torch.einsum("nchw,oc->nohw", hid * gate[:, :, None, None], c3.weight[:, :, 0, 0]), b3)
    with torch.no_grad():
        torch.testing.assert_close(m(x, hw=(h, w)), x + out.flatten(2).transpose(1, 2))


def test_block_has_no_second_norm_and_the_class_token_skips_the_ffn():
    torch.manual_seed(0)
    block = LocalityBlock(8, 2).eval()
    assert not hasattr(block, "norm2")
    x = torch.randn(2, 1 + 6, 8)
    with torch.no_grad():
        mid = x + block.attn(block.norm1(x))
        y = block(x, (2, 3))
        torch.testing.assert_close(y[:, 0], mid[:, 0])
        torch.testing.assert_close(y[:, 1:], block.conv(mid[:, 1:], (2, 3)))


def test_update_is_local_without_the_se_gate():
    """Without the (global) SE gate, changing one token changes the FFN output in its 3 x 3 neighbourhood only."""
    torch.manual_seed(0)
    m = create_attention("locality_ffn", 8, se=False, act="relu6").eval()
    x = torch.randn(1, 8, 6, 7)
    poked = x.clone()
    poked[0, :, 2, 3] += 1
    with torch.no_grad():
        changed = (m(poked) - m(x)).abs().sum(1)[0] > 1e-6
    assert changed.nonzero().tolist() == [[i, j] for i in (1, 2, 3) for j in (2, 3, 4)]


def test_variants_and_other_sizes():
    with torch.device("meta"):
        t, s4 = create_model("localvit_t"), create_model("localvit_t_se4")
    assert t.blocks[0].attn.num_heads == 4 and t.num_features == 192
    assert t.blocks[0].conv.conv[2].fc1.out_channels == 4 and s4.blocks[0].conv.conv[2].fc1.out_channels == 192
    torch.manual_seed(0)
    m = LocalViT(img_size=32, patch_size=8, embed_dim=8, depth=1, num_heads=2, num_classes=5).eval()
    with torch.no_grad():
        assert m(torch.randn(1, 3, 37, 19)).shape == (1, 5)              # padded, position table resized
    assert m.train()(torch.randn(2, 3, 24, 40)).shape == (2, 5)


def test_bad_arguments():
    with pytest.raises(ValueError, match="act"):
        LocalityFeedForward(8, act="gelu")
    with pytest.raises(ValueError, match="se_reduction"):
        LocalityFeedForward(8, se_reduction=64)
    with pytest.raises(ValueError, match="hw"):
        LocalityFeedForward(8)(torch.randn(1, 6, 8))
