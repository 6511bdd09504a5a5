import pytest
import torch

from attnzoo import create_attention


def test_attention_pooling_matches_explicit_softmax():
    torch.manual_seed(0)
    gc = create_attention("gc", 32)
    x = torch.randn(2, 32, 5, 7)
    logits = torch.einsum("c,nchw->nhw", gc.conv_mask.weight.flatten(), x) + gc.conv_mask.bias
    a = torch.exp(logits - logits.amax(dim=(1, 2), keepdim=True))
    a = a / a.sum(dim=(1, 2), keepdim=True)
    torch.testing.assert_close(gc.weights(x), a)
    torch.testing.assert_close(gc.context(x), (x * a[:, None]).sum(dim=(2, 3)))


def test_context_is_query_independent():
    torch.manual_seed(0)
    gc = create_attention("gc", 32).eval()
    torch.nn.init.normal_(gc.transform[-1].weight)  # leave the identity start
    x = torch.randn(2, 32, 6, 5)
    delta = gc(x) - x
    torch.testing.assert_close(delta, delta[:, :, :1, :1].expand_as(delta))  # the same vector added everywhere
    assert delta.abs().sum() > 0


def test_new_block_is_identity_and_avg_pooling_is_mean():
    x = torch.randn(2, 16, 4, 9)
    torch.testing.assert_close(create_attention("gc", 16)(x), x)
    torch.testing.assert_close(create_attention("gc", 16, pooling="avg").context(x), x.mean(dim=(2, 3)))


def test_bad_arguments():
    with pytest.raises(ValueError):
        create_attention("gc", 16, fusion="concat")


def test_gc_resnet50_has_blocks_in_c3_to_c5_only():
    from attnzoo import create_model

    model = create_model("gc_resnet50")
    has_gc = [[type(b.attn).__name__ != "Identity" for b in stage] for stage in model.stages]
    assert has_gc == [[False] * 3, [True] * 4, [True] * 6, [True] * 3]


def test_multiplicative_fusion_starts_at_one_half_like_the_official_code():
    gc = create_attention("gc", 32, fusion="mul").eval()
    x = torch.randn(2, 32, 5, 6)
    with torch.no_grad():
        torch.testing.assert_close(gc(x), x * 0.5)
