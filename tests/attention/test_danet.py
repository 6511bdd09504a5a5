import pytest
import torch

from attnzoo import create_attention


def test_position_attention_equals_explicit_softmax():
    torch.manual_seed(0)
    m = create_attention("danet_pam", 16).eval()
    with torch.no_grad():
        m.gamma.fill_(0.7)
    x = torch.randn(2, 16, 5, 7)
    q = m.query(x).flatten(2)  # (N, C', L)
    k = m.key(x).flatten(2)
    v = m.value(x).flatten(2)  # (N, C, L)
    attn = torch.softmax(q.transpose(1, 2) @ k, dim=-1)  # no 1/sqrt(d) in the paper
    expected = x + 0.7 * (v @ attn.transpose(1, 2)).view_as(x)
    torch.testing.assert_close(m(x), expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(m.attention_map(x), attn)


@pytest.mark.parametrize("energy", ["paper", "official"])
def test_channel_attention_paper_and_official_energies(energy):
    torch.manual_seed(0)
    m = create_attention("danet_cam", 6, energy=energy)
    with torch.no_grad():
        m.gamma.fill_(0.5)
    x = torch.randn(2, 6, 4, 5) * 0.3
    a = x.flatten(2)
    e = a @ a.transpose(1, 2)
    if energy == "paper":
        attn = torch.softmax(e, dim=-1)
    else:  # the authors' code: softmax(max_j E - E)
        attn = torch.softmax(e.max(dim=-1, keepdim=True).values - e, dim=-1)
    torch.testing.assert_close(m(x), x + 0.5 * (attn @ a).view_as(x), rtol=1e-4, atol=1e-5)


def test_position_attention_is_equivariant_to_pixel_permutations():
    torch.manual_seed(0)
    m = create_attention("danet_pam", 8)
    with torch.no_grad():
        m.gamma.fill_(1.0)
    x = torch.randn(1, 8, 4, 6)
    perm = torch.randperm(24)
    shuffle = lambda t: t.flatten(2)[..., perm].view_as(t)  # noqa: E731
    torch.testing.assert_close(m(shuffle(x)), shuffle(m(x)), rtol=1e-4, atol=1e-5)


def test_starts_as_identity_and_head_keeps_any_size():
    x = torch.randn(2, 8, 9, 4)
    torch.testing.assert_close(create_attention("danet_pam", 8)(x), x)
    torch.testing.assert_close(create_attention("danet_cam", 8)(x), x)
    head = create_attention("danet", 32, out_channels=5).eval()
    for shape in [(1, 32, 3, 17), (2, 32, 12, 12)]:
        assert head(torch.randn(shape)).shape == (shape[0], 5, *shape[2:])
    with pytest.raises(ValueError):
        create_attention("danet_cam", 8, energy="bad")
