"""ConvMixer: one layer against a float64 reference written from Eqs. 2-3, the patch stem's floor(H/p) maps, the
released models' sizes and activations, conv_layer and bad arguments."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from attnzoo import create_model
from attnzoo.registry import model_entry


def _randomise(module, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if "running_var" in name:
                t.copy_(torch.rand(t.shape, generator=g, dtype=t.dtype) + 0.5)
            elif t.is_floating_point():
                t.copy_(torch.randn(t.shape, generator=g, dtype=t.dtype) * 0.3)


def _bn(x, bn):
    return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)


def _small(name="convmixer_1536_20", **kw):
    return create_model(name, dim=8, depth=2, num_classes=5, **kw).double().eval()


@pytest.mark.parametrize("name,act", [("convmixer_1536_20", F.gelu), ("convmixer_768_32", F.relu)])
def test_layer_is_residual_depthwise_then_pointwise_each_act_then_bn(name, act):
    model = _small(name)
    _randomise(model)
    layer = model.blocks[1]
    x = torch.randn(2, 8, 9, 6, dtype=torch.float64)
    dw, bn1 = layer.spatial[0], layer.spatial[2]
    pw, bn2 = layer.channel[0], layer.channel[2]
    k = dw.kernel_size[0]
    z = _bn(act(F.conv2d(x, dw.weight, dw.bias, padding=k // 2, groups=8)), bn1) + x
    expected = _bn(act(torch.einsum("oc,nchw->nohw", pw.weight[:, :, 0, 0], z) + pw.bias[:, None, None]), bn2)
    torch.testing.assert_close(layer(x), expected)


def test_stem_is_a_patch_embedding_and_head_pools_the_map():
    model = _small()
    _randomise(model)
    x = torch.randn(1, 3, 67, 45, dtype=torch.float64)  # 7 x 7 patches: a 9 x 6 map, the rest dropped
    conv, bn = model.stem[0], model.stem[2]
    z0 = _bn(F.gelu(F.conv2d(x[..., :63, :42], conv.weight, conv.bias, stride=7)), bn)
    torch.testing.assert_close(model.stem(x), z0)
    feats = model.forward_features(x)
    assert feats.shape == (1, 8, 9, 6)
    torch.testing.assert_close(model(x), feats.mean((2, 3)) @ model.head.weight.T + model.head.bias)
    with pytest.raises(ValueError, match="at least 7x7 pixels"):
        model(torch.randn(1, 3, 6, 40, dtype=torch.float64))


@pytest.mark.parametrize("name,cfg", [("convmixer_1536_20", (1536, 20, 9, 7, "gelu")),
                                      ("convmixer_768_32", (768, 32, 7, 7, "relu")),
                                      ("convmixer_1024_20_ks9_p14", (1024, 20, 9, 14, "gelu"))])
def test_variants_are_the_released_models(name, cfg):
    h, d, k, p, act = cfg
    assert model_entry(name).defaults == dict(dim=h, depth=d, kernel_size=k, patch_size=p, act=act)


def test_released_layout_on_the_meta_device():
    with torch.device("meta"):
        model = create_model("convmixer_1024_20_ks9_p14")
    dw = model.blocks[0].spatial[0]
    assert len(model.blocks) == 20 and model.stem[0].stride == (14, 14)
    assert (dw.kernel_size, dw.groups, dw.padding) == ((9, 9), 1024, (4, 4))


def test_conv_layer_replaces_the_depthwise_convolutions():
    calls = []

    def conv(i, o, k, stride=1, groups=1, bias=False):
        calls.append((i, o, k, stride, groups, bias))
        return nn.Conv2d(i, o, k, stride, k // 2, groups=groups, bias=bias)

    model = _small(conv_layer=conv)
    assert calls == [(8, 8, 9, 1, 8, True)] * 2
    assert model(torch.randn(1, 3, 20, 15, dtype=torch.float64)).shape == (1, 5)
    assert _small(conv_layer="acnet")(torch.randn(1, 3, 20, 15, dtype=torch.float64)).shape == (1, 5)


@pytest.mark.parametrize("kwargs", [dict(kernel_size=8), dict(dim=0), dict(patch_size=0), dict(drop_rate=1.0),
                                    dict(act="nope"), dict(conv_layer="no_such_conv")])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        create_model("convmixer_768_32", **{"dim": 8, "depth": 1, **kwargs})
