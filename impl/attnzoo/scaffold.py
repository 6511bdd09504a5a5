"""``attnzoo new ID``: scaffold a paper's files from the templates in ``attnzoo/templates``; never overwrite.

* a new id: the catalogue entry, a BibTeX stub and (unless catalogue-only) the module, its notebook and test;
* a catalogued id that is not implemented: the module, notebook and test, written from the entry's real title,
  authors and bibkey; the entry itself is left to the contributor, who is given the lines to add to it.

Every place the contributor must write something holds the placeholder marker, which ``attnzoo check`` rejects.
"""
from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from .catalogue import IMPLEMENTATION_KINDS, ID_RE, Entry, read_entry, schema
from .placeholders import PLACEHOLDER
from .problems import Problem, ProblemsError

TEMPLATES = Path(__file__).with_name("templates")
NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_FIELD = re.compile(r"\{\{\s*(\w+)\s*\}\}")
_CELL_MARK = re.compile(r"^# %% \[(markdown|parameters|code)\]\s*$", re.M)


def render(template: str, **values: str) -> str:
    """The template file's text with every ``{{name}}`` replaced; KeyError for a name without a value."""
    return _FIELD.sub(lambda m: values[m[1]], (TEMPLATES / template).read_text(encoding="utf-8"))


def notebook_cells(text: str) -> list[tuple[str, str]]:
    """(kind, source) cells of a notebook template: a cell follows each ``# %% [kind]`` line."""
    parts = _CELL_MARK.split(text)
    return [(kind, source.strip("\n")) for kind, source in zip(parts[1::2], parts[2::2])]


def write_notebook(path: Path, cells: list[tuple[str, str]]) -> None:
    """Write a clean (output-free) notebook; ``cells`` are (kind, source) with kind "markdown", "code" or
    "parameters" (a code cell tagged ``parameters`` for papermill)."""
    from .notebooks import NOTEBOOK_METADATA

    nb = nbformat.v4.new_notebook()
    nb.metadata = nbformat.from_dict(NOTEBOOK_METADATA)
    for kind, source in cells:
        if kind == "markdown":
            nb.cells.append(nbformat.v4.new_markdown_cell(source.strip("\n")))
        elif kind in ("code", "parameters"):
            cell = nbformat.v4.new_code_cell(source.strip("\n"))
            if kind == "parameters":
                cell.metadata["tags"] = ["parameters"]
            nb.cells.append(cell)
        else:
            raise ValueError(f"unknown cell kind {kind!r}")
    for i, cell in enumerate(nb.cells):  # stable ids keep diffs small
        cell["id"] = f"{path.stem[:40]}-{i}"
    nbformat.validate(nb)
    path.write_text(nbformat.writes(nb) + "\n", encoding="utf-8")


@dataclass
class Plan:
    """What ``attnzoo new`` writes: whole new files, text appended to references.bib, lines for the entry."""

    files: dict[Path, str | list[tuple[str, str]]] = field(default_factory=dict)
    bib_append: str = ""
    entry_lines: str = ""
    problems: list[Problem] = field(default_factory=list)  # why it must not be written


def _python_text(text: str) -> str:
    """Text safe inside a Python docstring or string literal."""
    return str(text).replace("\\", "/").replace('"', "'")


def _citation(data: dict) -> str:
    authors = data.get("authors") or []
    families = [str(a).split()[-1] for a in authors if str(a).split()]
    who = f"{families[0]} et al." if len(families) > 2 else " & ".join(families)
    venue = " ".join(str(x) for x in (data.get("venue"), data.get("year")) if x)
    where = ", ".join(x for x in (who, venue, (data.get("links") or {}).get("paper")) if x)
    return textwrap.fill(_python_text(f"{data.get('title')} ({where})."), 116)


def _values(entry_id: str, name: str, kind: str, data: dict) -> dict[str, str]:
    title = _python_text(data.get("title", ""))
    return {"id": entry_id, "name": name, "cls": "".join(p.capitalize() for p in name.split("_")),
            "title": title, "short_title": title.split(":")[0], "citation": _citation(data),
            "venue": str(data.get("venue", "")), "year": str(data.get("year", "")),
            "bibkey": str(data.get("bibkey", "")),
            "implementation_key": next(k for k, v in IMPLEMENTATION_KINDS.items() if v == kind)}


def _implementation_files(root: Path, kind: str, values: dict[str, str]) -> dict[Path, str | list]:
    from .registry import PACKAGES

    folder, name = PACKAGES[kind], values["name"]
    return {root / "impl" / "attnzoo" / folder / f"{name}.py": render(f"{kind}/module.py.tmpl", **values),
            root / "book" / "notebooks" / f"{values['id']}.ipynb":
                notebook_cells(render(f"{kind}/notebook.ipynb.tmpl", **values)),
            root / "tests" / folder / f"test_{name}.py": render(f"{kind}/test.py.tmpl", **values)}


def _plan_catalogued(root: Path, entry: Entry, kind: str, name: str, catalogue_only: bool) -> Plan:
    label = f"catalogue/{entry.path.name}"
    if catalogue_only:
        raise ProblemsError([Problem(label, f"{entry.id!r} is already in the catalogue", "id")])
    if entry.get("status") == "implemented" or any(entry.registry_names.values()):
        done = "; ".join(f"{k}: {', '.join(v)}" for k, v in entry.registry_names.items() if v)
        raise ProblemsError([Problem(label, f"{entry.id!r} is already implemented ({done or 'status'}); "
                                     "improve its files instead of scaffolding new ones", "status",
                                     entry.lines.get(("status",)))])
    values = _values(entry.id, name, kind, entry.data)
    return Plan(_implementation_files(root, kind, values), entry_lines=render("implemented.yaml.tmpl", **values))


def _plan_new(root: Path, entry_id: str, kind: str, name: str, catalogue_only: bool) -> Plan:
    bibkey = f"{PLACEHOLDER}-{entry_id}"
    values = _values(entry_id, name, kind, {"title": f"{PLACEHOLDER} the paper's real title", "bibkey": bibkey,
                                            "venue": PLACEHOLDER, "year": PLACEHOLDER})
    status = "status: catalogued" if catalogue_only else render("implemented.yaml.tmpl", **values).rstrip("\n")
    plan = Plan({root / "catalogue" / f"{entry_id}.yaml": render("entry.yaml.tmpl", **values, status=status)},
                bib_append=render("reference.bib.tmpl", **values))
    if not catalogue_only:
        plan.files.update(_implementation_files(root, kind, values))
    bib = root / "references.bib"
    if bib.is_file() and re.search(rf"@\w+\s*{{\s*{re.escape(bibkey)}\s*,", bib.read_text(encoding="utf-8")):
        plan.problems.append(Problem("references.bib", f"key {bibkey!r} already exists; refusing to overwrite",
                                     "key"))
    return plan


def _registered_elsewhere(kind: str, name: str) -> list[Problem]:
    """A problem if ``name`` is already a registered ``kind`` (skipped while the registry does not load)."""
    from . import registry

    if registry.load_errors() or name not in registry.list_names(kind):
        return []
    owner = registry.get_entry(kind, name).module.replace(".", "/")
    return [Problem(f"impl/{owner}.py", f"{name!r} is already a registered {kind} name; "
                    "choose another with --name", "name")]


def plan(root: Path, entry_id: str, kind: str = "attention", name: str | None = None,
         catalogue_only: bool = False) -> Plan:
    """What ``attnzoo new`` would write; ProblemsError when it must refuse (then nothing is written)."""
    from .registry import KINDS, suggest

    if kind not in KINDS:
        raise ProblemsError([Problem("attnzoo new", f"--kind {kind!r} is not one of {', '.join(KINDS)}"
                                     f"{suggest(kind, KINDS)}")])
    id_rule = schema()["properties"]["id"]["errorMessage"]
    if not ID_RE.match(entry_id):
        raise ProblemsError([Problem(f"catalogue/{entry_id}.yaml", f"{entry_id!r}: an id {id_rule}", "id")])
    name = name or entry_id.replace("-", "_")
    if not NAME_RE.match(name):
        raise ProblemsError([Problem("attnzoo new", f"--name {name!r} must be a lowercase Python identifier "
                                     "(letters, digits, underscores)")])
    path = root / "catalogue" / f"{entry_id}.yaml"
    if path.exists():
        entry, problems = read_entry(path, root)
        if entry is None:
            raise ProblemsError(problems)
        result = _plan_catalogued(root, entry, kind, name, catalogue_only)
        if problems:  # the scaffold is written from the entry's fields: they must be right first
            raise ProblemsError(problems)
    else:
        result = _plan_new(root, entry_id, kind, name, catalogue_only)
    problems = result.problems + [Problem(p.relative_to(root).as_posix(), "already exists; refusing to overwrite")
                                  for p in result.files if p.exists()]
    if not catalogue_only:
        problems += _registered_elsewhere(kind, name)
    if problems:
        raise ProblemsError(problems)
    return result


def scaffold(root: Path, entry_id: str, kind: str = "attention", name: str | None = None,
             catalogue_only: bool = False) -> tuple[list[Path], str]:
    """Write the files of :func:`plan`; returns the written paths and the lines to add to an existing entry."""
    todo = plan(root, entry_id, kind, name, catalogue_only)
    for path, content in todo.files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, list):
            write_notebook(path, content)
        else:
            path.write_text(content, encoding="utf-8")
    written = list(todo.files)
    if todo.bib_append:
        bib = root / "references.bib"
        text = bib.read_text(encoding="utf-8") if bib.exists() else ""
        bib.write_text(text + ("\n" if text and not text.endswith("\n") else "") + todo.bib_append, encoding="utf-8")
        written.append(bib)
    return written, todo.entry_lines
