"""Exact scoring of a token stream over a WindowPlan: nats and bytes summed in float64.

Each window runs the model body once over its inputs; the output head and the softmax run
only at the window's scored positions (64 of 1024 in stride-64 sliding mode), in float32,
and cross-entropy is taken in float64. Windows of equal length are packed into batches.

Results do not depend on the batch size or the number of ranks: every window's per-token
losses are computed the same way whatever else shares its batch, each window's losses are
summed on their own, and window sums are added with math.fsum (exactly rounded, so the
order does not matter). Ranks take contiguous slices of the plan and all-reduce float64
sums at the end.

Run as `torchrun --nproc_per_node=K -m golfeval.score ...` for K ranks (the same options as
`golfeval score`).
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from golfeval.score import distributed
from golfeval.score.windows import WindowPlan, flat_plan, sliding_plan
from golfpack.errors import GolfError, NonFiniteError

LN2 = math.log(2.0)
MODES = ("flat", "sliding")


@dataclass
class ScoreResult:
    nats_sum: float
    bytes_sum: int
    scored_tokens: int
    val_loss: float
    val_bpb: float
    seconds: float
    per_token_nats: np.ndarray | None = None  # float64 [n_targets], NaN where not scored
    windows: int = 0
    n_targets: int = 0
    ranks: int = 1          # ranks whose sums are in this result

    @classmethod
    def from_sums(cls, nats_sum: float, bytes_sum: int, scored: int, seconds: float,
                  **kw) -> ScoreResult:
        loss = nats_sum / scored if scored else float("nan")
        bpb = nats_sum / LN2 / bytes_sum if bytes_sum else float("nan")
        return cls(float(nats_sum), int(bytes_sum), int(scored), loss, bpb, seconds, **kw)

    @classmethod
    def combine(cls, parts: list[ScoreResult]) -> ScoreResult:
        """Add up the partial results of several ranks run without a process group."""
        per_token = None
        if parts and all(p.per_token_nats is not None for p in parts):
            stack = np.stack([p.per_token_nats for p in parts])
            seen = ~np.isnan(stack)
            per_token = np.where(seen.any(0), np.where(seen, stack, 0.0).sum(0), np.nan)
        return cls.from_sums(
            math.fsum(p.nats_sum for p in parts), sum(p.bytes_sum for p in parts),
            sum(p.scored_tokens for p in parts), max((p.seconds for p in parts), default=0.0),
            per_token_nats=per_token, windows=sum(p.windows for p in parts),
            n_targets=max((p.n_targets for p in parts), default=0),
            ranks=sum(p.ranks for p in parts))

    @property
    def tokens_per_second(self) -> float:
        return self.scored_tokens / self.seconds if self.seconds > 0 else float("nan")

    def to_dict(self) -> dict:
        return {"val_loss": self.val_loss, "val_bpb": self.val_bpb,
                "scored_tokens": self.scored_tokens, "targets": self.n_targets,
                "bytes": self.bytes_sum, "nats_sum": self.nats_sum, "windows": self.windows,
                "ranks": self.ranks, "seconds": self.seconds,
                "tokens_per_second": self.tokens_per_second}


def make_plan(n_tokens: int, mode: str = "sliding", seq_len: int = 1024,
              stride: int = 64) -> WindowPlan:
    if mode not in MODES:
        raise GolfError(f"unknown mode {mode!r} (flat or sliding)")
    try:
        if mode == "flat":
            return flat_plan(n_tokens, seq_len)
        return sliding_plan(n_tokens, seq_len, stride)
    except ValueError as exc:
        raise GolfError(str(exc)) from None


def score_tokens(model, tokens: np.ndarray, target_bytes: np.ndarray, *, mode: str = "sliding",
                 seq_len: int = 1024, stride: int = 64, batch: int = 32,
                 doc_isolation: bool = False, device="cpu", rank: int = 0, world: int = 1,
                 per_token: bool = False, progress: bool = False, bos_id: int = 1,
                 amp: bool | None = None) -> ScoreResult:
    """Score a whole stream in flat or sliding mode (see score_windows)."""
    plan = make_plan(int(np.asarray(tokens).size), mode, seq_len, stride)
    if mode == "sliding" and plan.scored_tokens != plan.n_targets:
        raise GolfError(f"internal: sliding plan scores {plan.scored_tokens} of "
                        f"{plan.n_targets} targets")
    return score_windows(model, tokens, plan, target_bytes, batch=batch,
                         doc_isolation=doc_isolation, device=device, rank=rank, world=world,
                         per_token=per_token, progress=progress, bos_id=bos_id, amp=amp)


def document_mask(idx: torch.Tensor, bos_id: int = 1) -> torch.Tensor:
    """Boolean attention mask [B, 1, T, T]: causal, and never across a BOS token."""
    doc = torch.cumsum((idx == bos_id).to(torch.int32), dim=1)
    T = idx.size(1)
    causal = torch.ones(T, T, dtype=torch.bool, device=idx.device).tril()
    return ((doc[:, :, None] == doc[:, None, :]) & causal)[:, None]


def scored_logits(model, idx: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor,
                  attn_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Logits (float32 or wider) at positions (rows, cols) of the batch idx [B, T].

    Models with hidden()/logits() get the head only at those positions, outside autocast
    and fed float64 states: it costs ~1/16 of a float32 head over every position, and
    float64 makes the result independent of how many rows share the matmul (BLAS libraries
    switch kernels, and float32 rounding, for small row counts). Any other model is run
    whole (forward(idx[, attn_mask]) -> logits) and gathered.
    """
    args = (idx,) if attn_mask is None else (idx, attn_mask)
    if hasattr(model, "hidden") and hasattr(model, "logits"):
        h = model.hidden(*args)[rows, cols]
        with torch.autocast(idx.device.type, enabled=False):
            return model.logits(h.double())
    return model(*args)[rows, cols]


def _batches(plan: WindowPlan, batch: int):
    """Runs of consecutive windows of equal length, at most `batch` long."""
    i, n = 0, len(plan)
    while i < n:
        j = i + 1
        while j < n and j - i < batch and plan.lengths[j] == plan.lengths[i]:
            j += 1
        yield i, j
        i = j


def score_windows(model, tokens: np.ndarray, plan: WindowPlan, target_bytes: np.ndarray, *,
                  batch: int = 32, doc_isolation: bool = False, device="cpu", rank: int = 0,
                  world: int = 1, per_token: bool = False, progress: bool = False,
                  bos_id: int = 1, amp: bool | None = None) -> ScoreResult:
    """Score this rank's contiguous share of `plan` (all of it when world == 1).

    tokens: the stream (any int array, e.g. a uint16 memmap) with plan.n_targets + 1 tokens.
    target_bytes: int64 [plan.n_targets], bytes of target t = tokens[t + 1].
    amp: bf16 autocast for the model body; default on for CUDA, off for CPU.
    With world > 1 and a running process group the sums are all-reduced over the ranks;
    without one the result holds this rank's share (ScoreResult.combine adds shares up).
    """
    tokens = np.asarray(tokens)
    target_bytes = np.asarray(target_bytes)
    if tokens.size != plan.n_targets + 1 and not (plan.n_targets == 0 and tokens.size <= 1):
        raise GolfError(f"plan is for {plan.n_targets + 1} tokens, stream has {tokens.size}")
    if target_bytes.shape != (plan.n_targets,):
        raise GolfError(f"target_bytes has shape {target_bytes.shape}, expected "
                        f"({plan.n_targets},)")
    if batch < 1:
        raise GolfError("batch must be >= 1")
    device = torch.device(device)
    amp = device.type == "cuda" if amp is None else amp
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if amp else nullcontext()
    local = plan.shard(rank, world)
    counts = local.lengths - local.offsets
    keep = counts > 0
    local = WindowPlan(local.starts[keep], local.lengths[keep], local.offsets[keep],
                       local.n_targets, local.mode)
    counts = counts[keep]
    nats_out = np.full(plan.n_targets, np.nan) if per_token else None
    window_sums: list[float] = []
    first_bad = -1  # first target whose loss is NaN/inf (a broken model: never a score)
    bar = None
    if progress and rank == 0:
        from tqdm import tqdm

        where = f", rank 0 of {world}" if world > 1 else ""
        bar = tqdm(total=int(counts.sum()), unit="tok", unit_scale=True, leave=False,
                   desc=f"scoring ({plan.mode}{where})", dynamic_ncols=True,
                   disable=None)  # quiet when stderr is not a terminal
    t0 = time.perf_counter()
    with torch.inference_mode():
        for lo, hi in _batches(local, batch):
            starts, length = local.starts[lo:hi], int(local.lengths[lo])
            offs, cnt = local.offsets[lo:hi], counts[lo:hi]
            grid = tokens[starts[:, None] + np.arange(length + 1)].astype(np.int64)
            rows = np.repeat(np.arange(hi - lo), cnt)
            cols = np.concatenate([np.arange(o, length) for o in offs])
            idx = torch.from_numpy(np.ascontiguousarray(grid[:, :-1]))
            idx = idx.to(device, non_blocking=True)
            targets = torch.from_numpy(grid[rows, cols + 1]).to(device, non_blocking=True)
            r_t = torch.from_numpy(rows).to(device)
            c_t = torch.from_numpy(cols).to(device)
            with autocast:
                mask = document_mask(idx, bos_id) if doc_isolation else None
                logits = scored_logits(model, idx, r_t, c_t, mask)
            nats = F.cross_entropy(logits.double(), targets, reduction="none").cpu().numpy()
            bad = ~np.isfinite(nats)
            if bad.any():
                # stop here, but still meet the other ranks at the all-reduce below
                first_bad = int((starts[rows] + cols)[np.argmax(bad)])
                break
            bounds = np.concatenate(([0], np.cumsum(cnt)[:-1]))
            window_sums.extend(np.add.reduceat(nats, bounds).tolist())
            if nats_out is not None:
                nats_out[starts[rows] + cols] = nats
            if bar is not None:
                bar.update(int(cnt.sum()))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    if bar is not None:
        bar.close()
    csum = np.concatenate(([0], np.cumsum(target_bytes, dtype=np.int64)))
    ends = local.starts + local.lengths
    nbytes = int((csum[ends] - csum[local.starts + local.offsets]).sum())
    sums = [math.fsum(window_sums), nbytes, int(counts.sum()), len(local)]
    ranks = 1
    if world > 1 and distributed.active_world() == world:
        # one slot per rank carries its first non-finite target (+1; 0 = none): ranks hold
        # contiguous slices in order, so the first non-zero slot is the global first
        slots = np.zeros(world)
        slots[rank] = first_bad + 1
        reduced = distributed.all_reduce_sum([*sums, *slots])
        sums, slots = reduced[:4].tolist(), reduced[4:]
        hits = slots[slots > 0]
        first_bad = int(hits[0]) - 1 if hits.size else -1
        ranks = world
        if nats_out is not None and first_bad < 0:
            nats_out = distributed.merge_scored(nats_out)
    if first_bad >= 0:
        raise NonFiniteError(
            f"the model's loss is not finite (NaN or inf) at target position {first_bad:,} "
            f"(token id {int(tokens[first_bad + 1])}): the weights or the model are broken; "
            "no score is reported")
    expect = plan.scored_tokens if ranks == world else int(counts.sum())
    if int(sums[2]) != expect:
        raise GolfError(f"internal: scored {int(sums[2])} targets, the plan has {expect}")
    return ScoreResult.from_sums(sums[0], int(sums[1]), int(sums[2]),
                                 time.perf_counter() - t0, per_token_nats=nats_out,
                                 windows=int(sums[3]), n_targets=plan.n_targets, ranks=ranks)

