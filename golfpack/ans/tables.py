"""Frequency tables of our entropy coder and the stream pieces built from them.

Tables travel as one "level" byte per symbol (0 = absent, else a weight
2^(10 + (level-1)/16), rounded) and are normalised to M = 2^P by `normalize` (an exact
integer rule, see FORMAT.md), so the decoder rebuilds bit-identical tables from ~1 byte per
symbol. The coder itself (batched interleaved rANS) lives in golfpack.ans.rans; this module adds
the table and block serialisation and a self-describing single-context ("order-0") stream.
"""

from __future__ import annotations

import numpy as np

from golfpack.ans import rans
from golfpack.ans.rans import STATE_LOW, choose_lanes  # noqa: F401  (re-exported)
from golfpack.errors import ArtifactError
from golfpack.format.binio import Reader, Writer

PROB_BITS = 15
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

    f_i = max(1, floor((2*w_i*M + W) / (2*W))) for present symbols (W = sum of weights).
    A positive residual M - sum(f) goes to the first largest f_i; a negative one is taken
    one unit at a time from the first largest f_i (re-chosen after every unit). Raises
    ArtifactError when there are more symbols than slots.
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
    r = m - int(f.sum())
    if r >= 0:
        f[int(np.argmax(f))] += r
    else:
        for _ in range(-r):  # at most k units; every step keeps f >= 1 since sum(f) > k
            f[int(np.argmax(f))] -= 1
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


def rans_encode(symbols: np.ndarray, contexts: np.ndarray, freqs: np.ndarray,
                lanes: int, prob_bits: int = PROB_BITS) -> tuple[np.ndarray, np.ndarray]:
    """One stream -> (final lane states uint32 [W], words uint16 in decoding order)."""
    return rans.encode_batch([rans.EncodeJob(symbols, contexts, freqs, prob_bits, lanes)])[0]


def rans_decode(states: np.ndarray, words: np.ndarray, contexts: np.ndarray,
                freqs: np.ndarray, prob_bits: int = PROB_BITS) -> np.ndarray:
    """One stream -> symbols (int64); ArtifactError on corruption."""
    return rans.decode_batch([rans.DecodeJob(contexts, freqs, prob_bits, states, words)])[0]


def tables_from_levels(levels_per_ctx, prob_bits: int = PROB_BITS) -> np.ndarray:
    """int64 [n_ctx, S] frequencies (rows of zeros for empty tables)."""
    return np.stack([normalize(lv, prob_bits) for lv in levels_per_ctx])


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
    states, words = rans_encode(sym, np.zeros(sym.size, np.uint8), freqs,
                                choose_lanes(sym.size), prob_bits)
    write_block(w, states, words)


def read_order0(r: Reader, n: int, alphabet: int, prob_bits: int = PROB_BITS) -> rans.DecodeJob:
    """Read an order-0 stream's table and block -> its decode job (for batching)."""
    levels = read_table(r, alphabet)
    states, words = read_block(r, n)
    return rans.DecodeJob(np.zeros(n, np.uint8), tables_from_levels([levels], prob_bits),
                          prob_bits, states, words)


def decode_order0(r: Reader, n: int, alphabet: int, prob_bits: int = PROB_BITS) -> np.ndarray:
    levels = read_table(r, alphabet)
    states, words = read_block(r, n)
    return rans_decode(states, words, np.zeros(n, np.uint8), tables_from_levels([levels],
                                                                               prob_bits),
                       prob_bits)
