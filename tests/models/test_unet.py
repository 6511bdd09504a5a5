"""U-Net: the paper's valid-convolution geometry (572 -> 388, the tiling condition on input sizes), the padded
variant at odd sizes, the skip connections (concatenation of the cropped encoder map), the level widths of Fig. 1,
the He fan-in initialisation and argument checks."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from attnzoo import create_model
from attnzoo.models.unet import center_crop


def test_valid_convolutions_map_572_to_388():
    with torch.device("meta"):
        model = create_model("unet", in_chans=1, padding="valid").eval()
        assert model(torch.zeros(1, 1, 572, 572)).shape == (1, 2, 388, 388)   # Fig. 1
    assert sum(p.numel() for p in model.parameters()) == 31_030_658


def test_valid_sizes_follow_the_tiling_condition():
    model = create_model("unet", base_width=2, padding="valid", drop_rate=0.0).eval()
    assert model.valid_sizes(3) == [188, 204, 220]                             # 16k + 124, k >= 4
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 188, 204)).shape == (1, 2, 4, 20)       # H - 184
    for h in (572 + 8, 172):
        with pytest.raises(ValueError, match="16k \\+ 124"):
            model(torch.zeros(1, 3, h, 188))


def test_same_padding_keeps_any_size():
    model = create_model("unet", base_width=4, depth=2, num_classes=3).eval()
    with torch.no_grad():
        for size in ((33, 47), (4, 5), (67, 45)):
            assert model(torch.randn(1, 3, *size)).shape == (1, 3, *size)
    with pytest.raises(ValueError, match="at least 4x4 pixels"):
        model(torch.randn(1, 3, 3, 8))


def test_skip_connections_concatenate_the_encoder_map():
    torch.manual_seed(0)
    model = create_model("unet", base_width=2, depth=1, padding="valid").double().eval()
    x = torch.randn(1, 3, 22, 20, dtype=torch.float64)
    enc, bottom, up, dec = model.encoder[0], model.bottom, model.up[0], model.decoder[0]

    def double_conv(t, m):
        return F.relu(F.conv2d(F.relu(F.conv2d(t, m[0].weight, m[0].bias)), m[2].weight, m[2].bias))

    e = double_conv(x, enc)                                      # (18, 16)
    b = double_conv(F.max_pool2d(e, 2), bottom)                  # (9, 8) -> (5, 4)
    u = F.conv_transpose2d(b, up.weight, up.bias, stride=2)      # (10, 8)
    skip = e[..., 4:14, 4:12]                                    # centre crop of (18, 16) to (10, 8)
    expected = F.conv2d(double_conv(torch.cat([skip, u], 1), dec), model.head.weight, model.head.bias)
    torch.testing.assert_close(model(x), expected)
    assert torch.equal(center_crop(e, (10, 8)), skip)


def test_widths_of_figure_1_and_fan_in_init():
    with torch.device("meta"):
        model = create_model("unet")
    assert [lvl[0].out_channels for lvl in model.encoder] + [model.bottom[0].out_channels] == [64, 128, 256, 512, 1024]
    assert [u.out_channels for u in model.up] == [512, 256, 128, 64]
    assert [d[0].in_channels for d in model.decoder] == [1024, 512, 256, 128]
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert model.drop.p == 0.5
    w = create_model("unet", base_width=8).encoder[2][2].weight  # 32 x 32 x 3 x 3: std sqrt(2 / 288)
    assert w.std().item() == pytest.approx((2 / 288) ** 0.5, rel=0.05)


def test_options_norm_attention_conv():
    seen = []
    model = create_model("unet", base_width=4, depth=2, norm=True,
                         attn_layer=lambda c: seen.append(c) or nn.Identity(),
                         conv_layer=lambda i, o, k, stride=1, groups=1: nn.Conv2d(i, o, k, stride, 1, bias=False))
    assert seen == [4, 8, 16, 8, 4]                               # every encoder and decoder level, and the bottom
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 10


@pytest.mark.parametrize("kwargs", [dict(padding="reflect"), dict(depth=0), dict(base_width=0), dict(drop_rate=1.0),
                                    dict(padding="valid", conv_layer="acnet")])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        create_model("unet", **kwargs)
