"""MobileNeXt: the sandglass block against a float64 functional reference (shortcut between the wide ends, linear
reduction), the four block forms of the authors' mnext.py, the identity tensor multiplier, the attention slot, the
widths per row of Table 2 and the README's sizes."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from attnzoo import create_model
from attnzoo.models.mobilenext import SandglassBlock


def _bn(x, bn):
    return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)


def test_sandglass_matches_a_functional_reference(randomise_bn):
    block = randomise_bn(SandglassBlock(48, 48, 1, 12)).double().eval()
    x = torch.randn(2, 48, 9, 7, dtype=torch.float64)
    dw1, pw1, pw2, dw2 = block.conv
    y = F.relu6(_bn(F.conv2d(x, dw1[0].weight, padding=1, groups=48), dw1[1]))     # wide depthwise
    y = _bn(F.conv2d(y, pw1[0].weight), pw1[1])                                    # linear reduction to 48 / 12
    assert y.shape[1] == 16                                                        # ... but not below 48 / 6, rounded to 16
    y = F.relu6(_bn(F.conv2d(y, pw2[0].weight), pw2[1]))                           # expansion
    y = _bn(F.conv2d(y, dw2[0].weight, padding=1, groups=48), dw2[1])              # wide depthwise, linear
    torch.testing.assert_close(block(x), y + x)


def test_reduced_width_is_c_over_t_with_a_floor_of_c_out_over_6():
    assert SandglassBlock(576, 576, 1, 6).mid_channels == 96
    assert SandglassBlock(32, 96, 2, 2).mid_channels == 16        # 32 // 2 = 16 = 96 / 6
    assert SandglassBlock(96, 144, 1, 6).mid_channels == 32       # 96 // 6 = 16 < 144 / 6: ceil(24) -> 32 (x16)


def test_block_forms_follow_the_authors_code():
    with torch.device("meta"):
        model, half = create_model("mobilenext_100"), create_model("mobilenext_050")
    blocks = list(model.features)[1:]

    def form(b):
        kinds = [("dw" if c[0].groups > 1 else "pw") + ("/2" if c[0].stride == (2, 2) else "") for c in b.conv]
        return "-".join(kinds), b.identity_channels > 0

    forms = [form(b) for b in blocks]
    assert forms[0] == ("dw-pw-pw-dw/2", False)           # t = 2: full sandglass, strided, no shortcut
    assert forms[1] == ("dw-pw-pw-dw", False)             # 96 -> 144, single stride-1 row: full, no shortcut
    assert forms[2] == ("pw-pw-dw/2", False)              # 144 -> 192, stride 2: no first depthwise
    assert forms[8] == ("pw-pw", False)                   # 288 -> 384, stride 1: only the two 1x1 convolutions
    assert forms[3] == ("dw-pw-pw-dw", True)              # repeated blocks: the full sandglass with the shortcut
    assert forms[-1] == ("dw-pw-pw-dw", False)            # 960 -> 1280
    assert [b.conv[-1][0].out_channels for b in blocks] == [96, 144] + [192] * 3 + [288] * 3 + [384] * 4 + \
        [576] * 4 + [960] * 3 + [1280]
    assert model.num_features == 1280 and half.num_features == 1280


def test_identity_tensor_multiplier_adds_x_to_the_first_channels_only():
    block = SandglassBlock(16, 16, 1, 2, identity_ratio=0.5).eval()
    x = torch.randn(1, 16, 5, 6)
    with torch.no_grad():
        y, out = block.conv(x), block(x)
    torch.testing.assert_close(out[:, :8], y[:, :8] + x[:, :8])
    torch.testing.assert_close(out[:, 8:], y[:, 8:])


def test_attention_after_the_last_bn_before_the_shortcut():
    block = SandglassBlock(16, 16, 1, 2, attn=lambda c: nn.Sequential(nn.Identity(), _Zero())).eval()
    x = torch.randn(1, 16, 5, 6)
    with torch.no_grad():
        assert torch.equal(block(x), x)


class _Zero(nn.Module):
    def forward(self, x):
        return torch.zeros_like(x)


def test_conv_layer_replaces_the_depthwise_convolutions():
    made = []

    def conv(cin, cout, k, stride=1, groups=1):
        made.append((k, groups == cin))
        return nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False)

    SandglassBlock(16, 16, 1, 2, conv_layer=conv)
    assert made == [(3, True), (3, True)]


def test_sizes_of_the_readme():
    # zhoudaquan/rethinking_bottleneck_design README: 1.00 -> 3.5 M, 300 M MAdds; 1.40 -> 6.1 M, 590 M
    with torch.device("meta"):
        params = {w: sum(p.numel() for p in create_model(f"mobilenext_{w}").parameters()) for w in ("100", "140")}
    assert round(params["100"] / 1e6, 1) == 3.5 and round(params["140"] / 1e6, 1) == 6.1


def test_odd_sizes_and_bad_arguments():
    model = create_model("mobilenext_035", num_classes=3).eval()
    with torch.no_grad():
        assert model.forward_features(torch.randn(1, 3, 65, 33)).shape == (1, 1280, 3, 2)
    for kwargs in (dict(width_mult=0), dict(identity_ratio=0), dict(identity_ratio=1.5), dict(drop_rate=1)):
        with pytest.raises(ValueError):
            create_model("mobilenext_100", **kwargs)
    with pytest.raises(ValueError, match="stride"):
        SandglassBlock(8, 8, 3, 2)
    with pytest.raises(ValueError, match="N, C, H, W"):
        model(torch.randn(3, 16, 16))
