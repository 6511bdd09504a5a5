"""SETR: the MLA top-down aggregation against a hand-written reference, PUP's 2x steps, which blocks MLA taps, the
class token carried by Naive/PUP and absent from MLA, odd sizes computed on the zero-padded image and cropped, the
encoder being ViT-L/16 without head, and argument checks."""
import pytest
import torch
import torch.nn.functional as F

from attnzoo import create_model
from attnzoo.models.setr import SETR, MLAHead

_TINY = dict(num_classes=5, img_size=64, embed_dim=16, depth=4, num_heads=2)


def _block(seq, x):
    conv, bn = seq[0], seq[1]
    y = F.conv2d(x, conv.weight, conv.bias, padding=conv.padding)
    return F.relu(F.batch_norm(y, bn.running_mean, bn.running_var, bn.weight, bn.bias, eps=bn.eps))


def test_mla_head_matches_a_reference_of_its_top_down_aggregation(randomise_bn):
    torch.manual_seed(0)
    head = randomise_bn(MLAHead(16, 5, channels=8, head_channels=4)).eval()
    grid = (3, 5)
    feats = [torch.randn(2, 15, 16) for _ in range(4)]
    maps = [F.layer_norm(f, (16,), n.weight, n.bias, n.eps).transpose(1, 2).reshape(2, 16, 3, 5)
            for f, n in zip(feats, head.norms)]
    p2, p3, p4, p5 = [_block(conv, m) for conv, m in zip(head.lateral, maps)]
    p4 = p5 + p4
    p3 = p4 + p3
    p2 = p3 + p2
    outs = []
    for p, smooth, h in zip((p2, p3, p4, p5), head.smooth, head.heads):
        y = _block(h[1], _block(h[0], _block(smooth, p)))
        outs.append(F.interpolate(y, size=(12, 20), mode="bilinear", align_corners=True))
    ref = F.conv2d(torch.cat(outs, 1), head.cls.weight, head.cls.bias, padding=1)
    with torch.no_grad():
        torch.testing.assert_close(head(feats, grid), ref)


def test_pup_upsamples_by_two_four_times():
    torch.manual_seed(0)
    m = SETR("pup", **_TINY).eval()
    shapes = []
    hooks = [c.register_forward_hook(lambda mod, i, o: shapes.append(tuple(o.shape[-2:]))) for c in m.decode_head.convs]
    with torch.no_grad():
        out = m(torch.randn(1, 3, 64, 96))
    for h in hooks:
        h.remove()
    assert shapes == [(4, 6), (8, 12), (16, 24), (32, 48)] and out.shape == (1, 5, 64, 96)


def test_taps_and_class_token():
    with torch.device("meta"):
        large, base = create_model("setr_mla_vit_large"), create_model("setr_mla_vit_base")
        naive = create_model("setr_naive_vit_base")
        vit = create_model("vit_base_patch16_224", img_size=512)
    assert large.taps == (5, 11, 17, 23) and base.taps == (2, 5, 8, 11) and naive.taps == (11,)
    assert large.encoder.cls_token is None and naive.encoder.cls_token is not None
    # the encoder is ViT-B/16 (ViT-L/16 for *_vit_large) without its final LayerNorm and head
    extra = sum(p.numel() for p in [*vit.norm.parameters(), *vit.head.parameters()])
    assert sum(p.numel() for p in naive.encoder.parameters()) == sum(p.numel() for p in vit.parameters()) - extra
    torch.manual_seed(0)
    m = SETR("naive", **_TINY).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        before = m(x)
        m.encoder.cls_token.add_(1.0)                                  # Naive/PUP attend to the class token
        assert not torch.allclose(before, m(x))


@pytest.mark.parametrize("decoder", ["naive", "pup", "mla"])
def test_odd_sizes_are_the_padded_image_cropped(decoder):
    torch.manual_seed(0)
    m = SETR(decoder, **_TINY).eval()
    x = torch.randn(1, 3, 37, 50)
    with torch.no_grad():
        out = m(x)
        padded = m(F.pad(x, (0, 14, 0, 11)))
    assert out.shape == (1, 5, 37, 50)
    torch.testing.assert_close(out, padded[..., :37, :50])


def test_bad_arguments():
    with pytest.raises(ValueError, match="decoder"):
        SETR("fpn", **_TINY)
    with pytest.raises(ValueError, match="patch_size 16"):
        SETR("pup", patch_size=8, **_TINY)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        SETR("naive", **_TINY)(torch.randn(3, 64, 64))
