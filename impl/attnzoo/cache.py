"""A disk cache for MAC counts of models built on the meta device (``nbtools.measure``).

Counting the MACs of a large model on the meta device dispatches every op through Python (a few seconds for the
biggest variants), and the same variants are counted by ``tests/test_reported.py`` and by the paper's notebook.
The cache key is a fingerprint of everything the count depends on: the source of every module of this package,
torch's version, the input shape, and the built model itself (every submodule's class and path, every
configuration attribute, every parameter and buffer shape). Anything it cannot fingerprint reliably (a lambda,
an object without a stable repr) makes the model uncacheable: it is then counted every time, never confused with
another model.

Files live in ``$ATTNZOO_CACHE`` (default ``~/.cache/attnzoo``), one small JSON file per key, written atomically,
so parallel test workers and notebook kernels share them. ``ATTNZOO_CACHE=off`` disables the cache. The same
folder keeps ``attnzoo check``'s build results per source version (``cached_for_this_source``).
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
import types
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

_PLAIN = (bool, int, float, str, type(None), torch.dtype, torch.device, torch.Size)
# nn.Module's own bookkeeping (tensors, submodules and forward/backward hooks are fingerprinted separately)
_MODULE_INTERNALS = frozenset(nn.Module().__dict__)
_HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


class _Unstable(Exception):
    """A value without a repr that is the same in every process."""


def cache_dir(kind: str = "macs") -> Path | None:
    setting = os.environ.get("ATTNZOO_CACHE", "")
    if setting.lower() in ("off", "0", "false", "no"):
        return None
    return Path(setting or Path.home() / ".cache" / "attnzoo") / kind


@functools.lru_cache(maxsize=1)
def _code_hash() -> str:
    h = hashlib.sha1(torch.__version__.encode())
    for path in sorted(Path(__file__).parent.rglob("*.py")):
        h.update(path.as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def _stable(value) -> str:
    """A repr of a configuration value that is the same in every process, or _Unstable."""
    if isinstance(value, _PLAIN):
        return repr(value)
    if isinstance(value, (tuple, list)):
        return type(value).__name__ + "(" + ",".join(_stable(v) for v in value) + ")"
    if isinstance(value, dict):
        return "{" + ",".join(f"{_stable(k)}:{_stable(v)}" for k, v in sorted(value.items(), key=repr)) + "}"
    if isinstance(value, torch.Tensor):
        return f"tensor{tuple(value.shape)}{value.dtype}"
    if isinstance(value, type) or (isinstance(value, types.FunctionType) and "<" not in value.__qualname__):
        return f"{value.__module__}.{value.__qualname__}"
    if isinstance(value, functools.partial):
        return f"partial({_stable(value.func)},{_stable(value.args)},{_stable(value.keywords)})"
    if isinstance(value, nn.Module):  # a module kept as a plain attribute: its class (its tensors are elsewhere)
        return f"module:{type(value).__module__}.{type(value).__qualname__}"
    if isinstance(value, types.MethodType):
        return f"{_stable(value.__self__)}.{value.__func__.__name__}"
    cls = type(value)
    if cls.__module__.startswith("attnzoo.") and hasattr(value, "__dict__"):  # our factories, hooks, entries
        return f"{cls.__module__}.{cls.__qualname__}{_stable(vars(value))}"
    raise _Unstable(cls.__name__)


def fingerprint(model: nn.Module, input_shape: tuple[int, ...]) -> str | None:
    """The cache key of ``model``'s MACs at ``input_shape``, or None if the model cannot be fingerprinted."""
    h = hashlib.sha1(_code_hash().encode())
    h.update(repr(tuple(input_shape)).encode())
    try:
        for name, module in model.named_modules():
            h.update(f"|{name}:{type(module).__module__}.{type(module).__qualname__}".encode())
            for hooks in _HOOKS:
                h.update(f"{hooks}{_stable(list(getattr(module, hooks).values()))};".encode())
            for key, value in sorted(module.__dict__.items()):
                if key not in _MODULE_INTERNALS:
                    h.update(f"{key}={_stable(value)};".encode())
            for key, t in [*module._parameters.items(), *module._buffers.items()]:
                h.update(f"{key}{_stable(t)};".encode())
    except _Unstable:
        return None
    return h.hexdigest()


def cached_macs(model: nn.Module, input_shape: tuple[int, ...], count: Callable[[], int]) -> int:
    """``count()``, or the value stored for this model and input shape by an earlier call in any process."""
    folder = cache_dir()
    key = fingerprint(model, input_shape) if folder is not None else None
    if key is None:
        return count()
    path = folder / f"{key}.json"
    try:
        return int(json.loads(path.read_text())["macs"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    macs = count()
    _write_json(folder, path, {"macs": macs, "class": type(model).__qualname__, "input_shape": list(input_shape)})
    return macs


def cached_for_this_source(name: str, compute: Callable[[], object]) -> object:
    """``compute()`` (a JSON value that depends only on this package's source and torch's version), or the value an
    earlier call stored for the same source: ``attnzoo check`` builds every registered module once per version."""
    folder = cache_dir("results")
    if folder is None:
        return compute()
    path = folder / f"{name}-{_code_hash()}.json"
    try:
        return json.loads(path.read_text())["value"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    value = compute()
    _write_json(folder, path, {"value": value})
    return value


def _write_json(folder: Path, path: Path, data: dict) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=folder, suffix=".tmp", delete=False) as f:
            json.dump(data, f)
        os.replace(f.name, path)
    except OSError:  # a read-only home: the value is still returned, just not remembered
        pass
