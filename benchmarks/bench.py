"""Benchmark every registered module and model: forward+backward time against a reference, side by side.

Each row times three slots interleaved in one run: every repetition runs ours, the reference, ours again (an A-B-A
design), so machine noise and slow drifts hit them alike. Per repetition, ours is the mean of its two runs around
the reference (a linear drift cancels); ``ms`` and ``ref ms`` are medians over repetitions, ``ratio`` is the median
of the per-repetition ratios ours / reference, and ``aa`` the median of ours (2nd run) / ours (1st run): the A/A
ratio of the module against itself, the noise floor of that row. ``saved MB`` (and ``ref saved MB``, ``mem ratio``)
is the activation memory one training forward saves for backward (``saved_bytes``): exact, so measured once.
References:

* attention: timm's module for the same mechanism with the same settings (TIMM_EQUIVALENTS), else a plain 3x3
  convolution C -> C on the same map (``conv3x3``: the ratio is the module's cost in units of one such conv);
* conv: ``nn.Conv2d`` of the same shape (in, out, kernel, stride, groups);
* block: a 3x3 convolution C -> C on the first input;
* model: its timm twin (``attnzoo.timm.list_timm_twins``), else the same ResNet without its attention / unit
  (ResNet variants), else our plain ResNet-50;
* sdpa (``--kinds sdpa``): every attention module that calls ``scaled_dot_product_attention`` against bare SDPA
  on the query/key/value shapes the module passes it.

Rows carry their settings and wall time; ``--resume`` keeps the rows of ``--out`` measured with the same settings
and times only the others, ``--minutes`` bounds one sitting, ``--plan`` lists what is left with a time estimate:
a complete run can be done in pieces (benchmarks/README.md).

    PYTHONPATH=impl python benchmarks/bench.py --device cpu --out book/benchmarks/cpu.json --resume
    PYTHONPATH=impl python benchmarks/bench.py --device cuda --amp bf16 --channels-last --out book/benchmarks/cuda_bf16.json
"""
from __future__ import annotations

import argparse
import importlib
import json
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from attnzoo import (create_attention, create_block, create_conv, create_model, list_attention, list_blocks,
                     list_convs, list_models)
from attnzoo.models.resnet import ResNet
from attnzoo.registry import model_entry
from attnzoo.timm import list_timm_twins


def _timm(path: str, **kwargs):
    def build(channels: int):
        module_name, cls = path.rsplit(".", 1)
        return getattr(importlib.import_module(module_name), cls)(channels, **kwargs)
    return build


# Our attention registry name -> timm's module for the same mechanism with the same settings.
TIMM_EQUIVALENTS = {
    "se": _timm("timm.layers.squeeze_excite.SEModule", rd_ratio=1 / 16, rd_divisor=1),
    "eca": _timm("timm.layers.eca.EcaModule"),  # adaptive kernel size, gamma 2, b 1, as ours
    "cbam": _timm("timm.layers.cbam.CbamModule", rd_ratio=1 / 16, rd_divisor=1, mlp_bias=True),
    "gc": _timm("timm.layers.global_context.GlobalContext", fuse_add=True, fuse_scale=False, init_last_zero=True,
                rd_ratio=1 / 16, rd_divisor=1),
    "sk": lambda c: _timm("timm.layers.selective_kernel.SelectiveKernel", groups=32, split_input=False,
                          rd_channels=max(32, c // 16))(c),
    "ge_theta_minus": _timm("timm.layers.gather_excite.GatherExcite", extent=0, extra_params=False, use_mlp=False),
    "non_local": _timm("timm.layers.non_local_attn.NonLocalAttn", use_scale=False, rd_ratio=1 / 2, rd_divisor=1),
    "halo": _timm("timm.layers.halo_attn.HaloAttn", num_heads=8, block_size=8, halo_size=3),
    "coord_attn": _timm("timm.layers.coord_attn.CoordAttn", rd_ratio=1 / 32, rd_divisor=8),
}
# (N, C, H, W) per kind; models get (N, 3, H, W). Small enough that a full CPU run ends in reasonable time.
SIZES = {"attention": [(8, 64, 56, 56), (8, 256, 14, 14)], "conv": [(8, 64, 28, 28)], "block": [(8, 64, 28, 28)],
         "model": [(2, 3, 64, 64)], "sdpa": [(8, 64, 28, 28)]}
SMOKE_SIZES = {"attention": [(2, 64, 8, 8)], "conv": [(2, 16, 8, 8)], "block": [(2, 64, 8, 8)],
               "model": [(2, 3, 32, 32)], "sdpa": [(2, 64, 8, 8)]}
NOT_ATTENTION = ("attn_layer", "attn_kwargs", "attn_site", "attn_stages", "attn_connect", "mid_layer", "conv_layer",
                 "fuse_layer", "fuse_stages", "block")


AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}  # --amp (and a row's settings["amp"]) -> autocast dtype

# How ``measure`` turns repetitions into ``ms``, ``ratio`` and ``aa`` (module docstring); rows measured otherwise
# (files without it: ours = the first slot only, medians of slots) are not resumed.
ESTIMATOR = "aba-paired"


@dataclass
class Case:
    kind: str
    name: str
    shape: tuple
    ours: nn.Module
    inputs: tuple
    ref: nn.Module | None = None
    ref_name: str = ""
    ref_inputs: tuple = ()
    notes: list[str] = field(default_factory=list)
    error: str = ""
    asked: tuple | None = None  # the planned shape, where the row was timed at another (``model_case``)


class BareSDPA(nn.Module):
    """scaled_dot_product_attention on fixed query/key/value tensors (the module's own shapes); input ignored."""

    def __init__(self, shapes, scale=None):
        super().__init__()
        self.qkv = nn.ParameterList(nn.Parameter(torch.randn(s)) for s in shapes)
        self.scale = scale

    def forward(self, x):
        return F.scaled_dot_product_attention(*self.qkv, scale=self.scale)


def conv3x3(c: int) -> nn.Module:
    return nn.Conv2d(c, c, 3, padding=1)


def _timm_model(name: str, size: int):
    import timm

    for extra in ({"img_size": size}, {}):
        try:
            return timm.create_model(name, num_classes=10, **extra)
        except TypeError:
            continue
    raise RuntimeError(f"timm could not build {name}")


def model_reference(name: str, size: int) -> tuple[nn.Module, str]:
    twin = list_timm_twins().get(name)
    if twin is not None:
        return _timm_model(twin, size), f"timm {twin}"
    entry = model_entry(name)
    if entry.builder is ResNet and any(k in entry.defaults for k in NOT_ATTENTION[:-1]):
        kwargs = {k: v for k, v in entry.defaults.items() if k not in NOT_ATTENTION[:-1]}
        return ResNet(num_classes=10, **kwargs), "same ResNet, plain"
    return create_model("resnet50", num_classes=10), "resnet50"


def model_case(name: str, shape: tuple, device, timm_ok: bool, fixed_size_retry: bool = True) -> Case:
    """Ours at ``shape`` against timm's twin (or a baseline). A twin that only takes the size it was configured
    for (timm's EfficientFormer: 224) gets one retry with both at that size; ``Case.asked`` keeps the planned
    shape. Otherwise a reference that fails leaves ours timed alone, with a note."""
    n, _, h, _ = shape
    x = torch.randn(*shape, device=device)
    try:  # at the benchmark's size where the model has one (as timm's twin below)
        ours = create_model(name, num_classes=10, img_size=h)
    except TypeError:
        ours = create_model(name, num_classes=10)
    case = Case("model", name, shape, ours, (x,), ref_inputs=(x,))
    if not timm_ok and list_timm_twins().get(name):
        return case
    try:
        case.ref, case.ref_name = model_reference(name, h)
        case.ref.to(device).eval()(x)
    except Exception as exc:  # noqa: BLE001
        note = f"reference: {type(exc).__name__}: {exc}"[:300]
        fixed = _twin_input_size(name)
        if fixed_size_retry and fixed is not None and fixed != shape[1:]:
            retry = model_case(name, (n, *fixed), device, timm_ok, fixed_size_retry=False)
            if retry.ref is not None:
                retry.asked = shape
                retry.notes.insert(0, f"timm's twin rejects {h}x{h} ({note}): both timed at its {fixed[1]}x{fixed[2]}")
                return retry
        case.ref = None
        case.notes.append(note)
    return case


def _twin_input_size(name: str) -> tuple | None:
    """(C, H, W) the timm twin of model ``name`` was configured for, if it has a twin."""
    twin = list_timm_twins().get(name)
    if twin is None:
        return None
    import timm

    return tuple(timm.get_pretrained_cfg(twin).input_size)


def _sdpa_shapes(module: nn.Module, x: torch.Tensor) -> list[tuple]:
    shapes, real = [], F.scaled_dot_product_attention

    def spy(q, k, v, *args, **kwargs):
        shapes.append((tuple(q.shape), tuple(k.shape), tuple(v.shape), kwargs.get("scale")))
        return real(q, k, v, *args, **kwargs)

    F.scaled_dot_product_attention = spy
    try:
        with torch.no_grad():
            module.eval()(x)
    finally:
        F.scaled_dot_product_attention = real
    return shapes


def row_key(kind: str, name: str, shape) -> tuple[str, str, str]:
    """What identifies a row within one set of settings: (kind, registry name, input shape as "NxCxHxW")."""
    return kind, name, shape if isinstance(shape, str) else "x".join(map(str, shape))


def key_of(row: dict) -> tuple[str, str, str]:
    """A measured row's key: the shape that was planned (``asked``) where it was timed at another."""
    return row_key(row["kind"], row["module"], row.get("asked", row["input"]))


def build_case(kind: str, name: str, shape: tuple, device, timm_ok: bool) -> Case:
    """The modules and inputs of one row (ours, the reference). Raises ValueError if ours rejects the size."""
    torch.manual_seed(0)
    n, c, h, w = shape
    x = torch.randn(*shape, device=device)
    if kind == "attention":
        case = Case(kind, name, shape, create_attention(name, c), (x,), conv3x3(c), "conv3x3", (x,))
        if timm_ok and name in TIMM_EQUIVALENTS:
            try:
                ref = TIMM_EQUIVALENTS[name](c).to(device)
                ref(x)  # timm's module may not support this size (HaloAttn needs H % 8 == 0)
                case.ref, case.ref_name = ref, "timm"
            except Exception as exc:  # noqa: BLE001
                case.notes.append(f"timm: {type(exc).__name__}: {exc}")
    elif kind == "conv":
        case = Case(kind, name, shape, create_conv(name, c, c, 3), (x,), nn.Conv2d(c, c, 3, padding=1),
                    "nn.Conv2d", (x,))
    elif kind == "block":
        block = create_block(name, c, c)
        inputs = (tuple(block.example_inputs(n, h, w, device=device)) if hasattr(block, "example_inputs")
                  else (x,) * _required_args(block))
        first = inputs[0][0] if isinstance(inputs[0], (list, tuple)) else inputs[0]  # pyramid levels: the first
        case = Case(kind, name, shape, block, inputs, conv3x3(first.shape[1]), "conv3x3", (first,))
    elif kind == "model":
        case = model_case(name, shape, device, timm_ok)
    else:  # sdpa
        module = create_attention(name, c).to(device)
        calls = _sdpa_shapes(module, x)
        if not calls:
            return Case(kind, name, shape, None, (), notes=["no scaled_dot_product_attention call"])
        q, k, v, scale = calls[0]
        case = Case(kind, name, shape, module, (x,), BareSDPA((q, k, v), scale), "bare SDPA", (x,))
        if len(calls) > 1:
            case.notes.append(f"{len(calls)} SDPA calls; the bare reference times the first")
    return case


def cases(kind: str, names: list[str], sizes, device, timm_ok: bool, skip=frozenset()):
    """Yield a Case per (name, size) not in ``skip`` (row keys; nothing is built for those). Modules are built with
    ``device`` as the default device (a GPU initialises parameters far faster than the CPU; where that fails they
    are built on the CPU and moved). A module that rejects the size gives a Case without modules and with the
    reason (a skipped row, not retried by --resume); one that fails to build, a Case with its error."""
    for name in names:
        for shape in sizes[kind]:
            if row_key(kind, name, shape) in skip:
                continue
            try:
                try:
                    with torch.device(device):
                        case = build_case(kind, name, shape, device, timm_ok)
                except ValueError:
                    raise
                except Exception:  # noqa: BLE001
                    if torch.device(device).type == "cpu":
                        raise
                    case = build_case(kind, name, shape, device, timm_ok)
            except ValueError as exc:
                print(f"skip {kind} {name} at {shape}: {exc}", flush=True)
                case = Case(kind, name, shape, None, (), notes=[f"{exc}"[:300]])
            except Exception as exc:  # noqa: BLE001  (one failing module must not stop a long run)
                case = Case(kind, name, shape, None, (), error=f"{type(exc).__name__}: {exc}"[:300])
            yield case


def _required_args(block: nn.Module) -> int:
    import inspect

    return sum(1 for p in inspect.signature(block.forward).parameters.values()
               if p.default is p.empty and p.kind is p.POSITIONAL_OR_KEYWORD)


def _leaves(t) -> list[torch.Tensor]:
    """The tensors of a (nested) tuple or list of inputs (pyramid levels), in order."""
    return [u for v in t for u in _leaves(v)] if isinstance(t, (list, tuple)) else [t]


def _forward(module, inputs, amp):
    with torch.autocast(_leaves(inputs)[0].device.type, dtype=amp, enabled=amp is not None):
        return module(*inputs)


def _step(module, inputs, amp):
    out = _forward(module, inputs, amp)
    out = out[0] if isinstance(out, (tuple, list)) else out
    out.float().sum().backward()


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_interleaved(slots, device, reps: int, warmup: int = 1, amp=None) -> list[list[float]]:
    """Seconds of forward+backward per (module, inputs) slot and repetition, alternating between the slots every
    repetition: ``times[slot][rep]``."""
    for module, inputs in slots:
        for _ in range(warmup):
            _step(module, inputs, amp)
    times = [[] for _ in slots]
    for _ in range(reps):
        for i, (module, inputs) in enumerate(slots):
            _sync(device)
            t0 = time.perf_counter()
            _step(module, inputs, amp)
            _sync(device)
            times[i].append(time.perf_counter() - t0)
    return times


def to_channels_last(module: nn.Module) -> nn.Module:
    """channels_last for every 4-D parameter and buffer. ``module.to(memory_format=torch.channels_last)`` would do
    it, but it raises for 5-D tensors (CondConv's expert weights), which keep their layout here."""
    for t in list(module.parameters()) + list(module.buffers()):
        if t.dim() == 4:
            t.data = t.data.contiguous(memory_format=torch.channels_last)
    return module


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def prepare(module: nn.Module, inputs, device, channels_last: bool = False):
    """The module in train mode on ``device`` and its inputs as fresh leaves that need a gradient."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    module = module.to(device).train()
    if channels_last:
        to_channels_last(module)

    def ready(t):  # lists (pyramid levels) element by element
        if isinstance(t, (list, tuple)):
            return type(t)(ready(u) for u in t)
        return (t.to(memory_format=fmt) if t.dim() == 4 else t).detach().requires_grad_(True)

    return module, tuple(ready(t) for t in inputs)


def saved_bytes(module: nn.Module, inputs, amp=None) -> int:
    """Bytes of the distinct storages one training forward saves for its backward: the activation memory a
    training step holds at its peak, without the parameters, buffers and inputs (which exist anyway). Exact and
    the same on every device, so ours / reference needs no repetitions."""
    own = {t.untyped_storage().data_ptr() for t in [*module.parameters(), *module.buffers(), *_leaves(inputs)]}
    saved: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in own:
            saved[storage.data_ptr()] = storage.nbytes()
        return t.detach()  # not t itself: an op's saved output would hold its own graph (a leak C++ GC can't see)

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = _forward(module, inputs, amp)
    del out  # frees the graph and what it saved
    return sum(saved.values())


def measure(case: Case, device, reps: int, amp=None, channels_last: bool = False) -> dict:
    ours = prepare(case.ours, case.inputs, device, channels_last)
    ref = prepare(case.ref, case.ref_inputs, device, channels_last) if case.ref is not None else None
    slots = [ours] + ([ref] if ref is not None else []) + [ours]
    times = time_interleaved(slots, device, reps, amp=amp)
    before, after = times[0], times[-1]
    ours_t = [(a + b) / 2 for a, b in zip(before, after)]
    median = statistics.median
    row = {"kind": case.kind, "module": case.name, "input": "x".join(map(str, case.shape)),
           **({"asked": "x".join(map(str, case.asked))} if case.asked else {}),
           "params": _params(case.ours), "ms": round(median(ours_t) * 1e3, 3),
           "aa": round(median(b / a for a, b in zip(before, after)), 3)}
    if case.ref is not None:
        row.update({"ref": case.ref_name, "ref params": _params(case.ref), "ref ms": round(median(times[1]) * 1e3, 3),
                    "ratio": round(median(o / r for o, r in zip(ours_t, times[1])), 3)})
    row.update(memory_columns(ours, ref, amp))
    if case.notes:
        row["notes"] = "; ".join(case.notes)
    return row


def memory_columns(ours, ref, amp=None) -> dict:
    """``saved MB`` of ours (``saved_bytes``), and with a reference its ``ref saved MB`` and ``mem ratio``."""
    mine = saved_bytes(*ours, amp=amp)
    cols = {"saved MB": round(mine / 2**20, 3)}
    if ref is not None:
        theirs = saved_bytes(*ref, amp=amp)
        cols["ref saved MB"] = round(theirs / 2**20, 3)
        if theirs:
            cols["mem ratio"] = round(mine / theirs, 3)
    return cols


def add_memory(path: Path, device) -> list[dict]:
    """Fill the memory columns of the rows of ``path`` measured before they existed (timed rows without
    ``saved MB``), rebuilding each row's modules with the row's settings; nothing is re-timed. The file is rewritten
    after every row."""
    data = json.loads(path.read_text())
    todo = [r for r in data["rows"] if "ms" in r and "saved MB" not in r]
    for row in todo:
        settings = row.get("settings", {})
        amp = AMP_DTYPES.get(settings.get("amp"))
        shape = tuple(int(n) for n in row.get("asked", row["input"]).split("x"))
        with torch.device(device):
            case = build_case(row["kind"], row["module"], shape, device, timm_ok=True)
        if case.ref is not None and "ref" in row and case.ref_name != row["ref"]:
            raise RuntimeError(f"{path}: row {row['module']} was timed against {row.get('ref')!r}, "
                               f"now built against {case.ref_name!r}")
        cl = settings.get("channels_last", False)
        ours = prepare(case.ours, case.inputs, device, cl)
        ref = prepare(case.ref, case.ref_inputs, device, cl) if case.ref is not None and "ref" in row else None
        row.update(memory_columns(ours, ref, amp))
        data["summary"] = summary(data["rows"])
        path.write_text(json.dumps(data, indent=1) + "\n")
        print(row["module"], row["input"], {k: row[k] for k in ("saved MB", "ref saved MB", "mem ratio") if k in row},
              flush=True)
    return todo


def select(kind: str, only, twins: bool = False) -> list[str]:
    """Registry names of ``kind`` matching ``only`` (wildcards; all if empty); ``twins``: models with a timm twin."""
    listing = {"attention": list_attention, "conv": list_convs, "block": list_blocks, "model": list_models,
               "sdpa": list_attention}
    names = sorted({n for pattern in (only or ["*"]) for n in listing[kind](pattern)})
    if twins and kind == "model":
        names = [n for n in names if n in list_timm_twins()]
    return names


def planned(kinds, only, smoke=False, twins=False) -> list[tuple[str, str, str]]:
    """Row keys a run would time (before a module rejects a size: such rows are skipped when run)."""
    sizes = SMOKE_SIZES if smoke else SIZES
    return [row_key(kind, name, shape) for kind in kinds for name in select(kind, only, twins) for shape in sizes[kind]]


def run(kinds, only, device, reps, amp=None, channels_last=False, smoke=False, on_row=None, skip=frozenset(),
        twins=False, deadline=None, settings=None) -> list[dict]:
    try:
        import timm  # noqa: F401
        timm_ok = True
    except Exception as exc:  # noqa: BLE001  (timm missing, or torchvision's operators failing to load)
        print(f"timm unavailable ({type(exc).__name__}: {exc}); timm references left out")
        timm_ok = False
    sizes = SMOKE_SIZES if smoke else SIZES
    rows = []
    for kind in kinds:
        start = time.time()
        for case in cases(kind, select(kind, only, twins), sizes, device, timm_ok, skip):
            if deadline is not None and time.time() > deadline:
                print("time budget spent: stopping (rerun with --resume to continue)", flush=True)
                return rows
            try:
                if case.error:
                    raise RuntimeError(f"building: {case.error}")
                row = (measure(case, device, reps, amp, channels_last) if case.ours is not None else
                       {"kind": kind, "module": case.name, "input": "x".join(map(str, case.shape)),
                        "skipped": case.notes[0]})
            except Exception as exc:  # noqa: BLE001  (one failing module must not stop a long run)
                row = {"kind": kind, "module": case.name, "input": "x".join(map(str, case.shape)),
                       "error": f"{type(exc).__name__}: {exc}"[:300]}
            row["seconds"] = round(time.time() - start, 2)  # wall time of the row: building, warm-up, timing
            if settings:
                row["settings"] = settings
            start = time.time()
            rows.append(row)
            print(json.dumps(row), flush=True)
            if on_row is not None:
                on_row(rows)
    return rows


def summary(rows: list[dict]) -> dict:
    """Median ours/timm ratio, and the rows slower than timm by more than 5 % beyond their own A/A noise; the
    median memory ratio and the rows that save over 2 % more activation memory than timm's."""
    timm_rows = [r for r in rows if str(r.get("ref", "")).startswith("timm")]
    aa = [abs(r["aa"] - 1) for r in rows if "aa" in r]
    slow = [f"{r['module']} {r['input']}" for r in timm_rows if r["ratio"] > 1.05 + abs(r["aa"] - 1)]
    mem = [r["mem ratio"] for r in timm_rows if "mem ratio" in r]
    return {"timm rows": len(timm_rows),
            "median ratio vs timm": round(statistics.median(r["ratio"] for r in timm_rows), 3) if timm_rows else None,
            "slower than timm beyond noise": slow,
            "median |A/A - 1|": round(statistics.median(aa), 3) if aa else None,
            "median saved-memory ratio vs timm": round(statistics.median(mem), 3) if mem else None,
            "more memory than timm (> 2 %)": [f"{r['module']} {r['input']}" for r in timm_rows
                                              if r.get("mem ratio", 0) > 1.02]}


def settings_of(args, device) -> dict:
    """The settings a row's numbers depend on; --resume keeps only rows measured with the same ones."""
    return {"device": str(device), "amp": args.amp, "channels_last": args.channels_last, "reps": args.reps,
            "threads": torch.get_num_threads(), "smoke": args.smoke, "estimator": ESTIMATOR}


def estimate(previous: list[dict], todo: list[tuple], reps: int) -> dict:
    """Seconds the rows still to run will take, from the rows already measured (per kind: the mean wall time of a
    row, scaled to ``reps``); kinds without a measured row are left out of the total and listed."""
    per_kind: dict[str, list[float]] = {}
    for r in previous:
        if "seconds" in r and "ms" in r:
            ms = r["ms"] * 2 + r.get("ref ms", 0)  # one repetition: ours twice, the reference once
            fixed = max(r["seconds"] - ms / 1e3 * (r["settings"]["reps"] + 1), 0)  # building, first calls
            per_kind.setdefault(r["kind"], []).append(fixed + ms / 1e3 * (reps + 1))
    left = {}
    for kind, *_ in todo:
        left[kind] = left.get(kind, 0) + 1
    seconds = {k: round(n * statistics.mean(per_kind[k])) for k, n in left.items() if k in per_kind}
    return {"rows left": left, "seconds by kind": seconds, "seconds": sum(seconds.values()),
            "unestimated kinds": sorted(set(left) - set(per_kind))}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--kinds", nargs="+", default=["attention", "conv", "block", "model"],
                        choices=["attention", "conv", "block", "model", "sdpa"])
    parser.add_argument("--only", nargs="*", help="registry names (wildcards)")
    parser.add_argument("--twins", action="store_true", help="models: only those with a timm twin")
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--amp", choices=["bf16", "fp16"], help="run under autocast with this dtype")
    parser.add_argument("--channels-last", action="store_true", help="channels_last inputs and weights")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (tests)")
    parser.add_argument("--out", type=Path, help="write the results as JSON here (after every row)")
    parser.add_argument("--resume", action="store_true",
                        help="keep the rows already in --out that were measured with the same settings (errors are "
                             "retried) and time only the others: a long run can be done in pieces")
    parser.add_argument("--minutes", type=float, help="start no new row after this many minutes (then --resume)")
    parser.add_argument("--add-memory", action="store_true",
                        help="time nothing: fill the memory columns of the rows of --out that lack them")
    parser.add_argument("--plan", action="store_true",
                        help="time nothing: list the rows still to run and estimate their wall time from --out")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    amp = AMP_DTYPES.get(args.amp)
    settings = settings_of(args, device)
    if args.add_memory:
        if not (args.out and args.out.exists()):
            parser.error("--add-memory needs an existing --out file")
        return add_memory(args.out, device)
    start = time.time()
    previous = []
    if (args.resume or args.plan) and args.out and args.out.exists():
        previous = [r for r in json.loads(args.out.read_text())["rows"]
                    if r.get("settings") == settings and "error" not in r]
    done = {key_of(r) for r in previous}
    plan = planned(args.kinds, args.only, args.smoke, args.twins)
    todo = [key for key in plan if key not in done]
    if args.plan:
        est = estimate(previous, todo, args.reps)
        print(json.dumps({"rows planned": len(plan), "rows done": len(plan) - len(todo), **est}, indent=1))
        return est

    def write(rows, complete=False):  # after every row: an interrupted run keeps what it measured
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(result(rows, complete), indent=1) + "\n")

    def result(rows, complete):
        rows = previous + rows
        meta = {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
                "machine": platform.processor() or platform.machine(), "reps": args.reps, "kinds": args.kinds,
                "only": args.only, "twins": args.twins, "amp": args.amp, "channels_last": args.channels_last,
                "complete": complete, "seconds": round(sum(r.get("seconds", 0) for r in rows), 1),
                "timm": getattr(sys.modules.get("timm"), "__version__", None),
                "cuda": torch.cuda.get_device_name() if device.type == "cuda" else None}
        return {"meta": meta, "summary": summary(rows), "rows": rows}

    deadline = start + args.minutes * 60 if args.minutes else None
    rows = run(args.kinds, args.only, device, args.reps, amp, args.channels_last, args.smoke, on_row=write,
               skip=done, twins=args.twins, deadline=deadline, settings=settings)
    measured = {key_of(r) for r in previous + rows if "error" not in r}
    complete = set(plan) <= measured  # every planned row timed, or skipped as its module rejects the size
    write(rows, complete=complete)
    print(json.dumps(summary(previous + rows)))
    print(f"{len(measured)} rows in {args.out or 'memory'}; complete: {complete}")
    return result(rows, complete)


if __name__ == "__main__":
    main()
