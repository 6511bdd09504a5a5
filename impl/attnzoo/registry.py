"""Name -> constructor registries, one per module kind (timm's pattern), and the contract of each kind.

=============  ====================================================  =================================================
kind           build                                                 contract
=============  ====================================================  =================================================
attention      ``create_attention(name, channels, **kw)``            (N, C, H, W) -> (N, C, H, W), for every name.
                                                                     Token mechanisms (``layout="nlc"``) also take
                                                                     (N, L, C) tokens with ``hw=(H, W)``; they
                                                                     subclass ``layers.TokenAttention``, the one
                                                                     place where feature maps become tokens.
conv           ``create_conv(name, in_channels, out_channels,         drop-in for a padded ``nn.Conv2d``:
               kernel_size, stride=1, groups=1, **kw)``              (N, C_in, H, W) -> (N, C_out, ceil(H/s),
                                                                     ceil(W/s)).
block          ``create_block(name, in_channels, out_channels,       context, pyramid and fusion blocks whose output
               **kw)``                                               width differs from the input or that take
                                                                     several inputs (documented per block).
model          ``create_model(name, **kw)``                          (N, 3, H, W) images -> (N, num_classes) logits
                                                                     (or per-pixel logits for segmentation models:
                                                                     (N, num_classes, ceil(H/s), ceil(W/s)) for
                                                                     the model's ``output_stride`` s).
=============  ====================================================  =================================================

Every kind has ``list_<kind>(pattern)`` with shell-style wildcards; registering a name twice is a ValueError, and
an unknown name is a ValueError with "did you mean" suggestions. A wrong input rank or channel count reaching a
registered attention or conv module is a ValueError naming the layout it expects (checked once, here, by a
forward pre-hook, so no paper's file repeats it).

Models are registered as data: a builder plus default keyword arguments, so a variant such as ``se_resnet50`` is
one line, not a copied class; ``timm=`` records the timm model with the same architecture (see ``attnzoo.timm``).

Every paper's file registers itself when imported; the registry imports all of them on first use. If any file
fails to import, every lookup raises ``RegistryLoadError`` listing the failures (never a half-filled registry);
``load_errors()`` returns them for tools that report problems instead of raising.
"""
from __future__ import annotations

import contextlib
import difflib
import fnmatch
import importlib
import pkgutil
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn

LAYOUTS = ("nchw", "nlc")
KINDS = ("attention", "conv", "block", "model")
PACKAGES = {"attention": "attention", "conv": "convs", "block": "blocks", "model": "models"}


@dataclass(frozen=True)
class Entry:
    """One registered name: ``builder(*args, **{**defaults, **kwargs})`` builds it."""

    name: str
    kind: str
    builder: Callable[..., nn.Module]
    defaults: dict[str, Any] = field(default_factory=dict)
    layout: str = "nchw"
    module: str = ""
    timm: str | None = None

    def build(self, *args, **kwargs) -> nn.Module:
        with _random_fills_skipped_on_meta():
            module = self.builder(*args, **{**self.defaults, **kwargs})
        if self.kind in ("attention", "conv") and args and not getattr(module, "checks_own_input", False):
            module.register_forward_pre_hook(InputCheck(self.kind, self.name, args[0]))
        return module


_RANDOM_FILLS = ("uniform_", "normal_", "erfinv_")
_fills_skipped = False


@contextlib.contextmanager
def _random_fills_skipped_on_meta():
    """While a module is built on the meta device, its random initialisers do nothing.

    Meta tensors hold no values, so the fills change nothing, but torch runs them through Python decompositions:
    they were most of the time of building the larger models on meta (``attnzoo check``, parameter and MAC counts).
    Deterministic code (shapes, index buffers) runs as usual; on any other device nothing changes.
    """
    global _fills_skipped
    if _fills_skipped or torch.empty(0).device.type != "meta":
        yield
        return
    saved = {name: getattr(torch.Tensor, name) for name in _RANDOM_FILLS}
    _fills_skipped = True
    try:
        for name in _RANDOM_FILLS:
            setattr(torch.Tensor, name, _keep)
        yield
    finally:
        for name, method in saved.items():
            setattr(torch.Tensor, name, method)
        _fills_skipped = False


def _keep(self, *args, **kwargs):
    return self


class InputCheck:
    """Forward pre-hook: a clear ValueError when an attention/conv module gets a tensor of the wrong layout.

    A class rather than a closure so that modules stay picklable (``torch.save(model)``).
    """

    def __init__(self, kind: str, name: str, channels: int):
        self.kind, self.name, self.channels = kind, name, channels

    def __call__(self, module: nn.Module, args: tuple) -> None:
        x = args[0] if args else None
        shape = tuple(getattr(x, "shape", ()))
        if len(shape) != 4 or shape[1] != self.channels:
            raise ValueError(f"{self.kind} {self.name!r} ({type(module).__name__}) expects (N, C, H, W) feature maps "
                             f"with C={self.channels}, got a tensor of shape {shape}")


class RegistryLoadError(ImportError):
    """Raised by every lookup when a paper's file failed to import (the registry would be incomplete)."""


@dataclass(frozen=True)
class LoadError:
    """A file of the package that failed to import: its path, the line at fault (if known) and the message."""

    module: str
    path: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{where}: {self.message}"


_TABLES: dict[str, dict[str, Entry]] = {kind: {} for kind in KINDS}
_LOAD_ERRORS: list[LoadError] = []
_loaded = False


def _add(entry: Entry) -> None:
    table = _TABLES[entry.kind]
    if entry.name in table:
        raise ValueError(f"{entry.kind} {entry.name!r} is already registered (by {table[entry.name].module})")
    if entry.layout not in LAYOUTS:
        raise ValueError(f"{entry.kind} {entry.name!r}: layout must be one of {LAYOUTS}, got {entry.layout!r}")
    table[entry.name] = entry


def _decorator(kind: str, name: str, builder, layout: str = "nchw", timm: str | None = None, **defaults):
    def deco(fn):
        _add(Entry(name, kind, fn, dict(defaults), layout, getattr(fn, "__module__", ""), timm))
        return fn

    return deco(builder) if builder is not None else deco


def register_attention(name: str, builder: Callable[..., nn.Module] | None = None, *, layout: str = "nchw",
                       **defaults):
    """Register ``builder(channels, **kw)`` under ``name``; usable as a decorator.

    ``layout="nlc"`` marks a token mechanism: the class must subclass ``attnzoo.layers.TokenAttention``.

    >>> @register_attention("se", rd_ratio=1 / 16)
    ... class SqueezeExcite(nn.Module): ...
    """
    return _decorator("attention", name, builder, layout, **defaults)


def register_conv(name: str, builder: Callable[..., nn.Module] | None = None, **defaults):
    """Register ``builder(in_channels, out_channels, kernel_size, stride=1, groups=1, **kw)``; usable as a decorator."""
    return _decorator("conv", name, builder, **defaults)


def register_block(name: str, builder: Callable[..., nn.Module] | None = None, **defaults):
    """Register ``builder(in_channels, out_channels, **kw)``; usable as a decorator."""
    return _decorator("block", name, builder, **defaults)


def register_model(name: str, builder: Callable[..., nn.Module], *, timm: str | None = None, **defaults) -> None:
    """Register the model ``name`` as ``builder(**defaults, **overrides)``; ``timm`` names its timm twin."""
    _decorator("model", name, builder, timm=timm, **defaults)


def suggest(name: str, choices) -> str:
    """'; did you mean a, b?' for the closest of ``choices`` to ``name`` (wildcard and fuzzy matches), or ''."""
    choices = list(choices)
    close = fnmatch.filter(choices, f"*{name}*")[:3]
    close += [c for c in difflib.get_close_matches(name, choices, n=3, cutoff=0.6) if c not in close]
    return f"; did you mean {', '.join(close[:5])}?" if close else ""


def get_entry(kind: str, name: str) -> Entry:
    """The registry entry of ``name`` in ``kind`` (one of KINDS); a ValueError with suggestions if unknown."""
    if kind not in _TABLES:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    _load_all()
    table = _TABLES[kind]
    try:
        return table[name]
    except KeyError:
        hint = suggest(name, table) or f"; see list_{kind}()"
        raise ValueError(f"unknown {kind} {name!r}{hint}") from None


def list_names(kind: str, pattern: str | list[str] = "*") -> list[str]:
    """Registered names of ``kind`` matching a shell-style wildcard (or any of several)."""
    if kind not in _TABLES:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    _load_all()
    patterns = [pattern] if isinstance(pattern, str) else list(pattern)
    return sorted(n for n in _TABLES[kind] if any(fnmatch.fnmatchcase(n, p) for p in patterns))


def create_attention(name: str, channels: int, **kwargs) -> nn.Module:
    """Build the attention module ``name`` for ``channels`` input channels: (N, C, H, W) -> (N, C, H, W)."""
    return get_entry("attention", name).build(channels, **kwargs)


def create_conv(name: str, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1,
                **kwargs) -> nn.Module:
    """Build the convolution ``name``: a drop-in for ``nn.Conv2d(in, out, k, stride, padding=k // 2, groups)``."""
    return get_entry("conv", name).build(in_channels, out_channels, kernel_size, stride=stride, groups=groups,
                                         **kwargs)


def create_block(name: str, in_channels: int, out_channels: int, **kwargs) -> nn.Module:
    """Build the block ``name`` mapping ``in_channels`` to ``out_channels`` (see the block's docstring for inputs)."""
    return get_entry("block", name).build(in_channels, out_channels, **kwargs)


def create_model(name: str, pretrained: bool = False, **kwargs) -> nn.Module:
    """Build the model ``name``; keyword arguments override the registered defaults.

    ``pretrained=True`` loads the released weights of the model's timm twin through timm's own loader (timm must
    be installed and the weights reachable); it never silently returns random weights.
    """
    model = get_entry("model", name).build(**kwargs)
    if pretrained:
        from .timm import load_pretrained

        load_pretrained(model, name)
    return model


def list_attention(pattern: str | list[str] = "*") -> list[str]:
    """Registered attention names matching a shell-style wildcard (or any of several)."""
    return list_names("attention", pattern)


def list_convs(pattern: str | list[str] = "*") -> list[str]:
    """Registered convolution names matching a shell-style wildcard (or any of several)."""
    return list_names("conv", pattern)


def list_blocks(pattern: str | list[str] = "*") -> list[str]:
    """Registered block names matching a shell-style wildcard (or any of several)."""
    return list_names("block", pattern)


def list_models(pattern: str | list[str] = "*") -> list[str]:
    """Registered model names matching a shell-style wildcard (or any of several)."""
    return list_names("model", pattern)


def attention_entry(name: str) -> Entry:
    return get_entry("attention", name)


def model_entry(name: str) -> Entry:
    return get_entry("model", name)


class LayerFactory:
    """``build(*args, **{**kwargs, **kw})``: what ``get_attn`` / ``get_conv`` / ``get_block`` return. A class rather
    than a closure so that models keeping one stay picklable and can be fingerprinted (``attnzoo.cache``)."""

    def __init__(self, build: Callable[..., nn.Module], kwargs: dict[str, Any]):
        self.build, self.kwargs = build, kwargs

    def __call__(self, *args, **kw) -> nn.Module:
        return self.build(*args, **{**self.kwargs, **kw})


def _resolve(kind: str, layer, **kwargs) -> Callable[..., nn.Module] | None:
    if layer is None:
        return None
    if isinstance(layer, str):
        return LayerFactory(get_entry(kind, layer).build, kwargs)
    if callable(layer):
        return LayerFactory(layer, kwargs)
    raise ValueError(f"{kind}_layer must be a registered {kind} name, a callable or None, got {type(layer).__name__}")


def get_attn(attn_layer: str | Callable[..., nn.Module] | None, **kwargs) -> Callable[..., nn.Module] | None:
    """Resolve a backbone's ``attn_layer=`` to a factory ``f(channels) -> nn.Module`` (or None for no attention).

    Accepts a registered attention name, a callable taking ``channels``, or ``None``.
    """
    return _resolve("attention", attn_layer, **kwargs)


def get_conv(conv_layer: str | Callable[..., nn.Module] | None, **kwargs) -> Callable[..., nn.Module] | None:
    """Resolve a backbone's ``conv_layer=`` to ``f(in_channels, out_channels, kernel_size, stride=, groups=)``.

    ``None`` means the backbone's plain, "same"-padded ``nn.Conv2d``.
    """
    return _resolve("conv", conv_layer, **kwargs)


def get_block(block_layer: str | Callable[..., nn.Module] | None, **kwargs) -> Callable[..., nn.Module] | None:
    """Resolve a ``*_layer=`` argument that names a block to a factory ``f(in_channels, out_channels)``."""
    return _resolve("block", block_layer, **kwargs)


def load_errors() -> list[LoadError]:
    """Import every paper's file (once) and return the files that failed, with file, line and message."""
    _load_all(raise_errors=False)
    return list(_LOAD_ERRORS)


def _load_all(raise_errors: bool = True) -> None:
    """Import every module of attnzoo.{attention, convs, blocks, models} so that they register themselves.

    Each file is imported on its own, so one broken file does not hide the others; the failures are kept and
    reported by every later lookup.
    """
    global _loaded
    if not _loaded:
        _loaded = True
        package = __name__.rsplit(".", 1)[0]
        for sub in PACKAGES.values():
            pkg = importlib.import_module(f"{package}.{sub}")
            for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
                if not info.name.startswith("_"):
                    _import(f"{pkg.__name__}.{info.name}", Path(pkg.__path__[0]) / f"{info.name}.py")
    if _LOAD_ERRORS and raise_errors:
        raise RegistryLoadError("the registry is incomplete because these files failed to import:\n"
                                + "\n".join(f"  {e}" for e in _LOAD_ERRORS))


def _import(module: str, path: Path) -> None:
    if module in sys.modules:
        return
    try:
        importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001  (any error in a paper's file is reported, not fatal)
        sys.modules.pop(module, None)
        if isinstance(exc, SyntaxError) and exc.filename:  # the file at fault may be one the paper imports
            where, line = Path(exc.filename), exc.lineno
        else:
            frames = [f for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename) == path]
            where, line = path, (frames[-1].lineno if frames else None)
        _LOAD_ERRORS.append(LoadError(module, _relative(where), line, f"{type(exc).__name__}: {exc}"))


def _relative(path: Path) -> str:
    parts = path.parts
    return "/".join(parts[parts.index("impl"):]) if "impl" in parts else str(path)
