"""The benchmark scripts run end to end (tiny sizes) and summarise their rows correctly."""
import importlib.util
import json
import sys
import weakref
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


def test_row_pairs_each_reference_run_with_the_mean_of_ours_around_it(monkeypatch):
    """A-B-A: per repetition ours = mean of its runs before and after the reference; medians over repetitions."""
    bench = _load("bench")
    times = [[1.0, 2.0, 9.0], [2.0, 3.0, 2.0], [3.0, 4.0, 1.0]]  # [slot][rep]: ours, timm, ours again
    monkeypatch.setattr(bench, "time_interleaved", lambda *args, **kwargs: times)
    monkeypatch.setattr(bench, "memory_columns", lambda *args, **kwargs: {})  # the modules here take no input
    import torch.nn as nn
    case = bench.Case("model", "m", (1, 1, 2, 2), nn.Linear(2, 2), (), ref=nn.Linear(2, 2), ref_name="timm x")
    row = bench.measure(case, "cpu", reps=3)
    # ours per rep: 2, 3, 5 -> median 3; ratios 1, 1, 2.5 -> 1; A/A 3, 2, 1/9 -> 2
    assert (row["ms"], row["ref ms"], row["ratio"], row["aa"]) == (3000.0, 2000.0, 1.0, 2.0)


def test_gpu_script_smoke_on_cpu(tmp_path):
    """benchmarks/gpu.py --device cpu --smoke: notebooks listed, fp32 / bf16 channels_last / SDPA results written."""
    gpu = _load("gpu")
    gpu.main(["--device", "cpu", "--smoke", "--out-dir", str(tmp_path)])
    notebooks = json.loads((tmp_path / "cpu_notebooks.json").read_text())
    assert {r["notebook"] for r in notebooks} >= {"cbam", "convnext"}
    for name in ("cpu_fp32", "cpu_bf16_cl", "cpu_sdpa"):
        result = json.loads((tmp_path / f"{name}.json").read_text())
        rows = [r for r in result["rows"] if "skipped" not in r]  # SDPA: modules without an SDPA call
        assert rows and not [r for r in rows if "error" in r], rows
        assert all(r["ms"] > 0 and r["ratio"] > 0 for r in rows)
        assert result["meta"]["complete"]
    fp32 = json.loads((tmp_path / "cpu_fp32.json").read_text())["rows"]
    assert {r["kind"] for r in fp32} == {"attention", "conv", "block", "model"}
    assert [r["ref"] for r in fp32 if r["module"] == "se"] == ["timm"]
    sdpa = json.loads((tmp_path / "cpu_sdpa.json").read_text())["rows"]
    assert [(r["module"], r["ref"]) for r in sdpa if "skipped" not in r] == [("mhsa", "bare SDPA")]
    assert gpu.notebook_ids() == sorted(p.stem for p in (BENCH.parent / "book" / "notebooks").glob("*.ipynb"))


def test_bench_resumes_a_partial_run_and_retimes_only_what_is_missing(tmp_path, capsys):
    """--resume keeps the rows measured with the same settings and times only the others; rows measured with other
    settings are redone; --plan counts what is left without timing anything."""
    bench = _load("bench")
    out = tmp_path / "r.json"
    args = ["--device", "cpu", "--smoke", "--reps", "1", "--kinds", "attention", "conv", "--out", str(out)]
    first = bench.main(args + ["--only", "se"])
    assert [r["module"] for r in first["rows"]] == ["se"] and first["meta"]["complete"]
    assert bench.main(args + ["--only", "se", "eca", "--plan"])["rows left"] == {"attention": 1}
    second = bench.main(args + ["--only", "se", "eca", "--resume"])
    assert [r["module"] for r in second["rows"]] == ["se", "eca"]
    assert second["rows"][0] == first["rows"][0]  # kept as measured, not re-timed
    assert all(r["settings"]["reps"] == 1 and r["seconds"] > 0 for r in second["rows"])
    third = bench.main(args[:4] + ["2"] + args[5:] + ["--only", "se", "--resume"])  # other settings: redone
    assert third["rows"][0]["settings"]["reps"] == 2


def test_a_twin_fixed_to_one_size_is_timed_with_ours_at_that_size():
    """timm's EfficientFormer takes 224 x 224 only: the row is timed at that size for both, keyed by the planned
    shape (so --resume finds it), and says why."""
    bench = _load("bench")
    case = bench.model_case("efficientformer_l1", (1, 3, 32, 32), "cpu", timm_ok=True)
    assert case.shape == (1, 3, 224, 224) and case.asked == (1, 3, 32, 32)
    assert case.ref_name == "timm efficientformer_l1" and case.inputs[0].shape == (1, 3, 224, 224)
    assert "rejects 32x32" in case.notes[0]
    row = {"kind": "model", "module": case.name, "input": "1x3x224x224", "asked": "1x3x32x32"}
    assert bench.key_of(row) == bench.row_key("model", "efficientformer_l1", (1, 3, 32, 32))
    plain = bench.model_case("resnet18", (1, 3, 32, 32), "cpu", timm_ok=True)  # a twin that takes the size
    assert plain.shape == (1, 3, 32, 32) and plain.asked is None and plain.ref_name == "timm resnet18"


def test_saved_bytes_counts_each_saved_activation_once_and_not_weights_or_inputs():
    import torch
    import torch.nn as nn

    bench = _load("bench")
    x = torch.randn(2, 4, requires_grad=True)
    # Linear saves its input and weight (left out); ReLU saves its (2, 8) float32 output: 64 bytes
    assert bench.saved_bytes(nn.Sequential(nn.Linear(4, 8), nn.ReLU()), (x,)) == 2 * 8 * 4

    class Square(nn.Module):
        def forward(self, x):
            y = x.exp()  # exp saves its output y; y * y saves y twice: one storage
            self.output = weakref.ref(y)
            return y * y

    square = Square()
    assert bench.saved_bytes(square, (x,)) == 2 * 4 * 4
    assert square.output() is None  # the graph and what it saved are gone (a long --add-memory run stays bounded)


def test_memory_columns_are_added_to_rows_timed_without_them(tmp_path):
    bench = _load("bench")
    out = tmp_path / "r.json"
    args = ["--device", "cpu", "--smoke", "--reps", "1", "--kinds", "attention", "--only", "cbam", "--out", str(out)]
    row = bench.main(args)["rows"][0]
    assert row["ref"] == "timm" and row["saved MB"] > 0 and row["ref saved MB"] > 0
    assert abs(row["mem ratio"] - row["saved MB"] / row["ref saved MB"]) < 0.05  # the ratio is of unrounded bytes
    data = json.loads(out.read_text())
    for key in ("saved MB", "ref saved MB", "mem ratio"):
        del data["rows"][0][key]
    out.write_text(json.dumps(data))
    assert [r["module"] for r in bench.main(args + ["--add-memory"])] == ["cbam"]
    again = json.loads(out.read_text())["rows"][0]
    assert {k: again[k] for k in ("saved MB", "ref saved MB", "mem ratio")} == {
        k: row[k] for k in ("saved MB", "ref saved MB", "mem ratio")}
    assert bench.main(args + ["--add-memory"]) == []  # nothing left to fill
