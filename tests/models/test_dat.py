"""DAT: the deformable attention against a float64 reference written from the paper's equations with explicit
bilinear (tent) weights in pixel coordinates, the reference grid and offset range in closed form, the bias table
resized as the authors do for other sizes, the stages' attention kinds, and argument checks."""
import pytest
import torch
import torch.nn.functional as F

from attnzoo import create_model
from attnzoo.models.dat import DAT, DeformableAttention
from attnzoo.models.swin import WindowAttention


def _tent(points: torch.Tensor, n: int) -> torch.Tensor:
    """(..., n) bilinear weights g(p, r) = max(0, 1 - |p - r|) of pixel coordinates ``points`` on pixels 0..n-1."""
    return (1 - (points[..., None] - torch.arange(n, dtype=points.dtype)).abs()).clamp(min=0)


def _reference(m: DeformableAttention, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, H, W, C) float64 -> (same, the attention weights (N, M, HW, Ns)).

    Normalized coordinates u in [-1, 1] are the pixel coordinate (u + 1) / 2 (n - 1) (align_corners=True); reference
    points are ((i + 1/2) / n) 2 - 1; offsets s tanh(.) / n; phi is a sum of tent weights over all pixels (zero
    outside the map); the bias reads the (2H - 1) x (2W - 1) table at (q - p) / 2."""
    n, h, w, c = x.shape
    g, heads, s = m.groups, m.num_heads, m.offset_range_factor
    d, gc = c // heads, c // g
    tokens = x.reshape(n, h * w, c)
    q = tokens @ m.proj_q.weight.T + m.proj_q.bias
    off = m.conv_offset(q.transpose(1, 2).reshape(n * g, gc, h, w)).tanh()  # (N G, 2, H, W) (stride 1)
    centre_y = (torch.arange(h, dtype=x.dtype) + 0.5) / h * 2 - 1
    centre_x = (torch.arange(w, dtype=x.dtype) + 0.5) / w * 2 - 1
    py = (centre_y[:, None] + s * off[:, 0] / h).reshape(n, g, -1)  # (N, G, Ns) normalized
    px = (centre_x[None, :] + s * off[:, 1] / w).reshape(n, g, -1)
    weights = (_tent((py + 1) / 2 * (h - 1), h)[..., :, None] * _tent((px + 1) / 2 * (w - 1), w)[..., None, :])
    weights = weights.reshape(n, g, h * w, h * w)  # (N, G, Ns, HW): sample s reads pixel p with this weight
    xg = tokens.reshape(n, h * w, g, gc).permute(0, 2, 1, 3)  # (N, G, HW, gc)
    sampled = (weights @ xg).permute(0, 2, 1, 3).reshape(n, -1, c)  # (N, Ns, C)
    k = sampled @ m.proj_k.weight.T + m.proj_k.bias
    v = sampled @ m.proj_v.weight.T + m.proj_v.bias
    split = lambda t: t.reshape(n, -1, heads, d).transpose(1, 2)  # noqa: E731
    logits = split(q) @ split(k).transpose(-1, -2) / d ** 0.5  # (N, M, HW, Ns)
    if m.rpe_table is not None:
        qy, qx = centre_y.repeat_interleave(w), centre_x.repeat(h)  # (HW,)
        dy = (qy[None, None, :, None] - py[:, :, None, :]) / 2  # (N, G, HW, Ns)
        dx = (qx[None, None, :, None] - px[:, :, None, :]) / 2
        ty, tx = _tent((dy + 1) / 2 * (2 * h - 2), 2 * h - 1), _tent((dx + 1) / 2 * (2 * w - 2), 2 * w - 1)
        table = m.rpe_table.reshape(g, heads // g, 2 * h - 1, 2 * w - 1)
        bias = torch.einsum("ngqsa,ngqsb,gmab->ngmqs", ty, tx, table).reshape(n, heads, h * w, -1)
        logits = logits + bias
    attn = logits.softmax(-1)
    out = (attn @ split(v)).transpose(1, 2).reshape(n, h * w, c)
    return (out @ m.proj_out.weight.T + m.proj_out.bias).reshape(n, h, w, c), attn


@pytest.mark.parametrize("use_pe,size", [(True, (5, 7)), (False, (6, 4))])
def test_deformable_attention_matches_explicit_bilinear_reference(use_pe, size):
    torch.manual_seed(0)
    m = DeformableAttention(16, num_heads=4, groups=2, offset_kernel=3, use_pe=use_pe, fmap_size=size).double().eval()
    with torch.no_grad():
        m.conv_offset[-1].weight.normal_(0, 2.0)  # offsets of up to the full range s
        if use_pe:
            m.rpe_table.normal_()
        x = torch.randn(2, *size, 16, dtype=torch.float64)
        got = m(x.reshape(2, -1, 16), hw=size).reshape(x.shape)
        want, attn = _reference(m, x)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-10)
        torch.testing.assert_close(m.attention_map(x.reshape(2, -1, 16), size), attn, rtol=0, atol=1e-12)


def test_undeformed_points_and_offset_range():
    """With zero offsets the keys are read at i + 1/2 - (i + 1/2) / H (pixel centres seen through align_corners=True);
    offsets move a point by at most s / H_G in normalized units, i.e. s (H - 1) / (2 H) pixels."""
    torch.manual_seed(0)
    m = DeformableAttention(16, num_heads=2, groups=1, offset_kernel=3).eval()
    x = torch.randn(1, 16, 6, 9)
    with torch.no_grad():
        m.conv_offset[-1].weight.zero_()
        pts = m.sampling_points(x)[0, 0]  # (H, W, 2) pixel (row, col)
        i, j = torch.arange(6.0), torch.arange(9.0)
        torch.testing.assert_close(pts[..., 0], (i + 0.5 - (i + 0.5) / 6)[:, None].expand(6, 9))
        torch.testing.assert_close(pts[..., 1], (j + 0.5 - (j + 0.5) / 9)[None, :].expand(6, 9))
        m.conv_offset[-1].weight.normal_(0, 100.0)  # saturate tanh
        moved = m.sampling_points(x)[0, 0] - pts
    limit = torch.tensor([2 * 5 / 12, 2 * 8 / 18])
    assert (moved.abs() <= limit + 1e-5).all() and (moved.abs() > 0.9 * limit).any()


def test_bias_table_is_resized_bicubically_on_other_maps():
    """A table laid out for 4 x 5 used on a 7 x 3 map equals a module built for 7 x 3 holding the bicubically
    resized table (the authors' load_pretrained)."""
    torch.manual_seed(0)
    a = DeformableAttention(16, num_heads=2, offset_kernel=3, fmap_size=(4, 5)).eval()
    b = DeformableAttention(16, num_heads=2, offset_kernel=3, fmap_size=(7, 3)).eval()
    state = a.state_dict()
    state["rpe_table"] = F.interpolate(a.rpe_table.detach()[None], size=(13, 5), mode="bicubic",
                                       align_corners=False)[0]
    b.load_state_dict(state)
    with torch.no_grad():
        a.rpe_table.normal_()
        b.rpe_table.copy_(F.interpolate(a.rpe_table[None], size=(13, 5), mode="bicubic", align_corners=False)[0])
        x = torch.randn(2, 16, 7, 3)
        torch.testing.assert_close(a(x), b(x))
        assert a(torch.randn(1, 16, 4, 5)).shape == (1, 16, 4, 5)


def test_stages_alternate_window_shifted_and_deformable_attention():
    with torch.device("meta"):
        tiny, base, base384 = create_model("dat_tiny"), create_model("dat_base"), create_model("dat_base_384")
    kinds = []
    for stage in tiny.stages:
        kinds.append("".join("D" if isinstance(b.attn, DeformableAttention) else "S" if b.attn.shift_size else "L"
                             for b in stage.blocks))
    assert kinds == ["LS", "LS", "LDLDLD", "LD"]
    assert tiny.stages[0].blocks[1].attn.shift_size == 4 and tiny.stages[0].blocks[1].attn.window_size == 7
    assert base384.stages[1].blocks[1].attn.shift_size == 6
    groups = lambda m: [b.attn.groups for s in m.stages[2:] for b in s.blocks[1:2]]  # noqa: E731
    assert groups(tiny) == [3, 6] and groups(base) == [4, 8]
    d = tiny.stages[2].blocks[1].attn
    assert d.conv_offset[0].kernel_size == (5, 5) and tiny.stages[3].blocks[1].attn.conv_offset[0].kernel_size == (3, 3)
    assert d.rpe_table.shape == (12, 27, 27) and base384.stages[3].blocks[1].attn.rpe_table.shape == (32, 23, 23)


def test_bad_arguments_and_inputs():
    small = dict(dims=(16, 32, 64, 128), depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 4), num_classes=3)
    with pytest.raises(ValueError, match="at least 32x32"):
        DAT(**small)(torch.randn(1, 3, 31, 64))
    with pytest.raises(ValueError, match="stage_spec"):
        DAT(**small, stage_spec=("LS", "LS", "LX", "LD"))
    with pytest.raises(ValueError, match="groups=3 must divide num_heads=4"):
        DeformableAttention(128, num_heads=4, groups=3)
    with pytest.raises(ValueError, match="offset_range_factor"):
        DeformableAttention(64, offset_range_factor=0)
    with pytest.raises(ValueError, match="H \\* W must equal L"):
        DeformableAttention(64)(torch.randn(1, 12, 64), hw=(3, 5))
    assert isinstance(DAT(**small).stages[0].blocks[0].attn, WindowAttention)
