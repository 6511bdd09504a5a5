import pytest
import torch
import torch.nn.functional as F

from attnzoo import create_conv, create_model


def _block_reference(x, m):
    """The paper's equation block by block (float64): output part o of group g = sum_q W[o, q] *_{rate(o, q)} x[q]."""
    g, p, k = m.groups, m.parts, m.kernel_size
    co, ci = m.out_channels // (g * p), m.in_channels // (g * p)
    rates = m.rate_map()
    outs = []
    for gi in range(g):
        for o in range(p):
            rows = slice((gi * p + o) * co, (gi * p + o + 1) * co)
            y = 0
            for q in range(p):
                cols = slice(q * ci, (q + 1) * ci)
                xq = x[:, (gi * p + q) * ci:(gi * p + q + 1) * ci]
                r = int(rates[o, q])
                y = y + F.conv2d(xq, m.weight[rows, cols], None, m.stride, r * (k - 1) // 2, r)
            outs.append(y)
    return torch.cat(outs, dim=1)


@pytest.mark.parametrize("cin,cout,stride,groups,parts,dilation", [(16, 16, 1, 1, 4, 2), (16, 32, 2, 1, 4, 1),
                                                                   (16, 24, 1, 2, 2, 2), (32, 32, 2, 2, 4, 2)])
def test_diagonal_form_equals_block_by_block_dilations(cin, cout, stride, groups, parts, dilation):
    torch.manual_seed(0)
    m = create_conv("psconv", cin, cout, 3, stride=stride, groups=groups, parts=parts, dilation=dilation).double()
    x = torch.randn(2, cin, 11, 14, dtype=torch.float64)
    torch.testing.assert_close(m(x), _block_reference(x, m), rtol=1e-10, atol=1e-10)


def test_equals_the_authors_three_convolutions():
    """The authors' PSConv2d: gwconv (P groups, dilation d) + gwconv_shift (on the half-swapped input, 2d)
    + a dense 3x3 whose diagonal and half-shifted blocks are masked to zero."""
    torch.manual_seed(0)
    c, p, d = 16, 4, 2
    m = create_conv("psconv", c, c, 3, dilation=d, parts=p).double()
    w, b = m.weight, c // p
    mask = torch.ones_like(w, dtype=torch.bool)
    gw = torch.zeros(c, b, 3, 3, dtype=torch.float64)
    gw_shift = torch.zeros(c, b, 3, 3, dtype=torch.float64)
    for i in range(p):
        j = (i + p // 2) % p
        gw[i * b:(i + 1) * b] = w[i * b:(i + 1) * b, i * b:(i + 1) * b]
        gw_shift[i * b:(i + 1) * b] = w[i * b:(i + 1) * b, j * b:(j + 1) * b]
        mask[i * b:(i + 1) * b, i * b:(i + 1) * b] = False
        mask[j * b:(j + 1) * b, i * b:(i + 1) * b] = False     # the authors' second mask line, (i + P/2, i)
    x = torch.randn(2, c, 9, 10, dtype=torch.float64)
    x1, x2 = x.chunk(2, dim=1)
    expected = (F.conv2d(x, gw, padding=d, dilation=d, groups=p)
                + F.conv2d(torch.cat((x2, x1), 1), gw_shift, padding=2 * d, dilation=2 * d, groups=p)
                + F.conv2d(x, w * mask, padding=1))
    torch.testing.assert_close(m(x), expected, rtol=1e-10, atol=1e-10)


def test_rates_cycle_and_cost_is_a_plain_convolution():
    m = create_conv("psconv", 64, 64, 3)
    assert m.parts == 4 and m.dilation == 2
    assert m.rate_map().tolist() == [[2, 1, 4, 1], [1, 2, 1, 4], [4, 1, 2, 1], [1, 4, 1, 2]]
    assert sum(q.numel() for q in m.parameters()) == 64 * 64 * 9
    with torch.device("meta"):
        ps, plain = create_model("ps_resnet50"), create_model("resnet50")
    assert sum(q.numel() for q in ps.parameters()) == sum(q.numel() for q in plain.parameters())


def test_rate_one_everywhere_is_a_plain_convolution():
    """With every rate forced to 1 the P block diagonals partition the kernel: the layer is F.conv2d with it."""
    torch.manual_seed(0)
    m = create_conv("psconv", 8, 8, 3, dilation=1, parts=4)
    m.rate = lambda shift: 1
    x = torch.randn(1, 8, 7, 5)
    torch.testing.assert_close(m(x), F.conv2d(x, m.weight, padding=1), rtol=1e-5, atol=1e-5)


def test_bad_arguments():
    with pytest.raises(ValueError, match="even"):
        create_conv("psconv", 12, 12, 3, parts=3)
    with pytest.raises(ValueError, match="groups \\* parts"):
        create_conv("psconv", 16, 18, 3, parts=4)
    with pytest.raises(ValueError, match="dilation"):
        create_conv("psconv", 16, 16, 3, dilation=0)
