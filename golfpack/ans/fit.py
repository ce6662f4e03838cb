"""Fitting the `ans` context model: row classes x column classes, chosen by total cost.

Trained weight rows differ in spread, so one global distribution wastes bits (brotli-11 gets
~0.5-1% under order-0 by adapting; zstd does not). Every row gets a row class (K classes),
every column of every tensor a column class (C classes), and the code at (r, c) is coded with
the table of context (class(r), class(c)). Classes are fitted by Lloyd-style alternation on
per-row / per-column histograms, minimising data bits + a class-map prior; K and C are then
chosen by the real total — data bits under the quantized tables + table bytes + class-map
bits + lane states — so extra classes are used only where the data pays for them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from golfpack.ans import tables as ent
from golfpack.ans.rans import choose_lanes

MAX_CLASSES = 64
MAX_CONTEXTS = 256
K_GRID = (1, 4, 8, 12, 16, 24, 32, 48, 64)
C_GRID = (2, 4, 8)
ITERS = 4
TABLE_SLOTS_FLOOR = 1 << 16  # decoder slot tables may hold 16 n + this many entries


def prob_bits_for(n: int, bits: int) -> int:
    """Probability precision P. The decoder's per-step table lookups are random accesses
    into (contexts x 2^P) slots, so P is as small as the loss allows: 13 bits cost int6
    streams ~0.01% against 15 bits, int7/int8 (more rare symbols) get 14; small streams 12."""
    if n < 1 << 16:
        return 12
    return 13 if bits <= 6 else 14


def tables_fit(n_ctx: int, prob_bits: int, n: int) -> bool:
    """The decoder builds (n_ctx + 1) * 2^P slot entries of 8 bytes: keep that within 128
    bytes per declared code plus 512 KiB, so a hostile header cannot make a small or empty
    stream allocate a lot (empty tables cost one payload byte each)."""
    return (n_ctx + 1) << prob_bits <= 16 * n + TABLE_SLOTS_FLOOR


@dataclass
class Layout:
    """Codes of several matrices in one stream: row-major, segment after segment. Rows and
    columns are numbered across segments (each segment's columns get their own ids)."""

    shapes: list[tuple[int, int]]

    @property
    def n(self) -> int:
        return sum(r * c for r, c in self.shapes)

    @property
    def n_rows(self) -> int:
        return sum(r for r, _ in self.shapes)

    @property
    def n_cols(self) -> int:
        return sum(c for _, c in self.shapes)

    def row_ids(self) -> np.ndarray:
        parts = [np.repeat(np.arange(r, dtype=np.int32), c) for r, c in self.shapes]
        offs = np.cumsum([0] + [r for r, _ in self.shapes])
        return np.concatenate([p + o for p, o in zip(parts, offs, strict=False)]) \
            if parts else np.zeros(0, np.int32)

    def col_ids(self) -> np.ndarray:
        parts, base = [], 0
        for r, c in self.shapes:
            parts.append(np.tile(np.arange(base, base + c, dtype=np.int32), r))
            base += c
        return np.concatenate(parts) if parts else np.zeros(0, np.int32)

    def contexts(self, row_cls: np.ndarray, col_cls: np.ndarray, C: int) -> np.ndarray:
        """Context of every code (uint16, layout order) = row_cls[row] * C + col_cls[col]."""
        out, r0, c0 = [], 0, 0
        for r, c in self.shapes:
            out.append((row_cls[r0:r0 + r, None] * C + col_cls[None, c0:c0 + c])
                       .astype(np.uint16).ravel())
            r0, c0 = r0 + r, c0 + c
        return np.concatenate(out) if out else np.zeros(0, np.uint16)


def entropy_bits(counts: np.ndarray) -> float:
    counts = np.asarray(counts, dtype=np.float64)
    tot = counts.sum()
    nz = counts[counts > 0]
    return float(-(nz * np.log2(nz / tot)).sum()) if tot else 0.0


def table_levels(counts: np.ndarray, symmetric: bool, qmax: int) -> list[np.ndarray]:
    """Level bytes (signed layout, size 2*qmax+1) for each context's counts. Symmetric
    tables give +m and -m the level of their average count."""
    out = []
    for cnt in counts:
        if symmetric:
            mags = cnt[qmax:].astype(np.float64) + cnt[:qmax + 1][::-1]  # [0] = 2 * cnt(0)
            lev = ent.levels_from_counts(mags)
            out.append(np.concatenate([lev[:0:-1], lev]))
        else:
            out.append(ent.levels_from_counts(cnt))
    return out


def _table_bytes(counts: np.ndarray, symmetric: bool, qmax: int) -> int:
    """Bytes one table costs in the payload (varint length, start, levels)."""
    nz = np.flatnonzero(counts[qmax:] + counts[:qmax + 1][::-1] if symmetric else counts)
    return 1 if nz.size == 0 else 2 + int(nz[-1] - nz[0] + 1)


def _class_init(values: np.ndarray, k: int) -> np.ndarray:
    order = np.argsort(values, kind="stable")
    cls = np.empty(values.size, dtype=np.int64)
    cls[order] = (np.arange(values.size) * k) // max(values.size, 1)
    return cls


def _sum_by(cls: np.ndarray, k: int, hist: np.ndarray) -> np.ndarray:
    """Rows of `hist` summed by class -> [k, ...] (sorted reduceat; np.add.at is slow)."""
    out = np.zeros((k,) + hist.shape[1:])
    if cls.size == 0:
        return out
    order = np.argsort(cls, kind="stable")
    sc = cls[order]
    present = np.flatnonzero(np.bincount(sc, minlength=k))
    out[present] = np.add.reduceat(hist[order], np.searchsorted(sc, present), axis=0)
    return out


def _neglog(counts):
    sm = counts + 0.02
    return -np.log2(sm / sm.sum(axis=-1, keepdims=True))


def _prior(cls, k):
    return -np.log2((np.bincount(cls, minlength=k) + 0.5) / (cls.size + 0.5 * k))


class _Fitter:
    """Alternating row/column class assignment for one stream."""

    def __init__(self, sym: np.ndarray, layout: Layout, qmax: int):
        self.sym, self.layout, self.qmax = sym, layout, qmax
        self.S = 2 * qmax + 1
        self.rows = layout.row_ids()
        self.cols = layout.col_ids()
        self.R, self.NC = layout.n_rows, layout.n_cols
        self.row_hist = np.bincount(self.rows.astype(np.int64) * self.S + sym,
                                    minlength=self.R * self.S).reshape(self.R, self.S) \
            .astype(np.float64)
        mag = np.abs(np.arange(self.S) - qmax)
        self.row_spread = self.row_hist @ mag / np.maximum(self.row_hist.sum(1), 1)
        col_mag = np.bincount(self.cols, weights=mag[sym], minlength=self.NC)
        col_n = np.bincount(self.cols, minlength=self.NC)
        self.col_spread = col_mag / np.maximum(col_n, 1)

    def _hist_rc(self, col_cls, C):
        idx = (self.rows.astype(np.int64) * C + col_cls[self.cols]) * self.S + self.sym
        return np.bincount(idx, minlength=self.R * C * self.S).reshape(self.R, C * self.S) \
            .astype(np.float64)

    def _hist_ck(self, row_cls, K):
        idx = (self.cols.astype(np.int64) * K + row_cls[self.rows]) * self.S + self.sym
        return np.bincount(idx, minlength=self.NC * K * self.S).reshape(self.NC, K, self.S) \
            .astype(np.float64)

    def fit(self, K: int, C: int, iters: int = ITERS):
        row_cls = _class_init(self.row_spread, K)
        col_cls = _class_init(self.col_spread, C) if C > 1 else np.zeros(self.NC, np.int64)
        hist = self.row_hist if C == 1 else self._hist_rc(col_cls, C)
        for it in range(iters):
            nl = _neglog(_sum_by(row_cls, K, hist).reshape(K, C, self.S)).reshape(K, -1)
            new_rows = np.argmin(hist @ nl.T + _prior(row_cls, K)[None], axis=1)
            changed = not np.array_equal(new_rows, row_cls)
            row_cls = new_rows
            if C > 1:
                hck = self._hist_ck(row_cls, K)  # [NC, K, S]
                nl3 = _neglog(_sum_by(col_cls, C, hck).transpose(1, 0, 2))  # [K, C, S]
                cost = np.einsum("nks,kcs->nc", hck, nl3) + _prior(col_cls, C)[None]
                new_cols = np.argmin(cost, axis=1)
                changed = changed or not np.array_equal(new_cols, col_cls)
                col_cls = new_cols
                hist = self._hist_rc(col_cls, C)
            if not changed and it:
                break
        return row_cls, col_cls, hist

    def cost(self, K, C, row_cls, col_cls, hist, prob_bits):
        """Total payload bytes (estimate within a few bytes) and the cheaper symmetry."""
        counts = _sum_by(row_cls, K, hist).reshape(K * C, self.S)
        best = None
        for symmetric in (True, False):
            levels = table_levels(counts, symmetric, self.qmax)
            bits = sum(ent.ideal_bits(cnt, ent.normalize(lev, prob_bits), prob_bits)
                       for cnt, lev in zip(counts, levels, strict=True) if cnt.any())
            total = bits / 8 + sum(_table_bytes(c, symmetric, self.qmax) for c in counts)
            if best is None or total < best[0]:
                best = (total, symmetric)
        side = 0.0
        if K > 1:
            side += entropy_bits(np.bincount(row_cls, minlength=K)) / 8 + K + 8
        if C > 1:
            side += entropy_bits(np.bincount(col_cls, minlength=C)) / 8 + C + 8
        return best[0] + side + 4 * choose_lanes(self.layout.n), best[1]


@dataclass
class Fit:
    K: int
    C: int
    symmetric: bool
    row_cls: np.ndarray
    col_cls: np.ndarray
    est_bytes: float
    prob_bits: int = ent.PROB_BITS


def fit_model(codes: np.ndarray, layout: Layout, bits: int, max_k: int = MAX_CLASSES,
              try_columns: bool = True) -> Fit:
    """Choose K, C and the class maps that minimise the estimated total size."""
    qmax = (1 << (bits - 1)) - 1
    sym = np.asarray(codes).astype(np.int64).ravel() + qmax
    fitter = _Fitter(sym, layout, qmax)
    pb = prob_bits_for(layout.n, bits)
    best = None
    for K in K_GRID:
        if best is not None and (K > max_k or K > layout.n_rows
                                 or not tables_fit(K, pb, layout.n)):
            break
        rc, cc, hist = fitter.fit(K, 1)
        total, symm = fitter.cost(K, 1, rc, cc, hist, pb)
        if best is None or total < best.est_bytes:
            best = Fit(K, 1, symm, rc, cc, total, pb)
        else:
            break  # the cost is close to convex in K
    if not try_columns or layout.n_cols < 2:
        return best
    for C in C_GRID:
        K = best.K
        if K * C > MAX_CONTEXTS or C > layout.n_cols or not tables_fit(K * C, pb, layout.n):
            break
        # Screen with two iterations; only a promising C gets the full fit.
        rc, cc, hist = fitter.fit(K, C, iters=2)
        total, symm = fitter.cost(K, C, rc, cc, hist, pb)
        if total >= best.est_bytes:
            break
        best = Fit(K, C, symm, rc, cc, total, pb)
        rc, cc, hist = fitter.fit(K, C)
        total, symm = fitter.cost(K, C, rc, cc, hist, pb)
        if total < best.est_bytes:
            best = Fit(K, C, symm, rc, cc, total, pb)
    return best
