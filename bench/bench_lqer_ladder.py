"""Seconds of an LQER rank ladder (the filler's rank increments, golfpack.hessian.fill.LqerLadder)
on one matrix: one fit per rank with its own Cholesky + SVD of the weighted error (how the
ladder fitted before) against one lqer.error_svd per tensor truncated for every rank (how it
fits now). Checks that both give the same factors and errors, to the bit. Writes
bench/results/lqer_ladder.json.

    .venv/bin/python bench/bench_lqer_ladder.py [--rows 512] [--cols 1536] [--ranks 16]
        [--scheme int4:gptq-lite] [--threads 2] [--repeat 3]

The weight is Gaussian at a trained-like scale and the Hessian Σ xᵀx of correlated inputs
(4096 rows): timing depends on the shapes, not the values.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from rd_common import ROOT, machine


def _problem(rows: int, cols: int, scheme: str):
    from golfpack.hessian import gptq
    from golfpack.quant import rows as quant

    g = torch.Generator().manual_seed(0)
    w = torch.randn(rows, cols, generator=g) * cols ** -0.5
    x = torch.randn(4096, cols, generator=g) @ (torch.randn(cols, cols, generator=g)
                                                 * cols ** -0.5)
    prep = gptq.prepare_hessian(x.T.double() @ x.double())
    r = gptq.quantize_gptq(w, prep, quant.parse_scheme(scheme))
    return w, quant.dequantize(r.codes, r.scales), prep


def _same(a, b) -> bool:
    return all(torch.equal(getattr(a, f), getattr(b, f))
               for f in ("a_codes", "a_scale", "b_codes", "b_scales")) \
        and a.err_before == b.err_before and a.err_after == b.err_after


def main():
    from golfpack.hessian import lqer

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=512)
    ap.add_argument("--cols", type=int, default=1536)
    ap.add_argument("--ranks", type=int, default=16, help="the ladder fits ranks 1..RANKS")
    ap.add_argument("--scheme", default="int4:gptq-lite")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "lqer_ladder.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    w, w_hat, prep = _problem(args.rows, args.cols, args.scheme)
    ranks = range(1, args.ranks + 1)

    # the two ladders alternate, `repeat` times each, and the fastest of each counts: on a
    # shared machine a single pair of runs measures the neighbours' load as much as the code
    old_s, new_s, svd_s = [], [], []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        per_rank = [lqer.fit_lowrank(w, w_hat, prep, r) for r in ranks]
        t1 = time.perf_counter()
        svd = lqer.error_svd(w, w_hat, prep)
        t2 = time.perf_counter()
        shared = [lqer.fit_lowrank(w, w_hat, prep, r, svd=svd) for r in ranks]
        t3 = time.perf_counter()
        old_s.append(t1 - t0)
        new_s.append(t3 - t1)
        svd_s.append(t2 - t1)

    same = all(_same(a, b) for a, b in zip(per_rank, shared, strict=True))
    res = {
        "machine": machine("cpu"),
        "matrix": [args.rows, args.cols], "ranks": [1, args.ranks], "scheme": args.scheme,
        "repeat": args.repeat,
        "per_rank_svd_seconds": [round(x, 3) for x in old_s],
        "shared_svd_seconds": [round(x, 3) for x in new_s],
        "of_which_svd_seconds": [round(x, 3) for x in svd_s],
        "speedup_of_the_fastest": round(min(old_s) / min(new_s), 2),
        "identical": same,
        "gain_by_rank": [round(x.gain / x.err_before, 5) for x in shared],
    }
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res, indent=1))
    if not same:
        raise SystemExit("the shared SVD gave other factors than the per-rank fits")


if __name__ == "__main__":
    main()
