"""Run records: one JSON file per finished run, and their aggregation over seeds (``attnzoo results``).

A record holds what the run was (model, modules, dataset, recipe, seed), what it reached (final and best top-1,
top-5), what it cost (parameters, MACs per image, training images/s, peak memory, wall time) and where it ran
(device string, processes, torch version), plus its per-epoch history.
"""
from __future__ import annotations

import json
import math
import platform
import statistics
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch

FORMAT = 1
# Runs that differ only in their seed: averaged into one row.
GROUP_KEYS = ("dataset", "model", "attn", "conv", "model_kwargs", "epochs", "image_size", "batch_size", "optimizer",
              "lr", "label_smoothing", "amp")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def hardware(device: torch.device, ctx) -> str:
    """e.g. '2 x NVIDIA H100 80GB HBM3 (CUDA 12.8)' or 'AMD EPYC 7B13, 2 threads'."""
    many = f"{ctx.world_size} x " if ctx.world_size > 1 else ""
    if device.type == "cuda":
        return f"{many}{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    return f"{many}{_cpu_name()}, {torch.get_num_threads()} thread(s)"


def peak_memory_mib(device: torch.device) -> tuple[float, str]:
    """(MiB, what it measures) for this process: CUDA's peak allocation, or the process's peak RSS on a CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "peak CUDA memory allocated per process"
    try:
        import resource

        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return (kib / 1024 if sys.platform != "darwin" else kib / 2**20), "peak resident memory per process"
    except ImportError:
        return float("nan"), "not measured"


def make_record(cfg, run, data, image_size, recipe, params, macs, ctx, device, dtype, channels_last, history,
                images_per_s: float, wall_time_s: float, peak_memory: tuple[float, str]) -> dict:
    from .. import __version__

    last = history[-1]
    return {
        "format": FORMAT, "run": run, "model": cfg.model, "attn": cfg.attn, "conv": cfg.conv,
        "model_kwargs": cfg.model_kwargs, "dataset": data.name, "num_classes": data.num_classes,
        "train_images": len(data.train), "test_images": last["test_images"], "image_size": image_size,
        "seed": cfg.seed, "epochs": cfg.epochs, "batch_size": cfg.batch_size, **recipe,
        "warmup_epochs": cfg.warmup_epochs, "label_smoothing": cfg.smoothing,
        "amp": str(dtype).removeprefix("torch.") if dtype else None, "compile": cfg.compile,
        "channels_last": channels_last,
        "top1": last["top1"], "top5": last["top5"], "best_top1": max(h["top1"] for h in history),
        "train_loss": last["train_loss"], "params": params, "macs": macs, "images_per_s": images_per_s,
        "peak_memory_mib": peak_memory[0], "peak_memory_kind": peak_memory[1], "wall_time_s": wall_time_s,
        "device": hardware(device, ctx), "world_size": ctx.world_size, "torch": torch.__version__,
        "attnzoo": __version__, "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "history": history,
    }


def write_record(record: dict, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{record['run']}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=1, allow_nan=True) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def load_records(folder: Path) -> tuple[list[dict], list[str]]:
    """Every record in ``folder`` (not its subfolders), and a message for each file that is not one."""
    records, problems = [], []
    for path in sorted(Path(folder).glob("*.json")):
        try:
            rec = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            problems.append(f"{path}: not a JSON record ({exc})")
            continue
        if not isinstance(rec, dict) or rec.get("format") != FORMAT or "top1" not in rec:
            problems.append(f"{path}: not an attnzoo train record")
            continue
        records.append(rec)
    return records, problems


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def aggregate(records: list[dict]) -> list[dict]:
    """One row per recipe (``GROUP_KEYS``): mean and sample standard deviation over its seeds."""
    groups: dict[str, list[dict]] = {}
    for rec in records:
        groups.setdefault(json.dumps([rec.get(k) for k in GROUP_KEYS], sort_keys=True), []).append(rec)
    rows = []
    for recs in groups.values():
        first = recs[0]
        row = {k: first.get(k) for k in GROUP_KEYS}
        row["seeds"] = sorted(r["seed"] for r in recs)
        for key in ("top1", "top5", "images_per_s", "wall_time_s"):
            row[key], row[f"{key}_std"] = _mean_std([r[key] for r in recs])
        row["params"], row["macs"] = first["params"], first["macs"]
        row["devices"] = sorted({r["device"] for r in recs})
        row["module"] = " + ".join(m for m in (first.get("attn"), first.get("conv")) if m) or "none"
        rows.append(row)
    return sorted(rows, key=lambda r: (r["dataset"], r["model"], r["module"] != "none", -r["top1"]))


def rate(images_per_s: float) -> str:
    """Throughput with no more digits than it deserves: 12345, 123, 1.23, 0.0123."""
    return f"{images_per_s:.0f}" if images_per_s >= 100 else f"{images_per_s:.3g}"


def _pm(mean: float, std: float, n: int, digits: int = 2) -> str:
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if n > 1 else f"{mean:.{digits}f}"


def table_rows(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    header = ["dataset", "model", "module", "epochs", "seeds", "top-1 (%)", "top-5 (%)", "params (M)", "GMACs",
              "images/s", "time (min)", "device"]
    body = []
    for r in rows:
        n = len(r["seeds"])
        macs = "–" if r["macs"] is None else f"{r['macs'] / 1e9:.3f}"
        ips = "–" if math.isnan(r["images_per_s"]) else rate(r["images_per_s"])
        body.append([r["dataset"], r["model"], r["module"], str(r["epochs"]), str(n), _pm(r["top1"], r["top1_std"], n),
                     _pm(r["top5"], r["top5_std"], n), f"{r['params'] / 1e6:.2f}", macs, ips,
                     f"{r['wall_time_s'] / 60:.1f}", "; ".join(r["devices"])])
    return header, body


def markdown_table(rows: list[dict]) -> str:
    header, body = table_rows(rows)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines) + "\n"


def text_table(rows: list[dict]) -> str:
    header, body = table_rows(rows)
    widths = [max(len(c) for c in col) for col in zip(header, *body)]
    fmt = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([fmt(header), fmt(["-" * w for w in widths]), *map(fmt, body)]) + "\n"
