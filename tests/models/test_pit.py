"""PiT: the pooling layer's channel pairing and shapes, the stage widths and grids, the position map resized for
other sizes, the distilled heads, and argument checks."""
import pytest
import torch
import torch.nn.functional as F

from attnzoo import create_model
from attnzoo.models.pit import Pooling, PoolingVisionTransformer


def _tiny(**kw):
    args = dict(img_size=64, base_dims=(8, 8, 8), depth=(1, 1, 1), heads=(1, 2, 4), num_classes=5)
    return PoolingVisionTransformer(**{**args, **kw})


def test_pooling_is_a_depthwise_stride_2_conv_with_two_outputs_per_channel():
    torch.manual_seed(0)
    m = Pooling(4, 8)
    x, tokens = torch.randn(2, 4, 7, 9), torch.randn(2, 1, 4)
    y, t = m(x, tokens)
    assert y.shape == (2, 8, 4, 5) and t.shape == (2, 1, 8)
    x2 = x.clone()
    x2[:, 1] += 1.0                                                     # input channel 1 feeds outputs 2 and 3 only
    changed = (m(x2, tokens)[0] - y).abs().amax(dim=(0, 2, 3)) > 0
    assert changed.tolist() == [False, False, True, True, False, False, False, False]
    torch.testing.assert_close(t, tokens @ m.fc.weight.T + m.fc.bias)


def test_stages_halve_the_grid_and_double_the_width():
    with torch.device("meta"):
        m = create_model("pit_ti_224")
        x = m.patch_embed(torch.zeros(1, 3, 224, 224))
        assert x.shape == (1, 64, 27, 27)
        tokens = m.cls_token
        shapes = []
        for stage in m.transformers:
            x, tokens = stage(x, tokens)
            shapes.append((tuple(x.shape), tuple(tokens.shape)))
    assert shapes == [((1, 64, 27, 27), (1, 1, 64)), ((1, 128, 14, 14), (1, 1, 128)), ((1, 256, 7, 7), (1, 1, 256))]
    with torch.device("meta"):
        assert create_model("pit_b_224").pos_embed.shape == (1, 256, 31, 31)


def test_other_sizes_use_the_bicubically_resized_position_map():
    torch.manual_seed(0)
    m = _tiny().eval()
    other = _tiny(img_size=(40, 88)).eval()
    state = m.state_dict()
    state["pos_embed"] = F.interpolate(m.pos_embed.detach(), size=other.grid, mode="bicubic", align_corners=False)
    other.load_state_dict(state)
    x = torch.randn(2, 3, 40, 88)
    with torch.no_grad():
        torch.testing.assert_close(m(x), other(x))
        assert m(torch.randn(1, 3, 33, 17)).shape == (1, 5)


def test_distilled_model_averages_its_heads_in_eval_and_returns_both_when_training():
    torch.manual_seed(0)
    m = _tiny(distilled=True).eval()
    assert m.cls_token.shape == (1, 2, 8)
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        tokens = m.forward_features(x)[1]
        cls_logits, dist_logits = m.head(tokens[:, 0]), m.head_dist(tokens[:, 1])
        torch.testing.assert_close(m(x), (cls_logits + dist_logits) / 2)
        pair = m.train().set_distilled_training(True)(x)
    torch.testing.assert_close(pair[0], cls_logits)
    torch.testing.assert_close(pair[1], dist_logits)


def test_bad_arguments_and_inputs():
    with pytest.raises(ValueError, match="at least 16x16"):
        _tiny()(torch.randn(1, 3, 15, 40))
    with pytest.raises(ValueError, match="heads"):
        _tiny(heads=(1, 2, 0))
    with pytest.raises(ValueError, match="depths and dims"):
        PoolingVisionTransformer(depth=(1, 1), base_dims=(8, 8, 8))
    with pytest.raises(ValueError, match="smaller than patch_size"):
        _tiny(img_size=8)
