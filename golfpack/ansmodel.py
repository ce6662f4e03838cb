"""The `ans` codec for integer codes: a context model fitted to the stream, then rANS.

Trained weight rows differ in spread, so one global distribution wastes bits (brotli-11 gets
~0.5-1% under order-0 by adapting; zstd does not). Here every row gets a row class (K
classes) and every column of every tensor a column class (C classes); the code at (r, c) is
coded with the table of context (class(r), class(c)). Classes are fitted by Lloyd-style
alternation that minimises the real cost — data bits + table bytes + class-map bits — and K,
C are chosen the same way, so more classes are used only where the data pays for them.
Tables are symmetric (|q| only, shared by ±q) when that is cheaper.

Payload (all little-endian; see FORMAT.md for the exact layout):
  u8 version=1, u8 bits, u8 prob_bits, u8 flags (bit0 symmetric tables),
  varint n_segments, (varint rows, varint cols) per segment,
  varint K, varint C, K*C tables, [row classes order-0 if K > 1], [column classes if C > 1],
  rANS block of the codes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from golfpack import entropy as ent
from golfpack.binio import Reader, Writer

VERSION = 1
MAX_CLASSES = 64
MAX_CONTEXTS = 256
K_GRID = (1, 2, 4, 6, 8, 12, 16, 24, 32, 48, 64)
C_GRID = (2, 4, 8)
ITERS = 6
TABLE_SLOTS_FLOOR = 1 << 22  # decoder slot tables may hold max(this, 16 n) entries


def prob_bits_for(n: int) -> int:
    """Probability precision: 15 bits for big streams, 12 for small ones (smaller decoder
    tables; the precision loss is negligible at that size)."""
    return ent.PROB_BITS if n >= 1 << 16 else 12


def tables_fit(n_ctx: int, prob_bits: int, n: int) -> bool:
    """The decoder builds (n_ctx + 1) * 2^P slot entries: keep that proportional to the
    stream so a hostile header cannot make a tiny stream allocate a lot."""
    return (n_ctx + 1) << prob_bits <= max(TABLE_SLOTS_FLOOR, 16 * n)


@dataclass
class Layout:
    """Codes of several matrices in one stream: row-major, segment after segment."""

    shapes: list[tuple[int, int]]

    @property
    def n(self) -> int:
        return sum(r * c for r, c in self.shapes)

    def row_ids(self) -> np.ndarray:
        return np.repeat(np.arange(sum(r for r, _ in self.shapes)),
                         np.concatenate([np.full(r, c, np.int64) for r, c in self.shapes])
                         if self.shapes else np.zeros(0, np.int64))

    def col_ids(self) -> np.ndarray:
        parts, base = [], 0
        for r, c in self.shapes:
            parts.append(np.tile(np.arange(base, base + c), r))
            base += c
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)

    @property
    def n_rows(self) -> int:
        return sum(r for r, _ in self.shapes)

    @property
    def n_cols(self) -> int:
        return sum(c for _, c in self.shapes)


def _entropy_bits(counts: np.ndarray) -> float:
    counts = np.asarray(counts, dtype=np.float64)
    tot = counts.sum()
    nz = counts[counts > 0]
    return float(-(nz * np.log2(nz / tot)).sum()) if tot else 0.0


def _table_bytes(counts: np.ndarray, symmetric: bool, qmax: int) -> int:
    """Bytes one table costs in the header (varint length, start, levels)."""
    if symmetric:
        mags = counts[qmax:] + counts[:qmax + 1][::-1]
        nz = np.flatnonzero(mags)
    else:
        nz = np.flatnonzero(counts)
    return 1 if nz.size == 0 else 2 + int(nz[-1] - nz[0] + 1)


def _tables(counts: np.ndarray, symmetric: bool, qmax: int) -> list[np.ndarray]:
    """Level bytes (signed layout, size 2*qmax+1) for each context's counts."""
    out = []
    for cnt in counts:
        if symmetric:
            mags = cnt[qmax:].astype(np.float64) + cnt[:qmax + 1][::-1]
            mags[0] = cnt[qmax] * 2.0
            lev = ent.levels_from_counts(mags)
            out.append(np.concatenate([lev[:0:-1], lev]))
        else:
            out.append(ent.levels_from_counts(cnt))
    return out


def _class_init(values: np.ndarray, k: int) -> np.ndarray:
    order = np.argsort(values, kind="stable")
    cls = np.empty(values.size, dtype=np.int64)
    cls[order] = (np.arange(values.size) * k) // max(values.size, 1)
    return cls


class _Fitter:
    """Alternating row/column class assignment for one stream."""

    def __init__(self, sym: np.ndarray, layout: Layout, qmax: int):
        self.sym, self.layout, self.qmax = sym, layout, qmax
        self.S = 2 * qmax + 1
        self.rows = layout.row_ids()
        self.cols = layout.col_ids()
        self.R, self.NC = layout.n_rows, layout.n_cols
        self.row_hist = np.bincount(self.rows * self.S + sym, minlength=self.R * self.S) \
            .reshape(self.R, self.S).astype(np.float64)
        mag = np.abs(np.arange(self.S) - qmax)
        self.row_spread = self.row_hist @ mag / np.maximum(self.row_hist.sum(1), 1)
        col_mag = np.bincount(self.cols, weights=mag[sym], minlength=self.NC)
        col_n = np.bincount(self.cols, minlength=self.NC)
        self.col_spread = col_mag / np.maximum(col_n, 1)

    def _hist_rc(self, col_cls, C):
        idx = (self.rows * C + col_cls[self.cols]) * self.S + self.sym
        return np.bincount(idx, minlength=self.R * C * self.S).reshape(self.R, C * self.S) \
            .astype(np.float64)

    def _hist_ck(self, row_cls, K):
        idx = (self.cols * K + row_cls[self.rows]) * self.S + self.sym
        return np.bincount(idx, minlength=self.NC * K * self.S).reshape(self.NC, K, self.S) \
            .astype(np.float64)

    @staticmethod
    def _neglog(counts):
        sm = counts + 0.02
        return -np.log2(sm / sm.sum(axis=-1, keepdims=True))

    def fit(self, K: int, C: int):
        row_cls = _class_init(self.row_spread, K)
        col_cls = _class_init(self.col_spread, C) if C > 1 else np.zeros(self.NC, np.int64)
        hist = self.row_hist if C == 1 else self._hist_rc(col_cls, C)
        for it in range(ITERS):
            counts = np.zeros((K, C * self.S))
            np.add.at(counts, row_cls, hist)
            nl = self._neglog(counts.reshape(K, C, self.S)).reshape(K, C * self.S)
            prior = -np.log2((np.bincount(row_cls, minlength=K) + 0.5) / (self.R + 0.5 * K))
            new_rows = np.argmin(hist @ nl.T + prior[None], axis=1)
            if C > 1:
                hck = self._hist_ck(new_rows, K)  # [NC, K, S]
                tab = np.zeros((K, C, self.S))
                np.add.at(tab.transpose(1, 0, 2), col_cls, hck)
                nl3 = self._neglog(tab)  # [K, C, S]
                cprior = -np.log2((np.bincount(col_cls, minlength=C) + 0.5) / (self.NC + 0.5 * C))
                cost = np.einsum("nks,kcs->nc", hck, nl3) + cprior[None]
                new_cols = np.argmin(cost, axis=1)
                changed = not (np.array_equal(new_rows, row_cls)
                               and np.array_equal(new_cols, col_cls))
                row_cls, col_cls = new_rows, new_cols
                hist = self._hist_rc(col_cls, C)
            else:
                changed = not np.array_equal(new_rows, row_cls)
                row_cls = new_rows
            if not changed and it:
                break
        return row_cls, col_cls, hist

    def cost(self, K, C, row_cls, col_cls, hist, prob_bits):
        """Total bytes (estimate within a few bytes) and the chosen symmetry."""
        counts = np.zeros((K, C * self.S))
        np.add.at(counts, row_cls, hist)
        counts = counts.reshape(K * C, self.S)
        best = None
        for symmetric in (True, False):
            levels = _tables(counts, symmetric, self.qmax)
            bits = 0.0
            for cnt, lev in zip(counts, levels, strict=True):
                if cnt.any():
                    bits += ent.ideal_bits(cnt, ent.normalize(lev, prob_bits), prob_bits)
            table = sum(_table_bytes(c, symmetric, self.qmax) for c in counts)
            total = bits / 8 + table
            if best is None or total < best[0]:
                best = (total, symmetric)
        side = 0.0
        if K > 1:
            side += _entropy_bits(np.bincount(row_cls, minlength=K)) / 8 + K + 8
        if C > 1:
            side += _entropy_bits(np.bincount(col_cls, minlength=C)) / 8 + C + 8
        lanes = ent.choose_lanes(self.layout.n) * 4
        return best[0] + side + lanes, best[1]


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
    sym = codes.astype(np.int64) + qmax
    fitter = _Fitter(sym, layout, qmax)
    pb = prob_bits_for(layout.n)
    best = None
    worse = 0
    for K in K_GRID:
        if best is not None and (K > max_k or K > layout.n_rows
                                 or not tables_fit(K, pb, layout.n)):
            break
        rc, cc, hist = fitter.fit(K, 1)
        total, symm = fitter.cost(K, 1, rc, cc, hist, pb)
        if best is None or total < best.est_bytes:
            best, worse = Fit(K, 1, symm, rc, cc, total, pb), 0
        else:
            worse += 1
            if worse >= 2:
                break
    if try_columns and layout.n_cols > 1:
        for C in C_GRID:
            K = best.K
            if K * C > MAX_CONTEXTS or C > layout.n_cols or not tables_fit(K * C, pb, layout.n):
                break
            rc, cc, hist = fitter.fit(K, C)
            total, symm = fitter.cost(K, C, rc, cc, hist, pb)
            if total < best.est_bytes:
                best = Fit(K, C, symm, rc, cc, total, pb)
            else:
                break
    return best


def encode(codes: np.ndarray, layout: Layout, bits: int,
           fit: Fit | None = None) -> tuple[bytes, np.ndarray]:
    """int8 codes (flat, layout order) -> (payload, ideal bits per segment)."""
    codes = np.asarray(codes).ravel()
    if codes.size != layout.n:
        raise ValueError(f"{codes.size} codes for a layout of {layout.n}")
    qmax = (1 << (bits - 1)) - 1
    if codes.size and int(np.abs(codes.astype(np.int16)).max()) > qmax:
        raise ValueError(f"codes exceed ±{qmax} for int{bits}")
    fit = fit or fit_model(codes, layout, bits)
    prob_bits = fit.prob_bits
    S = 2 * qmax + 1
    sym = codes.astype(np.int64) + qmax
    ctx = fit.row_cls[layout.row_ids()] * fit.C + fit.col_cls[layout.col_ids()]
    n_ctx = fit.K * fit.C
    counts = np.bincount(ctx * S + sym, minlength=n_ctx * S).reshape(n_ctx, S)
    levels = _tables(counts, fit.symmetric, qmax)
    freqs = np.stack([ent.normalize(lv, prob_bits) for lv in levels])
    w = Writer()
    w.u8(VERSION)
    w.u8(bits)
    w.u8(prob_bits)
    w.u8(1 if fit.symmetric else 0)
    w.varint(len(layout.shapes))
    for r, c in layout.shapes:
        w.varint(r)
        w.varint(c)
    w.varint(fit.K)
    w.varint(fit.C)
    for lev in levels:
        ent.write_table(w, lev[qmax:] if fit.symmetric else lev)
    if fit.K > 1:
        ent.encode_order0(fit.row_cls, fit.K, w, prob_bits)
    if fit.C > 1:
        ent.encode_order0(fit.col_cls, fit.C, w, prob_bits)
    states, words = ent.rans_encode(sym, ctx, freqs, ent.choose_lanes(sym.size), prob_bits)
    ent.write_block(w, states, words)
    return w.getvalue(), segment_bits(layout, ctx * S + sym, freqs, prob_bits)


def segment_bits(layout: Layout, idx: np.ndarray, freqs: np.ndarray, prob_bits: int):
    """Ideal code length (bits) of each segment under the final tables: the basis of the
    per-tensor byte attribution in reports (identical at encode and decode time)."""
    seg = np.repeat(np.arange(len(layout.shapes)), [r * c for r, c in layout.shapes])
    cost = prob_bits - np.log2(np.maximum(np.asarray(freqs, np.float64), 1)).ravel()
    return np.bincount(seg, weights=cost[idx], minlength=len(layout.shapes))


def decode(payload: bytes | memoryview, max_symbols: int):
    """Payload -> (int8 codes flat, layout, bits, ideal bits per segment).
    `max_symbols` bounds every allocation."""
    r = Reader(payload, "ans stream")
    version = r.u8("version")
    if version != VERSION:
        r.fail(f"unsupported ans payload version {version}")
    bits = r.u8("bits")
    prob_bits = r.u8("prob_bits")
    flags = r.u8("flags")
    if not 2 <= bits <= 8 or not 10 <= prob_bits <= 16 or flags > 1:
        r.fail(f"bad parameters bits={bits} prob_bits={prob_bits} flags={flags}")
    symmetric = bool(flags & 1)
    qmax = (1 << (bits - 1)) - 1
    S = 2 * qmax + 1
    n_seg = r.varint("segment count", limit=r.remaining // 2)
    shapes, total, edges = [], 0, 0
    # Rows and columns carry class maps too: bound them by the codes plus a small slack
    # (empty tensors such as [0, 512] have columns but no codes).
    edge_limit = max_symbols + (1 << 20)
    for _ in range(n_seg):
        rows = r.varint("rows", limit=edge_limit)
        cols = r.varint("cols", limit=edge_limit)
        total += rows * cols
        edges += rows + cols
        if total > max_symbols or edges > edge_limit:
            r.fail(f"segments hold more than the {max_symbols} codes declared")
        shapes.append((rows, cols))
    layout = Layout(shapes)
    K = r.varint("K", limit=MAX_CLASSES)
    C = r.varint("C", limit=MAX_CLASSES)
    if K < 1 or C < 1 or K * C > MAX_CONTEXTS or (K > 1 and K > layout.n_rows) \
            or (C > 1 and C > layout.n_cols):
        r.fail(f"bad class counts K={K} C={C}")
    if not tables_fit(K * C, prob_bits, layout.n):
        r.fail(f"{K * C} tables of 2^{prob_bits} slots are too many for {layout.n} codes")
    levels = []
    for _ in range(K * C):
        if symmetric:
            mags = ent.read_table(r, qmax + 1)
            levels.append(np.concatenate([mags[:0:-1], mags]))
        else:
            levels.append(ent.read_table(r, S))
    row_cls = ent.decode_order0(r, layout.n_rows, K, prob_bits) if K > 1 else \
        np.zeros(layout.n_rows, np.int64)
    col_cls = ent.decode_order0(r, layout.n_cols, C, prob_bits) if C > 1 else \
        np.zeros(layout.n_cols, np.int64)
    if row_cls.size and row_cls.max() >= K or col_cls.size and col_cls.max() >= C:
        r.fail("class map out of range")
    ctx = row_cls[layout.row_ids()] * C + col_cls[layout.col_ids()]
    states, words = ent.read_block(r, layout.n)
    r.expect_end()
    table = ent.decode_tables(levels, prob_bits)
    sym = ent.rans_decode(states, words, ctx, table, K * C, prob_bits)
    freqs = np.stack([ent.normalize(lv, prob_bits) for lv in levels])
    seg_bits = segment_bits(layout, ctx * S + sym, freqs, prob_bits)
    return (sym - qmax).astype(np.int8), layout, bits, seg_bits
