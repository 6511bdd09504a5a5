"""Swin Transformer: (shifted) window attention against a dense float64 reference written from the paper's window
definition, the wrapped-border mask, the relative position index, stage shapes and argument checks."""
import pytest
import torch
import torch.nn.functional as F

from attnzoo import create_attention, create_model
from attnzoo.models.swin import WindowAttention, relative_position_index


def _dense_reference(m: WindowAttention, x: torch.Tensor, shift: int) -> torch.Tensor:
    """(N, H, W, C) float64 -> same, with no window partition and no roll.

    The map is zero-padded (right, bottom) to multiples of M as the authors' detection code does; token i may
    attend to token j iff both lie in the same window of the partition displaced by ``shift`` (Fig. 2 of the
    paper: window boundaries at shift + k M, plus a partial window [0, shift) on each axis). Logits are
    q.k / sqrt(d) + table[(dy + M - 1)(2M - 1) + dx + M - 1] with (dy, dx) the true offset i - j.
    """
    n, h, w, c = x.shape
    msz, heads = m.window_size, m.num_heads
    x = F.pad(x, (0, 0, 0, (-w) % msz, 0, (-h) % msz))
    hp, wp = x.shape[1:3]
    tokens = x.reshape(n, hp * wp, c)
    qkv = tokens @ m.qkv.weight.T + m.qkv.bias
    q, k, v = qkv.reshape(n, -1, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    ys = torch.arange(hp).repeat_interleave(wp)
    xs = torch.arange(wp).repeat(hp)
    gy, gx = torch.div(ys - shift, msz, rounding_mode="floor"), torch.div(xs - shift, msz, rounding_mode="floor")
    allowed = (gy[:, None] == gy[None, :]) & (gx[:, None] == gx[None, :])
    dy, dx = ys[:, None] - ys[None, :], xs[:, None] - xs[None, :]
    index = ((dy + msz - 1) * (2 * msz - 1) + dx + msz - 1).clamp(0, (2 * msz - 1) ** 2 - 1)
    bias = m.relative_position_bias_table[index].permute(2, 0, 1)  # (heads, L, L)
    logits = q @ k.transpose(-2, -1) / (c // heads) ** 0.5 + bias
    attn = logits.masked_fill(~allowed, float("-inf")).softmax(-1)
    out = (attn @ v).transpose(1, 2).reshape(n, hp * wp, c) @ m.proj.weight.T + m.proj.bias
    return out.reshape(n, hp, wp, c)[:, :h, :w]


@pytest.mark.parametrize("window,shift,size", [(7, 0, (14, 14)), (7, 3, (14, 14)), (7, 3, (16, 19)),
                                               (3, 1, (8, 10)), (4, 2, (9, 13))])
def test_window_attention_matches_dense_reference(window, shift, size):
    torch.manual_seed(0)
    m = WindowAttention(32, num_heads=2, window_size=window, shift_size=shift).double().eval()
    with torch.no_grad():
        m.relative_position_bias_table.normal_()  # make the bias matter
        x = torch.randn(2, *size, 32, dtype=torch.float64)
        got = m(x.reshape(2, -1, 32), hw=size).reshape(x.shape)
        torch.testing.assert_close(got, _dense_reference(m, x, shift), rtol=0, atol=1e-10)


def test_mask_blocks_attention_across_the_wrapped_border():
    """After the roll by -3, original rows 0-2 share the last window row with rows 10-13 of a 14-row map: the
    top-row token must not see the bottom row (it would without the mask), but does see its own neighbours."""
    torch.manual_seed(0)
    m = WindowAttention(32, num_heads=2, window_size=7, shift_size=3).eval()
    x = torch.randn(1, 14, 14, 32)

    def out_at(x, y0, x0):
        return m(x.reshape(1, -1, 32), hw=(14, 14)).reshape(1, 14, 14, 32)[0, y0, x0]

    with torch.no_grad():
        base = out_at(x, 0, 5)
        wrapped = x.clone()
        wrapped[0, 13, 5] += 10.0  # across the top/bottom border
        torch.testing.assert_close(out_at(wrapped, 0, 5), base, rtol=0, atol=0)
        wrapped = x.clone()
        wrapped[0, 4, 13] += 10.0  # across the left/right border: (4, 0) and (4, 13)
        torch.testing.assert_close(out_at(wrapped, 4, 0), out_at(x, 4, 0), rtol=0, atol=0)
        near = x.clone()
        near[0, 1, 5] += 10.0  # same displaced window
        assert (out_at(near, 0, 5) - base).abs().max() > 1e-3
        # Unshifted, rows 0 and 13 are in different windows anyway; rows 6 and 7 are too.
        plain = WindowAttention(32, num_heads=2, window_size=7, shift_size=0).eval()
        y = plain(x.reshape(1, -1, 32), hw=(14, 14)).reshape(1, 14, 14, 32)
        x2 = x.clone()
        x2[0, 7, 5] += 10.0
        y2 = plain(x2.reshape(1, -1, 32), hw=(14, 14)).reshape(1, 14, 14, 32)
        torch.testing.assert_close(y2[0, :7], y[0, :7], rtol=0, atol=0)


def test_relative_position_index_by_hand():
    # 2 x 2 window, 3 x 3 table: entry (dy + 1) * 3 + (dx + 1) for query minus key offsets.
    expected = torch.tensor([[4, 3, 1, 0], [5, 4, 2, 1], [7, 6, 4, 3], [8, 7, 5, 4]])
    assert torch.equal(relative_position_index((2, 2)), expected)
    # A window shrunk to 1 x 2 reads its offsets from the 2 x 2 table.
    assert torch.equal(relative_position_index((1, 2), (2, 2)), torch.tensor([[4, 3], [5, 4]]))
    full = relative_position_index((7, 7))
    assert full.shape == (49, 49) and full.min() == 0 and full.max() == 168
    assert torch.equal(full.diagonal(), torch.full((49,), 84))  # offset (0, 0) is the table's centre
    with pytest.raises(ValueError, match="larger than"):
        relative_position_index((3, 3), (2, 2))


def test_window_and_shift_rule():
    m = WindowAttention(32, num_heads=1, window_size=7, shift_size=3)
    assert m.window_and_shift(56, 56) == ((7, 7), (3, 3))
    assert m.window_and_shift(7, 7) == ((7, 7), (0, 0))  # Swin at 224: the 7 x 7 last stage is one window
    assert m.window_and_shift(7, 14) == ((7, 7), (0, 3))
    assert m.window_and_shift(5, 20) == ((5, 7), (0, 3))


def test_stage_shapes(output_shapes):
    with torch.device("meta"):  # shapes only
        model = create_model("swin_tiny_patch4_window7_224", num_classes=10).eval()
        shapes, _ = output_shapes(model, model.layers, torch.zeros(1, 3, 224, 224))
        assert shapes == [(1, 56, 56, 96), (1, 28, 28, 192), (1, 14, 14, 384), (1, 7, 7, 768)]
        # 67 x 45 -> patches ceil(67/4) x ceil(45/4) = 17 x 12, then ceil halvings.
        shapes, _ = output_shapes(model, model.layers, torch.zeros(1, 3, 67, 45))
    assert shapes == [(1, 17, 12, 96), (1, 9, 6, 192), (1, 5, 3, 384), (1, 3, 2, 768)]


def test_variants_are_data():
    with torch.device("meta"):
        t, s, b = (create_model(f"swin_{v}_patch4_window7_224") for v in ("tiny", "small", "base"))
    assert [len(st.blocks) for st in t.layers] == [2, 2, 6, 2]
    assert [len(st.blocks) for st in s.layers] == [2, 2, 18, 2]
    assert b.patch_embed.proj.out_channels == 128 and b.num_features == 1024
    assert [blk.attn.shift_size for blk in t.layers[2].blocks] == [0, 3, 0, 3, 0, 3]
    assert [blk.attn.num_heads for st in b.layers for blk in st.blocks[:1]] == [4, 8, 16, 32]


def test_registered_window_attention_on_feature_maps(assert_maps_match_tokens):
    m = create_attention("swin_window_attn", 64, shift_size=3).eval()
    assert_maps_match_tokens(m, torch.randn(2, 64, 15, 9))
    assert m.num_heads == 2


@pytest.mark.parametrize("kwargs,match", [
    (dict(channels=48), "head width 32"),
    (dict(channels=64, num_heads=3), "divisible by num_heads"),
    (dict(channels=64, shift_size=7), "shift_size"),
    (dict(channels=64, window_size=0), "window_size"),
])
def test_bad_attention_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        WindowAttention(**kwargs)


@pytest.mark.parametrize("kwargs,match", [
    (dict(depths=(2, 2), num_heads=(3, 6, 12)), "same length"),
    (dict(num_classes=0), "num_classes"),
    (dict(in_chans=0), "in_chans"),
    (dict(depths=(2, 0, 6, 2)), "depths"),
])
def test_bad_model_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        create_model("swin_tiny_patch4_window7_224", **kwargs)
