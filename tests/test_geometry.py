"""``layers.cached_geometry``: size-only index and mask tensors made once per key, safely across modes."""
import copy

import torch
import torch.nn as nn
from torch._subclasses.fake_tensor import FakeTensorMode

from attnzoo import create_model
from attnzoo.layers import cached_geometry, key_minus_query, resolve_device
from attnzoo.models.efficientformer import offset_bias_index
from attnzoo.models.swin import key_offset_index, relative_position_index, shifted_window_mask


def test_made_once_per_key():
    calls = []

    def make():
        calls.append(1)
        return torch.arange(3)

    first = cached_geometry(("test_made_once", 3), make)
    assert cached_geometry(("test_made_once", 3), make) is first
    assert len(calls) == 1
    assert cached_geometry(("test_made_once", 4), make) is not first
    assert len(calls) == 2


def test_least_recently_used_entries_go_beyond_the_byte_budget(monkeypatch):
    from attnzoo.layers import geometry

    monkeypatch.setattr(geometry, "MAX_BYTES", 3 * 400)  # three 100-element int32 tensors
    keep = cached_geometry(("test_budget", 0), lambda: torch.zeros(100, dtype=torch.int32))
    for i in range(1, 6):
        cached_geometry(("test_budget", 0), lambda: torch.ones(1))  # a hit: the first entry stays the most recent
        cached_geometry(("test_budget", i), lambda: torch.zeros(100, dtype=torch.int32))
    total = sum(t.numel() * t.element_size() for t in geometry._GEOMETRY.values())
    assert geometry._BYTES[0] == total <= 3 * 400  # the running total is the entries' size
    assert cached_geometry(("test_budget", 0), lambda: torch.ones(1)) is keep
    assert ("test_budget", 1) not in geometry._GEOMETRY and ("test_budget", 5) in geometry._GEOMETRY


def test_cached_values_equal_fresh_ones():
    """The cached helpers return what a fresh computation returns, on every call (a cache hit included)."""
    for _ in range(2):
        index = relative_position_index((3, 2), (7, 7))
        ys, xs = torch.meshgrid(torch.arange(3), torch.arange(2), indexing="ij")
        ys, xs = ys.flatten(), xs.flatten()
        expected = (ys[:, None] - ys[None, :] + 6) * 13 + (xs[:, None] - xs[None, :] + 6)
        assert torch.equal(index, expected)
        key_offsets = (ys[None, :] - ys[:, None] + 2) * 3 + xs[None, :] - xs[:, None] + 1
        assert torch.equal(key_offset_index((3, 2)), key_offsets)
        strided = offset_bias_index((5, 4), (3, 3), stride=2)
        full = offset_bias_index((5, 4), (3, 3))
        assert torch.equal(strided, full.view(5, 4, -1)[::2, ::2].flatten(0, 1))
        assert full.max() == 8 and full[0, -1] == 2 * 3 + 2  # offsets (4, 3) clamped to the table's (2, 2)
        assert key_minus_query(3, 5).tolist() == [[4, 5, 6], [3, 4, 5], [2, 3, 4]]


def test_made_under_inference_mode_still_trains():
    """A tensor first made under inference_mode is cached as a normal tensor: a later training step can save it."""
    with torch.inference_mode():
        index = cached_geometry(("test_inference", 5), lambda: torch.arange(5))
    assert not index.is_inference()
    table = torch.randn(5, requires_grad=True)
    table[index].sum().backward()
    assert torch.equal(table.grad, torch.ones(5))
    model = create_model("levit_128s", num_classes=3, img_size=96).eval()
    x = torch.randn(1, 3, 96, 80)  # a grid no other test uses, so that this forward fills the cache
    with torch.inference_mode():
        model(x)
    model.train()(torch.randn(2, 3, 96, 80)).sum().backward()
    assert model.stages[0][0].attn.heads.attention_biases.grad is not None


def test_fake_and_default_device_results_are_not_shared():
    with FakeTensorMode():
        fake = cached_geometry(("test_fake",), lambda: torch.arange(4))
    real = cached_geometry(("test_fake",), lambda: torch.arange(4))
    assert type(real) is torch.Tensor and torch.equal(real, torch.arange(4))
    assert type(fake) is not torch.Tensor
    with FakeTensorMode():  # a cached real tensor is not handed to a fake-mode forward
        assert type(cached_geometry(("test_fake",), lambda: torch.arange(4))) is not torch.Tensor
    model = create_model("swin_tiny_patch4_window7_224", num_classes=3).eval()
    x = torch.randn(1, 3, 64, 64)
    model(x)  # fills the cache for these windows
    fake_model = copy.deepcopy(model)
    with FakeTensorMode() as mode:
        for name, tensor in list(fake_model.named_parameters()) + list(fake_model.named_buffers()):
            parent, _, attr = name.rpartition(".")
            setattr(fake_model.get_submodule(parent), attr, type(tensor)(mode.from_tensor(tensor))
                    if isinstance(tensor, nn.Parameter) else mode.from_tensor(tensor))
        assert fake_model(mode.from_tensor(x)).shape == (1, 3)
    with torch.device("meta"):
        assert resolve_device() == torch.device("meta")
        meta = shifted_window_mask(14, 14, (7, 7), (3, 3))
    assert meta.is_meta
    assert not shifted_window_mask(14, 14, (7, 7), (3, 3)).is_meta
