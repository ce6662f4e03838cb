"""Bit-exact fingerprints of model state, and the score-before-adapt ledger built on them.

Test-time training is legal only if every chunk is scored by a model that has not yet seen
it. `ScoreFirstLedger` turns that rule into checks that run during evaluation: the state
(parameters, adapters, optimizer moments) is fingerprinted before a chunk is scored and again
once its sums have been handed back; the two must be equal, the sums must exist, and only a
chunk whose sums exist may be adapted on. A violation raises `LegalityError`.

The fingerprint is an exact integer hash computed on the tensors' device: every element's bit
pattern times an odd per-position multiplier, summed with 64-bit wrap-around. Any single
changed bit changes the hash with certainty (an odd multiplier is invertible modulo 2^64);
several changes cancel only by a 2^-64 accident. One host synchronisation per fingerprint.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from golfpack.errors import CheckFailed

_MASK = (1 << 64) - 1
_MUL = 0x9E3779B97F4A7C15 - (1 << 64)  # golden-ratio constant as a signed int64
_ADD = 0x632BE59BD9B4E019
_INT_VIEW = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


class LegalityError(CheckFailed):
    """An evaluation broke score-before-adapt (state changed while scoring, or a chunk was
    adapted on before its scores were handed back)."""


_weights_cache: dict[tuple[int, torch.device], torch.Tensor] = {}


def _position_weights(n: int, device: torch.device) -> torch.Tensor:
    key = (n, device)
    w = _weights_cache.get(key)
    if w is None:
        w = (torch.arange(n, dtype=torch.int64, device=device) * _MUL + _ADD) | 1
        if n * 8 <= 64 << 20:  # keep at most a few tens of MB of multipliers around
            _weights_cache[key] = w
    return w


def _words(t: torch.Tensor) -> torch.Tensor:
    """A tensor's elements as int64 bit patterns (flat)."""
    flat = t.detach().contiguous().reshape(-1)
    if flat.dtype == torch.bool:
        flat = flat.to(torch.uint8)
    if flat.is_floating_point() or flat.is_complex():
        flat = flat.view(_INT_VIEW[flat.element_size()])
    return flat.to(torch.int64)


def fingerprint(tensors: Iterable[torch.Tensor]) -> str:
    """Hex digest of the exact bits, shapes and dtypes of `tensors` (order matters).

    The tensors of each device are laid end to end, so a value's multiplier depends on its
    tensor and its place in it; one multiply-sum and one host sync per device."""
    meta, words = [], {}
    for t in tensors:
        meta.append((tuple(t.shape), str(t.dtype)))
        if t.numel():
            words.setdefault(t.device, []).append(_words(t))
    value = 0
    for device, parts in sorted(words.items(), key=lambda kv: str(kv[0])):
        flat = torch.cat(parts) if len(parts) > 1 else parts[0]
        h = int((flat * _position_weights(flat.numel(), device)).sum().item())
        value = (value * _MUL + h) & _MASK
    head = hashlib.blake2b(repr(meta).encode(), digest_size=8).hexdigest()
    return f"{head}{value:016x}"


def state_tensors(model: torch.nn.Module | None = None,
                  optimizer: torch.optim.Optimizer | None = None,
                  extra: Iterable[torch.Tensor] = ()) -> list[torch.Tensor]:
    """Everything that can carry information from one chunk to the next: parameters and
    buffers, optimizer state, and any extra tensors (e.g. adapters)."""
    out: list[torch.Tensor] = []
    if model is not None:
        out.extend(p for _, p in sorted(model.named_parameters()))
        out.extend(b for _, b in sorted(model.named_buffers()))
    if optimizer is not None:
        for group in optimizer.param_groups:
            for p in group["params"]:
                for _, v in sorted(optimizer.state.get(p, {}).items()):
                    if isinstance(v, torch.Tensor):
                        out.append(v)
    out.extend(extra)
    return out


@dataclass
class ChunkScore:
    """What scoring one chunk hands back; filled inside `ScoreFirstLedger.scoring`."""

    chunk: object
    nats_sum: float | None = None
    tokens: int | None = None


class ScoreFirstLedger:
    """Checks score-before-adapt for one evaluation.

    ``state_fn`` returns the tensors whose bits must not change while a chunk is scored
    (call it anew each time: adapters may be re-created per batch of documents)::

        with ledger.scoring(chunk) as rec:
            rec.nats_sum, rec.tokens = score(chunk)   # host float64, before any update
        with ledger.adapting(chunk):
            train_on(chunk)
    """

    def __init__(self, state_fn: Callable[[], Iterable[torch.Tensor]]):
        self.state_fn = state_fn
        self.scored: dict[object, ChunkScore] = {}
        self.checks = 0

    def fingerprint(self) -> str:
        return fingerprint(self.state_fn())

    @contextmanager
    def scoring(self, chunk):
        if chunk in self.scored:
            raise LegalityError(f"chunk {chunk} scored twice")
        before = self.fingerprint()
        rec = ChunkScore(chunk)
        yield rec
        after = self.fingerprint()
        self.checks += 1
        if after != before:
            raise LegalityError(f"model state changed while chunk {chunk} was scored")
        if rec.nats_sum is None or rec.tokens is None:
            raise LegalityError(f"scoring chunk {chunk} handed back no sums")
        if not isinstance(rec.nats_sum, float):
            raise LegalityError(f"chunk {chunk}: sums must be host floats before adapting")
        self.scored[chunk] = rec

    @contextmanager
    def adapting(self, chunk):
        if chunk not in self.scored:
            raise LegalityError(f"chunk {chunk} adapted on before it was scored")
        yield


@contextmanager
def unchanged(state_fn: Callable[[], Iterable[torch.Tensor]], what: str):
    """Raise LegalityError if the state's bits differ after the block (e.g. a warm-up or a
    whole evaluation that must leave the model as it found it)."""
    before = fingerprint(state_fn())
    yield
    if fingerprint(state_fn()) != before:
        raise LegalityError(f"model state changed during {what}")


def drop_inference_caches(model: torch.nn.Module) -> None:
    """Forget per-module caches (the reference model's rotary cos/sin) before training.

    Scoring runs under torch.inference_mode, and tensors cached there cannot enter autograd;
    they are rebuilt, bit for bit the same, by the next forward."""
    for module in model.modules():
        if getattr(module, "_cache", None) is not None:
            module._cache = None
