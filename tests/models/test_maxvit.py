"""MaxViT: which tokens share a block / grid window, the attention against a float64 reference written window by
window (relative bias of the key's offset, padded keys left out), stage sizes at an odd input, the window set by
img_size, arguments."""
import pytest
import torch

from attnzoo import create_model
from attnzoo.models.maxvit import MaxViT, PartitionAttention, partition, unpartition


def _windows(h, w, size, axis):
    """For every window, the (row, col) of its tokens, in the window's raster order (written out, no reshapes)."""
    p, q = size
    if axis == "block":
        return [[(a * p + i, b * q + j) for i in range(p) for j in range(q)]
                for a in range(h // p) for b in range(w // q)]
    sh, sw = h // p, w // q                                  # grid: G x G tokens spaced (H/G, W/G) apart
    return [[(i * sh + a, j * sw + b) for i in range(p) for j in range(q)] for a in range(sh) for b in range(sw)]


@pytest.mark.parametrize("axis", ["block", "grid"])
def test_partition_puts_the_papers_tokens_together_and_unpartition_inverts_it(axis):
    h, w, size = 4, 6, (2, 3)
    pos = torch.stack(torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij"), -1)[None].float()
    windows = partition(pos, size, axis)
    expected = torch.tensor(_windows(h, w, size, axis), dtype=torch.float32)
    torch.testing.assert_close(windows, expected)
    torch.testing.assert_close(unpartition(windows, size, (h, w), axis), pos)


@pytest.mark.parametrize("axis", ["block", "grid"])
def test_attention_against_a_float64_reference_with_padded_keys_left_out(axis):
    torch.manual_seed(0)
    m = PartitionAttention(8, axis, window=(2, 3), dim_head=4).double().eval()
    with torch.no_grad():
        m.rel_pos.relative_position_bias_table.normal_()
    h, w = 3, 5                                                   # padded to 4 x 6
    x = torch.randn(2, h, w, 8, dtype=torch.float64)
    table = m.rel_pos.relative_position_bias_table.detach()
    ref = torch.zeros(2, h, w, 8, dtype=torch.float64)
    for window in _windows(4, 6, (2, 3), axis):
        kept = [(k, yx) for k, yx in enumerate(window) if yx[0] < h and yx[1] < w]
        coords = [(k // 3, k % 3) for k, _ in kept]              # in-window coordinates
        tokens = torch.stack([x[:, y, xx] for _, (y, xx) in kept], dim=1)
        q, k, v = m.qkv(tokens).view(2, len(kept), 3, 2, 4).unbind(2)
        bias = torch.tensor([[[float(table[hd, kj[0] - qi[0] + 1, kj[1] - qi[1] + 2]) for kj in coords]
                              for qi in coords] for hd in range(2)], dtype=torch.float64)
        att = torch.softmax(torch.einsum("nihd,njhd->nhij", q, k) / 2.0 + bias, dim=-1)
        out = m.proj(torch.einsum("nhij,njhd->nihd", att, v).reshape(2, len(kept), 8))
        for t, (_, (y, xx)) in enumerate(kept):
            ref[:, y, xx] = out[:, t]
    torch.testing.assert_close(m.forward_grid(x), ref)
    torch.testing.assert_close(m(x.flatten(1, 2), hw=(h, w)), ref.flatten(1, 2))


def test_stage_sizes_at_an_odd_input_and_window_from_img_size():
    torch.manual_seed(0)
    m = MaxViT(embed_dims=(16, 16, 32, 32), depths=(1, 1, 1, 1), stem_width=8, dim_head=8, num_classes=5).eval()
    x = torch.randn(1, 3, 67, 45)
    with torch.no_grad():
        feats = m.stem(x)
        assert feats.shape == (1, 8, 34, 23)                     # TF "SAME": ceil(H / 2)
        for stage, hw in zip(m.stages, [(17, 12), (9, 6), (5, 3), (3, 2)]):
            feats = stage(feats)
            assert feats.shape[-2:] == hw
        assert m(x).shape == (1, 5)
    with torch.device("meta"):
        big = create_model("maxvit_tiny_tf_224", img_size=384)
    assert big.window == (12, 12)
    table = big.stages[0].blocks[0].attn_grid.attn.rel_pos.relative_position_bias_table
    assert table.shape == (2, 23, 23)                            # 64 channels / 32 per head; 2 * 12 - 1


def test_strided_mbconv_shortcut_pools_without_counting_padding():
    m = MaxViT(embed_dims=(8, 16, 16, 16), depths=(1, 1, 1, 1), stem_width=8, dim_head=8).eval()
    pool = m.stages[1].blocks[0].conv.shortcut.pool
    x = torch.ones(1, 1, 3, 3)
    torch.testing.assert_close(pool(x), torch.ones(1, 1, 2, 2))  # the edge windows average their valid inputs


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="multiple of dim_head"):
        PartitionAttention(48, dim_head=32)
    with pytest.raises(ValueError, match="axis"):
        PartitionAttention(64, axis="diagonal")
    with pytest.raises(ValueError, match="img_size"):
        MaxViT(img_size=16)
