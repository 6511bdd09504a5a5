"""One prepared run for a GPU machine (target: under 8 minutes on one H200), writing what the book renders.

1. every notebook with ``device=cuda`` (``attnzoo run``, in parallel worker processes; executed copies in
   build/notebooks_<device>/, one line per notebook in <out>/<device>_notebooks.json);
2. the module and model benchmarks (benchmarks/bench.py) in fp32, and in bf16 autocast with channels_last;
3. every SDPA-based attention module against bare ``scaled_dot_product_attention`` on the same shapes (bf16).

    PYTHONPATH=impl python benchmarks/gpu.py                      # on the GPU machine, from the repository root
    PYTHONPATH=impl python benchmarks/gpu.py --device cpu --smoke # the test suite's check that it runs end to end

``--smoke`` runs tiny sizes on a few modules and lists the notebook commands without executing them.

Time: ``--minutes`` (default 7.5) bounds the whole run. The notebooks come first; the benchmark steps then share
what is left (fp32 45 %, bf16 + channels_last 40 %, SDPA 15 %), each starting no new row past its share. Every
step resumes its JSON file (rows already measured with the same settings are kept), so running the script again
continues where the last run stopped; ``--skip-notebooks`` for such a second run. Each file's ``meta.complete``
says whether it covers every registered module and model.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def notebook_ids() -> list[str]:
    return sorted(p.stem for p in (ROOT / "book" / "notebooks").glob("*.ipynb"))


def run_notebooks(device: str, workers: int, smoke: bool, timeout: float = 240) -> list[dict]:
    """Execute every notebook with device=<device>, ``workers`` at a time; one status row per notebook."""
    out_dir = ROOT / "build" / f"notebooks_{device}"

    def one(nb_id: str) -> dict:
        cmd = [sys.executable, "-m", "attnzoo", "run", nb_id, "--device", device, "--output-dir", str(out_dir)]
        if smoke:
            return {"notebook": nb_id, "command": " ".join(cmd), "status": "not run (smoke)"}
        start = time.time()
        try:
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"notebook": nb_id, "status": "timeout", "seconds": round(time.time() - start, 1)}
        return {"notebook": nb_id, "status": "ok" if proc.returncode == 0 else "failed",
                "seconds": round(time.time() - start, 1), "tail": proc.stdout[-300:] + proc.stderr[-500:]
                if proc.returncode else ""}

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, notebook_ids()))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "book" / "benchmarks")
    parser.add_argument("--workers", type=int, default=8, help="notebooks executed in parallel")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--minutes", type=float, default=7.5, help="wall-time budget of the whole run")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--skip-notebooks", action="store_true")
    args = parser.parse_args(argv)
    dev, out = args.device, args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    deadline = time.time() + args.minutes * 60
    timings = {}
    common = ["--device", dev, "--reps", str(1 if args.smoke else args.reps), "--resume"]
    if args.smoke:
        common += ["--smoke", "--only", "se", "mhsa", "mobilenetv2_035", "condconv", "aff"]
    steps = [("fp32", 0.45, ["--kinds", "attention", "conv", "block", "model", "--out", str(out / f"{dev}_fp32.json")]),
             ("bf16_channels_last", 0.40, ["--kinds", "attention", "conv", "block", "model", "--amp", "bf16",
                                     "--channels-last", "--out", str(out / f"{dev}_bf16_cl.json")]),
             ("sdpa", 0.15, ["--kinds", "sdpa", "--amp", "bf16", "--out", str(out / f"{dev}_sdpa.json")])]
    if not args.skip_notebooks:
        start = time.time()
        rows = run_notebooks(dev, args.workers, args.smoke)
        (out / f"{dev}_notebooks.json").write_text(json.dumps(rows, indent=1) + "\n")
        timings["notebooks"] = round(time.time() - start, 1)
        print(f"notebooks: {sum(r['status'] == 'ok' for r in rows)}/{len(rows)} ok", flush=True)
    for i, (label, share, extra) in enumerate(steps):
        start = time.time()  # this step's share of the time left (a step that ends early leaves more to the next)
        share /= sum(sh for _, sh, _ in steps[i:])
        budget = [] if args.smoke else ["--minutes", f"{share * max(deadline - start, 0) / 60:.2f}"]
        complete = bench.main(common + extra + budget)["meta"]["complete"]
        timings[label] = round(time.time() - start, 1)
        print(f"{label}: {timings[label]} s, complete: {complete}", flush=True)
    print(json.dumps({"seconds": timings}))
    return timings


if __name__ == "__main__":
    main()
