"""Every catalogue notebook executed through papermill (``--device cuda`` on GPU runners)."""
import json
import re

import pytest

from attnzoo.catalogue import load_catalogue
from attnzoo.notebooks import SharedKernel, run_notebook
from attnzoo.paths import project_root

ROOT = project_root()
ENTRIES, _ = load_catalogue(ROOT)
NOTEBOOKS = sorted((e.id, ROOT / e.notebook) for e in ENTRIES.values() if e.get("notebook"))


@pytest.fixture(scope="session")
def kernel():
    """One kernel per test process: its namespace is cleared before each notebook, torch and attnzoo stay imported
    (each notebook in a fresh kernel costs seconds of start-up and imports; `attnzoo book` still runs them so).
    Figures are drawn and encoded as in the book, at half its resolution and without the tight crop."""
    with SharedKernel(figure_dpi=50) as k:
        yield k


@pytest.mark.parametrize("entry_id,path", NOTEBOOKS, ids=[i for i, _ in NOTEBOOKS])
def test_notebook_runs(entry_id, path, tmp_path, request, kernel):
    before = path.read_bytes()
    failure = run_notebook(path, tmp_path / path.name, {"device": request.config.getoption("--device")}, kernel=kernel)
    assert path.read_bytes() == before, "running a notebook must not modify its source"
    assert failure is None, str(failure)


@pytest.mark.parametrize("entry_id,path", NOTEBOOKS, ids=[i for i, _ in NOTEBOOKS])
def test_notebook_is_clean_and_parametrized(entry_id, path):
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), \
        f"commit without outputs: run `attnzoo clean {entry_id}`"
    params = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1, "exactly one cell tagged 'parameters'"
    src = "".join(params[0]["source"])
    for name in ("device", "batch_size", "image_size", "seed"):
        assert f"{name} =" in src, f"parameters cell lacks {name}"
    text = "".join("".join(c["source"]) for c in code)
    assert "import attnzoo" in text or "from attnzoo" in text, "notebooks import the package"
    assert not re.search(r"^\s*class \w+", text, re.M), "notebooks must not define modules; they import them"


def _notebook(path, *cells):
    import nbformat

    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "language": "python",
                                                           "display_name": "Python 3"}})
    nb.cells = [nbformat.v4.new_code_cell("device = 'cpu'", metadata={"tags": ["parameters"]})]
    nb.cells += [nbformat.v4.new_code_cell(c) for c in cells]
    nbformat.write(nb, path)
    return path


def test_shared_kernel_isolates_notebooks_and_survives_a_crash(tmp_path, kernel):
    define = _notebook(tmp_path / "define.ipynb", "leaked = 1\nimport os\ncwd = os.getcwd()\nprint(cwd)")
    use = _notebook(tmp_path / "use.ipynb", "print(leaked)")
    crash = _notebook(tmp_path / "crash.ipynb", "import os\nos._exit(3)")
    sub = tmp_path / "sub"
    sub.mkdir()
    moved = _notebook(sub / "cwd.ipynb", "import os\nassert os.getcwd() == %r, os.getcwd()" % str(sub))
    assert run_notebook(define, tmp_path / "out" / "a.ipynb", {}, kernel=kernel) is None
    failure = run_notebook(use, tmp_path / "out" / "b.ipynb", {}, kernel=kernel)
    assert failure is not None and "NameError" in failure.error, "a name defined by an earlier notebook leaked"
    assert run_notebook(moved, tmp_path / "out" / "c.ipynb", {}, kernel=kernel) is None
    failure = run_notebook(crash, tmp_path / "out" / "d.ipynb", {}, kernel=kernel)
    assert failure is not None and "DeadKernelError" in failure.error
    assert run_notebook(define, tmp_path / "out" / "e.ipynb", {}, kernel=kernel) is None, "the next notebook gets a new kernel"


def test_shared_kernel_draws_figures_at_its_resolution(tmp_path, kernel):
    import base64
    import struct

    plot = _notebook(tmp_path / "plot.ipynb", "%matplotlib inline\nimport matplotlib.pyplot as plt\n"
                                              "fig, ax = plt.subplots(figsize=(4, 3)); ax.plot([0, 1])")
    out = tmp_path / "out" / "plot.ipynb"
    assert run_notebook(plot, out, {}, kernel=kernel) is None
    images = [o["data"]["image/png"] for c in json.loads(out.read_text())["cells"] for o in c.get("outputs", [])
              if "image/png" in o.get("data", {})]
    assert len(images) == 1
    width, height = struct.unpack(">II", base64.b64decode(images[0])[16:24])  # the PNG header's IHDR
    assert (width, height) == (4 * kernel.figure_dpi, 3 * kernel.figure_dpi)
