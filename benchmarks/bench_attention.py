"""Benchmark every registered attention module: parameters, MACs, forward+backward time, and the ratio
against timm's implementation of the same mechanism, measured side by side (interleaved) in one run.

Run in an environment where timm imports (see benchmarks/README.md):

    PYTHONPATH=impl python benchmarks/bench_attention.py --device cpu --out book/benchmarks/results.json

Without timm the script still measures our modules and leaves the ratio column empty.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from attnzoo import create_attention, list_attention
from attnzoo.nbtools import count_macs, count_params
from attnzoo.registry import attention_entry

# Our registry name -> a function building timm's module for the same mechanism with the same settings.
def _timm(path: str, **kwargs):
    def build(channels: int, h: int, w: int):
        import importlib

        module_name, cls = path.rsplit(".", 1)
        return getattr(importlib.import_module(module_name), cls)(channels, **kwargs)
    return build


TIMM_EQUIVALENTS = {
    "se": _timm("timm.layers.squeeze_excite.SEModule", rd_ratio=1 / 16, rd_divisor=1),
    "eca": _timm("timm.layers.eca.EcaModule"),  # adaptive kernel size, gamma 2, b 1, as ours
    "cbam": _timm("timm.layers.cbam.CbamModule", rd_ratio=1 / 16, rd_divisor=1, mlp_bias=True),
    "gc": _timm("timm.layers.global_context.GlobalContext", fuse_add=True, fuse_scale=False, init_last_zero=True,
                rd_ratio=1 / 16, rd_divisor=1),
    "sk": lambda c, h, w: _timm("timm.layers.selective_kernel.SelectiveKernel", groups=32, split_input=False,
                                rd_channels=max(32, c // 16))(c, h, w),
    "ge_theta_minus": _timm("timm.layers.gather_excite.GatherExcite", extent=0, extra_params=False, use_mlp=False),
    "non_local": _timm("timm.layers.non_local_attn.NonLocalAttn", use_scale=False, rd_ratio=1 / 2, rd_divisor=1),
    "halo": _timm("timm.layers.halo_attn.HaloAttn", num_heads=8, block_size=8, halo_size=3),
    "coord_attn": _timm("timm.layers.coord_attn.CoordAttn", rd_ratio=1 / 32, rd_divisor=8),
}
SIZES = [(8, 64, 56, 56), (8, 256, 14, 14)]


def _step(module, x, kw):
    out = module(x, **kw)
    out.float().sum().backward()


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_side_by_side(modules, x, kw, device, reps):
    """Median seconds of forward+backward for each module, alternating between them every repetition."""
    for m in modules:
        for _ in range(2):
            _step(m, x, kw)
    times = [[] for _ in modules]
    for _ in range(reps):
        for i, m in enumerate(modules):
            _sync(device)
            t0 = time.perf_counter()
            _step(m, x, kw)
            _sync(device)
            times[i].append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


def make_input(name, n, c, h, w, device):
    if attention_entry(name).layout == "nlc":
        x = torch.randn(n, h * w, c, device=device)
        import inspect

        takes_hw = "hw" in inspect.signature(create_attention(name, c).forward).parameters
        return x, ({"hw": (h, w)} if takes_hw else {})
    return torch.randn(n, c, h, w, device=device), {}


def run(names, device, reps):
    try:
        import timm  # noqa: F401
        have_timm = True
    except Exception as exc:  # timm missing, or torchvision's operators failing to load
        print(f"timm unavailable ({type(exc).__name__}: {exc}); ratios left empty")
        have_timm = False
    rows = []
    for name in names:
        for n, c, h, w in SIZES:
            torch.manual_seed(0)
            try:
                ours = create_attention(name, c).to(device).train()
            except ValueError as exc:
                print(f"skip {name} at C={c}: {exc}")
                continue
            x, kw = make_input(name, n, c, h, w, device)
            x.requires_grad_(True)
            modules = [ours]
            ref = None
            if have_timm and name in TIMM_EQUIVALENTS and not kw:
                try:
                    ref = TIMM_EQUIVALENTS[name](c, h, w).to(device).train()
                    _step(ref, x, kw)  # timm's module may not support this size (e.g. halo needs H % 8 == 0)
                    modules.append(ref)
                except Exception as exc:
                    print(f"timm {name} at {n}x{c}x{h}x{w}: {type(exc).__name__}: {exc}".rstrip())
                    ref = None
            times = time_side_by_side(modules, x, kw, device, reps)
            row = {"module": name, "input": f"{n}x{c}x{h}x{w}", "params": count_params(ours),
                   "MACs": count_macs(ours, x.detach(), **kw), "ms": round(times[0] * 1e3, 3)}
            if ref is not None:
                row.update({"timm params": count_params(ref), "timm ms": round(times[1] * 1e3, 3),
                            "ratio": round(times[0] / times[1], 3)})
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--only", nargs="*", help="registry names (wildcards) to benchmark")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    device = torch.device(args.device)
    names = list_attention(args.only or "*")
    rows = run(names, device, args.reps)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        meta = {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
                "machine": platform.processor() or platform.machine(), "reps": args.reps,
                "cuda": torch.cuda.get_device_name() if device.type == "cuda" else None}
        try:
            import timm

            meta["timm"] = timm.__version__
        except Exception:
            meta["timm"] = None
        args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
