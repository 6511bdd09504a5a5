"""ESPNet: the ESP module's reduce-split-transform-merge with hierarchical feature fusion against a float64
functional reference, the strided down-sampler, input reinforcement and the widths of ESPNet-C's levels, the
decoder's full-resolution output at odd sizes, the size of the paper's model and argument checks."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from attnzoo import create_block, create_model
from attnzoo.models.espnet import ESPModule


def _br(x, seq):
    bn, act = seq
    y = F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
    return F.prelu(y, act.weight)


@pytest.mark.parametrize("stride", [1, 2])
def test_esp_module_matches_reduce_split_transform_merge(stride, randomise_bn):
    cin, cout = (22, 22) if stride == 1 else (13, 22)
    m = randomise_bn(ESPModule(cin, cout, stride)).double().eval()
    nn.init.uniform_(m.act[1].weight, 0.1, 0.3)
    x = torch.randn(2, cin, 11, 9, dtype=torch.float64)
    k = 1 if stride == 1 else 3
    r = F.conv2d(x, m.reduce.weight, stride=stride, padding=k // 2)        # reduce to d = 22 // 5 = 4
    assert r.shape[1] == 4
    d = [F.conv2d(r, b.weight, padding=rate, dilation=rate) for b, rate in zip(m.branches, (1, 2, 4, 8, 16))]
    assert d[0].shape[1] == 22 - 4 * 4                                     # the first branch takes the rest
    merged = torch.cat([d[0], d[1], d[1] + d[2], d[1] + d[2] + d[3], d[1] + d[2] + d[3] + d[4]], 1)   # HFF
    expected = _br(merged + x if stride == 1 else merged, m.act)
    torch.testing.assert_close(m(x), expected)
    assert m(x).shape == (2, 22, 6 if stride == 2 else 11, 5 if stride == 2 else 9)


def test_registered_block_and_its_checks():
    block = create_block("esp", 16, 10)
    assert not block.add and block(torch.randn(1, 16, 7, 9)).shape == (1, 10, 7, 9)
    with pytest.raises(ValueError, match="at least 5"):
        create_block("esp", 8, 4)
    with pytest.raises(ValueError, match="shortcut"):
        create_block("esp", 8, 10, add=True)
    with pytest.raises(ValueError, match="stride"):
        create_block("esp", 8, 10, stride=3)


def test_espnet_c_levels_and_input_reinforcement():
    model = create_model("espnet_c", depths=(1, 1), num_classes=7).eval()
    x = torch.randn(1, 3, 64, 48)
    with torch.no_grad():
        f1, f2, f3 = model.encode(x)
        out = model(x)
    assert (f1.shape, f2.shape, f3.shape) == ((1, 19, 32, 24), (1, 131, 16, 12), (1, 256, 8, 6))
    assert out.shape == (1, 7, 8, 6) and model.output_stride == 8
    assert len(create_model("espnet_c").level2) == 2 and len(create_model("espnet_c").level3) == 8   # p = 2, q = 8
    # the image, average-pooled 3x3/2 twice, is part of the 1/4-resolution level (before its BN-PReLU)
    captured = {}
    model.norm2.register_forward_pre_hook(lambda m, args: captured.setdefault("in", args[0]))
    with torch.no_grad():
        model(x)
    torch.testing.assert_close(captured["in"][:, -3:], F.avg_pool2d(F.avg_pool2d(x, 3, 2, 1), 3, 2, 1))


def test_espnet_gives_full_resolution_logits_at_odd_sizes():
    model = create_model("espnet", depths=(1, 1), num_classes=5).eval()
    with torch.no_grad():
        for size in ((67, 45), (33, 47), (8, 8)):
            assert model(torch.randn(1, 3, *size)).shape == (1, 5, *size)


def test_size_of_the_papers_model():
    with torch.device("meta"):
        espnet = create_model("espnet")
    assert sum(p.numel() for p in espnet.parameters()) == 365_109   # ~0.36 M, 20 Cityscapes classes


def test_attention_in_the_encoders_esp_modules():
    seen = []
    create_model("espnet_c", depths=(1, 2), attn_layer=lambda c: seen.append(c) or nn.Identity())
    assert seen == [64, 128, 128]


@pytest.mark.parametrize("kwargs", [dict(depths=(0, 2)), dict(depths=(2,)), dict(num_classes=3), dict(in_chans=0)])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        create_model("espnet", **kwargs)
