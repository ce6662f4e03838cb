"""Phased test-time training: per-document LoRA TTT, with global SGD of the whole model at
a few document boundaries.

The stream's documents (split at BOS as in golfeval.ttt.lora) are cut, in stream order, at
phase boundaries P_1 < ... < P_n (document counts) into segments [0, P_1), [P_1, P_2), ...,
[P_n, N). Segment k is scored with per-document LoRA TTT on the current base model: within
the segment this is exactly evaluate_lora's schedule (score a chunk, hand its sums back,
then adapt; adapters fresh per document). Only when the whole segment is scored does the
base model take phase k+1's global SGD on every document scored so far, [0, P_{k+1}); the
adapters are then rebuilt on the new base and the next segment is scored. So a document is
scored by a base that trained only on earlier documents, the last segment is never trained
on, and the weights are restored at the end (checked bit for bit).

Results do not depend on the number of documents per forward (LoRA rows are independent,
document sums are added with math.fsum) nor on the number of ranks: ranks take every
world-th LoRA batch of a segment, and the global SGD splits each step into fixed leaves of
`leaf` sequences whose gradients are computed alone, gathered from every rank and added in
leaf order, the same float32 additions whatever the rank count.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch
import torch.distributed as dist

from golfeval.score import distributed
from golfeval.score.core import ScoreResult
from golfeval.ttt.fingerprint import (
    LegalityError,
    ScoreFirstLedger,
    drop_inference_caches,
    state_tensors,
    unchanged,
)
from golfeval.ttt.lora import (
    BatchedLoRA,
    DocBatch,
    LoraSettings,
    Tally,
    document_batches,
    result_from_tally,
    score_first_loop,
    split_documents,
)
from golfeval.ttt.lora import resolve as resolve_lora
from golfeval.ttt.restore import ModelRestore, device_seconds
from golfeval.ttt.sgd import backward_sequences, trainable_params
from golfpack.errors import GolfError


@dataclass(frozen=True)
class PhaseSGD:
    """One phase's global SGD: momentum SGD over the scored documents, the learning rate on
    a cosine from `lr` (first step) towards 0 over the phase's steps."""

    lr: float = 0.001
    momentum: float = 0.9
    epochs: int = 1
    grad_clip: float = 1.0      # global L2 norm; 0 = off
    freeze_blocks: int = 0      # blocks 0..N-1 stay fixed

    def __post_init__(self):
        if self.lr < 0 or not 0 <= self.momentum < 1 or self.grad_clip < 0:
            raise GolfError("phase SGD needs lr >= 0, 0 <= momentum < 1, grad_clip >= 0")
        if self.epochs < 0 or self.freeze_blocks < 0:
            raise GolfError("phase SGD epochs and frozen blocks must be >= 0")


@dataclass(frozen=True)
class PhasedSettings:
    lora: LoraSettings = field(default_factory=LoraSettings)
    # document counts (int) or fractions of the documents (float in (0, 1)), increasing
    phases: tuple = (833, 1666, 2500)
    sgd: tuple[PhaseSGD, ...] = (PhaseSGD(),)   # one per phase, or one for every phase
    seq_len: int = 1024         # global SGD training sequence length
    train_batch: int = 32       # sequences per global SGD step (over all ranks)
    leaf: int = 4               # sequences per gradient leaf (fixes the summation order)
    doc_isolation: bool = True  # global SGD attention never crosses a BOS

    def __post_init__(self):
        if not self.phases:
            raise GolfError("phased TTT needs at least one phase boundary")
        for p in self.phases:
            if isinstance(p, bool) or not isinstance(p, int | float):
                raise GolfError(f"phase boundary {p!r} is neither a count nor a fraction")
            if isinstance(p, float) and not 0 < p < 1:
                raise GolfError(f"phase fraction {p} must lie strictly between 0 and 1")
            if isinstance(p, int) and p < 1:
                raise GolfError(f"phase boundary {p} must be at least one document")
        for kind in (int, float):
            same = [p for p in self.phases if isinstance(p, kind)]
            if any(b <= a for a, b in zip(same, same[1:], strict=False)):
                raise GolfError(f"phase boundaries must increase ({list(self.phases)})")
        if len(self.sgd) not in (1, len(self.phases)):
            raise GolfError(f"{len(self.sgd)} phase SGD settings for {len(self.phases)} "
                            "phases (give one for all, or one per phase)")
        if min(self.seq_len, self.train_batch, self.leaf) < 1:
            raise GolfError("phased TTT seq_len, train_batch and leaf must be >= 1")

    def phase_sgd(self, i: int) -> PhaseSGD:
        return self.sgd[0] if len(self.sgd) == 1 else self.sgd[i]

    def to_dict(self) -> dict:
        lora = self.lora.to_dict()
        lora.pop("kind")
        return {"kind": "phased", "phases": list(self.phases), "lora": lora,
                "sgd": [asdict(s) for s in self.sgd], "seq_len": self.seq_len,
                "train_batch": self.train_batch, "leaf": self.leaf,
                "doc_isolation": self.doc_isolation}


def resolve(settings: PhasedSettings, device) -> PhasedSettings:
    """Fill the device-dependent LoRA defaults (documents per forward)."""
    return replace(settings, lora=resolve_lora(settings.lora, device))


def phase_boundaries(n_docs: int, phases) -> list[int]:
    """Document counts at which a phase runs: fractions f become floor(f * n_docs); counts
    that leave no later document to score (>= n_docs) or repeat are dropped."""
    out: list[int] = []
    for p in phases:
        b = int(math.floor(p * n_docs)) if isinstance(p, float) else int(p)
        if out and b < out[-1]:
            raise GolfError(f"phase boundaries must increase ({list(phases)})")
        if 1 <= b < n_docs and (not out or b > out[-1]):
            out.append(b)
    return out


@dataclass
class PhaseRecord:
    """What one phase did: trained on the targets [0, end) of documents [0, documents)."""

    documents: int
    end: int
    steps: int
    lr: float
    seconds: float = 0.0


class GlobalTrainer:
    """Global SGD of the whole model (less frozen blocks) on a prefix of the stream, with a
    rank-count-invariant gradient: see the module doc."""

    def __init__(self, model, tokens: np.ndarray, settings: PhasedSettings, device, amp: bool,
                 rank: int, world: int, bos_id: int):
        self.model, self.tokens, self.s = model, tokens, settings
        self.device, self.rank, self.world, self.bos_id = device, rank, world, bos_id
        self.autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if amp
                         else nullcontext())
        self.reduce = world > 1 and distributed.active_world() == world

    def train(self, end: int, sgd: PhaseSGD) -> int:
        """Train on targets [0, end) in sequences of seq_len; returns the optimizer steps."""
        params = trainable_params(self.model, sgd.freeze_blocks)
        if not params or sgd.epochs == 0 or end <= 0:
            return 0
        drop_inference_caches(self.model)
        for p in params:
            p.requires_grad_(True)
        optimizer = torch.optim.SGD(params, lr=sgd.lr, momentum=sgd.momentum)
        seq = np.arange(0, end, self.s.seq_len, dtype=np.int64)
        steps = [seq[i: i + self.s.train_batch] for i in range(0, seq.size, self.s.train_batch)]
        steps = steps * sgd.epochs
        try:
            for i, starts in enumerate(steps):
                for group in optimizer.param_groups:
                    group["lr"] = sgd.lr * 0.5 * (1.0 + math.cos(math.pi * i / len(steps)))
                grad = self._gradient(starts, end, params)
                offset = 0
                for p in params:
                    n = p.numel()
                    p.grad = grad[offset: offset + n].view_as(p)
                    offset += n
                if sgd.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(params, sgd.grad_clip)
                optimizer.step()
        finally:
            for p in params:
                p.grad = None
                p.requires_grad_(False)
        return len(steps)

    def _leaf_gradient(self, starts: np.ndarray, end: int, total: int, params) -> torch.Tensor:
        """Flat float32 gradient of the summed loss of `starts`' sequences / total."""
        for p in params:
            p.grad = None
        backward_sequences(self.model, self.tokens, starts, end, self.s.seq_len, total,
                           self.device, self.autocast, self.bos_id if self.s.doc_isolation
                           else None)
        return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p))
                          .reshape(-1).float() for p in params])

    def _gradient(self, starts: np.ndarray, end: int, params) -> torch.Tensor:
        """The step's gradient: leaf i is computed on rank i % world, every rank gathers all
        leaves and adds them in leaf order (identical bits for any rank count)."""
        total = int(np.minimum(self.s.seq_len, end - starts).sum())
        leaves = [starts[i: i + self.s.leaf] for i in range(0, starts.size, self.s.leaf)]
        world = self.world if self.reduce else 1
        rank = self.rank if self.reduce else 0
        mine = [self._leaf_gradient(leaf, end, total, params)
                for leaf in leaves[rank::world]]
        if world > 1:
            per_rank = -(-len(leaves) // world)
            n = sum(p.numel() for p in params)
            local = torch.zeros(per_rank, n, device=self.device)
            for j, g in enumerate(mine):
                local[j] = g
            parts = [torch.empty_like(local) for _ in range(world)]
            dist.all_gather(parts, local)
            ordered = [parts[i % world][i // world] for i in range(len(leaves))]
        else:
            ordered = mine
        grad = ordered[0].clone()
        for g in ordered[1:]:
            grad += g
        return grad


@dataclass
class PhasedRun:
    """Everything one phased evaluation needs, for the loop below (and testing seams)."""

    model: object
    tokens: np.ndarray
    settings: PhasedSettings
    starts: np.ndarray
    ntargets: np.ndarray
    bounds: list[int]               # document counts where a phase runs
    tally: Tally
    trainer: GlobalTrainer
    score_segment: Callable[[int], tuple[float, int]]
    ledger: ScoreFirstLedger
    records: list[PhaseRecord] = field(default_factory=list)

    def segments(self) -> list[tuple[int, int]]:
        edges = [0, *self.bounds, int(self.starts.size)]
        return list(zip(edges[:-1], edges[1:], strict=True))

    def prefix_end(self, docs: int) -> int:
        """First target index after documents [0, docs)."""
        return int(self.starts[docs]) if docs < self.starts.size else int(self.ntargets.sum())

    def train_phase(self, k: int, end: int) -> None:
        sgd = self.settings.phase_sgd(k)
        t0 = time.perf_counter()
        steps = self.trainer.train(end, sgd)
        self.records.append(PhaseRecord(self.bounds[k], end, steps, sgd.lr,
                                        time.perf_counter() - t0))


def score_first_phases(run: PhasedRun) -> None:
    """The legal order: score segment k completely (every rank), then train phase k on the
    documents scored so far; never on the last segment."""
    scored = 0
    for k, (_a, e) in enumerate(run.segments()):
        with run.ledger.scoring(("segment", k)) as rec:
            rec.nats_sum, rec.tokens = run.score_segment(k)
        if k == len(run.bounds):
            break
        end = run.prefix_end(e)
        with run.ledger.adapting(("segment", k)):
            # every rank's share of documents [0, e) must be scored before any step uses them
            mine = float(rec.tokens)
            scored += int(distributed.all_reduce_sum([mine])[0]) if run.trainer.reduce \
                else int(mine)
            if scored != end or any(("segment", j) not in run.ledger.scored
                                    for j in range(k + 1)):
                raise LegalityError(f"phase {k + 1} would train on targets [0, {end:,}) "
                                    f"of which {scored:,} are scored")
            run.train_phase(k, end)


def evaluate_phased(model, tokens: np.ndarray, target_bytes: np.ndarray,
                    settings: PhasedSettings = PhasedSettings(), *, device="cpu",
                    rank: int = 0, world: int = 1, per_token: bool = False,
                    progress: bool = False, bos_id: int = 1, amp: bool | None = None,
                    on_phase: Callable[[PhaseRecord], None] | None = None,
                    _loop: Callable[[PhasedRun], None] = score_first_phases) -> ScoreResult:
    """Score every target of `tokens` with phased TTT (see the module doc).

    `seconds` covers scoring, adapting and the global phases on this rank. `_loop` is a
    testing seam for a deliberately leaky order (tests only). `on_phase` hears of each
    finished phase (PhaseRecord)."""
    tokens = np.asarray(tokens)
    target_bytes = np.asarray(target_bytes, dtype=np.int64)
    n_targets = max(0, tokens.size - 1)
    if target_bytes.shape != (n_targets,):
        raise GolfError(f"target_bytes has shape {target_bytes.shape}, expected ({n_targets},)")
    if not hasattr(model, "hidden"):
        raise GolfError("phased TTT needs a model with hidden() (final-norm states)")
    if world > 1 and distributed.active_world() != world:
        raise GolfError(f"phased TTT on {world} ranks needs their process group (torchrun): "
                        "every rank must take the same global steps")
    device = torch.device(device)
    amp = device.type == "cuda" if amp is None else amp
    settings = resolve(settings, device)
    s = settings.lora
    starts, ntargets = split_documents(tokens, bos_id)
    bounds = phase_boundaries(int(starts.size), settings.phases)
    tally = Tally(target_bytes, per_token)
    bar = None
    if progress and rank == 0:
        from tqdm import tqdm

        bar = tqdm(total=n_targets, unit="tok", unit_scale=True, dynamic_ncols=True,
                   desc="phased TTT")
    restore = ModelRestore(model, weights=True, bar=bar)
    n_batches = [0]
    t0 = time.perf_counter()
    with unchanged(lambda: state_tensors(model), "phased evaluation"):
        with restore:
            model.requires_grad_(False)
            drop_inference_caches(model)
            adapters = BatchedLoRA(model, s.targets, s.rank, s.batch, s.seed, s.scale)
            trainer = GlobalTrainer(model, tokens, settings, device, amp, rank, world, bos_id)
            edges = [0, *bounds, int(starts.size)]

            def score_segment(k: int) -> tuple[float, int]:
                docs = np.arange(edges[k], edges[k + 1], dtype=np.int64)
                batches = document_batches(docs, ntargets, s)
                n_batches[0] += len(batches)
                first, scored = len(tally.row_sums), tally.scored
                for i, sel in enumerate(batches[rank::world]):
                    batch = DocBatch(model, tokens, starts[sel], ntargets[sel], s, device, amp,
                                     adapters, fresh_a=i == 0)
                    ledger = ScoreFirstLedger(batch.state)
                    with torch.enable_grad():
                        score_first_loop(batch, ledger, tally, key=(k, i))
                    if bar is not None:
                        bar.update(int(ntargets[sel].sum()) * world)
                return math.fsum(tally.row_sums[first:]), tally.scored - scored

            run = PhasedRun(model, tokens, settings, starts, ntargets, bounds, tally, trainer,
                            score_segment, ScoreFirstLedger(lambda: state_tensors(model)))
            _loop(run)
    seconds = device_seconds(device, t0)
    if on_phase is not None:
        for r in run.records:
            on_phase(r)
    return result_from_tally(tally, seconds, n_batches[0], world)
