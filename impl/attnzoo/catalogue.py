"""The catalogue: one YAML file per paper in catalogue/, validated against schema/entry.schema.json."""
from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from .paths import SCHEMA, project_root
from .problems import Problem

ID_RE = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
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
        impl = self.data.get("implementation") or {}
        return {"attention": list(impl.get("attention", [])), "models": list(impl.get("models", []))}


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


def read_entry(path: Path, root: Path) -> tuple[Entry | None, list[Problem]]:
    """Parse and schema-validate one YAML file. Returns (entry or None, problems)."""
    label = str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
    text = path.read_text(encoding="utf-8")
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        return None, [Problem(label, f"malformed YAML: {getattr(exc, 'problem', None) or exc}", None,
                              mark.line + 1 if mark else None)]
    if not isinstance(data, dict):
        return None, [Problem(label, "expected a mapping of fields at the top level")]
    lines = _line_index(node)
    problems = []
    validator = jsonschema.Draft202012Validator(schema())
    for err in sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.absolute_path))):
        fpath = tuple(err.absolute_path)
        if err.validator == "required":
            missing = re.findall(r"'([^']+)' is a required property", err.message)
            msg = f"missing required field {missing[0]!r}" if missing else err.message
            field_name = ".".join([*map(str, fpath), *missing[:1]])
        elif err.validator == "additionalProperties":
            msg = err.message.replace("Additional properties are not allowed", "unknown field")
            field_name = _field_name(fpath)
        elif err.validator == "enum":
            msg = f"{err.instance!r} is not one of: {', '.join(map(str, err.validator_value))}"
            field_name = _field_name(fpath)
        else:
            msg, field_name = err.message, _field_name(fpath)
        problems.append(Problem(label, msg, field_name, _line_for(lines, fpath) or None))
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
    problems += _duplicate_papers(entries)
    return entries, problems


def _duplicate_papers(entries: dict[str, Entry]) -> list[Problem]:
    problems, by_arxiv, titles = [], {}, []
    for e in entries.values():
        label = f"catalogue/{e.path.name}"
        arxiv = e.get("arxiv")
        if arxiv:
            if arxiv in by_arxiv:
                problems.append(Problem(label, f"same arXiv id {arxiv} as catalogue/{by_arxiv[arxiv]}.yaml: one entry "
                                        "per paper", "arxiv", e.lines.get(("arxiv",))))
            by_arxiv.setdefault(arxiv, e.id)
        if isinstance(e.get("title"), str):
            titles.append((_norm_title(e.title), e))
    for i, (ta, ea) in enumerate(titles):
        for tb, eb in titles[i + 1:]:
            matcher = difflib.SequenceMatcher(None, ta, tb)
            if matcher.real_quick_ratio() > 0.93 and matcher.quick_ratio() > 0.93 and matcher.ratio() > 0.93:
                problems.append(Problem(f"catalogue/{eb.path.name}", f"near-identical title to catalogue/{ea.path.name}"
                                        f" ({ea.title!r}): one entry per paper", "title", eb.lines.get(("title",))))
    return problems


def get_entry(entry_id: str, root: Path | None = None) -> Entry:
    """Read one entry by id (used by notebooks to compare against the reported figures)."""
    root = root or project_root()
    entry, problems = read_entry(root / "catalogue" / f"{entry_id}.yaml", root)
    if entry is None or problems:
        raise ValueError("\n".join(map(str, problems)))
    return entry
