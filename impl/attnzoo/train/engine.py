"""The training loop of ``attnzoo train``: one epoch after another, a checkpoint after each, a record at the end.

Recipe (defaults): SGD with momentum 0.9, weight decay 5e-4 and lr 0.1 x B/128 for networks with BatchNorm
(the usual CIFAR ResNet recipe); AdamW (lr 5e-4 x B/512, weight decay 0.05, none on norms and biases) for the
others (transformers, MLPs, ConvNeXt, PoolFormer). Cosine decay to 0 per step after an optional linear warm-up;
optional label smoothing; mixed precision (bfloat16, or float16 with a GradScaler where bfloat16 is missing),
channels_last and ``torch.compile`` on request. Every random draw derives from ``seed`` (initialisation, the
sampler's shuffle per epoch, the crops per epoch and rank), and checkpoints keep the RNG state, so on the CPU a run
stopped and resumed ends with the same weights, bit for bit, as one run straight through.
"""
from __future__ import annotations

import math
import random
import statistics
import time
from pathlib import Path

import torch
import torch.nn as nn
from torch.utils.data import Subset

from . import distributed as D
from .config import TrainConfig, build_model, default_image_size, measure_model, model_kwargs
from .data import eval_indices, load_data, make_loader, prepare, shard
from .errors import TrainError
from .records import hardware, make_record, peak_memory_mib, rate, write_record


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)   # every device


def epoch_generator(seed: int, epoch: int, rank: int) -> torch.Generator:
    """The augmentation stream of one epoch on one rank, independent of anything drawn before it."""
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch) * 1_009 + rank)


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> tuple[torch.optim.Optimizer, dict]:
    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    name = cfg.opt if cfg.opt != "auto" else ("sgd" if has_bn else "adamw")
    if name == "sgd":
        lr = cfg.lr or 0.1 * cfg.batch_size / 128
        wd = 5e-4 if cfg.weight_decay is None else cfg.weight_decay
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=cfg.momentum, weight_decay=wd)
    else:
        lr = cfg.lr or 5e-4 * cfg.batch_size / 512
        wd = 0.05 if cfg.weight_decay is None else cfg.weight_decay
        decay = [p for p in model.parameters() if p.ndim > 1]
        rest = [p for p in model.parameters() if p.ndim <= 1]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": wd}, {"params": rest, "weight_decay": 0.0}],
                                lr=lr)
    for group in opt.param_groups:
        group["base_lr"] = lr
    return opt, {"optimizer": name, "lr": lr, "weight_decay": wd}


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay from 1 to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def amp_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    if not cfg.amp:
        return None
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def checkpoint_path(out: Path, run: str) -> Path:
    return out / "checkpoints" / f"{run}.pt"


def _rng_state(device: torch.device) -> dict:
    state = {"cpu": torch.get_rng_state(), "python": random.getstate()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    random.setstate(state["python"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _load_checkpoint(path: Path, cfg: TrainConfig, model, opt, scaler, device) -> dict:
    ckpt = torch.load(path, map_location="cpu", weights_only=False)   # RNG states must stay CPU tensors
    saved = ckpt["config"]
    diff = {k: (saved.get(k), v) for k, v in cfg.result_options().items() if saved.get(k) != v}
    if diff:
        raise TrainError(f"--resume: {path} was written with other options: "
                         + ", ".join(f"{k}={old!r} (now {new!r})" for k, (old, new) in diff.items()))
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["optimizer"])
    scaler.load_state_dict(ckpt["scaler"])
    _set_rng_state(ckpt["rng"], device)
    return ckpt["state"]


@torch.no_grad()
def evaluate(net: nn.Module, data, cfg: TrainConfig, ctx: D.Dist, device, image_size: int, dtype,
             channels_last: bool) -> dict:
    """Top-1/top-5 accuracy (%) and loss on every test image exactly once, summed over the ranks."""
    net.eval()
    subset = Subset(data.test, eval_indices(len(data.test), ctx.rank, ctx.world_size))
    loader = make_loader(data, subset, max(1, 2 * cfg.batch_size // ctx.world_size), None, cfg.workers)
    k = min(5, data.num_classes)
    totals = torch.zeros(4, dtype=torch.float64, device=device)   # loss sum, top-1, top-5, images
    for images, labels in loader:
        x = prepare(data, images, device, image_size, False, channels_last=channels_last)
        y = labels.to(device)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            logits = net(x)
        top = logits.float().topk(k, dim=1).indices
        hits = top == y[:, None]
        totals += torch.stack([nn.functional.cross_entropy(logits.float(), y, reduction="sum"),
                               hits[:, 0].sum(), hits.any(1).sum(), torch.tensor(len(y), device=device)]).double()
    loss, top1, top5, n = D.all_sum(totals.tolist(), device, ctx)
    return {"test_loss": loss / n, "top1": 100 * top1 / n, "top5": 100 * top5 / n, "test_images": int(n)}


def train_epoch(net, data, cfg, ctx, device, image_size, opt, scaler, criterion, dtype, channels_last, epoch,
                state, steps_per_epoch) -> dict:
    from tqdm import tqdm

    net.train()
    sampler = shard(data.train, ctx.rank, ctx.world_size, cfg.seed, shuffle=True)
    sampler.set_epoch(epoch)
    gen = epoch_generator(cfg.seed, epoch, ctx.rank)
    loader = make_loader(data, data.train, cfg.batch_size // ctx.world_size, sampler, cfg.workers, gen,
                         drop_last=True)
    total, warmup = cfg.epochs * steps_per_epoch, cfg.warmup_epochs * steps_per_epoch
    sums = torch.zeros(3, dtype=torch.float64, device=device)    # loss sum, correct, images
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, dynamic_ncols=True,
               disable=not (ctx.is_main and cfg.progress))
    for i, (images, labels) in enumerate(bar):
        x = prepare(data, images, device, image_size, True, gen, channels_last)
        y = labels.to(device, non_blocking=True)
        factor = lr_factor(state["step"], total, warmup)
        for group in opt.param_groups:
            group["lr"] = group["base_lr"] * factor
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            logits = net(x)
            loss = criterion(logits.float(), y)
        if not torch.isfinite(loss):
            raise TrainError(f"the loss became {loss.item()} at epoch {epoch + 1}, step {i + 1}: lower --lr")
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        state["step"] += 1
        sums += torch.stack([loss.detach() * len(y), (logits.argmax(1) == y).sum(),
                             torch.tensor(len(y), device=device)]).double()
        if ctx.is_main and cfg.progress and (i % 10 == 0 or i == len(loader) - 1):
            loss_sum, correct, seen = sums.tolist()
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{100 * correct / seen:.1f}%")
    loss_sum, correct, seen = D.all_sum(sums.tolist(), device, ctx)
    return {"train_loss": loss_sum / max(seen, 1), "train_acc": 100 * correct / max(seen, 1), "train_images": int(seen)}


def train(cfg: TrainConfig) -> dict | None:
    """Train and evaluate; returns the run's record (None when ``stop_after`` stopped it before the end).

    Started by torchrun, every process calls this; rank 0 alone prints and writes.
    """
    cfg.check()
    ctx, device = D.init(D.pick_device(cfg.device))
    try:
        return _train(cfg, ctx, device)
    finally:
        D.shutdown(ctx)


def _train(cfg: TrainConfig, ctx: D.Dist, device: torch.device) -> dict | None:
    if cfg.batch_size % ctx.world_size:
        raise TrainError(f"--batch-size {cfg.batch_size} (global) must be divisible by the {ctx.world_size} processes")
    model_kwargs(cfg, num_classes=1)        # unknown names and missing slots fail before the data is read
    image_size = default_image_size(cfg)
    if cfg.download and ctx.is_main:
        load_data(cfg.data, cfg.data_dir, image_size, download=True)
    D.barrier(ctx)
    data = load_data(cfg.data, cfg.data_dir, image_size)
    per_rank = cfg.batch_size // ctx.world_size
    steps_per_epoch = len(data.train) // ctx.world_size // per_rank
    if steps_per_epoch == 0:
        raise TrainError(f"{len(data.train)} training images are fewer than one batch of {cfg.batch_size}")
    params, macs = measure_model(cfg, data.num_classes, image_size)     # also checks that the model runs
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    seed_everything(cfg.seed)
    model = build_model(cfg, data.num_classes).to(device)
    channels_last = cfg.channels_last if cfg.channels_last is not None else device.type == "cuda"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt, recipe = make_optimizer(model, cfg)
    dtype = amp_dtype(cfg, device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.smoothing)

    out = Path(cfg.out)
    run = cfg.run_name(data.name)
    ckpt = checkpoint_path(out, run)
    state = {"epoch": 0, "step": 0, "history": [], "wall_time_s": 0.0}
    if cfg.resume and ckpt.is_file():
        state = _load_checkpoint(ckpt, cfg, model, opt, scaler, device)
        _say(ctx, f"resuming {run} after epoch {state['epoch']} from {ckpt}")
    elif cfg.resume:
        _say(ctx, f"no checkpoint at {ckpt}: starting {run} from epoch 1")
    if state["epoch"] >= cfg.epochs:
        _say(ctx, f"{run} already finished ({cfg.epochs} epochs)")

    core = torch.compile(model) if cfg.compile else model
    net = nn.parallel.DistributedDataParallel(core, device_ids=[device] if device.type == "cuda" else None) \
        if ctx.active else core
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    _say(ctx, f"{run}: {params / 1e6:.2f} M parameters, {macs / 1e9:.3f} GMACs at {image_size}x{image_size}, "
         f"{recipe['optimizer']} lr {recipe['lr']:g}, {ctx.world_size} process(es) on {hardware(device, ctx)}")
    done_now = 0
    while state["epoch"] < cfg.epochs and (cfg.stop_after is None or done_now < cfg.stop_after):
        epoch, start = state["epoch"], time.perf_counter()
        stats = train_epoch(net, data, cfg, ctx, device, image_size, opt, scaler, criterion, dtype, channels_last,
                            epoch, state, steps_per_epoch)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        train_s = time.perf_counter() - start
        stats.update(evaluate(core, data, cfg, ctx, device, image_size, dtype, channels_last))
        stats.update(epoch=epoch + 1, train_time_s=train_s, images_per_s=stats["train_images"] / train_s)
        state["history"].append(stats)
        state["epoch"], done_now = epoch + 1, done_now + 1
        state["wall_time_s"] += time.perf_counter() - start
        _say(ctx, f"epoch {epoch + 1}/{cfg.epochs}: train loss {stats['train_loss']:.4f} acc {stats['train_acc']:.2f}% "
             f"| test top-1 {stats['top1']:.2f}% top-5 {stats['top5']:.2f}% | {rate(stats['images_per_s'])} img/s")
        if ctx.is_main:
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"config": cfg.result_options(), "model": model.state_dict(), "optimizer": opt.state_dict(),
                        "scaler": scaler.state_dict(), "rng": _rng_state(device), "state": state}, ckpt)
        D.barrier(ctx)
    if state["epoch"] < cfg.epochs:
        _say(ctx, f"stopped after epoch {state['epoch']} of {cfg.epochs}; continue with --resume")
        return None
    hist = state["history"]
    record = make_record(cfg, run, data, image_size, recipe, params, macs, ctx, device, dtype, channels_last, hist,
                         images_per_s=statistics.median(h["images_per_s"] for h in hist),
                         wall_time_s=state["wall_time_s"], peak_memory=peak_memory_mib(device))
    if ctx.is_main:
        path = write_record(record, out)
        _say(ctx, f"top-1 {record['top1']:.2f}%, top-5 {record['top5']:.2f}%: record written to {path}")
    return record


def _say(ctx: D.Dist, message: str) -> None:
    if ctx.is_main:
        print(message, flush=True)
