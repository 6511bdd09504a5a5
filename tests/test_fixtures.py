"""The suite's own helpers (tests/conftest.py) do what the tests that use them rely on."""
import torch
import torch.nn as nn


def test_cheap_init_fills_as_asked_and_restores_drawing(cheap_init):
    drawn = torch.Tensor.uniform_, torch.Tensor.normal_
    with cheap_init():
        u = torch.empty(300_000).uniform_(-2.0, 3.0)
        n = torch.empty(300_000).normal_(mean=1.0, std=2.0)
        t = torch.empty(40, 30).t().normal_()                      # not contiguous: written through a copy
        tail = torch.empty(6_000_000).uniform_()                   # longer than the block: wraps around
        seeded = torch.empty(1000).normal_(generator=torch.Generator().manual_seed(3))
        half = torch.empty(1000, dtype=torch.float16).normal_()    # drawn as usual
        conv = nn.Conv2d(8, 16, 3)                                 # nn.init.kaiming_uniform_ and its bias bound
        a, b = torch.empty(1000).normal_(), torch.empty(1000).normal_()
    assert (torch.Tensor.uniform_, torch.Tensor.normal_) == drawn
    assert -2.0 <= u.min() < -1.99 and 2.99 < u.max() <= 3.0 and abs(u.mean() - 0.5) < 0.02
    assert abs(n.mean() - 1.0) < 0.02 and abs(n.std() - 2.0) < 0.02
    assert t.std() > 0.5 and abs(tail.mean() - 0.5) < 0.01
    assert torch.equal(seeded, torch.empty(1000).normal_(generator=torch.Generator().manual_seed(3)))
    assert half.std() > 0.5
    bound = 1 / (8 * 9) ** 0.5
    assert conv.weight.abs().max() <= bound and conv.weight.std() > bound / 2
    assert not torch.equal(a, b), "consecutive fills start at different samples"
