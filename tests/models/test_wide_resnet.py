"""Wide ResNets: the pre-activation basic-wide block against a functional float64 reference written from the
authors' pytorch/resnet.py, group widths 16k/32k/64k, dropout between the convolutions, the WRN-50-2 bottleneck
widths and argument checks."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from attnzoo import create_model


def _bn_relu(x, bn):
    return F.relu(F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps))


def _block_reference(x, blk, stride):
    o1 = _bn_relu(x, blk.bn1)
    y = F.conv2d(o1, blk.conv1.weight, stride=stride, padding=1)
    z = F.conv2d(_bn_relu(y, blk.bn2), blk.conv2.weight, padding=1)
    return z + (F.conv2d(o1, blk.shortcut.weight, stride=stride) if blk.shortcut is not None else x)


@pytest.mark.parametrize("group,stride", [(0, 1), (1, 2)])
def test_block_matches_the_authors_functional_block(group, stride, randomise_bn):
    model = create_model("wide_resnet16_8", width=2).double().eval()
    randomise_bn(model)
    for b, blk in enumerate(model.stages[group]):
        s = stride if b == 0 else 1
        x = torch.randn(2, blk.conv1.in_channels, 9, 11, dtype=torch.float64)
        torch.testing.assert_close(blk(x), _block_reference(x, blk, s))
    assert model.stages[group][0].shortcut is not None and model.stages[group][1].shortcut is None


def test_whole_network_matches_the_reference(randomise_bn):
    model = create_model("wide_resnet40_4", layers=(2, 1, 1), width=1, num_classes=7).double().eval()
    randomise_bn(model)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    y = F.conv2d(x, model.stem.weight, padding=1)
    for g, stage in enumerate(model.stages):
        for b, blk in enumerate(stage):
            y = _block_reference(y, blk, 2 if g > 0 and b == 0 else 1)
    y = F.avg_pool2d(_bn_relu(y, model.norm), 8).flatten(1)   # the authors' 8x8 pooling on the 8x8 map
    torch.testing.assert_close(model(x), F.linear(y, model.head.weight, model.head.bias))


@pytest.mark.parametrize("size,grids", [((32, 32), [(32, 32), (16, 16), (8, 8)]), ((33, 21), [(33, 21), (17, 11), (9, 6)])])
def test_group_widths_and_shapes(size, grids):
    model = create_model("wide_resnet28_10", layers=(1, 1, 1), width=3).eval()
    x = model.stem(torch.randn(1, 3, *size))
    shapes = []
    with torch.no_grad():
        for stage in model.stages:
            x = stage(x)
            shapes.append(tuple(x.shape[1:]))
    assert shapes == [(c, *g) for c, g in zip((48, 96, 192), grids)]


def test_registered_depths_and_widths():
    with torch.device("meta"):
        for name, n, k in (("wide_resnet28_10", 4, 10), ("wide_resnet40_4", 6, 4), ("wide_resnet16_8", 2, 8)):
            model = create_model(name)
            assert [len(s) for s in model.stages] == [n] * 3
            assert [s[0].conv1.out_channels for s in model.stages] == [16 * k, 32 * k, 64 * k]
            kernels = [m.kernel_size[0] for m in model.modules() if isinstance(m, nn.Conv2d)]
            assert (kernels.count(3), kernels.count(1)) == (6 * n + 1, 3)  # 6n + 4 convolutions: the "depth"
            assert model.head.out_features == 10
            assert not any(m.bias is not None for m in model.modules() if isinstance(m, nn.Conv2d))


def test_dropout_sits_between_the_two_convolutions():
    model = create_model("wide_resnet16_8", width=1, drop_rate=0.3).train()
    blk = model.stages[1][1]
    assert blk.dropout.p == 0.3

    class Zero(nn.Module):
        def forward(self, x):
            return torch.zeros_like(x)

    blk.dropout = Zero()  # everything dropped: the second (bias-free) conv gives 0, the block is its shortcut
    x = torch.randn(2, blk.conv1.in_channels, 6, 5)
    torch.testing.assert_close(blk(x), x)


def test_attention_after_the_last_convolution():
    model = create_model("wide_resnet16_8", width=1, attn_layer="se").eval()
    blk = model.stages[2][0]
    assert blk.attn.fc2.out_channels == 64
    seen = []
    blk.attn.register_forward_hook(lambda m, i, o: seen.append(i[0]))
    x = torch.randn(1, 32, 8, 8)
    with torch.no_grad():
        blk(x)
        expected = blk.conv2(blk.act(blk.bn2(blk.conv1(blk.act(blk.bn1(x))))))
    torch.testing.assert_close(seen[0], expected)


def test_imagenet_wrn50_2_doubles_the_inner_widths_only():
    with torch.device("meta"):
        wide, plain = create_model("wide_resnet50_2"), create_model("resnet50")
    for s, width in enumerate((64, 128, 256, 512)):
        w, p = wide.stages[s][0], plain.stages[s][0]
        assert w.conv1[0].out_channels == w.conv2[0].out_channels == 2 * width == 2 * p.conv2[0].out_channels
        assert w.conv3[0].out_channels == p.conv3[0].out_channels == 4 * width


@pytest.mark.parametrize("kwargs", [dict(layers=(4, 4)), dict(layers=(4, 0, 4)), dict(width=0), dict(drop_rate=1.0),
                                    dict(num_classes=0)])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        create_model("wide_resnet28_10", **kwargs)


def test_wrong_input_rank():
    with pytest.raises(ValueError, match="expects"):
        create_model("wide_resnet16_8", width=1)(torch.randn(3, 32, 32))
