"""The benchmark scripts run end to end (tiny sizes) and summarise their rows correctly."""
import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCH))


def test_summary_counts_only_timm_rows_and_allows_for_the_noise():
    bench = _load("bench")
    rows = [{"module": "a", "input": "1", "ref": "timm", "ratio": 0.9, "aa": 1.0},
            {"module": "b", "input": "1", "ref": "timm", "ratio": 1.1, "aa": 1.0},   # 10 % slower, no noise
            {"module": "c", "input": "1", "ref": "timm", "ratio": 1.1, "aa": 1.08},  # within its A/A noise
            {"module": "d", "input": "1", "ref": "conv3x3", "ratio": 5.0, "aa": 0.98}]
    s = bench.summary(rows)
    assert s["timm rows"] == 3
    assert s["median ratio vs timm"] == 1.1
    assert s["slower than timm beyond noise"] == ["b 1"]
    assert s["median |A/A - 1|"] == pytest.approx(0.01, abs=1e-9)  # median of 0, 0, 0.02, 0.08


def test_gpu_script_smoke_on_cpu(tmp_path):
    """benchmarks/gpu.py --device cpu --smoke: notebooks listed, fp32 / bf16 channels_last / SDPA results written."""
    gpu = _load("gpu")
    gpu.main(["--device", "cpu", "--smoke", "--out-dir", str(tmp_path)])
    notebooks = json.loads((tmp_path / "cpu_notebooks.json").read_text())
    assert {r["notebook"] for r in notebooks} >= {"cbam", "convnext"}
    for name in ("cpu_fp32", "cpu_bf16_cl", "cpu_sdpa"):
        result = json.loads((tmp_path / f"{name}.json").read_text())
        rows = result["rows"]
        assert rows and not [r for r in rows if "error" in r], rows
        assert all(r["ms"] > 0 and r["ratio"] > 0 for r in rows)
    fp32 = json.loads((tmp_path / "cpu_fp32.json").read_text())["rows"]
    assert {r["kind"] for r in fp32} == {"attention", "conv", "block", "model"}
    assert [r["ref"] for r in fp32 if r["module"] == "se"] == ["timm"]
    sdpa = json.loads((tmp_path / "cpu_sdpa.json").read_text())["rows"]
    assert [(r["module"], r["ref"]) for r in sdpa] == [("mhsa", "bare SDPA")]
