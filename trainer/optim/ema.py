"""Exponential moving average of the weights (float32 shadow copies, updated after every
optimizer step); the final checkpoint holds the EMA weights when it is on.

The shadow starts as the initial weights. With a constant decay d, the initialisation keeps
a share d^t of the average after t steps: 0.997^260 = 46%, so a short run would export a
blend that is half untrained. With warmup (the default) step t uses
min(d, (1 + t) / (10 + t)), which drops the initialisation's share below 1e-9 within 100
steps and equals d from t = (10 d - 1) / (1 - d) on (2,990 steps for 0.997), so runs of the
challenge's length average the same last few hundred steps as a plain EMA.
"""

from __future__ import annotations

import torch
from torch import nn


class EMA:
    def __init__(self, model: nn.Module, decay: float, warmup: bool = True):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must lie in (0, 1), got {decay}")
        self.decay, self.warmup = decay, warmup
        self.names = [n for n, _ in model.named_parameters()]
        self.params = [p for _, p in model.named_parameters()]
        self.shadow = [p.detach().float().clone() for p in self.params]

    def decay_at(self, step: int) -> float:
        """The decay used by the update after `step` earlier updates."""
        return min(self.decay, (1 + step) / (10 + step)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, step: int) -> None:
        """shadow <- d * shadow + (1 - d) * param, d = decay_at(step); `step` is the
        number of earlier updates (the trainer's step, so a resumed run continues exactly)."""
        live = [p.detach().float() for p in self.params]
        torch._foreach_lerp_(self.shadow, live, 1.0 - self.decay_at(step))

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(zip(self.names, self.shadow, strict=True))

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = [n for n in self.names if n not in state]
        if missing:
            raise KeyError(f"EMA state lacks {missing[:3]}")
        for n, s in zip(self.names, self.shadow, strict=True):
            s.copy_(state[n])

    def weights(self) -> dict[str, torch.Tensor]:
        """The averaged weights in the model's dtypes (what the final checkpoint stores)."""
        triples = zip(self.names, self.shadow, self.params, strict=True)
        return {n: s.to(p.dtype) for n, s, p in triples}
