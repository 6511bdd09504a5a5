"""CSWin Transformer: cross-shaped window attention with LePE against a dense float64 reference written from the
stripe definition (with the segmentation code's even zero padding), the cross-shaped receptive field, the shrunk
stripe as full attention, stage shapes and argument checks."""
import pytest
import torch
import torch.nn.functional as F

from attnzoo import create_attention, create_model
from attnzoo.models.cswin import CrossShapedWindowAttention


def _dense_reference(m: CrossShapedWindowAttention, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(N, H*W, C) float64 -> same, without any window partition: every token of the padded map attends to the
    tokens of its own stripe (a mask on the full L x L logits) and LePE is the 3 x 3 depthwise convolution over the
    whole map with the taps that leave the stripe dropped. Q, K, V are zero-padded evenly (extra at the bottom and
    right) to whole stripes, as the authors' segmentation backbone does."""
    n, _, c = x.shape
    qkv = (x @ m.qkv.weight.T + m.qkv.bias).reshape(n, h, w, 3, c)
    outs = []
    width = c // m.branches
    heads = m.num_heads // m.branches
    for b in range(m.branches):
        if m.full:
            sh, sw = h, w
        elif b == 0:
            sh, sw = h, min(m.split_size, w)
        else:
            sh, sw = min(m.split_size, h), w
        ph, pw = (-h) % sh, (-w) % sw
        part = qkv[..., b * width:(b + 1) * width].reshape(n, h, w, 3 * width)
        part = F.pad(part, (0, 0, pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
        hp, wp = h + ph, w + pw
        ys = torch.arange(hp).repeat_interleave(wp)
        xs = torch.arange(wp).repeat(hp)
        same = (ys[:, None] // sh == ys[None, :] // sh) & (xs[:, None] // sw == xs[None, :] // sw)
        q, k, v = part.reshape(n, hp * wp, 3, heads, width // heads).permute(2, 0, 3, 1, 4)
        logits = (q @ k.transpose(-2, -1)) / (width // heads) ** 0.5
        out = (logits.masked_fill(~same, float("-inf")).softmax(-1) @ v).transpose(1, 2).reshape(n, hp, wp, width)
        vmap = part[..., 2 * width:]  # (n, hp, wp, width)
        padded = F.pad(vmap, (0, 0, 1, 1, 1, 1))
        kernel = m.lepe[b].weight[:, 0]  # (width, 3, 3)
        gy, gx = torch.arange(hp)[:, None], torch.arange(wp)[None, :]
        pos = m.lepe[b].bias.expand(n, hp, wp, width).clone()
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                ny, nx = gy + dy, gx + dx
                inside = (ny >= 0) & (ny < hp) & (nx >= 0) & (nx < wp) & (ny.clamp(0) // sh == gy // sh) \
                    & (nx.clamp(0) // sw == gx // sw)
                tap = padded[:, 1 + dy:1 + dy + hp, 1 + dx:1 + dx + wp] * kernel[:, 1 + dy, 1 + dx]
                pos = pos + tap * inside[None, :, :, None]
        outs.append((out + pos)[:, ph // 2:ph // 2 + h, pw // 2:pw // 2 + w])
    return torch.cat(outs, -1).reshape(n, h * w, c) @ m.proj.weight.T + m.proj.bias


@pytest.mark.parametrize("split,full,size", [(2, False, (8, 6)), (3, False, (7, 11)), (4, False, (5, 9)),
                                             (7, False, (5, 3)), (1, False, (3, 4)), (2, True, (5, 7))])
def test_attention_matches_dense_reference(split, full, size):
    torch.manual_seed(0)
    m = CrossShapedWindowAttention(16, num_heads=4, split_size=split, full=full).double().eval()
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.3)
        x = torch.randn(2, size[0] * size[1], 16, dtype=torch.float64)
        torch.testing.assert_close(m(x, hw=size), _dense_reference(m, x, *size), rtol=0, atol=1e-10)


def test_receptive_field_is_a_cross_of_stripes():
    """With split 2 on a 6 x 6 map, token (2, 3) sees columns 2-3 (its vertical stripe, all rows) and rows 2-3 (its
    horizontal stripe, all columns), plus nothing else: not even its diagonal neighbour (1, 1)."""
    torch.manual_seed(0)
    m = CrossShapedWindowAttention(16, num_heads=2, split_size=2).eval()
    x = torch.randn(1, 36, 16, requires_grad=True)
    m(x, hw=(6, 6)).reshape(6, 6, 16)[2, 3].square().sum().backward()
    seen = x.grad.reshape(6, 6, 16).norm(dim=-1) > 0
    cross = torch.zeros(6, 6, dtype=torch.bool)
    cross[:, 2:4] = True
    cross[2:4, :] = True
    assert torch.equal(seen, cross)


def test_stripe_wider_than_the_map_is_full_attention():
    """A map no wider (taller) than the stripe is one stripe: both branches then attend over the whole map, which is
    the one-branch attention with all heads (the classification code's rule when the resolution equals sw)."""
    torch.manual_seed(0)
    cross = CrossShapedWindowAttention(16, num_heads=4, split_size=7).eval()
    full = CrossShapedWindowAttention(16, num_heads=4, full=True).eval()
    state = dict(cross.state_dict())
    for key in ("weight", "bias"):
        state[f"lepe.0.{key}"] = torch.cat([state.pop(f"lepe.0.{key}"), state.pop(f"lepe.1.{key}")])
    full.load_state_dict(state)
    x = torch.randn(2, 5 * 7, 16)
    with torch.no_grad():
        torch.testing.assert_close(cross(x, hw=(5, 7)), full(x, hw=(5, 7)))


def test_stage_shapes_and_odd_sizes(output_shapes):
    model = create_model("cswin_tiny_224", num_classes=10, embed_dim=16, depths=(1, 1, 1, 1),
                         num_heads=(2, 2, 2, 2)).eval()
    shapes, y = output_shapes(model, model.stages, torch.randn(1, 3, 64, 64))
    assert shapes == [(1, 16, 16, 16), (1, 8, 8, 32), (1, 4, 4, 64), (1, 2, 2, 128)] and y.shape == (1, 10)
    # stem floor((67 + 4 - 7) / 4) + 1 = 17 x 11, then ceil halvings.
    shapes, y = output_shapes(model, model.stages, torch.randn(1, 3, 67, 45))
    assert shapes == [(1, 17, 11, 16), (1, 9, 6, 32), (1, 5, 3, 64), (1, 3, 2, 128)] and y.shape == (1, 10)
    with pytest.raises(ValueError, match="at least 3x3"):
        model(torch.randn(1, 3, 2, 9))


def test_variants_are_data():
    with torch.device("meta"):
        t, s, b = (create_model(f"cswin_{v}_224") for v in ("tiny", "small", "base"))
    assert [len(st) - 1 for st in t.stages] == [1, 2, 21, 1]
    assert [len(st) - 1 for st in s.stages] == [2, 4, 32, 2]
    assert b.num_features == 768 and b.stages[0][0].conv.out_channels == 96
    attns = [st[1].attn for st in b.stages]
    assert [a.num_heads for a in attns] == [4, 8, 16, 32]
    assert [a.split_size for a in attns[:3]] == [1, 2, 7] and [a.branches for a in attns] == [2, 2, 2, 1]
    assert t.stages[0][0].conv.kernel_size == (7, 7) and t.stages[0][0].conv.stride == (4, 4)
    # the released code's counts (models/cswin.py built on the CPU): 22.32 M, 34.64 M, 77.38 M
    assert [round(sum(p.numel() for p in m.parameters()) / 1e4) for m in (t, s, b)] == [2232, 3464, 7738]


def test_registered_attention_on_feature_maps(assert_maps_match_tokens):
    m = create_attention("cswin_attn", 64, split_size=3).eval()
    assert_maps_match_tokens(m, torch.randn(2, 64, 11, 7))
    assert m.num_heads == 2


@pytest.mark.parametrize("kwargs,match", [
    (dict(channels=48), "head width 32"),
    (dict(channels=48, num_heads=3), "must be even"),
    (dict(channels=50, num_heads=4), "divisible by num_heads"),
    (dict(channels=64, split_size=0), "split_size"),
])
def test_bad_attention_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CrossShapedWindowAttention(**kwargs)


@pytest.mark.parametrize("kwargs,match", [
    (dict(depths=(1, 2, 21)), "one per stage"),
    (dict(num_heads=(2, 4, 0, 16)), "positive"),
    (dict(embed_dim=0), "embed_dim"),
])
def test_bad_model_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        create_model("cswin_tiny_224", **kwargs)
