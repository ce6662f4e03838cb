"""Row references of the `ans` codec: a row coded as its delta to an earlier row.

Trained token embeddings hold near-twin rows (tokens that never occur in training move
together), which a per-position context model cannot exploit but a dictionary coder with a
similarity sort can. A referenced row r stores `wrap(code[r] - code[ref])`, the difference
taken mod the code alphabet S = 2·qmax+1 and wrapped back into [-qmax, qmax], so a twin row
becomes a run of near-zero codes that the fitted row classes then code cheaply. The
reference is the row's nearest earlier row (L1) of the same matrix; a row is referenced only
when its estimated coded size drops by more than the reference costs, and the stream keeps
the references only when the refitted model's total is smaller (FORMAT-ans.md, flags bit 1).
"""

from __future__ import annotations

import numpy as np

from golfpack.errors import ArtifactError

SCREEN_COLS = 64  # columns used to screen candidates in wide matrices
SCREEN_TOP = 4  # candidates per row checked on every column
MAX_ROWS = 1 << 14  # larger matrices are not searched (pairs grow quadratically)
SIDE_BITS = 24.0  # estimated bits of one (gap, back) pair


def _varint_len(v: int) -> int:
    return max(1, (int(v).bit_length() + 6) // 7)


def side_bytes(refs) -> int:
    """Payload bytes of the references (count and pairs), as written."""
    out, prev = _varint_len(len(refs)), -1
    for row, back in refs:
        out += _varint_len(row - prev - 1) + _varint_len(back)
        prev = row
    return out


def wrap(d: np.ndarray, qmax: int) -> np.ndarray:
    """A difference of codes mod S, into [-qmax, qmax]."""
    return (np.asarray(d, np.int64) + qmax) % (2 * qmax + 1) - qmax


def _nearest_earlier(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each row of x [rows, cols] (int16): (index of its nearest earlier row by L1, that
    distance); row 0 gets (-1, inf). Wide matrices are screened on a column sample."""
    rows, cols = x.shape
    best = np.full(rows, -1, np.int64)
    dist = np.full(rows, np.inf)
    if rows < 2 or cols == 0:
        return best, dist
    scr = x if cols <= SCREEN_COLS else x[:, np.linspace(0, cols - 1, SCREEN_COLS).astype(int)]
    chunk = max(1, (1 << 22) // max(rows * scr.shape[1], 1))
    for a in range(1, rows, chunk):
        b = min(rows, a + chunk)
        d = np.abs(scr[a:b, None, :] - scr[None, :b, :]).sum(-1, dtype=np.int64).astype(float)
        d[np.arange(b - a)[:, None] <= np.arange(b)[None, :] - a] = np.inf  # earlier rows only
        k = min(SCREEN_TOP, b - 1) if scr is not x else 1
        cand = np.argpartition(d, k - 1, axis=1)[:, :k] if k < b else np.argsort(d, 1)[:, :k]
        ok = np.isfinite(np.take_along_axis(d, cand, 1))
        full = np.abs(x[a:b, None, :] - x[cand]).sum(-1, dtype=np.int64).astype(float)
        full[~ok] = np.inf
        j = np.argmin(full, 1)
        best[a:b] = cand[np.arange(b - a), j]
        dist[a:b] = full[np.arange(b - a), j]
    best[~np.isfinite(dist)] = -1
    return best, dist


def choose(codes: np.ndarray, layout, qmax: int, row_cost: np.ndarray) -> list[tuple[int, int]]:
    """-> [(global row, back)] worth referencing, rows increasing. `row_cost` holds each
    row's estimated bits without a reference (under the stream's fitted model)."""
    S = 2 * qmax + 1
    cand = []  # (global row, back, wrapped delta)
    r0, i0 = 0, 0
    for rows, cols in layout.shapes:
        if 2 <= rows <= MAX_ROWS and cols:
            x = np.asarray(codes[i0:i0 + rows * cols], np.int16).reshape(rows, cols)
            near, dist = _nearest_earlier(x)
            own = np.abs(x.astype(np.int64)).sum(1)
            for r in np.flatnonzero(np.isfinite(dist) & (dist < own)):
                cand.append((r0 + int(r), int(r - near[r]), wrap(x[r] - x[near[r]], qmax)))
        r0, i0 = r0 + rows, i0 + rows * cols
    if not cand:
        return []
    chosen = np.ones(len(cand), bool)
    hists = np.stack([np.bincount(d + qmax, minlength=S) for _, _, d in cand]).astype(float)
    for _ in range(3):  # a pooled delta table, re-estimated from the rows it wins
        pool = hists[chosen].sum(0) + 0.5
        cost = hists @ -np.log2(pool / pool.sum()) + SIDE_BITS
        new = cost < np.array([row_cost[g] for g, _, _ in cand])
        if not new.any() or np.array_equal(new, chosen):
            chosen = new
            break
        chosen = new
    return [(g, b) for (g, b, _), keep in zip(cand, chosen, strict=True) if keep]


class _Rows:
    """Where a global row lives: its matrix's first row, its offset and width (per-matrix
    arrays only: a hostile layout of many rows allocates nothing per row)."""

    def __init__(self, layout):
        self.first = np.cumsum([0] + [r for r, _ in layout.shapes])
        self.off = np.cumsum([0] + [r * c for r, c in layout.shapes])
        self.cols = [c for _, c in layout.shapes]

    def matrix(self, row: int) -> int:
        return int(self.first.searchsorted(row, "right")) - 1

    def span(self, row: int) -> tuple[int, int]:
        k = self.matrix(row)
        c = self.cols[k]
        return int(self.off[k] + (row - self.first[k]) * c), c

    def valid(self, row: int, back: int) -> bool:
        """A reference the format allows: an existing row, to an earlier row of its matrix."""
        return row < self.first[-1] and back >= 1 and row - back >= self.first[self.matrix(row)]


def apply(codes: np.ndarray, layout, refs, qmax: int) -> np.ndarray:
    """Encoder side: codes with every referenced row replaced by its wrapped delta (to the
    reference's original codes)."""
    orig = np.asarray(codes, np.int64)
    out, rows = orig.copy(), _Rows(layout)
    for row, back in refs:
        a, c = rows.span(row)
        b = a - back * c
        out[a:a + c] = wrap(orig[a:a + c] - orig[b:b + c], qmax)
    return out.astype(np.int8)


def undo(codes: np.ndarray, layout, refs, qmax: int) -> np.ndarray:
    """Decoder side: rows in increasing order, so a reference to a referenced row sees its
    restored codes."""
    out, rows = np.asarray(codes).astype(np.int64), _Rows(layout)
    for row, back in refs:
        a, c = rows.span(row)
        b = a - back * c
        out[a:a + c] = wrap(out[a:a + c] + out[b:b + c], qmax)
    return out.astype(np.int8)


def check(refs, layout) -> list[tuple[int, int]]:
    """Explicit references, validated as a reader would (ValueError otherwise)."""
    rows, out, prev = _Rows(layout), [], -1
    for row, back in refs:
        row, back = int(row), int(back)
        if not (prev < row and rows.valid(row, back)):
            raise ValueError(f"row reference ({row}, {back}) is out of range or out of order")
        out.append((row, back))
        prev = row
    return out


def write(w, refs) -> None:
    w.varint(len(refs))
    prev = -1
    for row, back in refs:
        w.varint(row - prev - 1)
        w.varint(back)
        prev = row


def read(r, layout) -> list[tuple[int, int]]:
    """Inverse of write; every reference must point to an earlier row of its own matrix."""
    n_rows, rows = layout.n_rows, _Rows(layout)
    refs, row = [], -1
    for _ in range(r.varint("row reference count", limit=n_rows)):
        row += 1 + r.varint("row reference gap", limit=n_rows)
        back = r.varint("row reference", limit=n_rows)
        if not rows.valid(row, back):
            raise ArtifactError(f"{r.what}: row reference out of range")
        refs.append((row, back))
    return refs
