"""The fit's allocation step: a multiple-choice knapsack over per-tensor options (predicted
loss α·e, estimated bytes), solved as an exact byte-grid dynamic programme and as a
Lagrangian sweep, each followed by slack-spending exchanges; and the cheapest downgrades
when a real encode lands over. Options come as `TensorChoices` (golfpack.hessian.fit):
anything with `.options` and `.cost(i) -> (predicted loss, bytes)`."""

from __future__ import annotations

import math

import numpy as np

from golfpack.errors import CheckFailed

DP_CELLS = 1 << 16  # byte grid of the exact knapsack (1 byte per cell up to this target)


def _tables(choices: list) -> tuple[np.ndarray, np.ndarray]:
    """Predicted loss and bytes per (tensor, option), padded with +inf."""
    k = max(len(tc.options) for tc in choices)
    L = np.full((len(choices), k), np.inf)
    B = np.full((len(choices), k), np.inf)
    for t, tc in enumerate(choices):
        for i in range(len(tc.options)):
            L[t, i], B[t, i] = tc.cost(i)
    return L, B


def total_bytes(choices, picks) -> float:
    """Estimated bytes of a plan."""
    return sum(tc.cost(i)[1] for tc, i in zip(choices, picks, strict=True))


def solve(choices: list, target: float) -> list[int]:
    """Minimise Σ α·e subject to Σ bytes <= target (a multiple-choice knapsack): the exact
    byte-grid DP and the Lagrangian sweep, each followed by single and paired exchanges that
    spend the remaining slack; the plan with the lower predicted loss (never over target)."""
    L, B = _tables(choices)
    lag = _solve_lagrangian(choices, L, B, target)
    dp = _solve_dp(L, B, target)
    Lf = np.where(np.isfinite(L), L, np.inf)
    rows = np.arange(len(choices))

    def loss(p):
        return float(Lf[rows, p].sum())

    if dp is None:
        return lag
    dp = [int(i) for i in _exchange(L, B, np.asarray(dp), target)]
    return dp if loss(dp) <= loss(lag) else lag


def _solve_dp(L: np.ndarray, B: np.ndarray, target: float) -> list[int] | None:
    """Exact multiple-choice knapsack over byte costs rounded up to a grid of
    u = max(1, target / DP_CELLS) bytes (so exact to the byte for small targets, and always
    feasible under the true costs). None if nothing fits the grid."""
    if not target >= 0:
        return None
    u = max(1.0, float(target) / DP_CELLS)
    C = int(math.floor(target / u + 1e-9))
    W = np.where(np.isfinite(B), np.ceil(B / u - 1e-9), C + 1).astype(np.int64)
    W = np.maximum(W, 0)
    Lv = np.where(np.isfinite(L), L, np.inf)
    f = np.zeros(C + 1)  # least loss of the tensors so far within capacity c
    pick = np.zeros((L.shape[0], C + 1), dtype=np.int16)
    for t in range(L.shape[0]):
        best = np.full(C + 1, np.inf)
        arg = np.zeros(C + 1, dtype=np.int16)
        for i in range(L.shape[1]):
            w = int(W[t, i])
            if w > C or not np.isfinite(Lv[t, i]):
                continue
            cand = f[:C + 1 - w] + Lv[t, i]
            better = cand < best[w:]
            best[w:] = np.where(better, cand, best[w:])
            arg[w:] = np.where(better, i, arg[w:])
        f, pick[t] = best, arg
    if not np.isfinite(f[C]):
        return None
    out, c = [0] * L.shape[0], C
    for t in range(L.shape[0] - 1, -1, -1):
        i = int(pick[t, c])
        out[t] = i
        c -= int(W[t, i])
    return out


def _solve_lagrangian(choices, L, B, target) -> list[int]:
    rows = np.arange(len(choices))
    smallest = np.argmin(B, axis=1)
    if B[rows, smallest].sum() > target:
        raise CheckFailed(
            f"even the smallest candidates need {B[rows, smallest].sum():,.0f} bytes, "
            f"more than the {target:,.0f} left for the fitted tensors")
    Lf = np.where(np.isfinite(L), L, 0.0)

    def choose(lam: float) -> np.ndarray:
        v = np.where(np.isfinite(B), Lf + lam * B, np.inf)
        return np.argmin(v, axis=1)

    lo, hi = 0.0, 1.0
    while B[rows, choose(hi)].sum() > target:
        hi *= 4.0
        if hi > 1e300:
            return [int(i) for i in smallest]
    for _ in range(200):
        mid = math.sqrt(lo * hi) if lo > 0 else hi / 1e12
        if B[rows, choose(mid)].sum() > target:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-12 * hi:
            break
    return [int(i) for i in _exchange(L, B, choose(hi), target)]


def _exchange(L, B, picks, target, rounds: int = 200) -> np.ndarray:
    """Improve a feasible pick: the best single upgrade that fits, else the best pair (one
    tensor up, another down) that fits and lowers the predicted loss; until neither exists."""
    picks = picks.copy()
    rows = np.arange(L.shape[0])
    for _ in range(rounds):
        slack = target - B[rows, picks].sum()
        with np.errstate(invalid="ignore"):  # padding: inf - inf
            dL = L - L[rows, picks][:, None]
            dB = B - B[rows, picks][:, None]
        dL = np.where(np.isfinite(dL), dL, np.inf)
        ok = np.isfinite(dB) & (dL < 0) & (dB <= slack)
        if ok.any():  # single moves: best loss drop per byte (free ones first)
            rate = np.full(dL.shape, -np.inf)
            rate[ok] = -dL[ok] / np.maximum(dB[ok], 1e-9)
            t, i = np.unravel_index(np.argmax(rate), rate.shape)
            picks[t] = i
            continue
        up = np.argwhere(np.isfinite(dB) & (dL < 0) & (dB > slack))
        down = np.argwhere(np.isfinite(dB) & (dB < 0))
        if not len(up) or not len(down):
            break
        gain = dL[up[:, 0], up[:, 1]][:, None] + dL[down[:, 0], down[:, 1]][None, :]
        cost = dB[up[:, 0], up[:, 1]][:, None] + dB[down[:, 0], down[:, 1]][None, :]
        valid = (cost <= slack) & (gain < 0) & (up[:, 0][:, None] != down[:, 0][None, :])
        if not valid.any():
            break
        a, b = np.unravel_index(np.argmin(np.where(valid, gain, np.inf)), gain.shape)
        picks[up[a, 0]], picks[down[b, 0]] = up[a, 1], down[b, 1]
    return picks


def downgrade(choices, picks, need: float) -> list[int]:
    """Free at least `need` estimated bytes at the least predicted loss per byte."""
    L, B = _tables(choices)
    picks = np.asarray(picks).copy()
    rows = np.arange(len(choices))
    freed = 0.0
    while freed < need:
        dL = np.maximum(L - L[rows, picks][:, None], 0.0)
        dB = B[rows, picks][:, None] - B
        ok = np.isfinite(B) & (dB > 0)
        if not ok.any():
            raise CheckFailed("cannot free enough bytes: every tensor is at its smallest")
        rate = np.where(ok, dL / np.where(ok, dB, 1.0), np.inf)
        t, i = np.unravel_index(np.argmin(rate), rate.shape)
        freed += dB[t, i]
        picks[t] = i
    return [int(i) for i in picks]
