"""MobileViT block: exact unfold/fold, global receptive field, odd sizes resized (authors) or padded and masked."""
import pytest
import torch

from attnzoo import create_attention


def test_unfold_fold_round_trip_at_odd_size():
    m = create_attention("mobilevit", 16, odd_size="pad")
    x = torch.randn(2, 24, 7, 9)
    patches, mask, grid = m.unfold(x)
    assert patches.shape == (2 * 4, 4 * 5, 24) and mask is not None
    torch.testing.assert_close(m.fold(patches, grid, (7, 9)), x)
    assert m.unfold(torch.randn(1, 24, 8, 6))[1] is None  # no padding, no mask


def test_padded_tokens_are_masked_out_as_keys():
    torch.manual_seed(0)
    m = create_attention("mobilevit", 16, odd_size="pad").eval()
    x = torch.randn(1, 24, 5, 7)
    patches, mask, _ = m.unfold(x)
    # pixel slot (0, 0) of every patch is real; slot (1, 1) is padding in the last patch row and column
    assert mask[0].all()
    assert mask.reshape(4, -1)[3].sum() == 2 * 3
    with torch.no_grad():
        layer = m.layers[0]
        y = layer(patches, mask)
        garbage = patches.clone()
        garbage[~mask[:, 0, 0]] = 100.0  # change only the padded tokens
        y2 = layer(garbage, mask)
    keep = mask[:, 0, 0]
    torch.testing.assert_close(y[keep], y2[keep])


def test_every_pixel_sees_the_whole_map():
    torch.manual_seed(0)
    m = create_attention("mobilevit", 16).eval()
    x = torch.randn(1, 16, 12, 12)
    x2 = x.clone()
    x2[..., 11, 11] += 3.0
    with torch.no_grad():
        diff = (m(x) - m(x2)).abs()
    assert diff[..., 0, 0].max() > 1e-6  # far beyond the two 3x3 convolutions' reach
    with pytest.raises(ValueError):
        create_attention("mobilevit", 16, kernel_size=2)


def test_odd_sizes_are_resized_bilinearly_by_default_as_the_authors_do():
    """Authors (and timm): interpolate to the next multiple of the patch, unfold, fold, interpolate back."""
    m = create_attention("mobilevit", 16)
    x = torch.randn(2, 24, 7, 9)
    patches, mask, grid = m.unfold(x)
    assert mask is None and grid == (4, 5)
    up = torch.nn.functional.interpolate(x, size=(8, 10), mode="bilinear", align_corners=False)
    torch.testing.assert_close(patches, m.unfold(up)[0])
    expected = torch.nn.functional.interpolate(up, size=(7, 9), mode="bilinear", align_corners=False)
    torch.testing.assert_close(m.fold(patches, grid, (7, 9)), expected)
    with pytest.raises(ValueError, match="odd_size"):
        create_attention("mobilevit", 16, odd_size="crop")
