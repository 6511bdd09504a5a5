"""CPVT: the PEG against an explicit neighbourhood sum, its zero-padding position signal, the class token passing
untouched, GAP pooling, no position table (any size), parameter counts against DeiT, and argument checks."""
import pytest
import torch
import torch.nn.functional as F

from attnzoo import create_attention, create_model
from attnzoo.models.cpvt import ConditionalPositionViT, PositionEncodingGenerator


def _tiny(**kw):
    args = dict(img_size=32, patch_size=8, embed_dim=8, depth=2, num_heads=2, num_classes=5)
    return ConditionalPositionViT(**{**args, **kw})


def test_peg_is_the_tokens_plus_a_zero_padded_depthwise_neighbourhood_sum():
    torch.manual_seed(0)
    peg = PositionEncodingGenerator(4).eval()
    h, w = 3, 5
    x = torch.randn(2, h * w, 4)
    grid = F.pad(x.transpose(1, 2).reshape(2, 4, h, w), (1, 1, 1, 1))
    ref = x.clone()
    weight, bias = peg.proj.weight[:, 0], peg.proj.bias                   # (C, 3, 3), (C,)
    for i in range(h):
        for j in range(w):
            patch = grid[:, :, i:i + 3, j:j + 3]                           # (N, C, 3, 3)
            ref[:, i * w + j] += (patch * weight).sum((-2, -1)) + bias
    torch.testing.assert_close(peg(x, hw=(h, w)), ref)
    with pytest.raises(ValueError, match="hw"):
        peg(x)


def test_peg_encodes_position_through_the_zero_padding():
    """On a constant input, the generated code differs between corner, edge and interior tokens only."""
    peg = create_attention("peg", 3)
    with torch.no_grad():
        code = peg(torch.ones(1, 3, 5, 6)) - 1                              # (1, C, 5, 6)
    interior = code[..., 1:-1, 1:-1]
    torch.testing.assert_close(interior, interior[..., :1, :1].expand_as(interior))
    assert not torch.allclose(code[..., 0, 0], code[..., 2, 2]) and not torch.allclose(code[..., 0, 2], code[..., 2, 2])


def test_class_token_skips_the_peg_and_gap_pools_the_normalised_tokens():
    torch.manual_seed(0)
    m = _tiny().eval()
    x = torch.randn(2, 3, 32, 24)
    with torch.no_grad():
        tokens, hw = m.patch_embed(x)
        z = torch.cat([m.cls_token.expand(2, -1, -1), tokens], 1)
        z = m.blocks[0](z)
        z = torch.cat([z[:, :1], m.pegs[0](z[:, 1:], hw)], 1)
        torch.testing.assert_close(m(x), m.head(m.norm(m.blocks[1](z))[:, 0]))
    gap = _tiny(global_pool=True).eval()
    assert not hasattr(gap, "cls_token") and not hasattr(gap, "pos_embed")
    with torch.no_grad():
        torch.testing.assert_close(gap(x), gap.head(gap.forward_features(x).mean(1)))
        assert gap(torch.randn(1, 3, 19, 45)).shape == (1, 5)             # padded to whole patches, no table


def test_peg_positions_before_and_after_blocks():
    torch.manual_seed(0)
    m = _tiny(peg_positions=(1, -1)).eval()
    assert m.peg_positions == (-1, 1) and len(m.pegs) == 2
    x = torch.randn(1, 3, 24, 40)
    with torch.no_grad():
        tokens, hw = m.patch_embed(x)
        z = torch.cat([m.cls_token, tokens], 1)
        z = torch.cat([z[:, :1], m.pegs[0](z[:, 1:], hw)], 1)
        z = m.blocks[1](m.blocks[0](z))
        z = torch.cat([z[:, :1], m.pegs[1](z[:, 1:], hw)], 1)
        torch.testing.assert_close(m(x), m.head(m.norm(z)[:, 0]))


def test_parameters_are_deits_without_the_table_plus_one_peg():
    with torch.device("meta"):
        count = lambda name: sum(p.numel() for p in create_model(name).parameters())  # noqa: E731
        assert count("cpvt_ti") == count("deit_tiny_patch16_224") - 197 * 192 + 10 * 192     # table out, PEG in
        assert count("cpvt_ti_gap") == count("cpvt_ti") - 192                                # no class token


def test_bad_arguments():
    with pytest.raises(ValueError, match="odd"):
        PositionEncodingGenerator(8, kernel_size=4)
    with pytest.raises(ValueError, match="peg_positions"):
        _tiny(peg_positions=(2,))
    with pytest.raises(ValueError, match="peg_positions"):
        _tiny(peg_positions=())
    with pytest.raises(ValueError, match="C=8"):
        PositionEncodingGenerator(8)(torch.randn(1, 4, 8, 8))
