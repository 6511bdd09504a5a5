"""Shuffle Transformer: the spatial shuffle's window membership, shuffled attention as regular window attention on the
pixel-permuted map, window attention against a dense float64 reference (padding, shrunk windows, bias), the
neighbour-window branch, stage shapes and argument checks."""
import pytest
import torch
import torch.nn.functional as F

from attnzoo import create_attention, create_model
from attnzoo.layers import window_partition, window_reverse
from attnzoo.models.shuffle_transformer import ShuffleBlock, ShuffleWindowAttention


def test_shuffled_window_gathers_strided_tokens():
    """On a 6 x 9 map with 3 x 3 windows (Hg = 2, Wg = 3), window (a, b) holds the tokens (2 i + a, 3 j + b)."""
    ys, xs = torch.meshgrid(torch.arange(6), torch.arange(9), indexing="ij")
    coords = torch.stack([ys, xs], -1)[None]  # (1, 6, 9, 2)
    windows = window_partition(coords, (3, 3), strided=True)  # (6 windows, 9, 2)
    for a in range(2):
        for b in range(3):
            expected = [(2 * i + a, 3 * j + b) for i in range(3) for j in range(3)]
            assert [tuple(t) for t in windows[a * 3 + b].tolist()] == expected
    assert torch.equal(window_reverse(windows, (3, 3), 6, 9, strided=True), coords)


def test_shuffled_attention_is_window_attention_on_the_permuted_map():
    """Shuffle-WMSA(x) = P^-1 WMSA(P x) with P moving token (i Hg + a, j Wg + b) to (a M + i, b M + j)."""
    torch.manual_seed(0)
    shuffled = ShuffleWindowAttention(16, num_heads=2, window_size=3, shuffle=True).eval()
    regular = ShuffleWindowAttention(16, num_heads=2, window_size=3, shuffle=False).eval()
    regular.load_state_dict(shuffled.state_dict())
    h, w, m = 6, 9, 3
    x = torch.randn(2, h, w, 16)
    ys, xs = torch.arange(h), torch.arange(w)
    new_y = (ys % (h // m)) * m + ys // (h // m)  # where each row goes
    new_x = (xs % (w // m)) * m + xs // (w // m)
    permuted = torch.empty_like(x)
    permuted[:, new_y[:, None], new_x[None, :]] = x
    with torch.no_grad():
        got = shuffled(x.reshape(2, -1, 16), hw=(h, w)).reshape(2, h, w, 16)
        ref = regular(permuted.reshape(2, -1, 16), hw=(h, w)).reshape(2, h, w, 16)[:, new_y[:, None], new_x[None, :]]
    torch.testing.assert_close(got, ref)


def _dense_reference(m: ShuffleWindowAttention, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(N, H*W, C) float64 -> same without windows: zero-pad (bottom, right) to whole windows, let token p attend to
    token q iff both are in the same window (contiguous blocks, or equal residues for the shuffle), bias from the
    table at the offset of their in-window positions."""
    n, _, c = x.shape
    mw = m.window_size
    wh, ww = min(mw, h), min(mw, w)
    x = F.pad(x.reshape(n, h, w, c), (0, 0, 0, (-w) % ww, 0, (-h) % wh))
    hp, wp = x.shape[1:3]
    gh, gw = hp // wh, wp // ww
    ys = torch.arange(hp).repeat_interleave(wp)
    xs = torch.arange(wp).repeat(hp)
    if m.shuffle:
        win_y, win_x, pos_y, pos_x = ys % gh, xs % gw, ys // gh, xs // gw
    else:
        win_y, win_x, pos_y, pos_x = ys // wh, xs // ww, ys % wh, xs % ww
    same = (win_y[:, None] == win_y[None, :]) & (win_x[:, None] == win_x[None, :])
    index = (pos_y[:, None] - pos_y[None, :] + mw - 1) * (2 * mw - 1) + pos_x[:, None] - pos_x[None, :] + mw - 1
    bias = m.relative_position_bias_table[index.clamp(0)].permute(2, 0, 1)
    heads = m.num_heads
    q, k, v = (x.reshape(n, -1, c) @ m.qkv.weight.T).reshape(n, -1, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    logits = q @ k.transpose(-2, -1) / (c // heads) ** 0.5 + bias
    out = (logits.masked_fill(~same, float("-inf")).softmax(-1) @ v).transpose(1, 2).reshape(n, hp, wp, c)
    return out[:, :h, :w].reshape(n, h * w, c) @ m.proj.weight.T + m.proj.bias


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("size", [(6, 9), (7, 11), (2, 5)])
def test_attention_matches_dense_reference(shuffle, size):
    torch.manual_seed(0)
    m = ShuffleWindowAttention(16, num_heads=2, window_size=3, shuffle=shuffle).double().eval()
    with torch.no_grad():
        m.relative_position_bias_table.normal_()
        x = torch.randn(2, size[0] * size[1], 16, dtype=torch.float64)
        torch.testing.assert_close(m(x, hw=size), _dense_reference(m, x, *size), rtol=0, atol=1e-10)


def test_neighbour_window_branch_links_adjacent_windows():
    """Within one regular block, a token sees tokens of a neighbouring window only through the depthwise M x M
    convolution: without it (weights zeroed) the gradient across the window border is exactly zero."""
    torch.manual_seed(0)
    block = ShuffleBlock(32, 1, 7, False, 4.0, 0.0, 0.0, 0.0).eval()  # regular windows, 32 channels, window 7

    def grad_across_border():
        x = torch.randn(1, 32, 14, 14, requires_grad=True)
        block(x)[0, :, 3, 6].sum().backward()
        return x.grad[0, :, 3, 7:].abs().sum()  # column 7+ is the next window

    assert grad_across_border() > 0
    with torch.no_grad():
        block.local.weight.zero_()
    assert grad_across_border() == 0


def test_stage_shapes_and_sizes(output_shapes):
    model = create_model("shuffle_tiny_patch4_window7_224", num_classes=10, embed_dim=32, depths=(2, 2, 2, 2),
                         num_heads=(1, 2, 4, 8)).eval()
    shapes, y = output_shapes(model, model.stages, torch.randn(1, 3, 112, 112))
    assert shapes == [(1, 32, 28, 28), (1, 64, 14, 14), (1, 128, 7, 7), (1, 256, 3, 3)] and y.shape == (1, 10)
    # stem ceil(67 / 4) x ceil(45 / 4) = 17 x 12, then floored halvings (2 x 2 stride-2 convolutions).
    shapes, y = output_shapes(model, model.stages, torch.randn(1, 3, 67, 45))
    assert shapes == [(1, 32, 17, 12), (1, 64, 8, 6), (1, 128, 4, 3), (1, 256, 2, 1)] and y.shape == (1, 10)
    with pytest.raises(ValueError, match="at least 29x29"):
        model(torch.randn(1, 3, 28, 64))


def test_variants_are_data():
    with torch.device("meta"):
        t, b = create_model("shuffle_tiny_patch4_window7_224"), create_model("shuffle_base_patch4_window7_224")
    assert [len(st.blocks) for st in t.stages] == [2, 2, 6, 2]
    assert [st.blocks[0].attn.num_heads for st in b.stages] == [4, 8, 16, 32] and b.num_features == 1024
    assert isinstance(t.stages[0].downsample, torch.nn.Identity)  # 96 = 3 x 32: no merging before stage 1
    assert [blk.attn.shuffle for blk in t.stages[2].blocks] == [False, True] * 3
    assert [st.blocks[0].drop_path.drop_prob for st in b.stages] == pytest.approx([0, 0.5 / 3, 1 / 3, 0.5])
    # the authors' training logs (output/*/log_rank0.txt, "number of params"): 28532482 and 88398560
    assert sum(p.numel() for p in t.parameters()) == 28532482
    assert sum(p.numel() for p in b.parameters()) == 88398560


def test_registered_attention_on_feature_maps(assert_maps_match_tokens):
    m = create_attention("shuffle_window_attn", 64, window_size=3).eval()
    assert_maps_match_tokens(m, torch.randn(2, 64, 9, 7))
    assert m.num_heads == 2 and m.shuffle


@pytest.mark.parametrize("kwargs,match", [
    (dict(channels=48), "head width 32"),
    (dict(channels=64, num_heads=3), "divisible by num_heads"),
    (dict(channels=64, window_size=0), "window_size"),
])
def test_bad_attention_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ShuffleWindowAttention(**kwargs)


@pytest.mark.parametrize("kwargs,match", [
    (dict(depths=(2, 2, 6)), "one per stage"),
    (dict(num_heads=(3, 6, 0, 24)), "positive"),
    (dict(token_dim=0), "token_dim"),
])
def test_bad_model_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        create_model("shuffle_tiny_patch4_window7_224", **kwargs)
