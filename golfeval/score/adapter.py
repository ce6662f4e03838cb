"""The scoring protocol: what a model must offer so golfeval can score it exactly.

The scorer needs next-token logits at the positions it scores. A model offers them in one
of three ways, tried in this order (docs/scoring.md has a 20-line example adapter):

  1. hidden + head: `hidden(idx[, attn_mask]) -> [B, T, D]` and `logits(h) -> [B, T, V]`
     (or `head(h)`); the head then runs only at scored positions (golf's own GPT).
  2. `forward_logits(idx) -> [B, T, V]` beside `forward(x, y) -> loss` (the records' GPT).
  3. `forward(idx) -> [B, T, V]` logits.

A model whose only output is `forward(x, y) -> mean loss` cannot be scored per token: wrap
it. `as_scorable` returns golf's own models unchanged and wraps the others in
`ScoredModel`, whose forward(idx, attn_mask=None) gives float32 logits. Document isolation
needs an attention mask only protocol 1 (or a model whose forward takes one) can receive.
"""

from __future__ import annotations

import inspect

import torch
from torch import nn

from golfpack.errors import GolfError

PROTOCOLS = ("hidden+head", "forward_logits", "logits")


def protocol_of(model: nn.Module) -> str:
    """Which protocol a model follows (see the module docstring); GolfError if none."""
    if hasattr(model, "hidden") and (hasattr(model, "logits") or hasattr(model, "head")):
        return "hidden+head"
    if callable(getattr(model, "forward_logits", None)):
        return "forward_logits"
    params = _positional(model.forward)
    if len(params) >= 2 and params[1].default is inspect.Parameter.empty:
        raise GolfError(f"{type(model).__name__}.forward takes (inputs, targets) and has no "
                        "forward_logits or hidden(): it gives a mean loss, not per-token "
                        "logits; wrap it in an adapter (docs/scoring.md)")
    return "logits"


def _positional(fn) -> list[inspect.Parameter]:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return []
    return [p for p in sig.parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


class ScoredModel(nn.Module):
    """A foreign model behind golf's scorer interface: forward(idx, attn_mask=None) ->
    float32 logits [B, T, V]. Parameters stay the wrapped model's (`inner`)."""

    def __init__(self, inner: nn.Module, protocol: str):
        super().__init__()
        self.inner = inner
        self.protocol = protocol
        self.config = getattr(inner, "config", None)

    def forward(self, idx: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        if attn_mask is not None:
            raise GolfError(f"{type(self.inner).__name__} takes no attention mask: score it "
                            "without document isolation")
        if self.protocol == "forward_logits":
            out = self.inner.forward_logits(idx)
        else:
            out = self.inner(idx)
        if not isinstance(out, torch.Tensor) or out.dim() != 3 or out.shape[:2] != idx.shape:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise GolfError(f"{type(self.inner).__name__} returned {shape}, expected logits "
                            f"[{idx.shape[0]}, {idx.shape[1]}, vocab]")
        return out.float()


class _HeadModel(nn.Module):
    """Protocol 1 with `head(h)` instead of `logits(h)`: expose it as logits()."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.config = getattr(inner, "config", None)

    def hidden(self, idx, attn_mask=None):
        return self.inner.hidden(idx) if attn_mask is None else self.inner.hidden(idx, attn_mask)

    def logits(self, h):
        return self.inner.head(h).float()

    def forward(self, idx, attn_mask=None):
        return self.logits(self.hidden(idx, attn_mask))


def as_scorable(model: nn.Module) -> nn.Module:
    """The model itself when it follows protocol 1 with logits(); a wrapper otherwise."""
    proto = protocol_of(model)
    if proto == "hidden+head":
        return model if hasattr(model, "logits") else _HeadModel(model)
    return ScoredModel(model, proto)
