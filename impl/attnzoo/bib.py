"""Reading references.bib with bibtexparser 2.x, and checking it."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import bibtexparser
from bibtexparser.model import DuplicateBlockKeyBlock, ParsingFailedBlock

from .problems import Problem


@dataclass(frozen=True)
class BibRecord:
    key: str
    entry_type: str
    fields: dict[str, str]
    line: int


def load_bib(path: Path, label: str = "references.bib") -> tuple[dict[str, BibRecord], list[Problem]]:
    """Parse ``path``; return records by key and problems (syntax errors, duplicate keys, missing fields)."""
    problems: list[Problem] = []
    if not path.is_file():
        return {}, [Problem(label, "file not found")]
    library = bibtexparser.parse_string(path.read_text(encoding="utf-8"))
    records: dict[str, BibRecord] = {}
    for entry in library.entries:
        fields = {f.key.lower(): str(f.value) for f in entry.fields}
        records[entry.key] = BibRecord(entry.key, entry.entry_type.lower(), fields, entry.start_line + 1)
        for required in ("title", "author", "year"):
            if not fields.get(required, "").strip():
                problems.append(Problem(label, f"entry {entry.key!r} has no {required}", required, entry.start_line + 1))
    for block in library.failed_blocks:
        line = block.start_line + 1
        if isinstance(block, DuplicateBlockKeyBlock):
            problems.append(Problem(label, f"duplicate key {block.key!r}", "key", line))
        elif isinstance(block, ParsingFailedBlock):
            problems.append(Problem(label, f"cannot parse entry: {block.error}", None, line))
    return records, problems
