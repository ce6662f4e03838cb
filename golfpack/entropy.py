"""Our entropy coder: interleaved rANS with static, context-selected frequency tables.

Vectorised numpy: n symbols are split into W lanes of T = ceil(n / W) consecutive symbols
(lane j owns positions j*T .. j*T+T-1); each step codes one symbol in every lane at once, so
the Python loop runs T times whatever n is. Every symbol comes with a context (chosen before
coding, e.g. a row class): the context picks the frequency table.

Coder (32-bit state, 16-bit renormalisation, P-bit probabilities, M = 2^P, P <= 16):
  state x in [2^16, 2^32); a symbol with frequency f and cumulative frequency c is encoded as
  `if x >= f << (32 - P): emit x & 0xFFFF; x >>= 16`, then `x = (x // f) << P | ...`
  `x = (x // f) * M + (x % f) + c`; decoding is `slot = x % M; s = symbol(slot);
  x = f * (x >> P) + slot - c; if x < 2^16: x = x << 16 | next word`. Lanes start from the
  state 2^16; a correct decode ends with every lane back at 2^16 (an integrity check).
Positions past n in the last lane are coded with the identity table (one symbol, f = M),
which leaves the state untouched, so they cost nothing and need no special case.

Frequency tables travel as one "level" byte per symbol (0 = absent, else a weight
2^(10 + (level-1)/16), rounded) and are normalised to M by `normalize` (an exact integer
rule, see FORMAT.md), so the decoder rebuilds bit-identical tables from ~1 byte per symbol.
"""

from __future__ import annotations

import numpy as np

from golfpack.binio import Reader, Writer
from golfpack.errors import ArtifactError

PROB_BITS = 15
STATE_LOW = 1 << 16
MAX_LEVEL = 255
# level -> integer weight; level 0 = symbol absent.
LEVEL_WEIGHTS = np.array([0] + [int(round(2.0 ** (10 + (lv - 1) / 16)))
                                for lv in range(1, MAX_LEVEL + 1)], dtype=np.int64)


def levels_from_counts(counts: np.ndarray) -> np.ndarray:
    """Counts -> level bytes (255 for the most frequent symbol, 1/16-bit log steps below)."""
    counts = np.asarray(counts, dtype=np.float64)
    levels = np.zeros(counts.shape, dtype=np.uint8)
    nz = counts > 0
    if nz.any():
        rel = np.log2(counts[nz] / counts.max())
        levels[nz] = np.clip(MAX_LEVEL + np.round(16.0 * rel), 1, MAX_LEVEL).astype(np.uint8)
    return levels


def normalize(levels: np.ndarray, prob_bits: int = PROB_BITS) -> np.ndarray:
    """Level bytes -> integer frequencies summing to exactly 2^prob_bits (int64).

    f_i = max(1, floor((2*w_i*M + W) / (2*W))) for present symbols (W = sum of weights), then
    the residual M - sum(f) is added to the first largest f_i. Raises ArtifactError when the
    result is not a valid table (too many symbols for M, or the residual drives f below 1).
    """
    m = 1 << prob_bits
    w = LEVEL_WEIGHTS[np.asarray(levels, dtype=np.int64)]
    present = w > 0
    k = int(present.sum())
    if k == 0:
        return np.zeros(w.shape, dtype=np.int64)
    if k > m:
        raise ArtifactError(f"frequency table has {k} symbols, more than 2^{prob_bits}")
    total = int(w.sum())
    f = np.where(present, np.maximum(1, (2 * w * m + total) // (2 * total)), 0)
    j = int(np.argmax(f))
    f[j] += m - int(f.sum())
    if f[j] < 1:
        raise ArtifactError("frequency table cannot be normalised")
    return f


def ideal_bits(counts: np.ndarray, freqs: np.ndarray, prob_bits: int = PROB_BITS) -> float:
    """Code length in bits of `counts` under integer frequencies (sum 2^P) — what rANS pays,
    up to the ~32 bits per lane of final state."""
    counts = np.asarray(counts, dtype=np.float64)
    used = counts > 0
    if np.any(freqs[used] <= 0):
        return float("inf")
    return float(-(counts[used] * (np.log2(freqs[used]) - prob_bits)).sum())


def write_table(w: Writer, levels: np.ndarray, offset: int = 0) -> None:
    """A table as (zigzag first index, varint count, level bytes) trimmed to its support."""
    nz = np.flatnonzero(levels)
    if nz.size == 0:
        w.varint(0)
        return
    lo, hi = int(nz[0]), int(nz[-1])
    w.varint(hi - lo + 1)
    w.svarint(lo - offset)
    w.raw(np.asarray(levels[lo:hi + 1], dtype=np.uint8).tobytes())


def read_table(r: Reader, size: int, offset: int = 0) -> np.ndarray:
    """Inverse of write_table -> level bytes over `size` symbols."""
    levels = np.zeros(size, dtype=np.uint8)
    n = r.varint("table length", limit=size)
    if n == 0:
        return levels
    lo = r.svarint("table start", limit=size) + offset
    if lo < 0 or lo + n > size:
        r.fail(f"table covers symbols {lo}..{lo + n - 1}, outside 0..{size - 1}")
    levels[lo:lo + n] = r.array("u1", n, "table levels")
    return levels


def _lane_layout(n: int, lanes: int) -> tuple[int, int]:
    lanes = max(1, min(int(lanes), max(n, 1)))
    return lanes, -(-n // lanes) if n else 0


def _to_steps(values: np.ndarray, lanes: int, steps: int, fill) -> np.ndarray:
    """Per-position values -> [steps, lanes] (lane j = positions j*steps ...), padded."""
    out = np.full(lanes * steps, fill, dtype=values.dtype)
    out[:values.size] = values
    return np.ascontiguousarray(out.reshape(lanes, steps).T)


def choose_lanes(n: int, max_steps: int = 16384) -> int:
    """Lanes so that the Python loop runs at most `max_steps` (and at least ~n/8) times:
    each lane costs ~4 bytes of final state, each step ~50 µs, so big streams get many
    lanes and small ones few."""
    steps = max(1, min(max_steps, max(256, n // 8)))
    return max(1, min(65535, -(-n // steps)))


def rans_encode(symbols: np.ndarray, contexts: np.ndarray, freqs: np.ndarray,
                lanes: int, prob_bits: int = PROB_BITS) -> tuple[np.ndarray, np.ndarray]:
    """Encode -> (final lane states uint32 [W], words uint16 in decoding order).

    freqs: int64 [n_contexts, n_symbols], each used row summing to 2^prob_bits.
    """
    n = int(symbols.size)
    lanes, steps = _lane_layout(n, lanes)
    m = 1 << prob_bits
    cum = np.concatenate([np.zeros((freqs.shape[0], 1), np.int64), np.cumsum(freqs, 1)[:, :-1]],
                         axis=1)
    sym = np.asarray(symbols, dtype=np.int64)
    ctx = np.asarray(contexts, dtype=np.int64)
    f_pos = freqs[ctx, sym]
    if n and f_pos.min() <= 0:
        raise ValueError("a symbol has frequency 0 in its context's table")
    F = _to_steps(f_pos.astype(np.uint64), lanes, steps, np.uint64(m))
    C = _to_steps(cum[ctx, sym].astype(np.uint64), lanes, steps, np.uint64(0))
    x = np.full(lanes, STATE_LOW, dtype=np.uint64)
    emitted = np.zeros((steps, lanes), dtype=np.uint16)
    emit_mask = np.zeros((steps, lanes), dtype=bool)
    shift_hi, s16, pb = np.uint64(32 - prob_bits), np.uint64(16), np.uint64(prob_bits)
    for t in range(steps - 1, -1, -1):
        f = F[t]
        big = x >= (f << shift_hi)
        emitted[t] = x  # low 16 bits; kept only where `big`
        emit_mask[t] = big
        x = np.where(big, x >> s16, x)
        q = x // f
        x = (q << pb) + (x - q * f) + C[t]
    return x.astype(np.uint32), emitted[emit_mask]


def decode_tables(levels_per_ctx: list[np.ndarray], prob_bits: int = PROB_BITS) -> np.ndarray:
    """Slot lookup table uint64 [(n_ctx + 1) * M]: f | (slot - c) << 16 | symbol << 32.
    The extra last context is the identity table used for padding."""
    m = 1 << prob_bits
    tab = np.zeros((len(levels_per_ctx) + 1, m), dtype=np.uint64)
    slots = np.arange(m, dtype=np.uint64)
    for k, levels in enumerate(levels_per_ctx):
        f = normalize(levels, prob_bits)
        if not f.any():
            continue  # unused context: slot 0 entries (f = 0) make any use fail the check
        sym = np.repeat(np.arange(f.size, dtype=np.uint64), f)
        c = np.concatenate([[0], np.cumsum(f)[:-1]]).astype(np.uint64)
        tab[k] = f.astype(np.uint64)[sym] | ((slots - c[sym]) << np.uint64(16)) | \
            (sym << np.uint64(32))
    tab[-1] = np.uint64(m) | (slots << np.uint64(16))
    return tab.ravel()


def rans_decode(states: np.ndarray, words: np.ndarray, contexts: np.ndarray,
                table: np.ndarray, n_contexts: int, prob_bits: int = PROB_BITS) -> np.ndarray:
    """Decode n = contexts.size symbols (int64). Raises ArtifactError when the words run out,
    are left over, or a lane does not end at its start state (corruption)."""
    n = int(contexts.size)
    lanes = int(states.size)
    _, steps = _lane_layout(n, lanes)
    if lanes < 1 or lanes > max(n, 1):
        raise ArtifactError(f"rANS stream has {lanes} lanes for {n} symbols")
    m = 1 << prob_bits
    x = states.astype(np.uint64)
    if n and (x.min() < STATE_LOW):
        raise ArtifactError("rANS stream has a lane state below 2^16")
    ctx = np.asarray(contexts, dtype=np.int64)
    if n and (ctx.min() < 0 or ctx.max() >= n_contexts):
        raise ArtifactError("context index out of range")
    off = _to_steps(ctx * m, lanes, steps, n_contexts * m)
    w64 = np.asarray(words, dtype=np.uint64)
    n_words = int(w64.size)
    out = np.empty((steps, lanes), dtype=np.uint64)
    mask_p, mask16 = np.uint64(m - 1), np.uint64(0xFFFF)
    pb, s16, low = np.uint64(prob_bits), np.uint64(16), np.uint64(STATE_LOW)
    pos = 0
    for t in range(steps):
        slot = x & mask_p
        e = table[off[t] + slot.astype(np.int64)]
        out[t] = e
        f = e & mask16
        if not f.all():
            raise ArtifactError("rANS stream decodes a symbol its table does not hold")
        x = f * (x >> pb) + ((e >> s16) & mask16)
        small = x < low
        k = int(np.count_nonzero(small))
        if pos + k > n_words:
            raise ArtifactError("rANS stream ran out of words (truncated or corrupt)")
        x[small] = (x[small] << s16) | w64[pos:pos + k]
        pos += k
    if pos != n_words or (n and not np.all(x == low)):
        raise ArtifactError("rANS stream does not decode cleanly (corrupt payload)")
    sym = (out.T.ravel()[:n] >> np.uint64(32)).astype(np.int64)
    return sym


def write_block(w: Writer, states: np.ndarray, words: np.ndarray) -> None:
    w.varint(int(states.size))
    w.raw(states.astype("<u4").tobytes())
    w.varint(int(words.size))
    w.raw(words.astype("<u2").tobytes())


def read_block(r: Reader, n: int) -> tuple[np.ndarray, np.ndarray]:
    lanes = r.varint("lane count", limit=max(1, n))
    states = r.array("<u4", lanes, "lane states")
    n_words = r.varint("word count", limit=r.remaining // 2)
    words = r.array("<u2", n_words, "words")
    return states, words


def encode_order0(symbols: np.ndarray, alphabet: int, w: Writer,
                  prob_bits: int = PROB_BITS) -> None:
    """A self-describing single-context stream: table, then the rANS block."""
    sym = np.asarray(symbols, dtype=np.int64)
    levels = levels_from_counts(np.bincount(sym, minlength=alphabet))
    write_table(w, levels)
    freqs = normalize(levels, prob_bits)[None]
    states, words = rans_encode(sym, np.zeros(sym.size, np.int64), freqs,
                                choose_lanes(sym.size), prob_bits)
    write_block(w, states, words)


def decode_order0(r: Reader, n: int, alphabet: int, prob_bits: int = PROB_BITS) -> np.ndarray:
    levels = read_table(r, alphabet)
    states, words = read_block(r, n)
    table = decode_tables([levels], prob_bits)
    return rans_decode(states, words, np.zeros(n, np.int64), table, 1, prob_bits)
