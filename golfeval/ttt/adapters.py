"""Batched rank-r adapters for per-document LoRA TTT: one slice of A and B per document row,
hooked into the reference GPT's linear layers, whole MLPs and tied output head.

A is drawn once from a seeded generator (the same start for every document); B starts at
zero, so a fresh adapter leaves the model's outputs unchanged. The output is scaled by
alpha / rank (`scale`).
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from golfpack.errors import GolfError

# Short names of adapter sites -> module-name suffix in the reference GPT. "mlp" is one
# adapter beside the whole MLP (its input to its output); "head" the tied output head.
SITES = {"q": "attn.c_q", "k": "attn.c_k", "v": "attn.c_v", "o": "attn.proj",
         "up": "mlp.fc", "down": "mlp.proj", "mlp": "mlp", "head": "head"}


class BatchedLoRA(nn.Module):
    """Rank-r adapters for B documents at once on linear layers (found by name suffix) and
    on the tied output head. `installed()` hooks them into the model's forward."""

    def __init__(self, model: nn.Module, targets, rank: int, batch: int, seed: int = 0,
                 scale: float = 1.0):
        super().__init__()
        self.batch, self.rank, self.scale = batch, rank, scale
        self.sites: list[tuple[str, nn.Module]] = []
        dims = []
        for t in targets:
            if t == "head":
                continue
            found = _sites(model, t)
            self.sites.extend(found)
            dims.extend(d for _, _, d in found)
        self.sites = [(n, m) for n, m, _ in self.sites]
        if "head" in targets:
            if not (hasattr(model, "hidden") and hasattr(model, "head_weight")):
                raise GolfError("a LoRA head adapter needs a model with hidden() and "
                                "head_weight()")
            vocab, dim = model.head_weight().shape
            dims.append((dim, vocab))
        self.has_head = "head" in targets
        gen = torch.Generator().manual_seed(seed)
        device = next(model.parameters()).device
        self.A, self.B = nn.ParameterList(), nn.ParameterList()
        self._a0: list[torch.Tensor] = []
        for d_in, d_out in dims:
            bound = 1.0 / math.sqrt(d_in)
            a0 = (torch.rand(d_in, rank, generator=gen) * 2 - 1) * bound
            self._a0.append(a0.to(device))
            self.A.append(nn.Parameter(torch.empty(batch, d_in, rank, device=device)))
            self.B.append(nn.Parameter(torch.empty(batch, rank, d_out, device=device)))
        self.reset()

    @torch.no_grad()
    def reset(self, keep_a: bool = False) -> None:
        """B to zero (so the bare model scores a document's first chunk); A to its seeded
        start unless keep_a (warm start: A keeps what earlier documents taught it)."""
        for a, b, a0 in zip(self.A, self.B, self._a0, strict=True):
            if not keep_a:
                a.copy_(a0.expand_as(a))
            b.zero_()

    def _delta(self, i: int, x: torch.Tensor) -> torch.Tensor:
        if x.size(0) != self.batch:
            raise GolfError(f"internal: LoRA batch {self.batch} got input batch {x.size(0)}")
        out = (x @ self.A[i].to(x.dtype)) @ self.B[i].to(x.dtype)
        return out if self.scale == 1.0 else out * self.scale

    @contextmanager
    def installed(self):
        handles = []
        for i, (_, module) in enumerate(self.sites):
            def hook(mod, args, out, i=i):
                return out + self._delta(i, args[0])
            handles.append(module.register_forward_hook(hook))
        try:
            yield self
        finally:
            for h in handles:
                h.remove()

    def head_delta(self, h: torch.Tensor) -> torch.Tensor | None:
        return self._delta(len(self.sites), h) if self.has_head else None


def _sites(model: nn.Module, target: str) -> list[tuple[str, nn.Module, tuple[int, int]]]:
    """(name, module, (in, out)) of every module a target adapts: linear layers by name
    suffix, or whole MLPs (input width of their first layer, output of their last)."""
    suffix = SITES[target]
    if target == "mlp":
        found = [(n, m, (m.fc.in_features, m.proj.out_features))
                 for n, m in model.named_modules()
                 if (n == suffix or n.endswith("." + suffix)) and hasattr(m, "fc")
                 and hasattr(m, "proj")]
    else:
        found = [(n, m, (m.in_features, m.out_features)) for n, m in model.named_modules()
                 if n.endswith(suffix) and isinstance(m, nn.Linear)]
    if not found:
        raise GolfError(f"LoRA target {target!r}: the model has no "
                        f"{'MLP' if target == 'mlp' else 'linear layer'} named *{suffix}")
    return found


def head_logits(model: nn.Module, h: torch.Tensor, delta: torch.Tensor | None) -> torch.Tensor:
    """float32 logits of the tied head plus an adapter's delta, soft-capped as GPT.logits."""
    if delta is None:
        return model.logits(h).float()
    raw = F.linear(h, model.head_weight().to(h.dtype)).float() + delta.float()
    cap = getattr(getattr(model, "config", None), "logit_softcap", 0.0)
    return cap * torch.tanh(raw / cap) if cap else raw
