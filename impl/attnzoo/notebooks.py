"""Catalogue notebooks: ``attnzoo run`` executes them with papermill into a build folder (sources never change);
``attnzoo clean`` strips what running or editing leaves in them, which ``attnzoo check`` rejects."""
from __future__ import annotations

import copy
import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .placeholders import PLACEHOLDER
from .problems import Problem


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
    skip = set(PAPERMILL_TAGS)
    source_cells = [c for c in nb.cells if not skip & set(c.get("metadata", {}).get("tags", []))]
    for i, c in enumerate(source_cells):
        if any(o.get("output_type") == "error" for o in c.get("outputs", [])):
            return i
    return None


def run_notebook(source: Path, output: Path, parameters: dict[str, Any], timeout: int = 600,
                 kernel: SharedKernel | None = None) -> RunFailure | None:
    """Execute ``source`` into ``output`` with papermill; None on success, else where and why it failed.

    By default every notebook gets a fresh kernel. ``kernel`` runs it in an already started one instead (after
    clearing its namespace), which saves the kernel start and the imports of torch and attnzoo per notebook.
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    output.parent.mkdir(parents=True, exist_ok=True)
    engine = {}
    if kernel is not None:
        kernel.reset(source.parent)
        engine = dict(engine_name=_register_engine(), km=kernel.km, kc=kernel.kc)
    try:
        papermill.execute_notebook(str(source), str(output), parameters=parameters, progress_bar=False,
                                   kernel_name="python3", cwd=str(source.parent), execution_timeout=timeout,
                                   log_output=False, **engine)
    except PapermillExecutionError as exc:
        tb = "\n".join(exc.traceback) if exc.traceback else f"{exc.ename}: {exc.evalue}"
        return RunFailure(str(source), _failed_cell(output), f"{exc.ename}: {exc.evalue}", _strip_ansi(tb))
    except Exception as exc:  # kernel died, timeout, unreadable notebook
        return RunFailure(str(source), None, f"{type(exc).__name__}: {exc}", "")
    return None


# Run before each notebook in a shared kernel: no open figures, an empty namespace (imports included), the
# notebook's folder as working directory. Modules stay imported, which is the point. What survives the reset's full
# garbage collection is the interpreter's own state (modules, registries, caches); gc.freeze() moves it out of
# the collector's sight, so the next reset's collection walks only what the notebook itself made (a full walk of
# torch, matplotlib and attnzoo took ~0.5 s per notebook).
_RESET = """\
import matplotlib.pyplot as _plt
_plt.close("all")
%reset -f
import gc as _gc, os as _os
_gc.freeze(); _os.chdir({cwd!r})
del _gc, _os
"""


class SharedKernel:
    """One Jupyter kernel that runs several notebooks in turn (``with SharedKernel() as k: run_notebook(..., kernel=k)``).

    Between notebooks its namespace is cleared, so a notebook cannot use a name another one defined; what stays is
    the interpreter itself: imported modules (torch, attnzoo with its loaded registry) and process-wide settings.
    ``figure_dpi`` renders the inline figures at that resolution, without the tight crop (a test run that only
    needs the figures drawn, not looked at); by default they render as in the book.
    """

    def __init__(self, kernel_name: str = "python3", startup_timeout: int = 120, figure_dpi: int | None = None):
        _register_engine()
        self.kernel_name = kernel_name
        self.km = None
        self.kc = None
        self.startup_timeout = startup_timeout
        self.figure_dpi = figure_dpi

    def __enter__(self) -> SharedKernel:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()

    def start(self) -> None:
        from jupyter_client.manager import AsyncKernelManager

        self.km = AsyncKernelManager(kernel_name=self.kernel_name)  # the class papermill itself uses
        _sync(self.km.start_kernel)()
        # one client for the kernel's life: a new one waits ~0.2 s for the kernel's output channel to fall silent
        self.kc = self.km.client()
        self.kc.start_channels()
        _sync(self.kc.wait_for_ready)(timeout=self.startup_timeout)
        self.kc.allow_stdin = False
        if self.figure_dpi is not None:
            # every figure is still drawn and encoded, in one pass (no tight bounding box) and at fewer pixels
            self._execute(f"%config InlineBackend.print_figure_kwargs = {{'dpi': {self.figure_dpi}, 'bbox_inches': None}}")

    def shutdown(self) -> None:
        if self.kc is not None:
            self.kc.stop_channels()
            self.kc = None
        if self.km is not None and self.km.has_kernel:
            _sync(self.km.shutdown_kernel)(now=True)

    def reset(self, cwd: Path) -> None:
        """Clear the namespace and figures and enter ``cwd``; a dead kernel is replaced first."""
        if self.km is None or not _sync(self.km.is_alive)():
            self.shutdown()
            self.start()
        self._execute(_RESET.format(cwd=str(cwd)))

    def _execute(self, code: str) -> None:
        reply = _sync(self.kc.execute_interactive)(code, timeout=60, store_history=False, output_hook=lambda msg: None)
        if reply["content"]["status"] != "ok":
            raise RuntimeError(f"shared kernel: {reply['content'].get('ename')}: {reply['content'].get('evalue')}")


def _sync(coroutine_function):
    from jupyter_core.utils import run_sync

    return run_sync(coroutine_function)


_ENGINE = "attnzoo-shared-kernel"


@functools.cache
def _register_engine() -> str:
    """papermill's nbclient engine with a kernel manager (and client) it does not own: the kernel outlives the
    notebook, a client opened for the notebook is closed afterwards, and the output is written once, at the end.
    Returns the engine's name."""
    from papermill.clientwrap import PapermillNotebookClient
    from papermill.engines import NBClientEngine, papermill_engines

    class SharedKernelEngine(NBClientEngine):
        @classmethod
        def execute_managed_notebook(cls, nb_man, kernel_name, log_output=False, stdout_file=None,
                                     stderr_file=None, start_timeout=60, execution_timeout=None, km=None, kc=None,
                                     **kwargs):
            kwargs = {k: v for k, v in kwargs.items() if k not in ("input_path", "timeout", "startup_timeout")}
            client = PapermillNotebookClient(nb_man, km=km, timeout=execution_timeout, startup_timeout=start_timeout,
                                             kernel_name=kernel_name, log_output=log_output, stdout_file=stdout_file,
                                             stderr_file=stderr_file, **kwargs)
            # papermill rewrites the whole output notebook (figures included) as each cell starts and ends; here it
            # is written once, when the notebook completes or fails (papermill's notebook_complete, after this)
            client.kc = kc  # the kernel's own client, kept open (None: papermill opens one for this notebook)
            output_path, nb_man.output_path = nb_man.output_path, None
            try:
                return client.execute()
            finally:
                nb_man.output_path = output_path
                if kc is None and client.kc is not None:
                    client.kc.stop_channels()

    papermill_engines.register(_ENGINE, SharedKernelEngine)
    return _ENGINE


def _strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text)


# What a committed notebook carries: the code and text, a standard kernel, no state from running or editing.
NOTEBOOK_METADATA = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                     "language_info": {"name": "python"}}
PAPERMILL_TAGS = ("injected-parameters", "papermill-error-cell-tag")
_RUN_CELL_METADATA = ("papermill", "execution", "ExecuteTime", "collapsed", "scrolled")


def _numbers(cells: list[int]) -> str:
    shown = ", ".join(map(str, cells[:6])) + (f", ... ({len(cells)} cells)" if len(cells) > 6 else "")
    return ("cell " if len(cells) == 1 else "cells ") + shown


def clean(nb: dict) -> list[str]:
    """Strip outputs, execution counts, papermill's error and injected cells and run metadata from ``nb`` (a
    notebook as parsed JSON, changed in place); returns what was removed, in words, with cell numbers counted
    from 0 in the notebook as it was (empty: already clean)."""
    found = {"papermill's error and parameter": [], "outputs in": [], "execution counts in": [],
             "run metadata in": []}
    for i, c in enumerate(nb.get("cells", [])):
        meta = c.get("metadata", {})
        if set(PAPERMILL_TAGS) & set(meta.get("tags", [])) or "papermill-error-cell" in "".join(c.get("source", "")):
            found["papermill's error and parameter"].append(i)
        if c.get("outputs"):
            found["outputs in"].append(i)
        if c.get("execution_count") is not None:
            found["execution counts in"].append(i)
        if c.get("cell_type") == "code":
            c["outputs"], c["execution_count"] = [], None
        if any(k in meta for k in _RUN_CELL_METADATA) or meta.get("tags") == []:
            found["run metadata in"].append(i)
            c["metadata"] = {k: v for k, v in meta.items()
                             if k not in _RUN_CELL_METADATA and not (k == "tags" and v == [])}
    tagged = found["papermill's error and parameter"]
    nb["cells"] = [c for i, c in enumerate(nb.get("cells", [])) if i not in tagged]
    words = [f"{what} {_numbers(cells)}" for what, cells in found.items() if cells]
    if nb.get("metadata") != NOTEBOOK_METADATA:
        extra = sorted(set(nb.get("metadata", {})) - {"kernelspec"})
        words.append("notebook metadata" + (f" ({', '.join(extra)})" if extra else ""))
        nb["metadata"] = copy.deepcopy(NOTEBOOK_METADATA)
    return words


def parse(text: str) -> dict:
    """A notebook's JSON text, parsed; ValueError (with the line) when it is not a notebook."""
    try:
        nb = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON (line {exc.lineno}): {exc.msg}") from None
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        raise ValueError("not a Jupyter notebook (no list of cells)")
    return nb


def cell_lines(text: str) -> list[int]:
    """The 1-based line of each cell's ``"cell_type"`` key in a notebook's JSON text, in cell order."""
    return [text.count("\n", 0, m.start()) + 1 for m in re.finditer(r'(?<!\\)"cell_type"\s*:', text)]


def clean_file(path: Path) -> list[str]:
    """Clean the notebook at ``path`` in place (written only if something changed); returns what was removed."""
    import nbformat

    nb = parse(path.read_text(encoding="utf-8"))
    found = clean(nb)
    if found:
        node = nbformat.from_dict(nb)
        try:
            nbformat.validate(node)
        except nbformat.ValidationError as exc:
            raise ValueError(f"not a valid notebook once cleaned: {exc.message}") from None
        tmp = path.with_suffix(".ipynb.tmp")
        tmp.write_text(nbformat.writes(node) + "\n", encoding="utf-8")
        tmp.replace(path)
    return found


CITE = re.compile(r"\{cite(?::\w+)?\}`([^`]*)`")  # MyST: {cite}`a`, {cite:p}`a,b`, {cite:t}`a; b`


def _line_of(lines: list[str], start: int, pattern: str) -> int:
    """The first 1-based line at or after ``start`` matching the regex ``pattern`` (``start`` if none does)."""
    return next((i for i in range(start, len(lines) + 1) if re.search(pattern, lines[i - 1])), start)


def _key_pattern(key: str) -> str:
    return rf"(?<![\w:.-]){re.escape(key)}(?![\w:.-])"


def _missing_cites(source: str, bibkeys: set[str]) -> list[str]:
    keys = [k.strip() for m in CITE.finditer(source) for k in re.split(r"[,;]", m[1])]
    return [k for k in dict.fromkeys(keys) if k and k not in bibkeys]


def _cite_problems(label: str, text: str, cells: list | None, bibkeys: set[str]) -> list[Problem]:
    """``{cite}`` keys missing from references.bib, in Markdown ``text`` or in the markdown ``cells`` of a
    notebook whose JSON is ``text``."""
    from .registry import suggest

    lines = text.splitlines()
    if cells is None:
        found = [(key, None, _line_of(lines, 1, _key_pattern(key))) for key in _missing_cites(text, bibkeys)]
    else:
        starts = cell_lines(text) + [1] * len(cells)  # a cell without "cell_type" is reported by nbformat, not here
        found = [(key, f"cell {i}", _line_of(lines, starts[i], _key_pattern(key))) for i, cell in enumerate(cells)
                 if cell.get("cell_type") == "markdown"
                 for key in _missing_cites("".join(cell.get("source", "")), bibkeys)]
    return [Problem(label, f"{{cite}} key {key!r} is not in references.bib{suggest(key, bibkeys)}", field, line)
            for key, field, line in found]


def cite_problems(path: Path, label: str, bibkeys: set[str]) -> list[Problem]:
    """``{cite}`` keys of a book page (Markdown or notebook) that references.bib lacks."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".md":
        return _cite_problems(label, text, None, bibkeys)
    try:
        return _cite_problems(label, text, parse(text)["cells"], bibkeys)
    except ValueError as exc:
        return [Problem(label, str(exc))]


def notebook_problems(path: Path, label: str, bibkeys: set[str]) -> list[Problem]:
    """A catalogue notebook's problems: not clean, not exactly one ``parameters`` cell, placeholders left from
    the scaffold, ``{cite}`` keys missing from references.bib."""
    text = path.read_text(encoding="utf-8")
    try:
        nb = parse(text)
    except ValueError as exc:
        return [Problem(label, str(exc))]
    problems = []
    dirty = clean(copy.deepcopy(nb))
    if dirty:
        problems.append(Problem(label, f"must be committed clean, but has {'; '.join(dirty)}: "
                                f"run `attnzoo clean {path.stem}`"))
    cells, lines = nb["cells"], text.splitlines()
    starts = cell_lines(text) + [1] * len(cells)
    params = [i for i, c in enumerate(cells)
              if c.get("cell_type") == "code" and "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(params) != 1:
        problems.append(Problem(label, f"needs exactly one code cell tagged 'parameters' (papermill puts `-p` values "
                                f"after it), found {len(params)}"))
    for i, cell in enumerate(cells):
        source = "".join(cell.get("source", ""))
        if PLACEHOLDER in source:
            at = source.index(PLACEHOLDER)
            snippet = source[at:].splitlines()[0][:70]
            problems.append(Problem(label, f"placeholder left from `attnzoo new`: {snippet!r}", f"cell {i}",
                                    _line_of(lines, starts[i], re.escape(PLACEHOLDER))))
    return problems + _cite_problems(label, text, cells, bibkeys)
