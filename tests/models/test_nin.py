"""Network In Network: the mlpconv layer as a per-pixel MLP (against an explicit einsum reference), global average
pooling of class maps as the classifier, the CIFAR-10 layout of the paper and argument checks."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from attnzoo import create_model


def test_mlpconv_is_a_conv_then_a_per_pixel_mlp():
    model = create_model("nin_cifar10").double().eval()
    layer = model.features[0]
    x = torch.randn(2, 3, 9, 7, dtype=torch.float64)
    f1 = F.relu(F.conv2d(x, layer[0][0].weight, layer[0][0].bias, padding=2))
    pixels = f1.permute(0, 2, 3, 1)                                    # an MLP applied at every position
    for unit in (layer[1], layer[2]):
        pixels = F.relu(pixels @ unit[0].weight.flatten(1).T + unit[0].bias)
    torch.testing.assert_close(layer(x), pixels.permute(0, 3, 1, 2))


def test_logits_are_the_mean_of_the_class_maps():
    model = create_model("nin_cifar10", num_classes=7).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        maps = model.class_maps(x)
        assert maps.shape == (2, 7, 8, 8)
        torch.testing.assert_close(model(x), maps.mean((2, 3)))
    assert not any(isinstance(m, nn.Linear) for m in model.modules())   # no fully connected layer


def test_cifar10_layout():
    model = create_model("nin_cifar10")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.kernel_size[0], c.out_channels) for c in convs] == [(5, 192), (1, 160), (1, 96), (5, 192), (1, 192),
                                                                   (1, 192), (3, 192), (1, 192), (1, 10)]
    pools = [type(m).__name__ for m in model.features if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d))]
    assert pools == ["MaxPool2d", "AvgPool2d"]
    assert [m.p for m in model.features if isinstance(m, nn.Dropout)] == [0.5, 0.5]
    assert sum(p.numel() for p in model.parameters()) == 966986


def test_final_relu_option_and_batch_norm_variant():
    linear = create_model("nin_cifar10", final_relu=False).eval()
    with torch.no_grad():
        assert (linear.class_maps(torch.randn(1, 3, 16, 16)) < 0).any()
        assert (create_model("nin_cifar10").eval().class_maps(torch.randn(1, 3, 16, 16)) >= 0).all()
    bn = create_model("nin_cifar10", batch_norm=True)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in bn.modules()) == 9


def test_sizes_and_bad_arguments():
    model = create_model("nin_cifar10").eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 4, 9)).shape == (1, 10)
    with pytest.raises(ValueError, match="at least 4x4"):
        model(torch.randn(1, 3, 3, 9))
    with pytest.raises(ValueError, match="expects"):
        model(torch.randn(3, 32, 32))
    for kwargs in (dict(num_classes=0), dict(drop_rate=1.0), dict(in_chans=0)):
        with pytest.raises(ValueError):
            create_model("nin_cifar10", **kwargs)
