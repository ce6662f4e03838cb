"""What every TTT evaluation does around its timed loop: the model is put back as it was
found (weights when it trained them, `requires_grad` flags always) and the progress bar is
closed however the loop ends, and the clock stops only once the device has finished."""

from __future__ import annotations

import time

import torch
from torch import nn


class ModelRestore:
    """Snapshot on construction (before the clock starts), restore on leaving the block.

    ``weights=True`` clones the state dict and loads it back: for evaluations that train
    the model in place; the flags are restored in every case."""

    def __init__(self, model: nn.Module, *, weights: bool, bar=None):
        self.model, self.bar = model, bar
        self.flags = [p.requires_grad for p in model.parameters()]
        self.saved = ({k: v.detach().clone() for k, v in model.state_dict().items()}
                      if weights else None)

    def __enter__(self) -> ModelRestore:
        return self

    def __exit__(self, *exc) -> None:
        if self.saved is not None:
            with torch.no_grad():
                self.model.load_state_dict(self.saved)
        for p, flag in zip(self.model.parameters(), self.flags, strict=True):
            p.requires_grad_(flag)
        if self.bar is not None:
            self.bar.close()


def device_seconds(device: torch.device, t0: float) -> float:
    """Seconds since `t0` (a perf_counter reading) once `device` has finished its work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0
