import pytest
import torch
import torch.nn.functional as F

from attnzoo import create_attention


@pytest.mark.parametrize("name", ["non_local", "non_local_official"])
@pytest.mark.parametrize("mode", ["embedded_gaussian", "gaussian", "dot_product", "concatenation"])
def test_fresh_block_is_identity(name, mode):
    kw = {"scale": False} if mode in ("dot_product", "concatenation") else {}
    nl = create_attention(name, 16, mode=mode, **kw).eval()
    x = torch.randn(2, 16, 5, 7)
    torch.testing.assert_close(nl(x), x)


@pytest.mark.parametrize("sub_sample", [False, True, "input"])
def test_sdpa_path_matches_explicit_softmax(sub_sample):
    torch.manual_seed(0)
    nl = create_attention("non_local", 16, sub_sample=sub_sample).eval()
    torch.nn.init.normal_(nl.norm.weight)
    x = torch.randn(2, 16, 7, 9)
    weights = nl.affinity(x)                                  # explicit softmax(theta^T phi)
    v = nl._value(nl._key_value_input(x))
    y = (weights @ v).transpose(1, 2).reshape(2, -1, 7, 9)
    torch.testing.assert_close(nl(x), x + nl.norm(nl.out(y)), atol=1e-5, rtol=1e-4)
    assert torch.allclose(weights.sum(-1), torch.ones(2, 63))


def _conv1x1(t, conv):
    return torch.einsum("oc,nchw->nohw", conv.weight[:, :, 0, 0].double(), t) + conv.bias.double()[None, :, None, None]


def test_official_configuration_matches_the_released_block():
    # spacetime_nonlocal (video-nonlocal-net, lib/models/nonlocal_helper.py) in 2-D, float64: theta on x; the input
    # max-pooled 2x2, stride 2, no padding, BEFORE phi and g; softmax(theta^T phi / sqrt(d)); W_z; BN; residual
    torch.manual_seed(0)
    nl = create_attention("non_local_official", 16).eval()
    torch.nn.init.normal_(nl.norm.weight)
    torch.nn.init.normal_(nl.norm.bias)
    x = torch.randn(2, 16, 7, 9)
    xd = x.double()
    pooled = xd[:, :, :6, :8].reshape(2, 16, 3, 2, 4, 2).amax(dim=(3, 5))    # floor mode: 7x9 -> 3x4
    theta = _conv1x1(xd, nl.theta).flatten(2)                                # (N, 8, 63)
    phi, g = _conv1x1(pooled, nl.phi).flatten(2), _conv1x1(pooled, nl.g).flatten(2)   # (N, 8, 12)
    p = torch.softmax(theta.transpose(1, 2) @ phi * 8 ** -0.5, dim=-1)     # (N, 63, 12)
    y = (g @ p.transpose(1, 2)).reshape(2, 8, 7, 9)
    z = _conv1x1(y, nl.out)
    bn = nl.norm
    z = (z - bn.running_mean.double()[:, None, None]) / torch.sqrt(bn.running_var.double()[:, None, None] + bn.eps)
    z = z * bn.weight.double()[:, None, None] + bn.bias.double()[:, None, None]
    with torch.no_grad():
        torch.testing.assert_close(nl(x), (xd + z).float(), atol=1e-5, rtol=1e-4)


def test_official_initialization():
    torch.manual_seed(0)
    nl = create_attention("non_local_official", 256)
    for conv in (nl.theta, nl.phi, nl.g, nl.out):
        assert 0.009 < conv.weight.std().item() < 0.011 and conv.bias.abs().sum() == 0
    assert nl.norm.weight.abs().sum() == 0 and nl.scale and nl.sub_sample == "input"


def test_paper_sub_sampling_pools_after_phi_and_g_in_ceil_mode():
    torch.manual_seed(0)
    nl = create_attention("non_local", 8, sub_sample=True).eval()
    x = torch.randn(1, 8, 5, 7)
    phi = F.conv2d(x, nl.phi.weight, nl.phi.bias)
    expected = torch.stack([phi[..., 2 * i:2 * i + 2, 2 * j:2 * j + 2].amax(dim=(-2, -1))   # 3x4 cells
                            for i in range(3) for j in range(4)], dim=-1).transpose(1, 2)
    with torch.no_grad():
        torch.testing.assert_close(nl._query_key(x, nl._key_value_input(x))[1], expected)


def test_bad_arguments_rejected():
    with pytest.raises(ValueError, match="mode"):
        create_attention("non_local", 16, mode="cosine")
    with pytest.raises(ValueError, match="sub_sample"):
        create_attention("non_local", 16, sub_sample="before")
    with pytest.raises(ValueError, match="softmax"):
        create_attention("non_local", 16, mode="dot_product", scale=True)
