import pytest
import torch

from attnzoo import create_attention
from attnzoo.nbtools import count_params


def test_selection_is_a_softmax_over_branches_and_mixes_them():
    torch.manual_seed(0)
    sk = create_attention("sk", 64).eval()
    x = torch.randn(2, 64, 7, 9)
    a = sk.weights(x)
    torch.testing.assert_close(a.sum(dim=1), torch.ones(2, 64))
    branches = [b(x) for b in sk.branches]
    expected = a[:, 0, :, None, None] * branches[0] + a[:, 1, :, None, None] * branches[1]
    torch.testing.assert_close(sk(x), expected)


def test_parameter_count_of_the_paper_unit():
    c, g, m, d = 128, 32, 2, 32  # first SKNet-50 stage: SK[M=2, G=32, r=16, L=32]
    branches = m * (c * (c // g) * 9 + 2 * c)  # grouped 3x3 convs (no bias) + BN
    fuse = c * d + 2 * d  # 1x1 conv (no bias) + BN
    select = d * m * c  # one 1x1 conv to M*C logits (no bias)
    assert count_params(create_attention("sk", c)) == branches + fuse + select


def test_branches_have_3x3_and_5x5_receptive_fields():
    sk = create_attention("sk", 32)
    for branch, span in zip(sk.branches, (3, 5)):
        x = torch.zeros(1, 32, 11, 11, requires_grad=True)
        branch[0](x)[0, :, 5, 5].sum().backward()
        rows = (x.grad[0].abs().sum(0) > 0).nonzero()[:, 0]
        assert rows.max() - rows.min() + 1 == span


def test_bad_arguments():
    with pytest.raises(ValueError):
        create_attention("sk", 48)  # not divisible by 32 groups
