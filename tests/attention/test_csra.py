import math

import pytest
import torch

from attnzoo import create_model
from attnzoo.attention.csra import CSRA


def test_lambda_zero_is_average_pooling_with_normalized_classifier():
    torch.manual_seed(0)
    head = CSRA(8, 5, num_heads=1, lam=0.0)
    x = torch.randn(2, 8, 4, 6)
    m = head.classifier.weight.flatten(1)                          # (classes, C)
    expected = x.mean(dim=(2, 3)) @ (m / m.norm(dim=1, keepdim=True)).t()
    torch.testing.assert_close(head(x), expected, atol=1e-5, rtol=1e-4)


def test_residual_attention_and_max_head():
    torch.manual_seed(0)
    x = torch.randn(2, 8, 4, 6)
    one = CSRA(8, 3, temperatures=(2.0,), lam=0.7)
    s = one.scores(x)[:, 0]                                        # (N, classes, L)
    expected = s.mean(-1) + 0.7 * ((2 * s).softmax(-1) * s).sum(-1)
    torch.testing.assert_close(one(x), expected, atol=1e-5, rtol=1e-4)
    hot = CSRA(8, 3, temperatures=(1e4,), lam=0.7)
    inf = CSRA(8, 3, temperatures=(math.inf,), lam=0.7)
    inf.load_state_dict(hot.state_dict())
    torch.testing.assert_close(hot(x), inf(x), atol=1e-4, rtol=1e-4)   # T -> infinity is max pooling


def test_multi_label_model_and_bad_heads():
    m = create_model("csra_resnet50", num_classes=7, num_heads=2).eval()
    assert m(torch.randn(1, 3, 40, 56)).shape == (1, 7)
    with pytest.raises(ValueError, match="num_heads"):
        CSRA(8, 3, num_heads=3)
