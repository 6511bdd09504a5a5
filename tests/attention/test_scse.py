import pytest
import torch

from attnzoo import create_attention


def test_scse_adds_channel_and_spatial_recalibrations():
    torch.manual_seed(0)
    scse = create_attention("scse", 16)
    x = torch.randn(2, 16, 5, 7)
    q = torch.sigmoid(torch.einsum("c,nchw->nhw", scse.sse.conv.weight.flatten(), x) + scse.sse.conv.bias)
    s = scse.cse.weights(x)
    torch.testing.assert_close(scse(x), x * s + x * q[:, None])
    assert scse.cse.fc1.out_channels == 8  # r = 2


def test_max_combination_is_elementwise_maximum():
    torch.manual_seed(0)
    a = create_attention("scse", 16, combine="max")
    x = torch.randn(2, 16, 4, 4)
    torch.testing.assert_close(a(x), torch.maximum(a.cse(x), a.sse(x)))


def test_sse_gate_is_shared_by_all_channels():
    sse = create_attention("sse", 8)
    x = torch.rand(1, 8, 5, 5) + 0.1
    ratio = sse(x) / x
    torch.testing.assert_close(ratio, ratio[:, :1].expand_as(ratio))


def test_bad_arguments():
    with pytest.raises(ValueError):
        create_attention("scse", 16, combine="concat")
