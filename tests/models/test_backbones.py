import pytest
import torch

from attnzoo import create_model


def test_vit_native_size_uses_learned_position_embeddings_unchanged():
    vit = create_model("vit_tiny_patch16_224")
    assert vit.position_embedding((14, 14)) is vit.pos_embed
    resized = vit.position_embedding((3, 5))
    assert resized.shape == (1, 1 + 15, 192)
    torch.testing.assert_close(resized[:, :1], vit.pos_embed[:, :1])


def test_vit_bilinear_resize_is_the_authors_linear_zoom():
    # google-research/vision_transformer resizes with scipy.ndimage.zoom(order=1): linear interpolation whose
    # grid keeps the corner positions; written out here as 1D linear interpolation along each axis, float64
    vit = create_model("vit_tiny_patch16_224", pos_embed_interp="bilinear").double()
    grid = vit.pos_embed[0, 1:].detach().reshape(14, 14, -1)

    def linear(t, n, dim):  # sample n points from position 0 to position len-1 of axis dim
        src = torch.linspace(0, t.shape[dim] - 1, n, dtype=torch.float64)
        lo = src.floor().long().clamp(max=t.shape[dim] - 2)
        frac = (src - lo).reshape([-1 if d == dim else 1 for d in range(t.dim())])
        return t.index_select(dim, lo) * (1 - frac) + t.index_select(dim, lo + 1) * frac

    expected = linear(linear(grid, 24, 0), 19, 1).reshape(1, 24 * 19, -1)
    resized = vit.position_embedding((24, 19))
    torch.testing.assert_close(resized[:, 1:], expected)
    torch.testing.assert_close(resized[:, :1], vit.pos_embed[:, :1])
    default = create_model("vit_tiny_patch16_224")
    assert default.pos_embed_interp == "bicubic"  # DeiT's and timm's choice
    with pytest.raises(ValueError, match="pos_embed_interp"):
        create_model("vit_tiny_patch16_224", pos_embed_interp="nearest")


def test_vit_pads_partial_patches():
    vit = create_model("vit_tiny_patch16_224").eval()
    tokens, grid = vit.patch_embed(torch.randn(1, 3, 17, 40))
    assert grid == (2, 3) and tokens.shape == (1, 6, 192)


@pytest.mark.parametrize("name,blocks", [("resnet18", 8), ("resnet50", 16), ("resnet101", 33)])
def test_resnet_depth(name, blocks):
    model = create_model(name)
    assert sum(len(stage) for stage in model.stages) == blocks


def test_attention_sits_on_the_residual_branch_of_every_block():
    model = create_model("se_resnet50")
    blocks = [b for stage in model.stages for b in stage]
    assert all(type(b.attn).__name__ == "SqueezeExcite" for b in blocks)
    assert blocks[-1].attn.fc1.in_channels == 2048
