"""Where the run executes: device, rank and world from torchrun's environment, the process
group (NCCL on CUDA, gloo on CPU), autocast, and the few collectives the loop needs."""

from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from golfpack.errors import GolfError


@dataclass
class Runtime:
    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def autocast(self):
        """bf16 autocast on CUDA; full fp32 on CPU (bit-exact tests, no slow CPU bf16)."""
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def all_mean(self, t: torch.Tensor) -> torch.Tensor:
        if self.distributed:
            t = t.clone()
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
            t /= self.world
        return t

    def all_max(self, value: float) -> float:
        if not self.distributed:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return float(t.item())


def init_runtime(device_pref: str = "auto") -> Runtime:
    """Read RANK/WORLD_SIZE/LOCAL_RANK (set by torchrun; absent = one process) and start the
    process group when there is more than one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device_pref == "auto" else device_pref == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise GolfError("device=cuda was asked for but CUDA is not available")
    if use_cuda:
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo",
                                device_id=device if use_cuda else None,
                                timeout=datetime.timedelta(minutes=30))
    return Runtime(rank=rank, world=world, local_rank=local_rank, device=device)


def shutdown(rt: Runtime) -> None:
    if rt.distributed and dist.is_initialized():
        dist.destroy_process_group()


def rng_states(device: torch.device) -> dict[str, torch.Tensor]:
    out = {"rng/cpu": torch.get_rng_state()}
    if device.type == "cuda":
        out["rng/cuda"] = torch.cuda.get_rng_state(device)
    return out


def set_rng_states(states: dict[str, torch.Tensor], device: torch.device) -> None:
    if "rng/cpu" in states:
        torch.set_rng_state(states["rng/cpu"].to(torch.uint8))
    if device.type == "cuda" and "rng/cuda" in states:
        torch.cuda.set_rng_state(states["rng/cuda"].to(torch.uint8), device)
