"""The scaffold's placeholder marker, defined once: ``attnzoo new`` writes it wherever the contributor must
write something, and ``attnzoo check`` (and ``attnzoo readme``) reject any file that still contains it."""
from __future__ import annotations

from typing import Any, Iterator

PLACEHOLDER = "TODO"


def has_placeholder(value: Any) -> bool:
    return isinstance(value, str) and PLACEHOLDER in value


def placeholder_lines(text: str, first_line: int = 1) -> list[int]:
    """1-based numbers of the lines of ``text`` that contain the marker (``first_line`` is text's first line)."""
    return [i for i, line in enumerate(text.splitlines(), first_line) if PLACEHOLDER in line]


def placeholder_values(data: Any, path: tuple = ()) -> Iterator[tuple[tuple, str]]:
    """(key path, value) for every string holding the marker in nested dicts and lists (a parsed YAML file)."""
    if isinstance(data, dict):
        for key, value in data.items():
            yield from placeholder_values(value, path + (key,))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            yield from placeholder_values(value, path + (i,))
    elif has_placeholder(data):
        yield path, data
