"""Index and mask tensors that depend only on a grid's size, computed once per size and device.

Relative-position indices, window masks and resize matrices are a handful of small ops each (arange, meshgrid,
differences, clamps), and attention layers rebuild the same ones in every forward: at small inputs that is a
measurable share of a training step (LeViT-128 on 64 x 64 images: ~2 % of forward + backward). timm keeps them as
non-persistent buffers for one configured input size; a cache keyed by size serves every input size (MOAT's
authors keep theirs in a global cache too). It also keeps meta-device forwards (MAC counting) cheap.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Hashable

import torch

# Least recently used first. Bounded, so that a run over many input sizes (multi-scale detection) cannot grow it
# without limit: Swin's mask for a 1024 x 1024 image is ~13 MB.
_GEOMETRY: OrderedDict[Hashable, torch.Tensor] = OrderedDict()
_BYTES = [0]  # their total size
MAX_BYTES = 256 * 2**20


def resolve_device(device=None) -> torch.device:
    """``device`` as a ``torch.device``; None is the current default (``torch.device(...)`` contexts included), so
    that a cache key names the device the tensor is made on."""
    return torch.device(device) if device is not None else torch.empty(0).device


def cached_geometry(key: Hashable, make: Callable[[], torch.Tensor]) -> torch.Tensor:
    """``make()``, remembered under ``key`` (which must name everything the result depends on: sizes, device,
    dtype). The result must never be written to in place. The least recently used entries are dropped beyond
    ``MAX_BYTES`` in all. Bypassed under torch.compile (the ops are traced into the
    graph and constant-folded, no graph break) and under a fake-tensor mode (whose ops must see fake tensors only);
    results that are not plain tensors are never cached. Made outside ``inference_mode``, so a cached tensor can be
    saved for a later backward."""
    if torch.compiler.is_compiling() or _fake_mode_active():
        return make()
    cached = _GEOMETRY.get(key)
    if cached is not None:
        _GEOMETRY.move_to_end(key)
        return cached
    with torch.inference_mode(False):
        cached = make()
    if type(cached) is not torch.Tensor:
        return cached
    _GEOMETRY[key] = cached
    _BYTES[0] += _nbytes(cached)
    while len(_GEOMETRY) > 1 and _BYTES[0] > MAX_BYTES:
        _BYTES[0] -= _nbytes(_GEOMETRY.popitem(last=False)[1])
    return cached


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _fake_mode_active() -> bool:
    """A FakeTensorMode is entered (it occupies the dispatcher's FAKE mode slot): one C call, unlike
    ``torch._guards.detect_fake_mode``, which walks the whole mode stack."""
    return torch._C._get_dispatch_mode(torch._C._TorchDispatchModeKey.FAKE) is not None


def key_minus_query(n: int, table_n: int, device=None) -> torch.Tensor:
    """(n, n) index [i, j] = j - i + table_n - 1: the row of a (2 * table_n - 1)-row table of 1-D relative positions
    for key j seen from query i (its transpose: query minus key). Cached per size and device."""
    device = resolve_device(device)

    def make():
        i = torch.arange(n, device=device)
        return i[None, :] - i[:, None] + table_n - 1
    return cached_geometry(("key_minus_query", n, table_n, device), make)
