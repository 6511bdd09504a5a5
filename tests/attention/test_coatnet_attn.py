"""CoAtNet relative attention: pre-softmax bias w_{i-j} through SDPA, translation invariance, downsampling stride."""
import pytest
import torch

from attnzoo import create_attention
from attnzoo.attention.coatnet import CoAtTransformerBlock


def test_sdpa_with_bias_equals_explicit_softmax():
    torch.manual_seed(0)
    blk = create_attention("coatnet_attn", 64, window=(4, 5)).eval()
    attn = blk.attn
    with torch.no_grad():
        attn.rel_pos.table.normal_(0, 1.0)  # large enough to matter
    h, w = 3, 4
    x = torch.randn(2, h * w, 64)
    table = attn.rel_pos.table
    bias = torch.zeros(attn.num_heads, h * w, h * w)
    for i in range(h * w):
        for j in range(h * w):
            dy, dx = i // w - j // w, i % w - j % w
            bias[:, i, j] = table[:, dy + 4 - 1, dx + 5 - 1]
    with torch.no_grad():
        q, k, v = attn.qkv(x).reshape(2, h * w, 3, attn.num_heads, 32).permute(2, 0, 3, 1, 4)
        probs = (q @ k.transpose(-2, -1) / 32 ** 0.5 + bias).softmax(-1)
        ref = attn.proj((probs @ v).transpose(1, 2).reshape(2, h * w, 64))
        torch.testing.assert_close(attn(x, (h, w)), ref, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(attn.attention_map(x, (h, w)), probs, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("hw", [(3, 5), (6, 9)])  # inside the 5 x 5 window (crop) and beyond it (resized table)
def test_bias_depends_only_on_the_offset(hw):
    torch.manual_seed(0)
    blk = create_attention("coatnet_attn", 32, window=5)
    h, w = hw
    bias = blk.attn.rel_pos(h, w).detach()
    assert bias.shape == (1, h * w, h * w)
    seen = {}
    for i in range(h * w):
        for j in range(h * w):
            key = (i // w - j // w, i % w - j % w)
            seen.setdefault(key, bias[0, i, j])
            torch.testing.assert_close(bias[0, i, j], seen[key])


def test_downsampling_block_halves_with_ceil_and_changes_width():
    blk = CoAtTransformerBlock(64, 128, stride=2)
    y = blk(torch.randn(2, 64, 7, 9))
    assert y.shape == (2, 128, 4, 5)
    assert isinstance(blk.pool, torch.nn.MaxPool2d) and blk.pool.stride == 2
    with pytest.raises(ValueError):
        CoAtTransformerBlock(64, 128, stride=3)
    with pytest.raises(ValueError):
        CoAtTransformerBlock(64, 100)  # out_channels not divisible by the head width 32


def test_average_pooling_option_is_tf_same_padding():
    blk = CoAtTransformerBlock(32, 64, stride=2, pool="avg")
    x = torch.arange(15.0).reshape(1, 1, 3, 5).expand(1, 32, 3, 5)
    # TF "same" 2x2/2 average pooling of a 3 x 5 map: windows cut by the border average their valid entries
    expected = torch.tensor([[(0 + 1 + 5 + 6) / 4, (2 + 3 + 7 + 8) / 4, (4 + 9) / 2],
                             [(10 + 11) / 2, (12 + 13) / 2, 14.0]])
    torch.testing.assert_close(blk.pool(x)[0, 0], expected)
    assert blk(torch.randn(2, 32, 7, 9)).shape == (2, 64, 4, 5)
    with pytest.raises(ValueError, match="pool"):
        CoAtTransformerBlock(32, 64, stride=2, pool="lp")
