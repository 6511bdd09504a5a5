"""CoaT: the conv-attention against a float64 reference written token by token (factorized attention + CRPE with a
window per head group, none for the class token), timm's module on the same weights, the co-scale resizing, the
grids of the four scales at an odd size, the shared position encodings, arguments."""
import pytest
import torch
import torch.nn.functional as F

from attnzoo.models.coat import CoaT, FactorAttnConvRelPosEnc, resize_tokens


def _tiny(**kw):
    args = dict(embed_dims=(8, 16, 16, 16), depths=(1, 1, 1, 1), parallel_depth=1, num_heads=2,
                mlp_ratios=(2, 2, 2, 2), crpe_window={3: 1, 5: 1}, num_classes=5)
    return CoaT(**{**args, **kw})


def test_conv_attention_against_a_float64_reference():
    torch.manual_seed(0)
    m = FactorAttnConvRelPosEnc(8, num_heads=2, crpe_window={3: 1, 5: 1}).double().eval()
    hw, x = (3, 4), torch.randn(2, 13, 8, dtype=torch.float64)          # class token + 3 x 4 grid
    q, k, v = m.qkv(x).view(2, 13, 3, 2, 4).unbind(2)                    # (N, L, heads, d)
    heads = []
    for h, conv in enumerate(m.crpe.conv_list):                          # head 0: 3x3 window, head 1: 5x5
        w = torch.softmax(k[:, :, h], dim=1)                             # softmax over the 13 tokens, per channel
        context = torch.einsum("nlc,nld->ncd", w, v[:, :, h])
        grid = v[:, 1:, h].transpose(1, 2).reshape(2, 4, 3, 4)
        pos = F.conv2d(grid, conv.weight, conv.bias, padding=conv.padding, groups=4).flatten(2).transpose(1, 2)
        crpe = torch.cat([torch.zeros(2, 1, 4, dtype=torch.float64), q[:, 1:, h] * pos], dim=1)
        heads.append(q[:, :, h] @ context / 2.0 + crpe)
    torch.testing.assert_close(m.attend(x, hw, num_prefix=1), m.proj(torch.cat(heads, dim=-1)))


def test_conv_attention_equals_timms_on_the_same_weights():
    timm_coat = pytest.importorskip("timm.models.coat")
    torch.manual_seed(0)
    ours = FactorAttnConvRelPosEnc(16, num_heads=8).eval()
    crpe = timm_coat.ConvRelPosEnc(2, 8, window={3: 2, 5: 3, 7: 3})
    theirs = timm_coat.FactorAttnConvRelPosEnc(16, num_heads=8, qkv_bias=True, shared_crpe=crpe).eval()
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, 1 + 5 * 6, 16)
    torch.testing.assert_close(ours.attend(x, (5, 6)), theirs(x, (5, 6)), rtol=1e-5, atol=1e-5)
    # alone (no class token): the registered module on tokens and on maps
    fmap = torch.randn(1, 16, 5, 6)
    torch.testing.assert_close(ours(fmap), ours(fmap.flatten(2).transpose(1, 2), hw=(5, 6)).transpose(1, 2)
                               .reshape(1, 16, 5, 6))


def test_co_scale_resizing_matches_scale_factors_where_grids_halve_and_keeps_the_class_token():
    x = torch.randn(2, 1 + 4 * 6, 8)
    up = resize_tokens(x, (4, 6), (8, 12))
    grid = x[:, 1:].transpose(1, 2).reshape(2, 8, 4, 6)
    ref = F.interpolate(grid, scale_factor=2.0, mode="bilinear", align_corners=False, recompute_scale_factor=False)
    torch.testing.assert_close(up[:, 1:], ref.flatten(2).transpose(1, 2))
    torch.testing.assert_close(up[:, 0], x[:, 0])
    assert resize_tokens(x, (4, 6), (3, 5)).shape == (2, 16, 8)           # odd grids: resized to the target


def test_scale_grids_at_an_odd_size_and_the_aggregated_head():
    torch.manual_seed(0)
    m = _tiny().eval()
    x = torch.randn(2, 3, 67, 45)
    with torch.no_grad():
        xs, sizes = m.forward_features(x)
        assert sizes == [(16, 11), (8, 5), (4, 2), (2, 1)]
        assert [t.shape for t in xs] == [(2, 1 + 16 * 11, 8), (2, 41, 16), (2, 9, 16), (2, 3, 16)]
        cls = torch.stack([m.norm2(xs[1][:, 0]), m.norm3(xs[2][:, 0]), m.norm4(xs[3][:, 0])], dim=1)
        feat = (m.aggregate.weight.view(1, 3, 1) * cls).sum(1) + m.aggregate.bias
        torch.testing.assert_close(m(x), m.head(feat))
        lite = _tiny(parallel_depth=0).eval()
        xs, _ = lite.forward_features(x)
        torch.testing.assert_close(lite(x), lite.head(lite.norm4(xs[3][:, 0])))


def test_position_encodings_are_shared_by_the_blocks_of_a_scale():
    m = _tiny(depths=(2, 1, 1, 1))
    assert m.serial_blocks1[0].cpe is m.serial_blocks1[1].cpe is m.cpe1
    assert m.serial_blocks2[0].factoratt_crpe.crpe is m.parallel_blocks[0].factoratt_crpe2.crpe is m.crpe2
    assert m.parallel_blocks[0].mlp2 is m.parallel_blocks[0].mlp4


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="one width"):
        CoaT(embed_dims=(8, 16, 24, 32), parallel_depth=1, num_heads=2, crpe_window=3)
    with pytest.raises(ValueError, match="assigns 8 heads"):
        FactorAttnConvRelPosEnc(16, num_heads=4)
    with pytest.raises(ValueError, match="at least 32"):
        _tiny().eval()(torch.randn(1, 3, 20, 40))
