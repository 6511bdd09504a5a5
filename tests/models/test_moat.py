"""MOAT: the authors' exact parameter counts, TF "SAME" average pooling, the relative position bias, the MOAT block
against a reference written out by hand (global and window attention), the network's layout, and argument checks."""
import pytest
import torch
import torch.nn.functional as F

from attnzoo import create_block, create_model
from attnzoo.models.moat import MOAT, MOATBlock, RelativePositionBias, same_avg_pool


def _tiny(**kw):
    args = dict(dims=(8, 16, 32, 64), depths=(1, 1, 2, 1), stem_width=8, head_dim=16, num_classes=5)
    return MOAT(**{**args, **kw})


@pytest.mark.parametrize("name,rel_pos,expected", [
    ("tiny_moat_0", True, 3_355_348), ("tiny_moat_0", False, 3_332_232),  # deeplab2 moat_test.py, 1000 classes
    ("moat_0", True, 27_846_892), ("tiny_moat_3", False, 19_476_600)])
def test_parameter_counts_equal_the_authors_to_the_unit(name, rel_pos, expected):
    with torch.device("meta"):
        model = create_model(name, rel_pos=rel_pos)
    assert sum(p.numel() for p in model.parameters()) == expected


def _tf_same_avg_pool_reference(x, k, s):
    """Pad bottom/right (and top/left) with NaN as TF's SAME rule says, then average the non-NaN entries of each
    window."""
    h, w = x.shape[-2:]
    th = max((-(-h // s) - 1) * s + k - h, 0)
    tw = max((-(-w // s) - 1) * s + k - w, 0)
    xp = F.pad(x, (tw // 2, tw - tw // 2, th // 2, th - th // 2), value=float("nan"))
    win = xp.unfold(2, k, s).unfold(3, k, s)                                       # (N, C, H', W', k, k)
    return win.nanmean(dim=(-2, -1))


@pytest.mark.parametrize("k,size", [(2, (6, 8)), (2, (7, 5)), (3, (8, 6)), (3, (7, 9))])
def test_same_average_pool_averages_valid_entries_with_tf_padding(k, size):
    x = torch.randn(2, 3, *size)
    y = same_avg_pool(x, k, 2)
    assert y.shape[-2:] == (-(-size[0] // 2), -(-size[1] // 2))
    torch.testing.assert_close(y, _tf_same_avg_pool_reference(x, k, 2))
    if k == 2:  # 2x2: PyTorch's ceil-mode pool that ignores the cut-off part is the same thing
        torch.testing.assert_close(y, F.avg_pool2d(x, 2, 2, ceil_mode=True, count_include_pad=False))


def test_relative_bias_reads_the_table_at_the_key_minus_query_offset():
    torch.manual_seed(0)
    rel = RelativePositionBias(2, (2, 3))                                       # table (2, 3, 5)
    bias = rel(2, 3)
    table = rel.relative_position_embedding
    for i in range(6):
        for j in range(6):
            (yi, xi), (yj, xj) = divmod(i, 3), divmod(j, 3)
            torch.testing.assert_close(bias[:, i, j], table[:, yj - yi + 1, xj - xi + 2])
    # other windows: the table resized bilinearly (half-pixel centres) to (2h - 1) x (2w - 1); a 1 x 1 window reads
    # the centre (zero offset) only
    big = rel(4, 2)
    resized = F.interpolate(table[None], size=(7, 3), mode="bilinear", align_corners=False)[0]
    torch.testing.assert_close(big[:, 0, 7], resized[:, 3 + 3, 1 + 1])           # query (0, 0), key (3, 1)
    torch.testing.assert_close(rel(1, 1)[:, 0, 0], table[:, 1, 2])


def _reference_block(m, x):
    """The MOAT block written out: pre-norm MBConv (no SE, exact GELU) + shortcut, then LN and softmax attention
    with the relative bias, one attention window at a time."""
    mb = m.mbconv
    y = F.gelu(mb.expand_norm(F.conv2d(mb.pre_norm(x), mb.expand_conv.weight)))
    y = F.gelu(mb.depthwise_norm(mb.depthwise_conv(y)))
    x = mb.shortcut(x) + F.conv2d(y, mb.shrink_conv.weight, mb.shrink_conv.bias)
    n, c, h, w = x.shape
    wh, ww = m.window or (h, w)
    heads, d = m.attention.num_heads, c // m.attention.num_heads
    out = torch.empty_like(x)
    for top in range(0, h, wh):
        for left in range(0, w, ww):
            t = F.layer_norm(x[:, :, top:top + wh, left:left + ww].flatten(2).transpose(1, 2), (c,),
                             m.attention_norm.weight, m.attention_norm.bias, 1e-5)
            q, k, v = (t @ m.attention.qkv.weight.T + m.attention.qkv.bias).split(c, dim=-1)
            q, k, v = (z.reshape(n, -1, heads, d).transpose(1, 2) for z in (q, k, v))
            logits = q @ k.transpose(-2, -1) / d ** 0.5 + m.rel_pos(wh, ww)
            o = (logits.softmax(-1) @ v).transpose(1, 2).reshape(n, -1, c)
            o = o @ m.attention.proj.weight.T + m.attention.proj.bias
            out[:, :, top:top + wh, left:left + ww] = o.transpose(1, 2).reshape(n, c, wh, ww)
    return x + out


@pytest.mark.parametrize("stride,window,size", [(1, None, (5, 7)), (2, None, (9, 6)), (2, (2, 3), (8, 11))])
def test_moat_block_equals_mbconv_then_windowed_relative_attention(stride, window, size):
    torch.manual_seed(0)
    m = MOATBlock(8, 16, stride=stride, head_dim=8, window=window, position_embedding_size=3).eval()
    for bn in (m.mbconv.pre_norm, m.mbconv.expand_norm, m.mbconv.depthwise_norm):
        bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2), bn.weight.data.uniform_(0.5, 2)
    assert isinstance(m.mbconv.se, torch.nn.Identity)                          # the MOAT block drops the SE
    x = torch.randn(2, 8, *size)
    with torch.no_grad():
        y = m(x)
        torch.testing.assert_close(y, _reference_block(m, x), atol=1e-5, rtol=1e-4)
    assert y.shape == (2, 16, -(-size[0] // stride), -(-size[1] // stride))


def test_stages_strides_squeeze_excitation_and_shortcuts():
    m = _tiny().eval()
    x = torch.randn(1, 3, 33, 17)
    shapes, y = [], m.stem(x)
    shapes.append(tuple(y.shape))
    for stage in m.stages:
        y = stage(y)
        shapes.append(tuple(y.shape))
    assert shapes == [(1, 8, 17, 9), (1, 8, 9, 5), (1, 16, 5, 3), (1, 32, 3, 2), (1, 64, 2, 1)]
    mbconv, moat = m.stages[0][0], m.stages[2][0]
    assert mbconv.se.fc1.out_channels == 2 and not isinstance(mbconv.shortcut.conv, torch.nn.Conv2d)  # 8 -> 8
    assert isinstance(moat.mbconv.shortcut.conv, torch.nn.Conv2d) and isinstance(moat.mbconv.se, torch.nn.Identity)
    assert [b.rel_pos.size for b in (m.stages[2][0], m.stages[3][0])] == [(14, 14), (7, 7)]
    assert m(x).shape == (1, 5)


def test_windows_global_last_block_and_drop_path_schedule():
    m = _tiny(window=((2, 2), (1, 1)), global_attention_at_end=True, drop_path_rate=0.5)
    assert [b.window for b in m.stages[2]] == [(2, 2), None] and m.stages[3][0].window is None
    rates = [b.drop_path.drop_prob for stage in m.stages for b in stage]
    assert rates == pytest.approx([0.5 * i / 5 for i in range(5)])             # block i of n: rate * i / n
    assert m.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 5)
    with pytest.raises(ValueError, match="multiple of 2"):
        m(torch.randn(1, 3, 48, 64))                                           # stage 3 map 3 x 4


def test_geometry_cached_under_inference_mode_still_trains():
    m = MOATBlock(8, 16, head_dim=8, position_embedding_size=3)
    with torch.inference_mode():
        m.eval()(torch.randn(1, 8, 5, 4))                                      # caches the 5 x 4 resize and index
    m.train()(torch.randn(2, 8, 5, 4)).sum().backward()
    assert m.rel_pos.relative_position_embedding.grad.abs().sum() > 0


def test_bad_arguments():
    with pytest.raises(ValueError, match="head width"):
        create_block("moat_block", 64, 48)
    with pytest.raises(ValueError, match="one per MOAT stage"):
        _tiny(window=((2, 2),))
    with pytest.raises(ValueError, match="depths and dims"):
        MOAT(depths=(1, 1, 1))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        _tiny()(torch.randn(3, 32, 32))
