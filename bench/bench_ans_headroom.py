"""How much the `ans` context model leaves on the table, per code stream of a checkpoint.

For every code stream (one per tensor family, as in the artifact) it reports, in bytes:
  order0     the stream's order-0 entropy
  ans        the fitted model's payload estimate (exact within a few bytes), with its K x C
  grid       the best estimate over a full K x C grid (K 4..32, C 1..16, K*C <= 256): what a
             wider search of the same model family would find
  oracle     the in-sample conditional entropy given 32 row-spread x 8 column-spread bins
             (quantiles of mean |code|), with no table, class-map or state cost: an optimistic
             reference for spread models
  +sign      adaptive (sequential, KT-estimated) cost with the left neighbour's sign added to
             the oracle context, over the same without it: > 1 means neighbours carry no
             usable information
Writes bench/results/ans_headroom*.json.

    .venv/bin/python bench/bench_ans_headroom.py --checkpoint CKPT [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GRID_K = (4, 8, 12, 16, 24, 32)
GRID_C = (1, 2, 4, 8, 16)


def conditional_bits(ctx: np.ndarray, sym: np.ndarray, n_ctx: int, S: int) -> float:
    from golfpack.ans.fit import entropy_bits

    cnt = np.bincount(ctx.astype(np.int64) * S + sym, minlength=n_ctx * S).reshape(n_ctx, S)
    return sum(entropy_bits(c) for c in cnt)


def adaptive_bits(ctx: np.ndarray, sym: np.ndarray, S: int, alpha: float = 0.5) -> float:
    """Sequential cost with per-context counts (KT estimator): learning cost included."""
    n = sym.size
    idx = np.arange(n)

    def seen_before(key):
        order = np.lexsort((idx, key))
        k = key[order]
        start = np.r_[0, np.flatnonzero(np.diff(k)) + 1]
        out = np.empty(n)
        out[order] = idx - np.repeat(start, np.diff(np.r_[start, n]))
        return out

    ctx = ctx.astype(np.int64)
    p = (seen_before(ctx * S + sym) + alpha) / (seen_before(ctx) + alpha * S)
    return float(-np.log2(p).sum())


def quantile_bins(x: np.ndarray, k: int) -> np.ndarray:
    return np.searchsorted(np.quantile(x, np.linspace(0, 1, k + 1)[1:-1]), x)


def matrices(codes: np.ndarray, layout):
    """The stream's codes as its [rows, cols] matrices, in layout order."""
    start = 0
    for r, c in layout.shapes:
        yield codes[start:start + r * c].reshape(r, c)
        start += r * c


def spread_contexts(codes: np.ndarray, layout) -> tuple[np.ndarray, np.ndarray]:
    """Per-code row and column spread (mean |code| of its row / column), layout order."""
    mags = [np.abs(m.astype(np.float64)) for m in matrices(codes, layout)]
    return (np.concatenate([np.repeat(m.mean(1), m.shape[1]) for m in mags]),
            np.concatenate([np.tile(m.mean(0), m.shape[0]) for m in mags]))


def left_sign(codes: np.ndarray, layout) -> np.ndarray:
    """Sign of each code's left neighbour in its row (+1 offset; 0 before the first column)."""
    return np.concatenate([np.pad(np.sign(m[:, :-1]).astype(np.int64), ((0, 0), (1, 0))).ravel()
                           + 1 for m in matrices(codes, layout)])


def headroom(codes: np.ndarray, layout, bits: int) -> dict:
    from golfpack.ans import fit as ansfit
    from golfpack.compress import order0_bytes

    qmax = (1 << (bits - 1)) - 1
    S = 2 * qmax + 1
    sym = codes.astype(np.int64) + qmax
    t = time.perf_counter()
    fit = ansfit.fit_model(codes, layout, bits)
    fit_s = time.perf_counter() - t
    fitter = ansfit._Fitter(sym, layout, qmax)
    grid = {}
    for K in GRID_K:
        for C in GRID_C:
            if K * C <= ansfit.MAX_CONTEXTS and K <= layout.n_rows and C <= layout.n_cols:
                rc, cc, hist = fitter.fit(K, C)
                grid[(K, C)] = fitter.cost(K, C, rc, cc, hist, fit.prob_bits)[0]
    best = min(grid, key=grid.get)
    row, col = spread_contexts(codes, layout)
    ctx = quantile_bins(row, 32) * 8 + quantile_bins(col, 8)
    plain = adaptive_bits(ctx, sym, S)
    signed = adaptive_bits(ctx * 3 + left_sign(codes, layout), sym, S)
    return {"codes": int(codes.size), "order0": order0_bytes(codes),
            "ans": fit.est_bytes, "ans_K": fit.K, "ans_C": fit.C, "fit_seconds": fit_s,
            "grid": grid[best], "grid_K": best[0], "grid_C": best[1],
            "oracle": conditional_bits(ctx, sym, 32 * 8, S) / 8,
            "sign_context_ratio": signed / plain}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--scheme", default=None, help="scheme spec (default: golfpack's)")
    ap.add_argument("--note", help="how the checkpoint was made, recorded with the figures")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "ans_headroom.json"))
    args = ap.parse_args()
    from golfpack.checkpoint import load
    from golfpack.compress import code_streams
    from golfpack.quant.qmodel import quantize_state_dict

    sd, _ = load(args.checkpoint)
    streams = code_streams(quantize_state_dict(sd, args.scheme))
    rows, tot = {}, {"order0": 0.0, "ans": 0.0, "grid": 0.0, "oracle": 0.0}
    print(f"{'stream':<40}{'order0':>12}{'ans':>8}{'grid':>8}{'oracle':>8}{'+sign':>8}")
    for name, (codes, layout, bits) in streams.items():
        r = headroom(codes, layout, bits)
        rows[name] = r
        for k in tot:
            tot[k] += r[k]
        print(f"{name:<40}{r['order0']:>12,.0f}" + "".join(
            f"{r[k] / r['order0']:>8.4f}" for k in ("ans", "grid", "oracle"))
            + f"{r['sign_context_ratio']:>8.4f}", flush=True)
    print(f"{'total':<40}{tot['order0']:>12,.0f}" + "".join(
        f"{tot[k] / tot['order0']:>8.4f}" for k in ("ans", "grid", "oracle")))
    out = {"checkpoint": args.checkpoint, "note": args.note, "scheme_spec": args.scheme,
           "streams": rows, "totals": tot,
           "vs_order0": {k: tot[k] / tot["order0"] for k in ("ans", "grid", "oracle")}}
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    from golfpack.errors import GolfError

    try:
        main()
    except GolfError as exc:
        sys.exit(f"error: {exc}")
