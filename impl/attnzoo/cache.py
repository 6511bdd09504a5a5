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
folder keeps ``attnzoo check``'s build results per registered name, keyed by the files the build depends on
(``cached_by_files``: the package outside the paper folders, the paper's file, and the paper files of the classes
it builds and of what they import), so a check after editing one paper builds that paper again, not all of them.
"""
from __future__ import annotations

import ast
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

PACKAGE = Path(__file__).parent
PAPER_FOLDERS = ("attention", "convs", "blocks", "models")  # one file per paper; everything else is shared

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
    for path in sorted(PACKAGE.rglob("*.py")):
        h.update(f"{path.as_posix()}:{_file_hash(path)};".encode())
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


def _is_paper_file(path: Path) -> bool:
    rel = path.relative_to(PACKAGE).parts
    return len(rel) == 2 and rel[0] in PAPER_FOLDERS and rel[1] != "__init__.py"


def _file_hash(path: Path) -> str:
    stat = path.stat()
    return _hash_of(path, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=None)
def _hash_of(path: Path, mtime_ns: int, size: int) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


@functools.lru_cache(maxsize=1)
def _shared_hash() -> str:
    """torch's version and every file of the package outside the paper folders (layers, registry, ...)."""
    h = hashlib.sha1(torch.__version__.encode())
    for path in sorted(PACKAGE.rglob("*.py")):
        if not _is_paper_file(path):
            h.update(f"{path.relative_to(PACKAGE).as_posix()}:{_file_hash(path)};".encode())
    return h.hexdigest()


@functools.lru_cache(maxsize=None)
def _paper_imports(path: Path) -> frozenset[Path]:
    """The paper files ``path`` imports (relative imports such as ``from .vit import X`` or ``from ..attention
    import se``), transitively."""
    found, todo = set(), [path]
    while todo:
        current = todo.pop()
        for node in ast.walk(ast.parse(current.read_bytes())):
            if not (isinstance(node, ast.ImportFrom) and node.level):
                continue
            base = current.parent
            for _ in range(node.level - 1):
                base = base.parent
            base = base.joinpath(*(node.module or "").split(".")) if node.module else base
            for target in [base.with_suffix(".py"), *(base / f"{a.name}.py" for a in node.names)]:
                if target.is_file() and target.parent.parent == PACKAGE and _is_paper_file(target) \
                        and target not in found:
                    found.add(target)
                    todo.append(target)
    return frozenset(found)


def _module_path(module: str) -> Path | None:
    parts = module.split(".")
    path = PACKAGE.joinpath(*parts[1:]).with_suffix(".py") if parts[0] == PACKAGE.name else None
    return path if path is not None and path.is_file() and _is_paper_file(path) else None


def _dependencies(modules) -> dict[str, str]:
    """{paper file relative to the package: its hash} for the dotted ``modules`` and the paper files they import."""
    paths = {p for p in map(_module_path, modules) if p is not None}
    paths |= {q for p in list(paths) for q in _paper_imports(p)}
    return {p.relative_to(PACKAGE).as_posix(): _file_hash(p) for p in sorted(paths)}


def cached_by_files(name: str, compute: Callable[[], tuple[object, set[str] | None]]) -> object:
    """The value of ``compute()``, remembered with the paper files it depends on.

    ``compute`` returns ``(value, modules)``: a JSON value and the dotted names of the modules whose code made it
    (None: do not remember it). The value is reused while the shared files and each of those paper files (and the
    paper files they import) are unchanged, wherever the package lives (a copy elsewhere shares the results)."""
    folder = cache_dir("results")
    path = folder / f"{name}-{_shared_hash()}.json" if folder is not None else None
    if path is not None:
        try:
            stored = json.loads(path.read_text())
            if all((PACKAGE / rel).is_file() and _file_hash(PACKAGE / rel) == h
                   for rel, h in stored["files"].items()):
                return stored["value"]
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass
    value, modules = compute()
    if path is not None and modules is not None:
        _write_json(folder, path, {"value": value, "files": _dependencies(modules)})
    return value


def _write_json(folder: Path, path: Path, data: dict) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=folder, suffix=".tmp", delete=False) as f:
            json.dump(data, f)
        os.replace(f.name, path)
    except OSError:  # a read-only home: the value is still returned, just not remembered
        pass
