"""Reading references.bib with bibtexparser 2.x, and checking it."""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import bibtexparser
from bibtexparser.model import DuplicateBlockKeyBlock, ParsingFailedBlock

from .placeholders import PLACEHOLDER, has_placeholder
from .problems import Problem

_RECORD_HEAD = re.compile(r"@\s*(\w+)\s*[{(]\s*([^,\s]*)")


@dataclass(frozen=True)
class BibRecord:
    key: str
    entry_type: str
    fields: dict[str, str]
    line: int


def _parse_quietly(text: str):
    """bibtexparser logs its own report of every broken record; we report them ourselves, once."""
    logger = logging.getLogger("bibtexparser")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        return bibtexparser.parse_string(text)
    finally:
        logger.setLevel(level)


def _failed_record(block: ParsingFailedBlock) -> str:
    head = _RECORD_HEAD.match(block.raw.lstrip())
    return f"record {head[2]!r}" if head and head[2] else "record"


def _parse_error(block: ParsingFailedBlock) -> str:
    error = block.error
    reason = getattr(error, "abort_reason", None) or str(error) or type(error).__name__
    reason = " ".join(reason.replace("`", "'").split()).rstrip(".")
    return f"cannot parse {_failed_record(block)}: {reason} (check its braces, quotes and commas)"


def load_bib(path: Path, label: str = "references.bib") -> tuple[dict[str, BibRecord], list[Problem]]:
    """Parse ``path``; return records by key and problems (syntax errors, duplicate keys, missing fields,
    scaffold placeholders), each with the record's line."""
    problems: list[Problem] = []
    if not path.is_file():
        return {}, [Problem(label, "file not found")]
    library = _parse_quietly(path.read_text(encoding="utf-8"))
    records: dict[str, BibRecord] = {}
    for entry in library.entries:
        fields = {f.key.lower(): str(f.value) for f in entry.fields}
        line = entry.start_line + 1
        records[entry.key] = BibRecord(entry.key, entry.entry_type.lower(), fields, line)
        for required in ("title", "author", "year"):
            if not fields.get(required, "").strip():
                problems.append(Problem(label, f"entry {entry.key!r} has no {required}", required, line))
        if PLACEHOLDER in entry.key:
            problems.append(Problem(label, f"placeholder left from `attnzoo new` in the key {entry.key!r}", "key",
                                    line))
        for name, value in fields.items():
            if has_placeholder(value):
                problems.append(Problem(label, f"entry {entry.key!r}: placeholder left from `attnzoo new`: "
                                        f"{value!r}", name, line))
    for block in library.failed_blocks:
        line = block.start_line + 1
        if isinstance(block, DuplicateBlockKeyBlock):
            problems.append(Problem(label, f"duplicate key {block.key!r}", "key", line))
        elif isinstance(block, ParsingFailedBlock):
            problems.append(Problem(label, _parse_error(block), None, line))
    return records, problems
