"""Exponential moving average of the weights (float32 shadow copies, updated after every
optimizer step); the final checkpoint holds the EMA weights when it is on."""

from __future__ import annotations

import torch
from torch import nn


class EMA:
    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must lie in (0, 1), got {decay}")
        self.decay = decay
        self.names = [n for n, _ in model.named_parameters()]
        self.params = [p for _, p in model.named_parameters()]
        self.shadow = [p.detach().float().clone() for p in self.params]

    @torch.no_grad()
    def update(self) -> None:
        """shadow <- decay * shadow + (1 - decay) * param."""
        live = [p.detach().float() for p in self.params]
        torch._foreach_lerp_(self.shadow, live, 1.0 - self.decay)

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
