"""Name -> constructor registries for attention modules and models (timm's pattern).

Attention modules take ``channels`` first and map a tensor to one of the same shape.
Each registration records the layout of the tensor the module expects:

* ``"nchw"``: (N, C, H, W) feature maps (the default);
* ``"nlc"``: (N, L, C) token sequences; such modules accept ``hw=(H, W)`` as a keyword
  when they need the spatial arrangement of the L = H * W tokens.

Models are registered as data: a builder plus default keyword arguments, so a variant
such as ``se_resnet50`` is one line, not a copied class.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any, Callable

import torch.nn as nn

LAYOUTS = ("nchw", "nlc")


@dataclass(frozen=True)
class Entry:
    name: str
    builder: Callable[..., nn.Module]
    defaults: dict[str, Any] = field(default_factory=dict)
    layout: str = "nchw"
    module: str = ""

    def build(self, *args, **kwargs) -> nn.Module:
        return self.builder(*args, **{**self.defaults, **kwargs})


_ATTENTION: dict[str, Entry] = {}
_MODELS: dict[str, Entry] = {}


def _add(table: dict[str, Entry], kind: str, entry: Entry) -> None:
    if entry.name in table:
        raise ValueError(f"{kind} {entry.name!r} is already registered (by {table[entry.name].module})")
    if entry.layout not in LAYOUTS:
        raise ValueError(f"{kind} {entry.name!r}: layout must be one of {LAYOUTS}, got {entry.layout!r}")
    table[entry.name] = entry


def register_attention(name: str, builder: Callable[..., nn.Module] | None = None, *, layout: str = "nchw", **defaults):
    """Register ``builder(channels, **kw)`` under ``name``; usable as a decorator.

    >>> @register_attention("se", rd_ratio=1 / 16)
    ... class SqueezeExcite(nn.Module): ...
    """

    def deco(fn):
        _add(_ATTENTION, "attention", Entry(name, fn, dict(defaults), layout, getattr(fn, "__module__", "")))
        return fn

    return deco(builder) if builder is not None else deco


def register_model(name: str, builder: Callable[..., nn.Module], **defaults) -> None:
    """Register the model ``name`` as ``builder(**defaults, **overrides)``."""
    _add(_MODELS, "model", Entry(name, builder, dict(defaults), "nchw", getattr(builder, "__module__", "")))


def _lookup(table: dict[str, Entry], kind: str, name: str) -> Entry:
    _load_all()
    try:
        return table[name]
    except KeyError:
        close = fnmatch.filter(table, f"*{name}*")[:5]
        hint = f"; did you mean {', '.join(close)}?" if close else f"; see list_{kind}()"
        raise ValueError(f"unknown {kind} {name!r}{hint}") from None


def _list(table: dict[str, Entry], pattern: str | list[str]) -> list[str]:
    _load_all()
    patterns = [pattern] if isinstance(pattern, str) else list(pattern)
    return sorted(n for n in table if any(fnmatch.fnmatchcase(n, p) for p in patterns))


def create_attention(name: str, channels: int, **kwargs) -> nn.Module:
    """Build the attention module ``name`` for ``channels`` input channels."""
    return _lookup(_ATTENTION, "attention", name).build(channels, **kwargs)


def create_model(name: str, **kwargs) -> nn.Module:
    """Build the model ``name``; keyword arguments override the registered defaults."""
    return _lookup(_MODELS, "models", name).build(**kwargs)


def list_attention(pattern: str | list[str] = "*") -> list[str]:
    """Registered attention names matching a shell-style wildcard (or any of several)."""
    return _list(_ATTENTION, pattern)


def list_models(pattern: str | list[str] = "*") -> list[str]:
    """Registered model names matching a shell-style wildcard (or any of several)."""
    return _list(_MODELS, pattern)


def attention_entry(name: str) -> Entry:
    return _lookup(_ATTENTION, "attention", name)


def model_entry(name: str) -> Entry:
    return _lookup(_MODELS, "models", name)


def get_attn(attn_layer: str | Callable[..., nn.Module] | None, **kwargs) -> Callable[[int], nn.Module] | None:
    """Resolve a backbone's ``attn_layer=`` argument to a factory ``f(channels) -> nn.Module``.

    Accepts a registered name, a callable taking ``channels``, or ``None`` (no attention).
    """
    if attn_layer is None:
        return None
    if isinstance(attn_layer, str):
        entry = attention_entry(attn_layer)
        if entry.layout != "nchw":
            raise ValueError(f"attention {attn_layer!r} works on {entry.layout} tokens and cannot be an attn_layer of a CNN")
        return lambda channels: entry.build(channels, **kwargs)
    if callable(attn_layer):
        return lambda channels: attn_layer(channels, **kwargs)
    raise ValueError(f"attn_layer must be a registered name, a callable or None, got {type(attn_layer).__name__}")


_loaded = False


def _load_all() -> None:
    """Import every module of attnzoo.attention and attnzoo.models so they register themselves."""
    global _loaded
    if not _loaded:
        _loaded = True
        from . import attention, models  # noqa: F401  (imports register)
