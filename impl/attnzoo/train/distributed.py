"""PyTorch DDP for ``attnzoo train``: one process per device, started by ``torchrun``.

``torchrun --nproc_per_node=K -m attnzoo train ...`` sets RANK, WORLD_SIZE and LOCAL_RANK; we then join the process
group (nccl on GPUs, gloo on CPUs), each rank takes a DistributedSampler's share of every epoch, and only rank 0
shows progress, prints and writes checkpoints and records. Without those variables everything runs in one process.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .errors import TrainError


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def pick_device(name: str | None) -> torch.device:
    """"cpu", "cuda" or None (cuda if available); a clear error if CUDA is asked for but absent."""
    name = name or ("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TrainError(f"--device {name} was requested but CUDA is not available on this machine")
    if name.split(":")[0] not in ("cpu", "cuda"):
        raise TrainError(f"--device must be cpu or cuda, got {name!r}")
    return torch.device(name)


def init(device: torch.device) -> tuple[Dist, torch.device]:
    """Join the process group if started by torchrun; returns this process's rank info and device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(), device
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise TrainError(f"LOCAL_RANK {local} but only {torch.cuda.device_count()} GPU(s) are visible")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(rank, world, local), device


def all_sum(values: list[float], device: torch.device, ctx: Dist) -> list[float]:
    """Sum a few numbers over all ranks (exact for counts, float64)."""
    if not ctx.active:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def barrier(ctx: Dist) -> None:
    if ctx.active:
        dist.barrier()


def shutdown(ctx: Dist) -> None:
    if ctx.active and dist.is_initialized():
        dist.destroy_process_group()
