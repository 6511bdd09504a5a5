"""``attnzoo readme``: regenerate only the tables between the markers in README.md."""
from __future__ import annotations

from pathlib import Path

from .catalogue import Entry
from .problems import Problem, ProblemsError
from .tables import END, START, catalogue_markdown


def _split(text: str, label: str) -> tuple[str, str, str]:
    """(before, generated, after) around the markers; ProblemsError when they are missing or broken."""
    problems = []
    for marker in (START, END):
        count = text.count(marker)
        if count != 1:
            problems.append(Problem(label, f"marker {marker} must appear exactly once, found {count}", "markers"))
    if not problems and text.index(START) > text.index(END):
        problems.append(Problem(label, f"{START} must come before {END}", "markers"))
    if problems:
        raise ProblemsError(problems)
    head, rest = text.split(START)
    body, tail = rest.split(END)
    return head, body, tail


def render(text: str, entries: dict[str, Entry], label: str = "README.md") -> str:
    head, _, tail = _split(text, label)
    body = catalogue_markdown(entries, lambda e: e.notebook)
    return f"{head}{START}\n{body}{END}{tail}"


def update_readme(path: Path, entries: dict[str, Entry], check: bool = False) -> bool:
    """Rewrite the generated region of ``path``; returns True when it was (or, with check, would be) changed.

    Raises ProblemsError and writes nothing when the markers are broken.
    """
    old = path.read_text(encoding="utf-8")
    new = render(old, entries, path.name)
    if new != old and not check:
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(new, encoding="utf-8")
        tmp.replace(path)
    return new != old
