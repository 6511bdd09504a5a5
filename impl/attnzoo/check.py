"""``attnzoo check``: the catalogue, references.bib, the registry and the notebooks, validated together."""
from __future__ import annotations

from pathlib import Path

from . import registry
from .bib import load_bib
from .catalogue import Entry, load_catalogue
from .problems import Problem


def check_project(root: Path) -> tuple[dict[str, Entry], list[Problem]]:
    """Every problem in the project's metadata; an empty list means all is consistent."""
    entries, problems = load_catalogue(root)
    bib, bib_problems = load_bib(root / "references.bib")
    problems += bib_problems
    problems += _check_bibkeys(entries, bib)
    problems += _check_registry(entries)
    problems += _check_notebooks(entries, root)
    return entries, problems


def _label(e: Entry) -> str:
    return f"catalogue/{e.path.name}"


def _check_bibkeys(entries: dict[str, Entry], bib: dict) -> list[Problem]:
    problems, used = [], {}
    for e in entries.values():
        key = e.get("bibkey")
        if not isinstance(key, str):
            continue
        if key not in bib:
            problems.append(Problem(_label(e), f"{key!r} is not a key in references.bib", "bibkey", e.lines.get(("bibkey",))))
        elif key in used:
            problems.append(Problem(_label(e), f"{key!r} is already used by catalogue/{used[key]}.yaml", "bibkey",
                                    e.lines.get(("bibkey",))))
        used.setdefault(key, e.id)
    for key, rec in bib.items():
        if key not in used:
            problems.append(Problem("references.bib", f"entry {key!r} is used by no catalogue paper", "key", rec.line))
    return problems


def _check_registry(entries: dict[str, Entry]) -> list[Problem]:
    problems, claimed = [], {}
    known = {"attention": set(registry.list_attention()), "models": set(registry.list_models())}
    for e in entries.values():
        names = e.registry_names
        if (names["attention"] or names["models"]) and e.get("status") != "implemented":
            problems.append(Problem(_label(e), "has an implementation, so status must be 'implemented'", "status",
                                    e.lines.get(("status",))))
        for kind, kind_names in names.items():
            for i, name in enumerate(kind_names):
                where = e.lines.get(("implementation", kind, i))
                if name not in known[kind]:
                    problems.append(Problem(_label(e), f"{name!r} is not a registered {kind} name",
                                            f"implementation.{kind}", where))
                elif (kind, name) in claimed:
                    problems.append(Problem(_label(e), f"{name!r} is already claimed by catalogue/{claimed[kind, name]}.yaml",
                                            f"implementation.{kind}", where))
                claimed.setdefault((kind, name), e.id)
        for i, rep in enumerate(e.get("reported") or []):
            variant = rep.get("variant") if isinstance(rep, dict) else None
            if e.get("status") == "implemented" and variant not in known["models"] | known["attention"]:
                problems.append(Problem(_label(e), f"variant {variant!r} is not a registered model or attention",
                                        f"reported.{i}.variant", e.lines.get(("reported", i, "variant"))))
    for kind, kind_names in known.items():
        for name in sorted(kind_names):
            if (kind, name) not in claimed:
                entry = registry.model_entry(name) if kind == "models" else registry.attention_entry(name)
                problems.append(Problem("impl/" + entry.module.replace(".", "/") + ".py",
                                        f"registered {kind} name {name!r} is claimed by no catalogue entry "
                                        f"(list it under implementation.{kind})"))
    return problems


def _check_notebooks(entries: dict[str, Entry], root: Path) -> list[Problem]:
    problems = []
    for e in entries.values():
        nb = e.get("notebook")
        if isinstance(nb, str) and not (root / nb).is_file():
            problems.append(Problem(_label(e), f"{nb} does not exist", "notebook", e.lines.get(("notebook",))))
    listed = {e.get("notebook") for e in entries.values()}
    for path in sorted((root / "book" / "notebooks").glob("*.ipynb")):
        rel = path.relative_to(root).as_posix()
        if rel not in listed:
            problems.append(Problem(rel, "notebook is not listed by any catalogue entry (field notebook)"))
    return problems
