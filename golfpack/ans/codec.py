"""The `ans` codec for integer codes: a fitted context model (golfpack.ans.fit) + rANS.

Payload (all little-endian; FORMAT.md has the exact layout and decoding procedure):
  u8 version=1, u8 bits, u8 prob_bits, u8 flags (bit0 symmetric tables, bit1 row refs),
  varint n_segments, (varint rows, varint cols) per segment, [row references if bit1],
  varint K, varint C, K*C tables, [row classes order-0 if K > 1], [column classes if C > 1],
  rANS block of the codes.

Encoding and decoding are split in two so that many streams share one rANS loop:
`prepare` fits the model and writes everything but the block, `rans.encode_batch` codes the
blocks of all prepared streams together, `finish` appends the block; likewise `parse` reads
everything but the codes, `rans.decode_batch` decodes all blocks, `complete` checks them.
`encode` / `decode` / `decode_many` wrap these.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from golfpack.ans import rans, rowref
from golfpack.ans import tables as ent
from golfpack.ans.fit import (  # noqa: F401  (Layout and fit_model are part of this API)
    MAX_CLASSES,
    MAX_CONTEXTS,
    Fit,
    Layout,
    fit_model,
    table_levels,
    tables_fit,
)
from golfpack.errors import ArtifactError
from golfpack.format.binio import Reader, Writer

VERSION = 1


@dataclass
class Prepared:
    """A stream ready for the batched rANS pass."""

    head: bytes  # payload up to the rANS block
    job: rans.EncodeJob
    layout: Layout
    est_bytes: float  # the whole payload, estimated (exact within a few bytes)


@dataclass
class Parsed:
    """A payload read to the end: tables, the class-map jobs, and the codes block."""

    layout: Layout
    bits: int
    prob_bits: int
    C: int
    freqs: np.ndarray
    map_jobs: list  # [row classes job] if K > 1, [column classes job] if C > 1
    states: np.ndarray
    words: np.ndarray
    refs: list = ()  # row references [(row, back)] (flags bit 1)

    def main_job(self, maps: list[np.ndarray]) -> rans.DecodeJob:
        """The codes' job, given the decoded class maps (same order as map_jobs)."""
        it = iter(maps)
        K = self.freqs.shape[0] // self.C
        row_cls = next(it) if K > 1 else np.zeros(self.layout.n_rows, np.int64)
        col_cls = next(it) if self.C > 1 else np.zeros(self.layout.n_cols, np.int64)
        if (row_cls.size and row_cls.max() >= K) or (col_cls.size and col_cls.max() >= self.C):
            raise ArtifactError("ans stream: class map out of range")
        ctx = self.layout.contexts(row_cls, col_cls, self.C)
        return rans.DecodeJob(ctx, self.freqs, self.prob_bits, self.states, self.words)


def _row_bits(sym: np.ndarray, layout: Layout, fit: Fit, S: int) -> np.ndarray:
    """Each row's estimated bits under the fitted contexts (smoothed counts)."""
    ctx = layout.contexts(fit.row_cls, fit.col_cls, fit.C).astype(np.int64)
    counts = np.bincount(ctx * S + sym, minlength=fit.K * fit.C * S).reshape(-1, S) + 0.5
    cost = -np.log2(counts / counts.sum(1, keepdims=True)).ravel()[ctx * S + sym]
    return np.bincount(layout.row_ids(), weights=cost, minlength=layout.n_rows)


def prepare(codes: np.ndarray, layout: Layout, bits: int, fit: Fit | None = None,
            refs="auto") -> Prepared:
    """Fit the model (unless `fit` is given) and write the payload up to the rANS block.
    `refs`: "auto" tries coding rows as deltas to earlier rows (golfpack.ans.rowref) and
    keeps them when the total is smaller; or an explicit [(row, back)] list, or ()."""
    codes = np.asarray(codes).ravel()
    if codes.size != layout.n:
        raise ValueError(f"{codes.size} codes for a layout of {layout.n}")
    qmax = (1 << (bits - 1)) - 1
    if codes.size and int(np.abs(codes.astype(np.int16)).max()) > qmax:
        raise ValueError(f"codes exceed ±{qmax} for int{bits}")
    if isinstance(refs, str):
        if refs != "auto":
            raise ValueError(f"refs must be 'auto' or a list of (row, back), not {refs!r}")
        refs = []
        if fit is None:
            fit = fit_model(codes, layout, bits)
            if layout.n_rows > 1:
                sym = codes.astype(np.int64) + qmax
                refs = rowref.choose(codes, layout, qmax, _row_bits(sym, layout, fit, 2 * qmax + 1))
            if refs:
                coded = rowref.apply(codes, layout, refs, qmax)
                fit_r = fit_model(coded, layout, bits)
                if fit_r.est_bytes + rowref.side_bytes(refs) < fit.est_bytes:
                    codes, fit = coded, fit_r
                else:
                    refs = []
    else:
        refs = rowref.check(refs, layout)
        if refs:
            codes = rowref.apply(codes, layout, refs, qmax)
        fit = fit or fit_model(codes, layout, bits)
    return _prepare_fitted(codes, layout, bits, fit, refs)


def _prepare_fitted(codes, layout: Layout, bits: int, fit: Fit, refs) -> Prepared:
    qmax = (1 << (bits - 1)) - 1
    pb = fit.prob_bits
    S = 2 * qmax + 1
    sym = (codes.astype(np.int16) + qmax).astype(np.uint8)
    ctx = layout.contexts(fit.row_cls, fit.col_cls, fit.C)
    n_ctx = fit.K * fit.C
    counts = np.bincount(ctx.astype(np.int64) * S + sym, minlength=n_ctx * S).reshape(n_ctx, S)
    levels = table_levels(counts, fit.symmetric, qmax)
    freqs = ent.tables_from_levels(levels, pb)
    w = Writer()
    for v in (VERSION, bits, pb, (1 if fit.symmetric else 0) | (2 if refs else 0)):
        w.u8(v)
    w.varint(len(layout.shapes))
    for r, c in layout.shapes:
        w.varint(r)
        w.varint(c)
    if refs:
        rowref.write(w, refs)
    w.varint(fit.K)
    w.varint(fit.C)
    for lev in levels:
        ent.write_table(w, lev[qmax:] if fit.symmetric else lev)
    if fit.K > 1:
        ent.encode_order0(fit.row_cls, fit.K, w, pb)
    if fit.C > 1:
        ent.encode_order0(fit.col_cls, fit.C, w, pb)
    head = w.getvalue()
    lanes = rans.choose_lanes(codes.size)
    data_bits = sum(ent.ideal_bits(c, f, pb) for c, f in zip(counts, freqs, strict=True)
                    if c.any())
    est = len(head) + data_bits / 8 + 4 * lanes + 8
    return Prepared(head, rans.EncodeJob(sym, ctx, freqs, pb, lanes), layout, est)


def finish(prep: Prepared, states: np.ndarray, words: np.ndarray) -> tuple[bytes, np.ndarray]:
    """-> (payload, ideal bits per segment)."""
    w = Writer()
    w.raw(prep.head)
    ent.write_block(w, states, words)
    j = prep.job
    return w.getvalue(), segment_bits(prep.layout, j.contexts, j.symbols, j.freqs, j.prob_bits)


def segment_bits(layout: Layout, ctx, sym, freqs, prob_bits: int) -> np.ndarray:
    """Ideal code length (bits) of each segment under the final tables: the basis of the
    per-tensor byte attribution in reports (identical at encode and decode time)."""
    S = freqs.shape[1]
    cost = (prob_bits - np.log2(np.maximum(np.asarray(freqs, np.float64), 1))).ravel()
    out, start = np.zeros(len(layout.shapes)), 0
    for i, (r, c) in enumerate(layout.shapes):
        sl = slice(start, start + r * c)
        out[i] = cost[ctx[sl].astype(np.int64) * S + sym[sl]].sum()
        start += r * c
    return out


def encode(codes: np.ndarray, layout: Layout, bits: int,
           fit: Fit | None = None) -> tuple[bytes, np.ndarray]:
    """int8 codes (flat, layout order) -> (payload, ideal bits per segment)."""
    prep = prepare(codes, layout, bits, fit)
    return finish(prep, *rans.encode_batch([prep.job])[0])


def parse(payload: bytes | memoryview, max_symbols: int) -> Parsed:
    """Read a payload up to (and including) its rANS block; `max_symbols` bounds every
    allocation sized by the payload."""
    r = Reader(payload, "ans stream")
    version = r.u8("version")
    if version != VERSION:
        r.fail(f"unsupported ans payload version {version}")
    bits, pb, flags = r.u8("bits"), r.u8("prob_bits"), r.u8("flags")
    if not 2 <= bits <= 8 or not 10 <= pb <= 16 or flags > 3:
        r.fail(f"bad parameters bits={bits} prob_bits={pb} flags={flags}")
    qmax = (1 << (bits - 1)) - 1
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
    refs = rowref.read(r, layout) if flags & 2 else []
    K = r.varint("K", limit=MAX_CLASSES)
    C = r.varint("C", limit=MAX_CLASSES)
    if K < 1 or C < 1 or K * C > MAX_CONTEXTS or (K > 1 and K > layout.n_rows) \
            or (C > 1 and C > layout.n_cols):
        r.fail(f"bad class counts K={K} C={C}")
    if not tables_fit(K * C, pb, layout.n):
        r.fail(f"{K * C} tables of 2^{pb} slots are too many for {layout.n} codes")
    levels = []
    for _ in range(K * C):
        if flags & 1:
            mags = ent.read_table(r, qmax + 1)
            levels.append(np.concatenate([mags[:0:-1], mags]))
        else:
            levels.append(ent.read_table(r, 2 * qmax + 1))
    map_jobs = []
    for count, alphabet in ((layout.n_rows, K), (layout.n_cols, C)):
        if alphabet > 1:
            map_jobs.append(ent.read_order0(r, count, alphabet, pb))
    states, words = ent.read_block(r, layout.n)
    r.expect_end()
    return Parsed(layout, bits, pb, C, ent.tables_from_levels(levels, pb), map_jobs, states,
                  words, refs)


def complete(parsed: Parsed, job: rans.DecodeJob, sym: np.ndarray):
    """-> (int8 codes, layout, bits, ideal bits per segment)."""
    qmax = (1 << (parsed.bits - 1)) - 1
    seg = segment_bits(parsed.layout, job.contexts, sym, job.freqs, job.prob_bits)
    codes = (sym - qmax).astype(np.int8)
    if parsed.refs:
        codes = rowref.undo(codes, parsed.layout, parsed.refs, qmax)
    return codes, parsed.layout, parsed.bits, seg


def decode(payload: bytes | memoryview, max_symbols: int):
    """Payload -> (int8 codes flat, layout, bits, ideal bits per segment)."""
    return decode_many([(payload, max_symbols)])[0]


def decode_many(items) -> list[tuple[np.ndarray, Layout, int, np.ndarray]]:
    """[(payload, max_symbols)] -> decode results. Two batched rANS loops for all streams:
    the class maps first (they give the contexts), then every stream's codes."""
    parsed = [parse(p, m) for p, m in items]
    map_out = iter(rans.decode_batch([j for p in parsed for j in p.map_jobs]))
    jobs = [p.main_job([next(map_out) for _ in p.map_jobs]) for p in parsed]
    symbols = rans.decode_batch(jobs)
    return [complete(p, j, s) for p, j, s in zip(parsed, jobs, symbols, strict=True)]
