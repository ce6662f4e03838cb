"""Fit to budget: per tensor, the (bit width, clip) that minimises the predicted loss increase
subject to code + artifact bytes <= budget, checked with real encodes.

1. Candidates. For every fitted tensor (2-D, float, calibrated) each candidate scheme
   (int4..int8 × {gptq-lite, sdclip(k) for a ladder of step sizes}) is run through
   GPTQ — all candidates of all tensors sharing one H in a single stacked pass — giving its
   Hessian-weighted error e (free from GPTQ itself) and an estimate of its coded size
   (order-0 entropy of its codes + 2 bytes per fp16 scale). fp16 passthrough (and fp32
   where the spec stores the tensor so) is a candidate too, with its own rounding error and
   2 (4) bytes per value, so that a small matrix is stored in float exactly when that is
   its best use of bytes. Optionally an LQER correction is a further candidate.
2. Predicted loss. Δloss_t ≈ α_t·e_t. α = 1 ("hessian": the plain Σ of Hessian-weighted
   errors) or measured: Δloss on calibration batches with one family (or tensor) probed at a
   coarse candidate, divided by that probe's summed error ("family" / "tensor").
3. Allocation. A multiple-choice knapsack, solved two ways and the better plan kept: an
   exact dynamic programme over byte costs (rounded up to a grid of at most DP_CELLS cells:
   to the byte when the target is that small, so exact there; a feasible plan always) and
   a Lagrangian sweep (argmin α·e + λ·bytes, λ bisected to the target); each then spends
   its slack by the best Δloss-per-byte exchanges.
4. Real bytes. The chosen plan is encoded for real. Each tensor's size estimates are
   rescaled by its measured/estimated ratio, the target moves by the miss, and the knapsack
   is solved again, until the total lands in [budget·(1 − tol), budget]; if the last real
   encode is still over, the cheapest downgrades are applied until it is not.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from golfpack.errors import CheckFailed, GolfError
from golfpack.hessian import gptq, lqer
from golfpack.hessian.knapsack import (  # noqa: F401 (re-exported)
    downgrade,
    solve,
    total_bytes,
)
from golfpack.quant.rows import FP16_MAX, Scheme, format_scheme

DEFAULT_BITS = (4, 5, 6, 7, 8)
# Ladder of code standard deviations (qmax / k for sdclip(k)): the rate knob.
CODE_STDS = (1.0, 1.41, 2.0, 2.83, 4.0, 5.66, 8.0, 11.3, 16.0)
MIN_CLAMP_K, MAX_CLAMP_K = 3.0, 20.0
SENSITIVITIES = ("hessian", "family", "tensor")


def candidate_schemes(bits=DEFAULT_BITS) -> list[Scheme]:
    """gptq-lite at every width, plus sdclip(k) steps: for each code std c, the widths whose
    clamp k = qmax/c is >= 3σ, up to the first one whose clamp is >= 20σ (wider clamps give
    the same codes)."""
    bits = sorted(set(int(b) for b in bits))
    if not bits or bits[0] < 2 or bits[-1] > 8:
        raise GolfError(f"fit bit widths must lie in 2..8, got {bits}")
    out = [Scheme("int", b, "gptq-lite") for b in bits]
    for c in CODE_STDS:
        for b in bits:
            k = ((1 << (b - 1)) - 1) / c
            if k < MIN_CLAMP_K:
                continue
            out.append(Scheme("int", b, "sdclip", round(k, 3)))
            if k >= MAX_CLAMP_K:
                break
    return out


@dataclass
class Option:
    scheme: Scheme
    err: float  # Hessian-weighted error
    est_bytes: float  # estimated coded bytes (codes + scales [+ LQER factors])
    lqer_rank: int = 0
    lqer_bytes: int = 0

    @property
    def passthrough(self) -> bool:
        return self.scheme.kind != "int"


@dataclass
class TensorChoices:
    name: str
    shape: tuple[int, ...]
    options: list[Option]
    alpha: float = 1.0  # predicted Δloss per unit of error
    ratio: float = 1.0  # measured / estimated bytes of its integer options (real encodes)
    pass_ratio: float = 1.0  # the same for its passthrough options (a different coder load)

    @property
    def params(self) -> int:
        return math.prod(self.shape)

    def cost(self, i: int) -> tuple[float, float]:
        o = self.options[i]
        r = self.pass_ratio if o.passthrough else self.ratio
        return self.alpha * o.err, r * (o.est_bytes - o.lqer_bytes) + o.lqer_bytes


def code_entropy_bytes(codes: torch.Tensor) -> np.ndarray:
    """Order-0 entropy in bytes of each slice codes[k] (int codes in [-128, 127])."""
    k = codes.shape[0]
    flat = codes.reshape(k, -1).to(torch.int64).numpy() + 128 + 256 * np.arange(k)[:, None]
    counts = np.bincount(flat.ravel(), minlength=256 * k).reshape(k, 256).astype(np.float64)
    n = counts.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        bits = -np.where(counts > 0, counts * np.log2(counts / n), 0.0).sum(axis=1)
    return bits / 8.0


def measure_options(weights: dict[str, torch.Tensor], preps: dict[str, gptq.PreparedHessian],
                    groups: list[list[str]], schemes: list[Scheme], lqer_rank: int = 0,
                    lqer_top: int = 0, block: int = 128, progress: bool = False
                    ) -> dict[str, TensorChoices]:
    """Every candidate of every fitted tensor, measured (one stacked GPTQ pass per H)."""
    from tqdm import tqdm

    out: dict[str, TensorChoices] = {}
    for group in tqdm(groups, desc="fit: candidates", unit="H", disable=None if progress else True):
        names = [n for n in group if n in weights]
        if not names:
            continue
        prep = preps[names[0]]
        mats = {n: gptq._as_matrix(weights[n], prep, n) for n in names}
        rows_W, rows_s, rows_q, spans = [], [], [], {}
        at = 0
        for n, w2 in mats.items():
            for sc in schemes:
                S, _, _ = gptq.candidate_scales(w2, sc, codes=False)
                k = S.shape[0]
                rows_W.append(w2.repeat(k, 1))
                rows_s.append(S.reshape(-1))
                rows_q.append(torch.full((k * w2.shape[0],), float(sc.qmax)))
                spans[(n, sc)] = (at, k)
                at += k * w2.shape[0]
        if prep.U is None:
            raise GolfError(f"{names[0]}: {prep.fallback}; cannot fit this tensor")
        s = torch.cat(rows_s)
        Q, err = gptq.gptq_rows(torch.cat(rows_W), s, torch.cat(rows_q), prep, block)
        for n, w2 in mats.items():
            R = w2.shape[0]
            rows = torch.arange(R)
            picked, errs = [], []
            for sc in schemes:
                a, k = spans[(n, sc)]
                e = err[a:a + k * R].view(k, R)
                pick = gptq._pick(e, sc.per_matrix)
                picked.append(Q[a:a + k * R].view(k, R, -1)[pick, rows].to(torch.int8))
                errs.append(float(e[pick, rows].sum()))
            sizes = code_entropy_bytes(torch.stack(picked)) + 2.0 * R  # + fp16 scales
            out[n] = TensorChoices(n, tuple(weights[n].shape),
                                   [Option(sc, e, float(b))
                                    for sc, e, b in zip(schemes, errs, sizes, strict=True)])
        del Q, err
    if lqer_rank > 0 and lqer_top > 0:
        _add_lqer_options(out, weights, preps, schemes, lqer_rank, lqer_top, block)
    return out


def add_passthrough_options(choices: dict[str, TensorChoices], weights, preps,
                            kinds: dict[str, tuple[str, ...]]) -> None:
    """Float storage as candidates: kinds[name] ⊆ {"fp16", "fp32"}. fp16's error is its
    rounding error under H (0 where fp16 would overflow: stored fp32 then, 4 bytes per
    value); fp32 of a float32 weight is exact."""
    for n, ks in kinds.items():
        tc = choices.get(n)
        if tc is None:
            continue
        w = weights[n].float()
        for k in ks:
            if k == "fp16" and (not w.numel() or float(w.abs().max()) <= FP16_MAX):
                err = float(gptq.row_errors(w, w.half().float(), preps[n].H).sum())
                tc.options.append(Option(Scheme("fp16"), max(err, 0.0), 2.0 * w.numel()))
            else:
                tc.options.append(Option(Scheme(k), 0.0, 4.0 * w.numel()))


def _add_lqer_options(choices, weights, preps, schemes, rank, top, block):
    """For the `top` tensors with the largest error at every width, add LQER variants of
    each candidate: same codes plus a rank-`rank` correction (measured at the mid
    candidate, whose relative gain is applied to the others)."""
    def ints(tc):
        return [o for o in tc.options if not o.passthrough and not o.lqer_rank]

    worst = sorted(choices.values(), key=lambda c: -min(o.err for o in ints(c)))[:top]
    for tc in worst:
        mid = sorted(ints(tc), key=lambda o: o.err)[len(ints(tc)) // 2]
        prep = preps[tc.name]
        r = gptq.quantize_group({tc.name: weights[tc.name]}, {tc.name: mid.scheme}, prep,
                                block=block)[tc.name]
        w_hat = r.codes.float() * r.scales.float()[:, None]
        lr = lqer.fit_lowrank(weights[tc.name], w_hat, prep, rank)
        if lr.err_before <= 0 or lr.gain <= 0:
            continue
        keep = lr.err_after / lr.err_before
        nb = lr.nbytes()
        tc.options += [Option(o.scheme, o.err * keep, o.est_bytes + nb, rank, nb)
                       for o in ints(tc)]


# --------------------------------------------------------------------------- the loop


@dataclass
class Encoded:
    """What one real encode reports back to the fit."""

    total_bytes: int  # code + artifact bytes
    tensor_bytes: dict[str, float]  # coded bytes attributed to each fitted tensor
    blob: bytes = b""


@dataclass
class FitResult:
    picks: dict[str, Option]
    encoded: Encoded
    budget: int
    iterations: list[dict] = field(default_factory=list)
    choices: dict[str, TensorChoices] = field(default_factory=dict)

    def table(self) -> list[dict]:
        rows = []
        for name, o in self.picks.items():
            tc = self.choices[name]
            actual = self.encoded.tensor_bytes.get(name)
            rows.append({"name": name, "params": tc.params, "scheme": format_scheme(o.scheme),
                         "lqer_rank": o.lqer_rank, "alpha": tc.alpha, "err": o.err,
                         "pred_loss": tc.alpha * o.err, "est_bytes": round(o.est_bytes),
                         "actual_bytes": None if actual is None else round(actual)})
        return rows


def fit_to_budget(choices: dict[str, TensorChoices], budget: int,
                  encode: Callable[[dict[str, Option]], Encoded], other_bytes: float = 0.0,
                  tol: float = 0.005, max_iter: int = 8,
                  log: Callable[[str], None] | None = None) -> FitResult:
    """Solve, encode for real, correct the byte model, repeat until the real total lands in
    [budget·(1 − tol), budget]. `other_bytes` is a first guess of everything that is not a
    fitted tensor (code, header, passthrough tensors); real encodes replace it."""
    names = list(choices)
    lst = [choices[n] for n in names]
    margin = budget * tol / 3.0  # aim inside the window, not at its edge
    history: list[dict] = []
    best_ok = None
    enc, picks, last_picks = None, None, None
    for it in range(max_iter):
        target = budget - margin - other_bytes
        picks = solve(lst, target)
        plan = {n: tc.options[i] for n, tc, i in zip(names, lst, picks, strict=True)}
        enc = encode(plan)
        fitted_real = sum(enc.tensor_bytes.get(n, 0.0) for n in names)
        history.append({"iteration": it, "target": round(target),
                        "estimated": round(total_bytes(lst, picks)),
                        "fitted_bytes": round(fitted_real),
                        "total_bytes": enc.total_bytes, "fill": enc.total_bytes / budget})
        if log:
            log(f"fit {it}: target {target:,.0f} -> total {enc.total_bytes:,} bytes "
                f"({enc.total_bytes / budget:.3%} of the budget)")
        if enc.total_bytes <= budget:
            if best_ok is None or enc.total_bytes > best_ok[1].total_bytes:
                best_ok = (plan, enc)
            if enc.total_bytes >= budget * (1.0 - tol):
                break
        if picks == last_picks and enc.total_bytes <= budget:
            if margin < 1.0:  # the byte model stopped moving: nothing more to gain
                break
            margin = 0.0  # allowed to aim at the cap itself: the real encode is the check
        elif enc.total_bytes > budget:
            margin += enc.total_bytes - budget + budget * tol / 10.0
        else:
            margin /= 4.0
        last_picks = picks
        other_bytes = enc.total_bytes - fitted_real
        _update_ratios(lst, picks, enc)
    if best_ok is None:  # still over: cut the cheapest bytes until a real encode fits
        for _ in range(max_iter):
            picks = downgrade(lst, picks, (enc.total_bytes - budget) * 1.02 + 64)
            plan = {n: tc.options[i] for n, tc, i in zip(names, lst, picks, strict=True)}
            enc = encode(plan)
            _update_ratios(lst, picks, enc)
            history.append({"iteration": len(history), "repair": True,
                            "total_bytes": enc.total_bytes, "fill": enc.total_bytes / budget})
            if enc.total_bytes <= budget:
                best_ok = (plan, enc)
                break
    if best_ok is None:
        raise CheckFailed(f"fit could not get under the budget of {budget:,} bytes "
                          f"(last encode {enc.total_bytes:,})")
    plan, enc = best_ok
    return FitResult(plan, enc, budget, history, choices)


def _update_ratios(lst, picks, enc: Encoded) -> None:
    for tc, i in zip(lst, picks, strict=True):
        actual = enc.tensor_bytes.get(tc.name)
        o = tc.options[i]
        base = o.est_bytes - o.lqer_bytes
        if actual is not None and base > 0:
            r = max(0.05, (actual - o.lqer_bytes) / base)
            if o.passthrough:
                tc.pass_ratio = r
            else:
                tc.ratio = r
