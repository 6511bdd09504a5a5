"""CvT: the convolutional-projection attention against a float64 reference (depthwise conv + BN per Q/K/V, strided
keys and values, the class token passed around the convolutions, the authors' full-width scale), stage shapes at an
odd size, the class-token head at batch 1, the variants' parameter counts, arguments."""
import pytest
import torch
import torch.nn.functional as F

from attnzoo import create_model
from attnzoo.models.cvt import ConvProjectionAttention, CvT


def _bn(x, bn):
    return (x - bn.running_mean[:, None, None]) / (bn.running_var[:, None, None] + bn.eps).sqrt() \
        * bn.weight[:, None, None] + bn.bias[:, None, None]


@pytest.mark.parametrize("per_head_scale", [False, True])
def test_attention_against_a_float64_reference(per_head_scale, randomise_bn):
    torch.manual_seed(0)
    m = randomise_bn(ConvProjectionAttention(8, num_heads=2, per_head_scale=per_head_scale)).double().eval()
    h, w = 5, 3
    x = torch.randn(2, 1 + h * w, 8, dtype=torch.float64)                # class token first
    grid = x[:, 1:].transpose(1, 2).reshape(2, 8, h, w)
    out = []
    for name, stride in (("q", 1), ("k", 2), ("v", 2)):
        conv = getattr(m, f"conv_proj_{name}")
        y = _bn(F.conv2d(grid, conv.conv.weight, None, stride, 1, groups=8), conv.bn)
        tokens = torch.cat([x[:, :1], y.flatten(2).transpose(1, 2)], dim=1)
        out.append(getattr(m, f"proj_{name}")(tokens).view(2, -1, 2, 4).transpose(1, 2))
    q, k, v = out
    assert k.shape[2] == 1 + 3 * 2                                        # keys: the class token + a 3 x 2 grid
    scale = 4 ** -0.5 if per_head_scale else 8 ** -0.5                   # the authors: the whole width
    ref = torch.softmax(q @ k.transpose(-1, -2) * scale, dim=-1) @ v
    ref = m.proj(ref.transpose(1, 2).reshape(2, -1, 8))
    torch.testing.assert_close(m.attend(x, (h, w), num_prefix=1), ref)


def test_stage_shapes_at_an_odd_size_and_the_class_token_head_at_batch_one():
    torch.manual_seed(0)
    m = CvT(embed_dims=(8, 16, 24), depths=(1, 1, 1), num_heads=(1, 2, 3), num_classes=5).eval()
    x = torch.randn(1, 3, 67, 45)
    with torch.no_grad():
        shapes = []
        for stage in m.stages:
            x, cls = stage(x)
            shapes.append((tuple(x.shape), None if cls is None else tuple(cls.shape)))
        # 7x7 stride 4 pad 2, then 3x3 stride 2 pad 1: (H + 4 - 7) // 4 + 1, then (H + 2 - 3) // 2 + 1
        assert shapes == [((1, 8, 17, 11), None), ((1, 16, 9, 6), None), ((1, 24, 5, 3), (1, 1, 24))]
        logits = m(torch.randn(1, 3, 67, 45))
    assert logits.shape == (1, 5)


def test_variants_count_the_papers_parameters_on_meta():
    with torch.device("meta"):
        counts = {n: sum(p.numel() for p in create_model(n).parameters()) for n in ("cvt_13", "cvt_21")}
    assert counts == {"cvt_13": 19_997_480, "cvt_21": 31_622_696}       # Table 2: 20 M and 32 M


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="multiple of num_heads"):
        ConvProjectionAttention(10, num_heads=3)
    with pytest.raises(ValueError, match="odd"):
        ConvProjectionAttention(8, kernel_size=4)
    with pytest.raises(ValueError, match="3 entries"):
        CvT(depths=(1, 2))
