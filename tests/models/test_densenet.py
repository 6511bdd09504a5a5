"""DenseNet: dense connectivity (every layer sees the concatenation of all earlier maps), the BN-ReLU-conv
bottleneck layer against a functional float64 reference, transitions, the widths of the paper's variants,
size limits and argument checks."""
import pytest
import torch
import torch.nn.functional as F

from attnzoo import create_model


def _bn_relu(x, bn):
    return F.relu(F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps))


def _layer_reference(x, layer):
    y = F.conv2d(_bn_relu(x, layer.norm1), layer.conv1.weight)
    return F.conv2d(_bn_relu(y, layer.norm2), layer.conv2.weight, padding=1)


def test_block_concatenates_every_earlier_map(randomise_bn):
    model = create_model("densenet121", growth_rate=6, block_config=(5, 2)).double().eval()
    randomise_bn(model)
    block = model.features.denseblock1
    x = torch.randn(2, 12, 9, 7, dtype=torch.float64)
    out = block(x)
    assert out.shape == (2, 12 + 5 * 6, 9, 7)
    maps = [x]
    for i in range(5):
        layer = block[f"denselayer{i + 1}"]
        assert layer.conv1.in_channels == 12 + 6 * i and layer.conv1.out_channels == 4 * 6
        maps.append(_layer_reference(torch.cat(maps, 1), layer))
    torch.testing.assert_close(out, torch.cat(maps, 1))
    assert torch.equal(out[:, :12], x)  # the block input is passed on unchanged


def test_transition_compresses_and_pools(randomise_bn):
    model = create_model("densenet121", growth_rate=6, block_config=(5, 2)).double().eval()
    randomise_bn(model)
    trans = model.features.transition1
    x = torch.randn(1, 42, 9, 7, dtype=torch.float64)
    expected = F.avg_pool2d(F.conv2d(_bn_relu(x, trans.norm), trans.conv.weight), 2)
    torch.testing.assert_close(trans(x), expected)
    assert expected.shape == (1, 21, 4, 3)


def test_imagenet_stem_and_stage_shapes():
    model = create_model("densenet121", growth_rate=4, num_classes=5).eval()
    names = ["pool0", "denseblock1", "transition1", "denseblock2", "transition2", "denseblock3", "transition3",
             "denseblock4"]
    shapes = {}
    for n in names:
        getattr(model.features, n).register_forward_hook(lambda m, i, o, n=n: shapes.__setitem__(n, tuple(o.shape)))
    with torch.no_grad():
        assert model(torch.randn(1, 3, 67, 45)).shape == (1, 5)
    c1 = 8 + 6 * 4
    c2 = c1 // 2 + 12 * 4
    c3 = c2 // 2 + 24 * 4
    assert shapes == {"pool0": (1, 8, 17, 12), "denseblock1": (1, c1, 17, 12), "transition1": (1, c1 // 2, 8, 6),
                      "denseblock2": (1, c2, 8, 6), "transition2": (1, c2 // 2, 4, 3), "denseblock3": (1, c3, 4, 3),
                      "transition3": (1, c3 // 2, 2, 1), "denseblock4": (1, c3 // 2 + 16 * 4, 2, 1)}


def test_variants_have_the_papers_widths():
    # final widths of Table 1's DenseNet-BC (theta = 0.5): e.g. 121: ((64+192)/2+384)/2+768 = 512, then +512 = 1024
    with torch.device("meta"):
        widths = {n: create_model(n).num_features for n in ("densenet121", "densenet169", "densenet201", "densenet161")}
        cifar = create_model("densenet_bc100_12")
    assert widths == {"densenet121": 1024, "densenet169": 1664, "densenet201": 1920, "densenet161": 2208}
    assert [len(getattr(cifar.features, f"denseblock{i}")) for i in (1, 2, 3)] == [16, 16, 16]
    assert cifar.features.conv0.kernel_size == (3, 3) and cifar.features.conv0.stride == (1, 1)
    assert cifar.num_features == ((24 + 192) // 2 + 192) // 2 + 192 and cifar.head.out_features == 10


def test_cifar_model_keeps_32x32_in_its_first_block():
    model = create_model("densenet_bc100_12", block_config=(2, 2, 2)).eval()
    with torch.no_grad():
        x = model.features.conv0(torch.randn(1, 3, 32, 32))
        assert model.features.denseblock1(x).shape == (1, 24 + 2 * 12, 32, 32)
        assert model(torch.randn(1, 3, 5, 4)).shape == (1, 10)


def test_attention_sees_each_block_output():
    model = create_model("densenet121", growth_rate=4, block_config=(2, 3), attn_layer="se").eval()
    assert model.features.denseblock1["attn"].fc1.in_channels == 8 + 2 * 4
    assert model.features.denseblock2["attn"].fc1.in_channels == (8 + 2 * 4) // 2 + 3 * 4


def test_too_small_inputs_and_bad_arguments():
    model = create_model("densenet121", growth_rate=4).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 29, 29)).shape == (1, 1000)
    with pytest.raises(ValueError, match="at least 29x29"):
        model(torch.randn(1, 3, 28, 64))
    with pytest.raises(ValueError, match="expects"):
        model(torch.randn(3, 64, 64))
    for kwargs in (dict(growth_rate=0), dict(block_config=()), dict(block_config=(6, 0)), dict(compression=0.0),
                   dict(stem="deep"), dict(drop_rate=1.0)):
        with pytest.raises(ValueError):
            create_model("densenet121", **kwargs)
