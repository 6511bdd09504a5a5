"""The catalogue: one YAML file per paper in catalogue/, validated against schema/entry.schema.json."""
from __future__ import annotations

import difflib
import json
import re
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from .paths import SCHEMA, project_root
from .placeholders import has_placeholder, placeholder_values
from .problems import Problem

ID_RE = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
# the keys of ``implementation:`` and the registry kind each one lists
IMPLEMENTATION_KINDS = {"attention": "attention", "conv": "conv", "blocks": "block", "models": "model"}
_CJK = re.compile(r"[\u3000-\u9fff\uac00-\ud7af\uff00-\uffef]")


@lru_cache(maxsize=1)
def schema() -> dict:
    return json.loads(SCHEMA.read_text(encoding="utf-8"))


def categories() -> list[str]:
    """The fixed category vocabulary, in display order (defined once, in the schema)."""
    return list(schema()["properties"]["category"]["enum"])


def category_title(category: str) -> str:
    special = {"cnn": "CNN backbones", "mlp": "MLP-like models", "plug-and-play": "Plug-and-play modules",
               "self-attention": "Self-attention", "vision-transformer": "Vision transformers",
               "dynamic-network": "Dynamic networks", "survey": "Surveys"}
    return special.get(category, category.replace("-", " ").capitalize().replace("Channel spatial", "Channel and spatial"))


@dataclass
class Entry:
    """A validated catalogue entry; ``data`` is the YAML mapping, ``path`` its file."""

    data: dict[str, Any]
    path: Path
    lines: dict[tuple, int] = field(default_factory=dict, repr=False)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["data"][name]
        except KeyError:
            raise AttributeError(name) from None

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    @property
    def registry_names(self) -> dict[str, list[str]]:
        """Registry names listed under ``implementation:``, by its keys (see IMPLEMENTATION_KINDS)."""
        impl = self.data.get("implementation") or {}
        return {key: list(impl.get(key, [])) for key in IMPLEMENTATION_KINDS}


def _line_index(node: yaml.Node, path: tuple = (), out: dict | None = None) -> dict[tuple, int]:
    """Map every key path in a composed YAML document to its 1-based line."""
    out = {} if out is None else out
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            p = path + (key_node.value,)
            out[p] = key_node.start_mark.line + 1
            _line_index(value_node, p, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out[path + (i,)] = item.start_mark.line + 1
            _line_index(item, path + (i,), out)
    return out


def _line_for(lines: dict[tuple, int], path: tuple) -> int | None:
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return None


def _field_name(path: tuple) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def _parse(text: str) -> tuple[yaml.Node | None, Any]:
    """The node tree (for line numbers) and the data of one YAML document, parsed once by libyaml where PyYAML has
    it (about ten times faster than the pure-Python parser); a malformed document is parsed again by the
    pure-Python parser, whose error messages name the problem in words."""
    loader = getattr(yaml, "CSafeLoader", None)
    if loader is not None:
        try:
            parser = loader(text)
            try:
                node = parser.get_single_node()
                return node, parser.construct_document(node) if node is not None else None
            finally:
                parser.dispose()
        except yaml.YAMLError:
            pass
    parser = yaml.SafeLoader(text)
    try:
        node = parser.get_single_node()
        return node, parser.construct_document(node) if node is not None else None
    finally:
        parser.dispose()


def read_entry(path: Path, root: Path) -> tuple[Entry | None, list[Problem]]:
    """Parse and schema-validate one YAML file. Returns (entry or None, problems)."""
    label = str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
    text = path.read_text(encoding="utf-8")
    try:
        node, data = _parse(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        return None, [Problem(label, f"malformed YAML: {getattr(exc, 'problem', None) or exc}", None,
                              mark.line + 1 if mark else None)]
    if not isinstance(data, dict):
        return None, [Problem(label, "expected a mapping of fields at the top level")]
    lines = _line_index(node)
    problems = [_schema_problem(err, label, lines) for err in _schema_errors(data)]
    problems += [Problem(label, f"placeholder left from `attnzoo new`: {value!r}", _field_name(fpath),
                         _line_for(lines, fpath)) for fpath, value in placeholder_values(data)]
    entry = Entry(data, path, lines)
    if isinstance(data.get("id"), str) and data["id"] != path.stem:
        problems.append(Problem(label, f"id {data['id']!r} must equal the file name {path.stem!r}", "id",
                                lines.get(("id",))))
    idea = data.get("main_idea")
    if isinstance(idea, str):
        if "\n" in idea.strip():
            problems.append(Problem(label, "must be a single sentence on one line", "main_idea", lines.get(("main_idea",))))
        if _CJK.search(idea):
            problems.append(Problem(label, "must be written in English", "main_idea", lines.get(("main_idea",))))
    return entry, problems


def _schema_errors(data: dict) -> list:
    """Schema violations, minus those of scaffold placeholders (reported once, as placeholders)."""
    errors = jsonschema.Draft202012Validator(schema()).iter_errors(data)
    return sorted((e for e in errors if not has_placeholder(e.instance)), key=lambda e: list(map(str, e.absolute_path)))


def _schema_problem(err, label: str, lines: dict[tuple, int]) -> Problem:
    """A jsonschema error as a Problem: plain words, the field's dotted name and its line."""
    fpath = tuple(err.absolute_path)
    field_name = _field_name(fpath)
    if err.validator == "required":
        missing = re.findall(r"'([^']+)' is a required property", err.message)
        msg = f"missing required field {missing[0]!r}" if missing else err.message
        field_name = ".".join([*map(str, fpath), *missing[:1]])
    elif err.validator == "additionalProperties":
        msg = err.message.replace("Additional properties are not allowed", "unknown field")
    elif err.validator == "enum":
        from .registry import suggest

        hint = suggest(str(err.instance), err.validator_value)
        msg = f"{err.instance!r} is not one of the allowed values" + (
            hint or f": {', '.join(map(str, err.validator_value))}")
    elif "errorMessage" in err.schema:
        msg = f"{err.instance!r}: {err.schema['errorMessage']}"
    else:
        msg = err.message
    return Problem(label, msg, field_name, _line_for(lines, fpath))


def _norm_title(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", title.lower()).strip()


def load_catalogue(root: Path | None = None) -> tuple[dict[str, Entry], list[Problem]]:
    """All entries of catalogue/ by id, and every problem found in them (per file and across files)."""
    root = root or project_root()
    entries: dict[str, Entry] = {}
    problems: list[Problem] = []
    for path in sorted((root / "catalogue").iterdir()):
        if path.suffix in (".yml",) or (path.suffix == ".yaml" and not ID_RE.match(path.stem)):
            problems.append(Problem(f"catalogue/{path.name}", "file must be named <id>.yaml with a lowercase id"))
            continue
        if path.suffix != ".yaml":
            continue
        entry, found = read_entry(path, root)
        problems += found
        if entry is None or not isinstance(entry.get("id"), str):
            continue
        if entry.id in entries:
            problems.append(Problem(f"catalogue/{path.name}", f"duplicate id {entry.id!r} (also in "
                                    f"catalogue/{entries[entry.id].path.name})", "id", entry.lines.get(("id",))))
            continue
        entries[entry.id] = entry
    problems += _duplicate_papers(entries, root)
    return entries, problems


def _duplicate_papers(entries: dict[str, Entry], root: Path) -> list[Problem]:
    """Two entries for one paper (same arXiv id or near-identical title); the newer file is the one blamed."""
    pairs = []
    by_arxiv: dict[str, Entry] = {}
    titles = [(t, Counter(t), e) for t, e in ((_norm_title(e.title), e) for e in entries.values()
                                              if isinstance(e.get("title"), str))]
    for e in entries.values():
        arxiv = e.get("arxiv")
        if arxiv in by_arxiv:
            pairs.append(("arxiv", f"same arXiv id {arxiv} as", by_arxiv[arxiv], e))
        elif arxiv:
            by_arxiv[arxiv] = e
    for i, (ta, ca, ea) in enumerate(titles):
        for tb, cb, eb in titles[i + 1:]:
            # difflib's cheap upper bounds of the ratio first (length, then shared characters), the ratio last
            total = len(ta) + len(tb)
            if 2 * min(len(ta), len(tb)) > 0.93 * total and 2 * sum((ca & cb).values()) > 0.93 * total \
                    and difflib.SequenceMatcher(None, ta, tb).ratio() > 0.93:
                pairs.append(("title", "near-identical title to", ea, eb))
    if not pairs:
        return []
    age = newness(root, [e.path for e in entries.values()])
    problems = []
    for field_name, what, a, b in pairs:
        old, new = sorted((a, b), key=lambda e: age[e.path])
        problems.append(Problem(f"catalogue/{new.path.name}", f"{what} catalogue/{old.path.name} "
                                f"({old.get(field_name)!r}): one entry per paper; extend that entry instead",
                                field_name, new.lines.get((field_name,))))
    return problems


def newness(root: Path, paths: list[Path]) -> dict[Path, tuple]:
    """A sort key per file, larger for newer: files new or changed in ``git status`` after unchanged ones,
    then by modification time, then by name (deterministic)."""
    changed = _git_changed(root)
    return {p: (p.resolve() in changed, p.stat().st_mtime_ns, p.name) for p in paths}


def _git_changed(root: Path) -> set[Path]:
    """Files under catalogue/ that git reports as untracked, added or modified (empty outside a git checkout)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout

    try:
        top = Path(git("rev-parse", "--show-toplevel").strip())
        status = git("status", "--porcelain", "-z", "--untracked-files=all", "--", "catalogue")
    except (OSError, subprocess.CalledProcessError):
        return set()
    return {(top / item[3:]).resolve() for item in status.split("\0") if len(item) > 3 and item[2] == " "}


def get_entry(entry_id: str, root: Path | None = None) -> Entry:
    """Read one entry by id (used by notebooks to compare against the reported figures)."""
    root = root or project_root()
    entry, problems = read_entry(root / "catalogue" / f"{entry_id}.yaml", root)
    if entry is None or problems:
        raise ValueError("\n".join(map(str, problems)))
    return entry
