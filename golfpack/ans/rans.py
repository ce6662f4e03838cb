"""Vectorised interleaved rANS over a batch of independent streams.

Each stream (a "job") has n symbols split into W lanes of T = ceil(n / W) consecutive
positions (lane j owns positions j*T .. j*T+T-1); each symbol comes with a context that
picks its frequency table. All lanes of all jobs advance together, one numpy step per
position index, so the Python loop runs max(T) times for the whole batch instead of sum(T):
decoding every stream of a 27M-parameter artifact is one loop of ~16k steps.

Coder: 32-bit state in [2^16, 2^32), 16-bit renormalisation, P-bit probabilities (P <= 16),
at most one word per lane per step. Positions past a job's end use an identity table
(f = M, c = 0: the state passes through unchanged, no word moves). The words of a job are
stored in decoding order: step by step, lanes in increasing order. FORMAT.md specifies it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from golfpack.errors import ArtifactError

STATE_LOW = 1 << 16
CHUNK = 1024  # steps materialised at a time (bounds memory on big batches)
_F_BITS = 17  # decoder slot entry: f (17 bits) | slot - c (17 bits) | symbol (<< 34)
_F_MASK = np.uint64((1 << _F_BITS) - 1)


def lane_layout(n: int, lanes: int) -> tuple[int, int]:
    """(lanes, steps) actually used for n symbols and a requested lane count."""
    lanes = max(1, min(int(lanes), max(n, 1)))
    return lanes, (-(-n // lanes) if n else 0)


def choose_lanes(n: int, max_steps: int = 16384) -> int:
    """Lanes so a stream needs at most `max_steps` steps (and at least ~n/8): each lane costs
    ~4 bytes of final state, each step ~50 µs of Python, so big streams get many lanes."""
    steps = max(1, min(max_steps, max(256, n // 8)))
    return max(1, min(65535, -(-n // steps)))


@dataclass
class EncodeJob:
    symbols: np.ndarray  # [n] ints in [0, S)
    contexts: np.ndarray  # [n] ints in [0, n_ctx)
    freqs: np.ndarray  # int64 [n_ctx, S]; each used row sums to 2^prob_bits
    prob_bits: int
    lanes: int


@dataclass
class DecodeJob:
    contexts: np.ndarray  # [n] ints in [0, n_ctx)
    freqs: np.ndarray  # int64 [n_ctx, S]
    prob_bits: int
    states: np.ndarray  # uint32 [W]
    words: np.ndarray  # uint16 [n_words]


class _Lanes:
    """Per-lane bookkeeping for a batch: which job, where its positions start, its P."""

    def __init__(self, ns, lanes, pbs):
        self.layout = [lane_layout(n, w) for n, w in zip(ns, lanes, strict=True)]
        widths = [w for w, _ in self.layout]
        self.first = np.concatenate([[0], np.cumsum(widths)]).astype(np.int64)
        self.W = int(self.first[-1])
        self.T = max([t for _, t in self.layout], default=0)
        job = np.repeat(np.arange(len(ns)), widths)
        self.job = job
        steps = np.array([t for _, t in self.layout], dtype=np.int64)
        self.lane_steps = steps[job]
        self.lane_n = np.asarray(ns, dtype=np.int64)[job]
        self.start = (np.arange(self.W) - self.first[job]) * self.lane_steps
        self.base = np.concatenate([[0], np.cumsum(ns)]).astype(np.int64)[job]  # in the batch
        self.pb = np.asarray(pbs, dtype=np.uint64)[job]

    def positions(self, t0: int, t1: int):
        """Batch-global positions [t1-t0, W] and whether each is a real symbol."""
        t = np.arange(t0, t1, dtype=np.int64)[:, None]
        pos = self.start[None, :] + t
        valid = (t < self.lane_steps[None, :]) & (pos < self.lane_n[None, :])
        return np.where(valid, self.base[None, :] + pos, 0), valid


def _cum(freqs: np.ndarray) -> np.ndarray:
    return np.concatenate([np.zeros((freqs.shape[0], 1), np.int64),
                           np.cumsum(freqs, axis=1)[:, :-1]], axis=1)


def encode_batch(jobs: list[EncodeJob]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Encode every job -> [(final states uint32 [W], words uint16 in decoding order)]."""
    if not jobs:
        return []
    lanes = _Lanes([j.symbols.size for j in jobs], [j.lanes for j in jobs],
                   [j.prob_bits for j in jobs])
    # One flat (f, c) table for the batch; symbol i of job j looks up base_j + ctx*S_j + sym.
    f_tabs, c_tabs, gidx, offset = [], [], [], 0
    for j in jobs:
        f = np.asarray(j.freqs, dtype=np.int64)
        S = f.shape[1]
        idx = np.asarray(j.contexts, np.int64) * S + np.asarray(j.symbols, np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= f.size or f.ravel()[idx].min() <= 0):
            raise ValueError("a symbol has no frequency in its context's table")
        f_tabs.append(f.ravel())
        c_tabs.append(_cum(f).ravel())
        gidx.append(idx + offset)
        offset += f.size
    f_flat = np.concatenate(f_tabs).astype(np.uint64)
    c_flat = np.concatenate(c_tabs).astype(np.uint64)
    gidx = np.concatenate(gidx) if gidx else np.zeros(0, np.int64)
    if offset < 2**31:
        gidx = gidx.astype(np.int32)  # halves the batch's biggest array
    ident_f = np.uint64(1) << lanes.pb  # identity: f = M, c = 0
    shift_hi = np.uint64(32) - lanes.pb
    pb, s16 = lanes.pb, np.uint64(16)
    x = np.full(lanes.W, STATE_LOW, dtype=np.uint64)
    emitted = np.zeros((lanes.T, lanes.W), dtype=np.uint16)
    emit_mask = np.zeros((lanes.T, lanes.W), dtype=bool)
    for t1 in range(lanes.T, 0, -CHUNK):
        t0 = max(0, t1 - CHUNK)
        pos, valid = lanes.positions(t0, t1)
        g = gidx[pos] if gidx.size else np.zeros(pos.shape, np.int64)
        F = np.where(valid, f_flat[g] if f_flat.size else 0, ident_f[None, :])
        C = np.where(valid, c_flat[g] if c_flat.size else 0, np.uint64(0))
        for t in range(t1 - 1, t0 - 1, -1):
            f = F[t - t0]
            big = x >= (f << shift_hi)
            emitted[t] = x  # low 16 bits; kept only where `big`
            emit_mask[t] = big
            x = np.where(big, x >> s16, x)
            q = x // f
            x = (q << pb) + (x - q * f) + C[t - t0]
    out = []
    for a, b in zip(lanes.first[:-1], lanes.first[1:], strict=True):
        out.append((x[a:b].astype(np.uint32), emitted[:, a:b][emit_mask[:, a:b]]))
    return out


def _slot_table(freqs: np.ndarray, prob_bits: int) -> np.ndarray:
    """uint64 [n_ctx * M]: per slot f | (slot - c) << 17 | symbol << 34 (f = 0: unused)."""
    m = 1 << prob_bits
    tab = np.zeros((freqs.shape[0], m), dtype=np.uint64)
    slots = np.arange(m, dtype=np.uint64)
    for k, f in enumerate(np.asarray(freqs, dtype=np.int64)):
        if not f.any():
            continue
        if f.sum() != m or f.min() < 0:
            raise ArtifactError("frequency table does not sum to 2^P")
        sym = np.repeat(np.arange(f.size, dtype=np.uint64), f)
        c = _cum(f[None])[0].astype(np.uint64)
        tab[k] = f.astype(np.uint64)[sym] | ((slots - c[sym]) << np.uint64(_F_BITS)) | \
            (sym << np.uint64(2 * _F_BITS))
    return tab.ravel()


def decode_batch(jobs: list[DecodeJob]) -> list[np.ndarray]:
    """Decode every job -> [symbols int64 [n]]. Raises ArtifactError when a job's words run
    out or are left over, a slot falls in an empty table, or a lane does not end at 2^16."""
    if not jobs:
        return []
    ns = [int(j.contexts.size) for j in jobs]
    for j, n in zip(jobs, ns, strict=True):
        if j.states.size < 1 or j.states.size > max(n, 1):
            raise ArtifactError(f"rANS block has {j.states.size} lanes for {n} symbols")
        if not 10 <= j.prob_bits <= 16:
            raise ArtifactError(f"probability bits {j.prob_bits} outside 10..16")
        if n and int(np.asarray(j.states).min()) < STATE_LOW:
            raise ArtifactError("rANS block has a lane state below 2^16")
    lanes = _Lanes(ns, [j.states.size for j in jobs], [j.prob_bits for j in jobs])
    # Flat slot table: every job's contexts, then one identity table per distinct P.
    tabs, ctx_base, offset = [], [], 0
    for j in jobs:
        t = _slot_table(j.freqs, j.prob_bits)
        ctx_base.append(offset)
        tabs.append(t)
        offset += t.size
    ident_off = {}
    for p in sorted({j.prob_bits for j in jobs}):
        m = 1 << p
        ident_off[p] = offset
        tabs.append(np.uint64(m) | (np.arange(m, dtype=np.uint64) << np.uint64(_F_BITS)))
        offset += m
    table = np.concatenate(tabs)
    gctx = []
    for j, base in zip(jobs, ctx_base, strict=True):
        ctx = np.asarray(j.contexts, dtype=np.int64)
        if ctx.size and (ctx.min() < 0 or ctx.max() >= j.freqs.shape[0]):
            raise ArtifactError("context index out of range")
        gctx.append(base + (ctx << j.prob_bits))
    gctx = np.concatenate(gctx) if gctx else np.zeros(0, np.int64)
    if offset < 2**31:
        gctx = gctx.astype(np.int32)
    lane_ident = np.array([ident_off[int(p)] for p in lanes.pb], dtype=np.int64) \
        if lanes.W else np.zeros(0, np.int64)
    words = np.concatenate([np.asarray(j.words, dtype=np.int64) for j in jobs])
    n_words = np.array([j.words.size for j in jobs], dtype=np.int64)
    word_base = np.concatenate([[0], np.cumsum(n_words)[:-1]]).astype(np.int64)
    ptr = np.zeros(len(jobs), dtype=np.int64)
    lane_job = lanes.job
    last_word = max(words.size - 1, 0)
    words = np.concatenate([words, np.zeros(lanes.W + 1, np.int64)])  # overrun is caught below
    # int64 throughout: states < 2^32, products < 2^40, no casts inside the loop.
    table = table.view(np.int64)
    x = np.concatenate([np.asarray(j.states, dtype=np.int64) for j in jobs])
    pb = lanes.pb.astype(np.int64)
    mask_p = (np.int64(1) << pb) - 1
    fbits, fmask, low = _F_BITS, (1 << _F_BITS) - 1, STATE_LOW
    single = len(jobs) == 1
    out = [np.empty(n, dtype=np.int64) for n in ns]
    bad = False
    for t0 in range(0, lanes.T, CHUNK):
        t1 = min(lanes.T, t0 + CHUNK)
        pos, valid = lanes.positions(t0, t1)
        off = np.where(valid, gctx[pos] if gctx.size else 0, lane_ident[None, :])
        E = np.empty((t1 - t0, lanes.W), dtype=np.int64)
        for t in range(t1 - t0):
            e = table[off[t] + (x & mask_p)]
            E[t] = e
            x = (e & fmask) * (x >> pb) + ((e >> fbits) & fmask)
            small = np.flatnonzero(x < low)
            if not small.size:
                continue
            if single:  # one job: its words are read in order
                if ptr[0] + small.size > last_word + 1:
                    raise ArtifactError("rANS stream ran out of words (truncated or corrupt)")
                x[small] = (x[small] << 16) | words[ptr[0]:ptr[0] + small.size]
                ptr[0] += small.size
                continue
            jb = lane_job[small]
            counts = np.bincount(jb, minlength=len(jobs))
            first = word_base + ptr - (np.cumsum(counts) - counts)
            where = np.minimum(first[jb] + np.arange(small.size), last_word)
            x[small] = (x[small] << 16) | words[where]
            ptr += counts
        if np.any((E & fmask) == 0):
            bad = True  # a slot of an empty table: corrupt (reported below)
        sym = E >> (2 * fbits)
        for k, (a, b) in enumerate(zip(lanes.first[:-1], lanes.first[1:], strict=True)):
            v = valid[:, a:b]
            if v.any():
                out[k][pos[:, a:b][v] - lanes.base[a]] = sym[:, a:b][v]
    if bad:
        raise ArtifactError("rANS stream decodes a symbol its table does not hold")
    for k, (a, b) in enumerate(zip(lanes.first[:-1], lanes.first[1:], strict=True)):
        if ptr[k] != n_words[k] or (ns[k] and not np.all(x[a:b] == STATE_LOW)):
            raise ArtifactError("rANS stream does not decode cleanly (corrupt payload)")
    return out
