"""Score-first chunked SGD test-time training of the whole model.

The stream's targets are cut into chunks of 32,768. Chunk k's sliding windows (the usual
L/S windows; a window whose scored range crosses a chunk boundary is split so each piece
keeps its full context) are scored under inference mode with golfeval.score.core's window core,
and the sums come back; only then is the model trained on chunk k: `epochs` passes of SGD
(momentum, cosine learning rate over chunks, global grad-norm clip) over its targets in
sequences of L. The last chunk is never trained on. The model's weights are restored at the
end (checked), so one model serves several evaluations.

Ranks split each chunk's windows (score_windows shards them and all-reduces the sums) and
each optimizer step's sequences; gradients are summed over ranks before the step, so every
rank holds the same weights.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from golfeval.score import distributed
from golfeval.score.core import ScoreResult, document_mask, score_windows
from golfeval.score.windows import WindowPlan, _split, sliding_plan
from golfeval.ttt.fingerprint import (
    ScoreFirstLedger,
    drop_inference_caches,
    state_tensors,
    unchanged,
)
from golfeval.ttt.restore import ModelRestore, device_seconds
from golfpack.errors import GolfError


@dataclass(frozen=True)
class SGDSettings:
    chunk_tokens: int = 32768   # targets per chunk
    lr: float = 0.002           # at the first chunk; cosine to ~0 at the last trained one
    momentum: float = 0.9
    epochs: int = 3
    grad_clip: float = 1.0      # global L2 norm; 0 = off
    seq_len: int = 1024         # scoring window L and training sequence length
    stride: int = 64            # sliding stride S
    train_batch: int = 32       # sequences per optimizer step, over all ranks
    score_batch: int = 32       # windows per scoring forward (never changes results)
    freeze_blocks: int = 0      # blocks 0..N-1 are never trained

    def __post_init__(self):
        if min(self.chunk_tokens, self.epochs, self.seq_len, self.stride,
               self.train_batch, self.score_batch) < 1 or self.freeze_blocks < 0:
            raise GolfError("SGD TTT chunk, epochs, seq_len, stride and batches must be >= 1")
        if self.stride > self.seq_len:
            raise GolfError(f"stride {self.stride} exceeds seq_len {self.seq_len}")
        if self.lr < 0 or not 0 <= self.momentum < 1 or self.grad_clip < 0:
            raise GolfError("SGD TTT needs lr >= 0, 0 <= momentum < 1, grad_clip >= 0")

    def to_dict(self) -> dict:
        return {"kind": "sgd", **asdict(self)}


def chunk_bounds(n_targets: int, chunk_tokens: int) -> np.ndarray:
    """Target index where each chunk starts, plus n_targets at the end."""
    return np.append(np.arange(0, n_targets, chunk_tokens, dtype=np.int64), n_targets)


def chunk_plans(n_tokens: int, seq_len: int, stride: int,
                chunk_tokens: int) -> list[WindowPlan]:
    """The sliding plan cut at chunk boundaries: plan k scores exactly chunk k's targets.
    A window straddling a boundary becomes two, each ending where its scored piece ends
    with as much context as the window length allows."""
    plan = sliding_plan(n_tokens, seq_len, stride)
    bounds = chunk_bounds(plan.n_targets, chunk_tokens)
    lo_all, hi_all = plan.starts + plan.offsets, plan.starts + plan.lengths
    plans = []
    for a, e in zip(bounds[:-1], bounds[1:], strict=True):
        sel = (hi_all > a) & (lo_all < e)
        lo, hi = np.maximum(lo_all[sel], a), np.minimum(hi_all[sel], e)
        starts = np.maximum(0, hi - seq_len)
        plans.append(WindowPlan(starts, hi - starts, lo - starts, plan.n_targets, "sliding"))
    return plans


def chunk_lr(settings: SGDSettings, k: int, n_chunks: int) -> float:
    """Cosine decay over the trained chunks 0..n_chunks-2 (the last one is never trained)."""
    n_train = max(1, n_chunks - 1)
    return settings.lr * 0.5 * (1.0 + math.cos(math.pi * k / n_train))


class ChunkTrainer:
    """Trains the whole model on chunks of the stream; rank-split, gradients summed."""

    def __init__(self, model, tokens: np.ndarray, settings: SGDSettings, device, amp: bool,
                 rank: int, world: int, doc_isolation: bool, bos_id: int):
        self.model, self.tokens, self.s = model, tokens, settings
        self.device, self.rank, self.world = device, rank, world
        self.doc_isolation, self.bos_id = doc_isolation, bos_id
        self.autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if amp
                         else nullcontext())
        self.params = trainable_params(model, settings.freeze_blocks)
        self.optimizer = torch.optim.SGD(self.params, lr=settings.lr,
                                         momentum=settings.momentum)
        self.reduce = world > 1 and distributed.active_world() == world

    def state(self) -> list[torch.Tensor]:
        return state_tensors(self.model, self.optimizer)

    def train(self, a: int, e: int, lr: float) -> None:
        """`epochs` passes over targets [a, e) in sequences of seq_len, train_batch
        sequences per step (this rank runs its contiguous share of each step)."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        drop_inference_caches(self.model)
        seq_starts = np.arange(a, e, self.s.seq_len, dtype=np.int64)
        for _ in range(self.s.epochs):
            for i in range(0, seq_starts.size, self.s.train_batch):
                self._step(seq_starts[i: i + self.s.train_batch], e)

    def _step(self, starts: np.ndarray, end: int) -> None:
        lengths = np.minimum(self.s.seq_len, end - starts)
        total = int(lengths.sum())
        lo, hi = _split(starts.size, self.rank, self.world)
        self.optimizer.zero_grad(set_to_none=False)
        backward_sequences(self.model, self.tokens, starts[lo:hi], end, self.s.seq_len, total,
                           self.device, self.autocast, self.bos_id if self.doc_isolation
                           else None)
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        if self.reduce:
            flat = torch.cat([g.reshape(-1) for g in grads])
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            offset = 0
            for p, g in zip(self.params, grads, strict=True):
                n = g.numel()
                p.grad = flat[offset: offset + n].view_as(p).clone()
                offset += n
        else:
            for p, g in zip(self.params, grads, strict=True):
                p.grad = g
        if self.s.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.s.grad_clip)
        self.optimizer.step()


def evaluate_sgd(model, tokens: np.ndarray, target_bytes: np.ndarray,
                 settings: SGDSettings = SGDSettings(), *, adapt: bool = True, device="cpu",
                 rank: int = 0, world: int = 1, per_token: bool = False,
                 progress: bool = False, doc_isolation: bool = False, bos_id: int = 1,
                 amp: bool | None = None, _loop: Callable | None = None) -> ScoreResult:
    """Score every target of `tokens` with score-first chunked SGD TTT (adapt=False: the
    same chunked sliding windows with the bare model).

    `seconds` covers scoring and training every chunk (nothing before: no loading, no
    warm-up). The weights are restored afterwards and checked bit for bit. `_loop` is a
    testing seam for a deliberately leaky order (tests only).
    """
    tokens = np.asarray(tokens)
    target_bytes = np.asarray(target_bytes, dtype=np.int64)
    n_targets = max(0, tokens.size - 1)
    if target_bytes.shape != (n_targets,):
        raise GolfError(f"target_bytes has shape {target_bytes.shape}, expected ({n_targets},)")
    if adapt and world > 1 and distributed.active_world() != world:
        raise GolfError(f"SGD TTT on {world} ranks needs their process group (torchrun): "
                        "every rank must train on the same summed gradients")
    device = torch.device(device)
    amp = device.type == "cuda" if amp is None else amp
    plans = chunk_plans(tokens.size, settings.seq_len, settings.stride, settings.chunk_tokens)
    nats_out = np.full(n_targets, np.nan) if per_token else None
    parts: list[ScoreResult] = []
    bar = None
    if progress and rank == 0:
        from tqdm import tqdm

        bar = tqdm(total=n_targets, unit="tok", unit_scale=True, dynamic_ncols=True,
                   desc="SGD TTT" if adapt else "chunked sliding", disable=None)
    restore = ModelRestore(model, weights=adapt, bar=bar)
    t0 = time.perf_counter()
    with unchanged(lambda: state_tensors(model), "SGD evaluation"):
        with restore:
            model.requires_grad_(False)
            for p in trainable_params(model, settings.freeze_blocks):
                p.requires_grad_(adapt)
            trainer = ChunkTrainer(model, tokens, settings, device, amp, rank, world,
                                   doc_isolation, bos_id) if adapt else None
            ledger = ScoreFirstLedger(trainer.state if adapt else lambda: state_tensors(model))
            score = _chunk_scorer(model, tokens, target_bytes, settings, device, rank, world,
                                  per_token, doc_isolation, bos_id, amp)
            loop = _loop or score_first_chunks
            for k, part in loop(plans, ledger, score, trainer, settings):
                parts.append(part)
                if nats_out is not None:
                    lo = int(plans[k].starts.min(initial=0))
                    seen = ~np.isnan(part.per_token_nats)
                    nats_out[lo:][: seen.size][seen] = part.per_token_nats[seen]
                if bar is not None:
                    bar.update(part.scored_tokens)
    seconds = device_seconds(device, t0)
    return ScoreResult.from_sums(
        math.fsum(p.nats_sum for p in parts), sum(p.bytes_sum for p in parts),
        sum(p.scored_tokens for p in parts), seconds, per_token_nats=nats_out,
        windows=sum(p.windows for p in parts), n_targets=n_targets,
        ranks=min((p.ranks for p in parts), default=1))


def backward_sequences(model, tokens: np.ndarray, starts: np.ndarray, end: int, seq_len: int,
                       total: int, device, autocast, isolate_bos: int | None) -> None:
    """Backpropagate the summed next-token loss of the sequences at `starts` (each
    min(seq_len, end - start) targets, grouped by length) divided by `total`; with
    `isolate_bos`, attention never crosses that token."""
    lengths = np.minimum(seq_len, end - starts)
    for length in np.unique(lengths):  # the last sequence before `end` may be shorter
        group = starts[lengths == length]
        grid = tokens[group[:, None] + np.arange(int(length) + 1)].astype(np.int64)
        idx = torch.from_numpy(grid[:, :-1]).to(device)
        tgt = torch.from_numpy(grid[:, 1:]).to(device)
        with autocast:
            mask = None if isolate_bos is None else document_mask(idx, isolate_bos)
            logits = model(idx) if mask is None else model(idx, mask)
        loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)),
                               tgt.reshape(-1), reduction="sum") / total
        loss.backward()


def trainable_params(model, freeze_blocks: int = 0) -> list[torch.Tensor]:
    """The floating-point parameters TTT trains: all but those of blocks 0..freeze_blocks-1
    (the reference GPT's `blocks`)."""
    if freeze_blocks:
        blocks = getattr(model, "blocks", None)
        if blocks is None or freeze_blocks > len(blocks):
            n = 0 if blocks is None else len(blocks)
            raise GolfError(f"cannot freeze {freeze_blocks} blocks of a model with {n}")
        frozen = {id(p) for b in list(blocks)[:freeze_blocks] for p in b.parameters()}
    else:
        frozen = set()
    return [p for p in model.parameters() if p.is_floating_point() and id(p) not in frozen]


def _chunk_scorer(model, tokens, target_bytes, s: SGDSettings, device, rank, world, per_token,
                  doc_isolation, bos_id, amp) -> Callable[[WindowPlan], ScoreResult]:
    """Scores one chunk's plan on the slice of the stream its windows read, so per-token
    arrays stay chunk-sized."""

    def score(plan: WindowPlan) -> ScoreResult:
        lo = int(plan.starts.min(initial=0))
        hi = int((plan.starts + plan.lengths).max(initial=lo))
        local = WindowPlan(plan.starts - lo, plan.lengths, plan.offsets, hi - lo, plan.mode)
        return score_windows(model, tokens[lo: hi + 1], local, target_bytes[lo:hi],
                             batch=s.score_batch, doc_isolation=doc_isolation, device=device,
                             rank=rank, world=world, per_token=per_token, bos_id=bos_id,
                             amp=amp)

    return score


def score_first_chunks(plans, ledger: ScoreFirstLedger, score, trainer, s: SGDSettings):
    """The legal order: score chunk k (sums handed back), then train on it; never on the
    last chunk. Yields (k, chunk result)."""
    bounds = [(int(p.starts[0] + p.offsets[0]), int(p.starts[-1] + p.lengths[-1]))
              for p in plans]
    for k, plan in enumerate(plans):
        with ledger.scoring(k) as rec:
            part = score(plan)
            rec.nats_sum, rec.tokens = float(part.nats_sum), int(part.scored_tokens)
        yield k, part
        if trainer is not None and k < len(plans) - 1:
            with ledger.adapting(k):
                trainer.train(*bounds[k], chunk_lr(s, k, len(plans)))
