import pytest
import torch

from attnzoo import create_attention


@pytest.mark.parametrize("mode", ["embedded_gaussian", "gaussian", "dot_product", "concatenation"])
def test_fresh_block_is_identity(mode):
    nl = create_attention("non_local", 16, mode=mode).eval()
    x = torch.randn(2, 16, 5, 7)
    torch.testing.assert_close(nl(x), x)


@pytest.mark.parametrize("sub_sample", [False, True])
def test_sdpa_path_matches_explicit_softmax(sub_sample):
    torch.manual_seed(0)
    nl = create_attention("non_local", 16, sub_sample=sub_sample).eval()
    torch.nn.init.normal_(nl.norm.weight)
    x = torch.randn(2, 16, 7, 9)
    weights = nl.affinity(x)                                  # explicit softmax(theta^T phi)
    v = nl._pool(nl.g(x))
    y = (weights @ v).transpose(1, 2).reshape(2, -1, 7, 9)
    torch.testing.assert_close(nl(x), x + nl.norm(nl.out(y)), atol=1e-5, rtol=1e-4)
    assert torch.allclose(weights.sum(-1), torch.ones(2, 63))


def test_unknown_mode_rejected():
    with pytest.raises(ValueError, match="mode"):
        create_attention("non_local", 16, mode="cosine")
