"""``attnzoo check``: the catalogue, references.bib, the registry, the code and the notebooks, validated together.

Nothing is written; every problem names its file (and field and line where there is one).
"""
from __future__ import annotations

import dataclasses
import functools
import traceback
from pathlib import Path
from typing import Callable

from . import registry
from .bib import load_bib
from .cache import cached_by_files
from .catalogue import IMPLEMENTATION_KINDS, Entry, load_catalogue, newness
from .notebooks import cite_problems, notebook_problems
from .placeholders import placeholder_lines
from .problems import Problem

# how `attnzoo check` builds every registered name with its defaults (models on the meta device: no memory, fast)
BUILD_CALLS = {"attention": ("create_attention", (64,), {}), "conv": ("create_conv", (64, 64, 3), {}),
               "block": ("create_block", (64, 64), {}), "model": ("create_model", (), {"num_classes": 10})}
KEYS = {kind: key for key, kind in IMPLEMENTATION_KINDS.items()}  # registry kind -> implementation key


def check_project(root: Path) -> tuple[dict[str, Entry], list[Problem]]:
    """Every problem in the project; an empty list means all is consistent."""
    entries, problems = load_catalogue(root)
    bib, bib_problems = load_bib(root / "references.bib")
    problems += bib_problems
    problems += _check_bibkeys(entries, bib, root)
    problems += _check_notebooks(entries, root, set(bib))
    problems += _check_code_placeholders(root)
    load_errors = registry.load_errors()
    problems += [Problem(e.path, f"does not import, so the registry names are not checked: {e.message}", None,
                         e.line) for e in load_errors]
    if not load_errors:
        problems += _check_registry(entries, root)
        problems += build_problems()
    return entries, problems


def _label(e: Entry) -> str:
    return f"catalogue/{e.path.name}"


def _check_bibkeys(entries: dict[str, Entry], bib: dict, root: Path) -> list[Problem]:
    problems, users = [], {}
    for e in entries.values():
        key = e.get("bibkey")
        if not isinstance(key, str):
            continue
        if key not in bib:
            problems.append(Problem(_label(e), f"{key!r} is not a key in references.bib{registry.suggest(key, bib)}",
                                    "bibkey", e.lines.get(("bibkey",))))
        users.setdefault(key, []).append(e)
    for key, users_of_key in users.items():
        oldest, newer = _oldest_first(root, users_of_key)
        problems += [Problem(_label(e), f"{key!r} is already used by {_label(oldest)}", "bibkey",
                             e.lines.get(("bibkey",))) for e in newer]
    for key, rec in bib.items():
        if key not in users:
            problems.append(Problem("references.bib", f"entry {key!r} is used by no catalogue paper", "key", rec.line))
    return problems


def _oldest_first(root: Path, entries: list[Entry]) -> tuple[Entry, list[Entry]]:
    """The oldest of entries sharing something (it keeps it) and the newer ones (they are blamed)."""
    if len(entries) < 2:
        return entries[0], []
    age = newness(root, [e.path for e in entries])
    oldest, *newer = sorted(entries, key=lambda e: age[e.path])
    return oldest, newer


def _check_notebooks(entries: dict[str, Entry], root: Path, bibkeys: set[str]) -> list[Problem]:
    problems = []
    for e in entries.values():
        nb = e.get("notebook")
        if isinstance(nb, str) and not (root / nb).is_file():
            problems.append(Problem(_label(e), f"{nb} does not exist", "notebook", e.lines.get(("notebook",))))
    listed = {e.get("notebook") for e in entries.values()}
    for path in sorted((root / "book" / "notebooks").glob("*.ipynb")):
        rel = path.relative_to(root).as_posix()
        if rel not in listed:
            hint = f" (add `notebook: {rel}` to catalogue/{path.stem}.yaml)" if path.stem in entries else ""
            problems.append(Problem(rel, f"notebook is not listed by any catalogue entry (field notebook){hint}"))
        problems += notebook_problems(path, rel, bibkeys)
    for path in sorted([*(root / "book").glob("*.md"), *(root / "book").glob("*.ipynb")]):
        problems += cite_problems(path, path.relative_to(root).as_posix(), bibkeys)
    return problems


def _code_files(root: Path) -> list[Path]:
    """The paper files of every kind and their test files, under ``root``."""
    folders = registry.PACKAGES.values()
    return sorted([*(p for f in folders for p in (root / "impl" / "attnzoo" / f).glob("*.py")),
                   *(p for f in folders for p in (root / "tests" / f).rglob("*.py"))])


def _check_code_placeholders(root: Path) -> list[Problem]:
    problems = []
    for path in _code_files(root):
        lines = placeholder_lines(path.read_text(encoding="utf-8"))
        if lines:
            more = f" (and on {len(lines) - 1} more line{'s' * (len(lines) > 2)})" if len(lines) > 1 else ""
            problems.append(Problem(path.relative_to(root).as_posix(),
                                    f"placeholder left from `attnzoo new`{more}: write the code", None, lines[0]))
    return problems


def module_file(module: str) -> str:
    """The file of a dotted module name (``attnzoo.attention.se``), relative to the project root."""
    return "impl/" + module.replace(".", "/") + ".py"


def _check_registry(entries: dict[str, Entry], root: Path) -> list[Problem]:
    """Catalogue and registry agree: every listed name is registered (once), every registered name is listed,
    every paper file registers something."""
    known = {kind: set(registry.list_names(kind)) for kind in registry.KINDS}
    problems, claims = [], {}  # (kind, name) -> {entry id: (field, line)}
    for e in entries.values():
        problems += _check_entry_names(e, known, claims)
    for (kind, name), claimants in claims.items():  # the oldest entry keeps a name; the newer ones are blamed
        oldest, newer = _oldest_first(root, [entries[i] for i in claimants])
        problems += [Problem(_label(e), f"{name!r} is already claimed by {_label(oldest)}", *claimants[e.id])
                     for e in newer]
    for kind in registry.KINDS:
        for name in sorted(known[kind] - {n for k, n in claims if k == kind}):
            problems.append(Problem(module_file(registry.get_entry(kind, name).module), f"registered {kind} {name!r} "
                                    f"is claimed by no catalogue entry (list it under implementation.{KEYS[kind]} "
                                    "of its paper's entry)"))
    registering = {registry.get_entry(kind, name).module for kind in registry.KINDS for name in known[kind]}
    problems += [Problem(module_file(m), "registers no name: a paper's file calls register_attention, register_conv, "
                         "register_block or register_model (shared helpers belong in attnzoo/layers)")
                 for m in paper_modules() if m not in registering]
    return problems


def _check_entry_names(e: Entry, known: dict[str, set[str]], claims: dict) -> list[Problem]:
    """One entry's ``implementation:`` and ``reported:`` names against the registry; records its claims."""
    problems = []
    names = e.registry_names
    if any(names.values()) and e.get("status") != "implemented":
        problems.append(Problem(_label(e), "has an implementation, so status must be 'implemented'", "status",
                                e.lines.get(("status",))))
    for key, key_names in names.items():
        kind = IMPLEMENTATION_KINDS[key]
        for i, name in enumerate(key_names):
            where = (f"implementation.{key}", e.lines.get(("implementation", key, i)))
            if name in known[kind]:
                claims.setdefault((kind, name), {})[e.id] = where
                continue
            elsewhere = [k for k in registry.KINDS if name in known[k]]
            hint = (f"; it is a registered {elsewhere[0]}: list it under implementation.{KEYS[elsewhere[0]]}"
                    if elsewhere else registry.suggest(name, known[kind]))
            problems.append(Problem(_label(e), f"{name!r} is not a registered {kind} name{hint}", *where))
    variants = known["model"] | known["attention"]
    for i, rep in enumerate(e.get("reported") or []):
        variant = rep.get("variant") if isinstance(rep, dict) else None
        if e.get("status") == "implemented" and variant not in variants:
            problems.append(Problem(_label(e), f"variant {variant!r} is not a registered model or attention"
                                    f"{registry.suggest(str(variant), variants)}", f"reported.{i}.variant",
                                    e.lines.get(("reported", i, "variant"))))
    return problems


def paper_modules() -> list[str]:
    """Dotted names of every paper file in the kind packages (attnzoo.attention.se, ...)."""
    import importlib
    import pkgutil

    modules = []
    for folder in registry.PACKAGES.values():
        package = importlib.import_module(f"attnzoo.{folder}")
        modules += [f"{package.__name__}.{m.name}" for m in pkgutil.iter_modules(package.__path__)
                    if not m.name.startswith("_")]
    return sorted(modules)


def _build(kind: str, name: str):
    import torch

    create, args, kwargs = BUILD_CALLS[kind]
    build = getattr(registry, create)
    if kind != "model":
        return build(name, *args, **kwargs)
    try:
        with torch.device("meta"):
            return build(name, *args, **kwargs)
    except Exception:  # noqa: BLE001  (some code cannot run on meta tensors: the real device decides)
        return build(name, *args, **kwargs)


@functools.lru_cache(maxsize=1)
def build_problems() -> tuple[Problem, ...]:
    """A problem for each registered name that cannot be built with its defaults (computed once per process: the
    registry cannot change after it is loaded). A name that builds is remembered with its paper file, the paper files
    of the classes it is built from and those they import (``attnzoo.cache.cached_by_files``): after an edit, only
    the names whose files changed are built again; a change outside the paper folders rebuilds every name."""
    problems = []
    for kind in registry.KINDS:
        for name in registry.list_names(kind):
            found = build_problem(kind, name)
            problems += [Problem(**found)] if found else []
    return tuple(problems)


def build_problem(kind: str, name: str, inspect: Callable[[object], None] | None = None) -> dict | None:
    """The problem (as a dict of ``Problem`` fields) if registered ``name`` of ``kind`` cannot be built as the check
    builds it, else None; remembered like ``build_problems``. ``inspect(built)`` sees the object when it is built
    here rather than remembered (the test suite counts parameters on it, and so primes the check's memory)."""
    return cached_by_files(f"build-{kind}-{name}", functools.partial(_build_problem, kind, name, inspect))


def _build_problem(kind: str, name: str, inspect=None) -> tuple[dict | None, set[str] | None]:
    """(None, the modules whose classes the built object uses) if ``name`` builds; (the problem, None) if not:
    failures are never remembered."""
    module = registry.get_entry(kind, name).module
    try:
        built = _build(kind, name)
    except Exception as exc:  # noqa: BLE001  (any failure is reported with the file and line)
        path = module_file(module)
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename).as_posix().endswith(
            path.removeprefix("impl/"))]
        create, args, kwargs = BUILD_CALLS[kind]
        call = ", ".join([repr(name), *map(repr, args), *(f"{k}={v!r}" for k, v in kwargs.items())])
        return dataclasses.asdict(Problem(path, f"registered {kind} {name!r} cannot be built with its defaults: "
                                          f"{create}({call}) raised {type(exc).__name__}: {exc}", None,
                                          frames[-1].lineno if frames else None)), None
    if inspect is not None:
        inspect(built)
    parts = built.modules() if hasattr(built, "modules") else [built]
    return None, {module, *(type(m).__module__ for m in parts)}
