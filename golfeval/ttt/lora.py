"""Score-first LoRA test-time training, one set of adapters per document, many documents
per forward.

The stream is split at BOS into documents; a document runs from its BOS up to the next one
and its targets are the tokens after each of its positions, so its last target is the next
document's BOS and the documents' targets together are exactly the stream's. A document is
read in chunks of C targets. Chunk c is scored with the window of inputs
[max(0, (c+1)C - L), (c+1)C) of its document: the window ends where the chunk would end
whatever the document's length, so no score depends on where the document ends. Per chunk:
score it, hand the sums back, then take `grad_steps` Adam/AdamW steps on that chunk's mean
loss. A document's last chunk is never trained on; adapters (A seeded random, B zero) and
optimizer state are fresh for every document, unless `warm_a` keeps A from the row's
previous (earlier-in-stream) document.

Documents are sorted by chunk count and run B at a time, each row of the batch with its own
adapters ([B, in, r] and [B, r, out] tensors). Every forward of step c has the shape
[B, min((c+1)C, L)] (short batches are padded with empty rows), so on CPU a document's
losses are bit-identical whatever documents share its batch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from golfeval.score import distributed
from golfeval.score.core import ScoreResult
from golfeval.ttt.adapters import SITES, BatchedLoRA, head_logits
from golfeval.ttt.fingerprint import (
    ScoreFirstLedger,
    drop_inference_caches,
    state_tensors,
    unchanged,
)
from golfeval.ttt.restore import ModelRestore, device_seconds
from golfpack.errors import GolfError

OPTIMIZERS = ("adam", "adamw")


@dataclass(frozen=True)
class LoraSettings:
    rank: int = 8
    chunk: int = 256          # targets per chunk (C)
    context: int = 1024       # window length inside the document (L)
    lr: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    targets: tuple[str, ...] = ("q", "v", "head")
    batch: int | None = None  # documents per forward; None: 4 on CPU, 32 on CUDA
    seed: int = 0             # A's initialisation (the same for every document)
    alpha: float | None = None  # adapter output scaled by alpha / rank; None: alpha = rank
    optimizer: str = "adam"   # adam (L2 weight decay) or adamw (decoupled weight decay)
    weight_decay: float = 0.0
    grad_steps: int = 1       # optimizer steps on each chunk after it is scored
    warm_a: bool = False      # keep A from the previous document of the row (B still reset)
    sort_docs: bool | None = None  # batch documents by length; None: yes unless warm_a

    def __post_init__(self):
        if self.rank < 1 or self.chunk < 1 or (self.batch is not None and self.batch < 1):
            raise GolfError("LoRA rank, chunk and batch must be >= 1")
        if self.grad_steps < 1:
            raise GolfError("LoRA grad steps per chunk must be >= 1")
        if self.optimizer not in OPTIMIZERS:
            raise GolfError(f"unknown LoRA optimizer {self.optimizer!r} (adam or adamw)")
        if self.weight_decay < 0 or self.lr < 0 or (self.alpha is not None and self.alpha <= 0):
            raise GolfError("LoRA lr and weight decay must be >= 0, alpha > 0")
        if self.warm_a and self.sort_docs:
            raise GolfError("warm-starting A needs documents in stream order (A may only "
                            "carry what earlier documents taught it), not sorted by length")
        if self.context < self.chunk:
            raise GolfError(f"LoRA context {self.context} is shorter than its chunk "
                            f"{self.chunk}")
        unknown = [t for t in self.targets if t not in SITES]
        if unknown or not self.targets:
            raise GolfError(f"unknown LoRA target(s) {unknown} (choose from "
                            f"{', '.join(SITES)})")

    @property
    def scale(self) -> float:
        return 1.0 if self.alpha is None else self.alpha / self.rank

    @property
    def sorted_by_length(self) -> bool:
        return (not self.warm_a) if self.sort_docs is None else self.sort_docs

    def to_dict(self) -> dict:
        return {"kind": "lora", **asdict(self), "targets": list(self.targets),
                "alpha": self.rank if self.alpha is None else self.alpha,
                "scale": self.scale, "sort_docs": self.sorted_by_length}


def resolve(settings: LoraSettings, device) -> LoraSettings:
    """Fill the device-dependent default: documents per forward. Every forward has B rows
    (empty rows pad a short batch, so shapes never depend on the data), which makes a large
    B wasteful on a CPU."""
    if settings.batch is not None:
        return settings
    return replace(settings, batch=32 if torch.device(device).type == "cuda" else 4)


def split_documents(tokens: np.ndarray, bos_id: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(starts, n_targets) of the documents: a document starts at a BOS (or at position 0)
    and owns the targets of its positions up to the next BOS (that BOS included)."""
    n_targets = max(0, int(np.asarray(tokens).size) - 1)
    if n_targets == 0:
        z = np.zeros(0, dtype=np.int64)
        return z, z
    bos = np.flatnonzero(np.asarray(tokens[:n_targets]) == bos_id).astype(np.int64)
    starts = bos if bos.size and bos[0] == 0 else np.concatenate(([0], bos)).astype(np.int64)
    ends = np.append(starts[1:], n_targets)
    return starts, ends - starts


def document_batches(docs: np.ndarray, ntargets: np.ndarray,
                     settings: LoraSettings) -> list[np.ndarray]:
    """Documents `docs` (indices) in batches of settings.batch: by chunk count, most first
    (stable), or in stream order when not sorting (as warm-started A needs)."""
    docs = np.asarray(docs, dtype=np.int64)
    if settings.sorted_by_length:
        nchunks = -(-ntargets[docs] // settings.chunk)
        docs = docs[np.lexsort((docs, -nchunks))]
    return [docs[i: i + settings.batch] for i in range(0, docs.size, settings.batch)]


def chunk_window(c: int, chunk: int, context: int) -> tuple[int, int]:
    """(first input, length) of chunk c's window, relative to its document's start; the
    chunk's targets are the window's last `chunk` positions."""
    end = (c + 1) * chunk
    start = max(0, end - context)
    return start, end - start


class DocBatch:
    """B documents (rows; empty rows pad a short batch) stepped through their chunks."""

    def __init__(self, model, tokens: np.ndarray, starts: np.ndarray, ntargets: np.ndarray,
                 settings: LoraSettings, device: torch.device, amp: bool,
                 adapters: BatchedLoRA | None, fresh_a: bool = True):
        b = settings.batch
        self.model, self.tokens, self.s, self.device = model, tokens, settings, device
        self.starts = np.zeros(b, dtype=np.int64)
        self.ntargets = np.zeros(b, dtype=np.int64)
        self.starts[: starts.size], self.ntargets[: ntargets.size] = starts, ntargets
        self.nchunks = -(-self.ntargets // settings.chunk)
        self.steps = int(self.nchunks.max(initial=0))
        self.adapters = adapters
        self.autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if amp
                         else nullcontext())
        self.optimizer = None
        if adapters is not None:
            adapters.reset(keep_a=settings.warm_a and not fresh_a)
            opt = torch.optim.AdamW if settings.optimizer == "adamw" else torch.optim.Adam
            self.optimizer = opt(adapters.parameters(), lr=settings.lr,
                                 betas=(settings.beta1, settings.beta2), eps=settings.eps,
                                 weight_decay=settings.weight_decay)

    def _grid(self, rel: np.ndarray, shift: int) -> tuple[np.ndarray, np.ndarray]:
        valid = rel[None, :] < self.ntargets[:, None]
        pos = np.minimum(self.starts[:, None] + rel[None, :] + shift, self.tokens.size - 1)
        return np.where(valid, self.tokens[pos], 0).astype(np.int64), valid

    def positions(self, c: int) -> tuple[np.ndarray, np.ndarray]:
        """Stream target indices [B, C] of chunk c and which of them exist."""
        rel = c * self.s.chunk + np.arange(self.s.chunk)
        valid = rel[None, :] < self.ntargets[:, None]
        return self.starts[:, None] + rel[None, :], valid

    def forward(self, c: int) -> torch.Tensor:
        """float64 nats [B, C] of chunk c under the current adapters (autograd on when
        adapting; padding positions hold garbage and are masked by the caller)."""
        start, length = chunk_window(c, self.s.chunk, self.s.context)
        inp, _ = self._grid(start + np.arange(length), 0)
        tgt, _ = self._grid(c * self.s.chunk + np.arange(self.s.chunk), 1)
        idx = torch.from_numpy(inp).to(self.device)
        targets = torch.from_numpy(tgt).to(self.device)
        hooks = self.adapters.installed() if self.adapters is not None else nullcontext()
        with hooks, self.autocast:
            h = self.model.hidden(idx)[:, -self.s.chunk:]
        with torch.autocast(self.device.type, enabled=False):
            h = h.float()
            delta = self.adapters.head_delta(h) if self.adapters is not None else None
            logits = head_logits(self.model, h, delta)
        v = logits.size(-1)
        return F.cross_entropy(logits.reshape(-1, v).double(), targets.reshape(-1),
                               reduction="none").view(targets.shape)

    def trains(self, c: int) -> np.ndarray:
        """Rows that adapt after chunk c: every chunk but a document's last."""
        return c < self.nchunks - 1

    def step(self, c: int, nats: torch.Tensor) -> None:
        """grad_steps optimizer steps on each training row's mean chunk loss (rows are
        independent); steps after the first run the chunk's forward again."""
        rows = torch.from_numpy(self.trains(c)).to(nats.device)
        for g in range(self.s.grad_steps):
            if g:
                nats = self.forward(c)
            loss = (nats * rows[:, None]).sum() / self.s.chunk
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()

    def state(self) -> list[torch.Tensor]:
        if self.adapters is None:
            return []
        return state_tensors(self.adapters, self.optimizer)


class Tally:
    """Scored sums of one rank (and per-target nats when asked), filled chunk by chunk."""

    def __init__(self, target_bytes: np.ndarray, per_token: bool):
        self.target_bytes = target_bytes
        self.row_sums: list[float] = []
        self.bytes = self.scored = 0
        self.nats = np.full(target_bytes.size, np.nan) if per_token else None

    def add(self, batch: DocBatch, c: int, nats: torch.Tensor) -> tuple[float, int]:
        pos, valid = batch.positions(c)
        values = nats.detach().cpu().numpy()
        sums = [float(np.sum(values[r][valid[r]])) for r in range(values.shape[0])
                if valid[r].any()]
        where = pos[valid]
        if self.nats is not None:
            if not np.isnan(self.nats[where]).all():
                raise GolfError("internal: a target was scored twice")
            self.nats[where] = values[valid]
        self.row_sums.extend(sums)
        self.bytes += int(self.target_bytes[where].sum())
        self.scored += int(where.size)
        return math.fsum(sums), int(where.size)


def score_first_loop(batch: DocBatch, ledger: ScoreFirstLedger, tally: Tally, key) -> None:
    """The legal order: score chunk c, hand its sums back, then adapt on it."""
    for c in range(batch.steps):
        with ledger.scoring((key, c)) as rec:
            nats = batch.forward(c)
            rec.nats_sum, rec.tokens = tally.add(batch, c, nats)
        if batch.adapters is not None and batch.trains(c).any():
            with ledger.adapting((key, c)):
                batch.step(c, nats)


def evaluate_lora(model: nn.Module, tokens: np.ndarray, target_bytes: np.ndarray,
                  settings: LoraSettings = LoraSettings(), *, adapt: bool = True,
                  device="cpu", rank: int = 0, world: int = 1, per_token: bool = False,
                  progress: bool = False, bos_id: int = 1, amp: bool | None = None,
                  _loop: Callable = score_first_loop) -> ScoreResult:
    """Score every target of `tokens` with per-document LoRA TTT (adapt=False: the same
    document/chunk schedule with the bare model, the no-TTT reference).

    Ranks take every world-th batch of documents and all-reduce float64 sums (when a
    process group runs). `_loop` is a testing seam: the tests plug in a deliberately
    leaky order (adapt, then score) to show that the audit catches it. The model is left
    exactly as it was (checked). `seconds` covers scoring and adapting every chunk of this
    rank, nothing else (no loading, no warm-up).
    """
    tokens = np.asarray(tokens)
    target_bytes = np.asarray(target_bytes, dtype=np.int64)
    if target_bytes.shape != (max(0, tokens.size - 1),):
        raise GolfError(f"target_bytes has shape {target_bytes.shape}, expected "
                        f"({max(0, tokens.size - 1)},)")
    if not hasattr(model, "hidden"):
        raise GolfError("LoRA TTT needs a model with hidden() (final-norm states)")
    device = torch.device(device)
    amp = device.type == "cuda" if amp is None else amp
    settings = resolve(settings, device)
    starts, ntargets = split_documents(tokens, bos_id)
    batches = document_batches(np.arange(starts.size), ntargets, settings)
    mine = batches[rank::world]
    tally = Tally(target_bytes, per_token)
    bar = _progress(progress and rank == 0, int(ntargets.sum()), adapt)
    restore = ModelRestore(model, weights=False, bar=bar)
    t0 = time.perf_counter()
    with unchanged(lambda: state_tensors(model), "LoRA evaluation"):
        with restore:
            model.requires_grad_(False)
            if adapt:
                drop_inference_caches(model)
            adapters = (BatchedLoRA(model, settings.targets, settings.rank, settings.batch,
                                    settings.seed, settings.scale) if adapt else None)
            for i, sel in enumerate(mine):
                batch = DocBatch(model, tokens, starts[sel], ntargets[sel], settings, device,
                                 amp, adapters, fresh_a=i == 0)
                ledger = ScoreFirstLedger(batch.state)
                grad = torch.enable_grad() if adapt else torch.inference_mode()
                with grad:
                    _loop(batch, ledger, tally, key=i)
                if bar is not None:
                    bar.update(int(ntargets[sel].sum()) * world)
    return result_from_tally(tally, device_seconds(device, t0), len(batches), world)


def _progress(on: bool, total: int, adapt: bool):
    if not on:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="tok", unit_scale=True, dynamic_ncols=True,
                desc="LoRA TTT" if adapt else "doc chunks", disable=None)


def result_from_tally(tally: Tally, seconds: float, windows: int, world: int) -> ScoreResult:
    """The ScoreResult of a tally (float64 sums and per-target nats merged over ranks)."""
    sums = [math.fsum(tally.row_sums), tally.bytes, tally.scored]
    nats = tally.nats
    ranks = 1
    if world > 1 and distributed.active_world() == world:
        sums = distributed.all_reduce_sum(sums).tolist()
        ranks = world
        if nats is not None:
            nats = distributed.merge_scored(nats)
    return ScoreResult.from_sums(sums[0], int(sums[1]), int(sums[2]), seconds,
                                 per_token_nats=nats, windows=windows,
                                 n_targets=tally.target_bytes.size, ranks=ranks)
