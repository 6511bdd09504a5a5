import pytest
import torch

from attnzoo import create_attention


def test_lct_matches_group_standardization():
    torch.manual_seed(0)
    lct = create_attention("lct", 16, groups=4)
    with torch.no_grad():
        lct.weight.copy_(torch.randn(16))
        lct.bias.copy_(torch.randn(16))
    x = torch.randn(3, 16, 5, 7)
    z = x.mean(dim=(2, 3)).view(3, 4, 4)
    z_hat = ((z - z.mean(-1, keepdim=True)) / (z.var(-1, correction=0, keepdim=True) + 1e-5).sqrt()).view(3, 16)
    torch.testing.assert_close(lct(x), x * torch.sigmoid(lct.weight * z_hat + lct.bias)[:, :, None, None])


def test_gates_ignore_a_shift_of_one_group():
    torch.manual_seed(0)
    lct = create_attention("lct", 16, groups=4)
    x = torch.randn(2, 16, 6, 6)
    shifted = x.clone()
    shifted[:, 4:8] += 3.0  # a whole group moves together: its standardized contexts do not change
    torch.testing.assert_close(lct.weights(x), lct.weights(shifted), atol=1e-5, rtol=1e-4)


def test_bad_arguments():
    with pytest.raises(ValueError):
        create_attention("lct", 24, groups=16)


def test_a_group_of_one_channel_is_refused_clearly():
    import pytest

    from attnzoo import create_attention

    with pytest.raises(ValueError, match="at least 2"):
        create_attention("lct", 16, groups=16)
