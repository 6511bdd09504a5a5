"""Every catalogue notebook executed through papermill (``--device cuda`` on GPU runners)."""
import json
import re

import pytest

from attnzoo.catalogue import load_catalogue
from attnzoo.notebooks import run_notebook
from attnzoo.paths import project_root

ROOT = project_root()
ENTRIES, _ = load_catalogue(ROOT)
NOTEBOOKS = sorted((e.id, ROOT / e.notebook) for e in ENTRIES.values() if e.get("notebook"))


@pytest.mark.parametrize("entry_id,path", NOTEBOOKS, ids=[i for i, _ in NOTEBOOKS])
def test_notebook_runs(entry_id, path, tmp_path, request):
    before = path.read_bytes()
    failure = run_notebook(path, tmp_path / path.name, {"device": request.config.getoption("--device")})
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
