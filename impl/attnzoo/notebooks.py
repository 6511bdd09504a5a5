"""``attnzoo run``: execute catalogue notebooks with papermill into a build folder (sources never change)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


@dataclass
class RunFailure:
    notebook: str
    cell: int | None
    error: str
    traceback: str

    def __str__(self) -> str:
        where = f"{self.notebook}, cell {self.cell}" if self.cell is not None else self.notebook
        return f"{where}: {self.error}\n{self.traceback}".rstrip()


def parse_parameters(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """``-p NAME VALUE`` pairs with values read as YAML scalars (2 -> int, 0.5 -> float, cuda -> str)."""
    params = {}
    for name, value in pairs:
        if not name.isidentifier():
            raise ValueError(f"-p: parameter name {name!r} is not a Python identifier")
        try:
            params[name] = yaml.safe_load(value)
        except yaml.YAMLError:
            params[name] = value
    return params


def _failed_cell(output: Path) -> int | None:
    """Index (0-based) in the *source* notebook of the first cell whose output is an error."""
    import nbformat

    try:
        nb = nbformat.read(output, as_version=4)
    except Exception:
        return None
    skip = {"injected-parameters", "papermill-error-cell-tag"}
    source_cells = [c for c in nb.cells if not skip & set(c.get("metadata", {}).get("tags", []))]
    for i, c in enumerate(source_cells):
        if any(o.get("output_type") == "error" for o in c.get("outputs", [])):
            return i
    return None


def run_notebook(source: Path, output: Path, parameters: dict[str, Any], timeout: int = 600) -> RunFailure | None:
    """Execute ``source`` into ``output`` with papermill; None on success, else where and why it failed."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    output.parent.mkdir(parents=True, exist_ok=True)
    try:
        papermill.execute_notebook(str(source), str(output), parameters=parameters, progress_bar=False,
                                   kernel_name="python3", cwd=str(source.parent), execution_timeout=timeout,
                                   log_output=False)
    except PapermillExecutionError as exc:
        tb = "\n".join(exc.traceback) if exc.traceback else f"{exc.ename}: {exc.evalue}"
        return RunFailure(str(source), _failed_cell(output), f"{exc.ename}: {exc.evalue}", _strip_ansi(tb))
    except Exception as exc:  # kernel died, timeout, unreadable notebook
        return RunFailure(str(source), None, f"{type(exc).__name__}: {exc}", "")
    return None


def _strip_ansi(text: str) -> str:
    import re

    return re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text)
