"""Rank and device set-up for multi-process evaluation (torchrun) and float64 reductions.

One process per device. Under torchrun (RANK/WORLD_SIZE/LOCAL_RANK in the environment)
with WORLD_SIZE > 1 the process group starts with nccl for CUDA and gloo for CPU; a
single process needs no process group and runs the same code with rank 0 of 1.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from golfpack.errors import GolfError


@dataclass
class DistContext:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    started_here: bool = False  # this module started the process group (and shuts it down)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_ranks() -> tuple[int, int, int]:
    """(rank, world, local_rank) from torchrun's environment; (0, 1, 0) outside it."""
    try:
        rank = int(os.environ.get("RANK", 0))
        world = int(os.environ.get("WORLD_SIZE", 1))
        local = int(os.environ.get("LOCAL_RANK", rank))
    except ValueError:
        raise GolfError("RANK/WORLD_SIZE/LOCAL_RANK must be integers") from None
    if world < 1 or not 0 <= rank < world:
        raise GolfError(f"bad torchrun environment: RANK={rank} WORLD_SIZE={world}")
    return rank, world, local


def resolve_device(device: str | None, local_rank: int = 0) -> torch.device:
    """'auto' (or None) picks CUDA when present; 'cuda' means this process's GPU."""
    device = (device or "auto").lower()
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise GolfError("`device=cuda` asked for, but torch sees no CUDA device",
                            param="device")
        if device == "cuda":
            device = f"cuda:{local_rank % torch.cuda.device_count()}"
        dev = torch.device(device)
        torch.cuda.set_device(dev)
        return dev
    if device != "cpu":
        raise GolfError(f"unknown device {device!r} (cpu, cuda, cuda:N or auto)")
    return torch.device("cpu")


def init(device: str | None = "auto") -> DistContext:
    """Read torchrun's environment, pick the device, start the process group if needed."""
    rank, world, local = env_ranks()
    dev = resolve_device(device, local)
    started = False
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        kwargs = {"device_id": dev} if dev.type == "cuda" else {}
        dist.init_process_group(backend=backend, rank=rank, world_size=world, **kwargs)
        started = True
    return DistContext(rank, world, local, dev, started)


def shutdown(ctx: DistContext) -> None:
    if ctx.started_here and dist.is_initialized():
        dist.destroy_process_group()


def active_world() -> int:
    """World size of the running process group (1 when there is none)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _reduce_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(values) -> np.ndarray:
    """Sum a float64 vector over all ranks (identity without a process group)."""
    arr = np.asarray(values, dtype=np.float64)
    if active_world() == 1:
        return arr.copy()
    t = torch.from_numpy(arr.copy()).to(_reduce_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.cpu().numpy()


def merge_scored(nats: np.ndarray) -> np.ndarray:
    """Merge per-target arrays in which each rank filled only the targets it scored (NaN
    elsewhere): every rank gets the full array, NaN only where no rank scored."""
    seen = ~np.isnan(nats)
    total = all_reduce_sum(np.where(seen, nats, 0.0))
    seen = all_reduce_sum(seen.astype(np.float64)) > 0
    return np.where(seen, total, np.nan)


def barrier() -> None:
    if active_world() > 1:
        dist.barrier()
