"""SegFormer: the MiT encoder is timm's PVT v2 with other MLP ratios (same weights, same logits), the all-MLP decoder
against a reference written with 1x1 convolutions and functional BN, per-pixel logits at 1/4 resolution (rounded
up) for odd sizes, the full-size variants' widths on the meta device, and argument checks."""
import pytest
import torch
import torch.nn.functional as F

from attnzoo import create_model, load_timm_weights
from attnzoo.models.segformer import AllMLPDecoder, MixVisionTransformer, SegFormer

_TINY = dict(embed_dims=(8, 8, 16, 16), num_heads=(1, 1, 2, 2), depths=(1, 1, 1, 1))


def test_mit_with_pvt_v2_mlp_ratios_loads_timm_pvt_v2_one_to_one():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    theirs = timm.create_model("pvt_v2_b0", num_classes=7, **_TINY).eval()
    with torch.no_grad():
        for p in theirs.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ours = load_timm_weights(MixVisionTransformer(num_classes=7, mlp_ratios=(8, 8, 4, 4), **_TINY), theirs).eval()
    x = torch.randn(2, 3, 45, 67)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x))


def test_decoder_matches_a_reference_with_1x1_convolutions(randomise_bn):
    torch.manual_seed(0)
    head = randomise_bn(AllMLPDecoder((8, 8, 16, 16), 12, 5)).eval()
    feats = [torch.randn(2, c, h, w) for c, (h, w) in zip((8, 8, 16, 16), [(9, 12), (5, 6), (3, 3), (2, 2)])]
    levels = [F.interpolate(F.conv2d(f, lin.weight[:, :, None, None], lin.bias), size=(9, 12), mode="bilinear",
                            align_corners=False) for f, lin in zip(feats, head.linear_c)]
    conv, bn = head.linear_fuse[0], head.linear_fuse[1]
    fused = F.relu(F.batch_norm(F.conv2d(torch.cat(levels[::-1], 1), conv.weight), bn.running_mean,
                                bn.running_var, bn.weight, bn.bias, eps=bn.eps))
    ref = F.conv2d(fused, head.linear_pred.weight, head.linear_pred.bias)
    with torch.no_grad():
        torch.testing.assert_close(head(feats), ref)


@pytest.mark.parametrize("size,grids", [((33, 47), [(9, 12), (5, 6), (3, 3), (2, 2)]),
                                        ((64, 29), [(16, 8), (8, 4), (4, 2), (2, 1)])])
def test_stage_grids_round_up_and_logits_are_at_a_quarter(size, grids):
    torch.manual_seed(0)
    m = SegFormer(num_classes=5, decoder_dim=8, **_TINY).eval()
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        assert [tuple(f.shape[-2:]) for f in m.encoder.forward_features(x)] == grids
        assert m(x).shape == (1, 5, *grids[0])


def test_full_size_variants():
    with torch.device("meta"):
        b0, b5 = create_model("segformer_b0"), create_model("segformer_b5")
        feats = b0.encoder.forward_features(torch.zeros(1, 3, 512, 512))
    assert [tuple(f.shape[1:]) for f in feats] == [(32, 128, 128), (64, 64, 64), (160, 32, 32), (256, 16, 16)]
    assert b0.decode_head.linear_pred.in_channels == 256 and b5.decode_head.linear_pred.in_channels == 768
    assert [len(s.blocks) for s in b5.encoder.stages] == [3, 6, 40, 3]
    assert [s.blocks[0].mlp.fc1.out_features for s in b5.encoder.stages] == [256, 512, 1280, 2048]  # ratio 4
    assert b0.encoder.min_input_size == 29


def test_bad_arguments_and_inputs():
    m = MixVisionTransformer(num_classes=3, **_TINY)
    with pytest.raises(ValueError, match="at least 29x29"):
        m(torch.randn(1, 3, 28, 64))
    with pytest.raises(ValueError, match="num_heads needs 4"):
        MixVisionTransformer(num_heads=(1, 2))
    with pytest.raises(ValueError, match="num_classes"):
        MixVisionTransformer(num_classes=-1)
    with pytest.raises(ValueError, match="num_classes"):
        SegFormer(num_classes=0)
    assert MixVisionTransformer(num_classes=0, **_TINY)(torch.randn(1, 3, 32, 32)).shape == (1, 16)
