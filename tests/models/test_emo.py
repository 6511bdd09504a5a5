"""EMO: the iRMB's window attention against a dense float64 reference with the strided (dilated) windows written as
a mask, both orders of attention and expansion, the residuals, the stage layout of EMO-1M, odd sizes, argument
checks."""
import pytest
import torch
import torch.nn.functional as F

from attnzoo import create_block, create_model
from attnzoo.models.emo import EMO, InvertedResidualMobileBlock


def _dense_reference(m: InvertedResidualMobileBlock, x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) float64 normalized map -> the attention branch's (N, C_mid, H, W), without any window partition.

    The map is zero-padded to multiples of M (right, bottom); with n1 = H_p / M (n2 = W_p / M), token (y, x) may
    attend to (y', x') iff y = y' (mod n1) and x = x' (mod n2): the code's windows are the residue classes.
    """
    n, c, h, w = x.shape
    msz, heads = m.window_size, m.num_heads
    x = F.pad(x, (0, (-w) % msz, 0, (-h) % msz))
    hp, wp = x.shape[-2:]
    n1, n2 = hp // msz, wp // msz
    qk = F.conv2d(x, m.qk.weight, m.qk.bias).flatten(2)  # (N, 2C, L)
    q, k = qk[:, :c], qk[:, c:]
    value = x if m.attn_pre else m.v(x)
    vals = value.flatten(2)
    d, dv = c // heads, vals.shape[1] // heads
    q, k = q.reshape(n, heads, d, -1).transpose(-1, -2), k.reshape(n, heads, d, -1).transpose(-1, -2)
    vals = vals.reshape(n, heads, dv, -1).transpose(-1, -2)
    ys, xs = torch.arange(hp).repeat_interleave(wp), torch.arange(wp).repeat(hp)
    same = ((ys[:, None] - ys[None, :]) % n1 == 0) & ((xs[:, None] - xs[None, :]) % n2 == 0)
    logits = (q @ k.transpose(-1, -2) / d ** 0.5).masked_fill(~same, float("-inf"))
    out = (logits.softmax(-1) @ vals).transpose(-1, -2).reshape(n, -1, hp, wp)
    if m.attn_pre:
        out = m.v(out)
    return out[:, :, :h, :w]


@pytest.mark.parametrize("attn_pre,size", [(True, (17, 10)), (False, (14, 21)), (True, (5, 6))])
def test_window_attention_matches_dense_reference_with_strided_windows(attn_pre, size):
    torch.manual_seed(0)
    m = InvertedResidualMobileBlock(16, 16, exp_ratio=2.0, dw_kernel=3, dim_head=8, attn_pre=attn_pre).double().eval()
    x = torch.randn(2, 16, *size, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(m.window_attention(x), _dense_reference(m, x), rtol=0, atol=1e-10)


def test_block_is_expand_attend_conv_project_with_residuals():
    """y = x + Proj(z + SiLU(BN(DWConv(z)))) with z = EW-MHSA(LN(x)); zero Proj makes it the identity, and without
    residual (stride 2) the branch is all there is."""
    torch.manual_seed(0)
    m = InvertedResidualMobileBlock(16, 16, exp_ratio=2.0, dw_kernel=3, dim_head=8).eval()
    x = torch.randn(2, 16, 9, 11)
    with torch.no_grad():
        z = m.window_attention(m.norm(x))
        torch.testing.assert_close(m(x), x + m.proj(z + m.conv_local(z)))
        m.proj.weight.zero_()
        torch.testing.assert_close(m(x), x)
    down = InvertedResidualMobileBlock(16, 24, exp_ratio=4.0, dw_kernel=5, stride=2, attn=False, norm="bn").eval()
    assert not down.has_skip and down.conv_local[0].weight.shape == (64, 1, 5, 5)
    with torch.no_grad():
        y = down(x)
        torch.testing.assert_close(y, down.proj(down.conv_local(down.v(down.norm(x)))))
    assert y.shape == (2, 24, 5, 6)


def test_emo_1m_stage_layout():
    with torch.device("meta"):
        m = create_model("emo_1m")
    stem = m.stem[2]
    assert not stem.has_skip and isinstance(stem.norm, torch.nn.Identity) and stem.se.fc1.out_channels == 24
    layout = []
    for stage in m.stages:
        layout.append([(b.conv_local[0].stride[0], b.conv_local[0].out_channels, b.num_heads, b.has_skip)
                       for b in stage])
    assert layout[0] == [(2, 96, 0, False), (1, 64, 0, True)]                    # 24 * 2 * 2, then 32 * 2
    assert layout[2][:2] == [(2, 288, 0, False), (1, 240, 4, True)]              # 48 * 3 * 2; 80 * 3, 80 / 20
    assert layout[3][1] == (1, 588, 8, True) and len(layout[2]) == 8             # 168 * 3.5, 168 / 21
    assert isinstance(m.stages[2][1].norm, torch.nn.LayerNorm) and isinstance(m.stages[1][1].norm,
                                                                               torch.nn.BatchNorm2d)


def test_odd_sizes_halve_with_ceiling():
    torch.manual_seed(0)
    m = EMO(num_classes=5, depths=(1, 1, 2, 2), stem_dim=8, embed_dims=(8, 16, 16, 32), dim_heads=(8, 8, 8, 16),
            exp_ratios=(1.0, 1.0, 2.0, 2.0)).eval()
    shapes = []
    x = m.stem(torch.randn(1, 3, 67, 45))
    for stage in m.stages:
        x = stage(x)
        shapes.append(tuple(x.shape[-2:]))
    assert shapes == [(17, 12), (9, 6), (5, 3), (3, 2)]


def test_bad_arguments():
    with pytest.raises(ValueError, match="multiple of dim_head"):
        create_block("emo_irmb", 48, 48)
    with pytest.raises(ValueError, match="norm"):
        InvertedResidualMobileBlock(64, 64, norm="gn")
    with pytest.raises(ValueError, match="v_proj=False"):
        InvertedResidualMobileBlock(64, 64, attn=False, v_proj=False, exp_ratio=2.0)
    with pytest.raises(ValueError, match="4 entries"):
        EMO(dim_heads=(16, 16, 20))
