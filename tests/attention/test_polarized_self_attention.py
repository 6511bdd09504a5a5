import pytest
import torch

from attnzoo import create_attention


def _shuffle(t, perm):
    return t.flatten(2)[..., perm].view_as(t)


def test_channel_branch_ignores_pixel_order_and_spatial_branch_follows_it():
    torch.manual_seed(0)
    m = create_attention("polarized_parallel", 16).eval()
    x = torch.randn(2, 16, 5, 6)
    perm = torch.randperm(30)
    with torch.no_grad():
        torch.testing.assert_close(m.channel(_shuffle(x, perm)), m.channel(x))
        torch.testing.assert_close(m.spatial(_shuffle(x, perm)), _shuffle(m.spatial(x), perm))


def test_parallel_and_sequential_layouts():
    torch.manual_seed(0)
    p = create_attention("polarized_parallel", 8).eval()
    s = create_attention("polarized_sequential", 8).eval()
    s.load_state_dict(p.state_dict())
    x = torch.randn(2, 8, 4, 7)
    with torch.no_grad():
        a_ch, a_sp = p.channel(x), p.spatial(x)
        assert a_ch.shape == (2, 8, 1, 1) and a_sp.shape == (2, 1, 4, 7)
        torch.testing.assert_close(p(x), x * a_ch + x * a_sp)
        y = x * a_ch
        torch.testing.assert_close(s(x), y * p.spatial(y))


def test_channel_pooling_is_a_softmax_over_positions():
    torch.manual_seed(0)
    m = create_attention("polarized_parallel", 8)
    x = torch.randn(1, 8, 3, 3)
    with torch.no_grad():
        m.channel.wq.weight.zero_()
        m.channel.wq.bias.zero_()  # uniform softmax: the pooled vector is the plain mean of W_v(x)
        z = m.channel.wz(m.channel.wv(x).mean(dim=(2, 3), keepdim=True)).flatten(1)
        expected = torch.sigmoid(m.channel.ln(z))[:, :, None, None]
        torch.testing.assert_close(m.channel(x), expected)
    with pytest.raises(ValueError):
        create_attention("polarized_sequential", 8, rd_ratio=2.0)


def _official_state_dict(c, layout, generator):
    """Random tensors under the key names and shapes of the released PSA_p / PSA_s (planes = inplanes = c)."""
    inner = c // 2
    r = lambda *shape: torch.randn(*shape, generator=generator) * 0.5
    sd = {"conv_q_right.weight": r(1, c, 1, 1), "conv_v_right.weight": r(inner, c, 1, 1),
          "conv_q_left.weight": r(inner, c, 1, 1), "conv_v_left.weight": r(inner, c, 1, 1)}
    if layout == "parallel":
        sd["conv_up.weight"] = r(c, inner, 1, 1)
    else:
        hid = inner // 4
        sd.update({"conv_up.0.weight": r(hid, inner, 1, 1), "conv_up.0.bias": r(hid),
                   "conv_up.1.weight": 1 + r(hid, 1, 1), "conv_up.1.bias": r(hid, 1, 1),
                   "conv_up.3.weight": r(c, hid, 1, 1), "conv_up.3.bias": r(c)})
    return sd


def _official_reference(sd, x, layout):
    """PSA_p / PSA_s of DeLightCMU/PSA (semantic-segmentation/network/PSA.py) in float64, from its equations."""
    sd = {k: v.double() for k, v in sd.items()}
    lin = lambda t, w: torch.einsum("oc,nchw->nohw", w[:, :, 0, 0], t)          # bias-free 1x1 conv
    n, c, h, w = x.shape

    def channel_gate(t):
        p = torch.softmax(lin(t, sd["conv_q_right.weight"]).flatten(1), dim=-1)        # (N, HW)
        z = (lin(t, sd["conv_v_right.weight"]).flatten(2) * p[:, None]).sum(-1)             # (N, C/2)
        if layout == "parallel":
            z = z @ sd["conv_up.weight"][:, :, 0, 0].T
        else:
            u = z @ sd["conv_up.0.weight"][:, :, 0, 0].T + sd["conv_up.0.bias"]
            u = (u - u.mean(1, keepdim=True)) / torch.sqrt(u.var(1, unbiased=False, keepdim=True) + 1e-5)
            u = torch.relu(u * sd["conv_up.1.weight"].flatten() + sd["conv_up.1.bias"].flatten())
            z = u @ sd["conv_up.3.weight"][:, :, 0, 0].T + sd["conv_up.3.bias"]
        return torch.sigmoid(z)[:, :, None, None]

    def spatial_gate(t):
        q = lin(t, sd["conv_q_left.weight"]).mean(dim=(2, 3))                           # (N, C/2), no softmax
        v = lin(t, sd["conv_v_left.weight"]).flatten(2)                                 # (N, C/2, HW)
        if layout == "parallel":
            logits = torch.softmax((q[:, :, None] * v).sum(1), dim=-1)                  # softmax over HW after
        else:
            logits = (q[:, :, None] * torch.softmax(v, dim=-1)).sum(1)                  # softmax over HW before
        return torch.sigmoid(logits).view(n, 1, h, w)

    x = x.double()
    if layout == "parallel":
        return (x * channel_gate(x) + x * spatial_gate(x)).float()
    y = x * channel_gate(x)
    return (y * spatial_gate(y)).float()


@pytest.mark.parametrize("layout", ["parallel", "sequential"])
def test_official_variant_reproduces_the_released_modules(layout):
    from attnzoo.attention.polarized_self_attention import convert_official_state_dict

    g = torch.Generator().manual_seed(0)
    official = {f"layer1.0.deattn.{k}": v for k, v in _official_state_dict(16, layout, g).items()}
    m = create_attention(f"polarized_{layout}", 16, variant="official").eval()
    assert all(conv.bias is None for conv in (m.channel.wq, m.channel.wv, m.spatial.wq, m.spatial.wv))
    m.load_state_dict(convert_official_state_dict(official, prefix="layer1.0.deattn."), strict=True)
    x = torch.randn(2, 16, 5, 7, generator=g) * 2
    plain = {k[len("layer1.0.deattn."):]: v for k, v in official.items()}
    with torch.no_grad():
        torch.testing.assert_close(m(x), _official_reference(plain, x, layout), atol=1e-5, rtol=1e-4)


def test_official_variant_parameter_counts():
    c, h = 64, 32
    p = create_attention("polarized_parallel", c, variant="official")
    s = create_attention("polarized_sequential", c, variant="official")
    assert sum(t.numel() for t in p.parameters()) == c + c * h + h * c + 2 * c * h          # five bias-free convs
    hid = h // 4
    assert sum(t.numel() for t in s.parameters()) == (c + c * h + 2 * c * h                 # q, v convs
                                                     + h * hid + hid + 2 * hid + hid * c + c)  # conv_up
    with pytest.raises(ValueError, match="variant"):
        create_attention("polarized_parallel", c, variant="timm")
