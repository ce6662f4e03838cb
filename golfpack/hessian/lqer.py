"""LQER: a low-rank correction of one tensor's quantization error, W ≈ Ŵ + A·B.

The records' recipe: rank r (4) on the few tensors with the largest error, A = U_r Σ_r
stored as int2 with one scale for the whole factor, B = V_rᵀ stored as int4 with one fp16
scale per group of 64 values along each of B's rows. Two refinements keep it honest:
- the SVD is taken of E·L where H + λI = L Lᵀ (the damped calibration Hessian), so the
  rank-r part removed is the part that costs the most *output* error, not weight MSE;
- after A is quantized, B is refit by least squares (B = Â⁺E; the minimiser of
  ‖(E − ÂB)L‖ for any invertible L) and then quantized, so B absorbs A's rounding.
The gain is measured as the drop in Hessian-weighted error after both factors are
quantized; the fit only keeps a correction whose gain pays for its bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from golfpack.errors import GolfError
from golfpack.hessian.gptq import PreparedHessian, row_errors
from golfpack.quant.lowrank import (
    A_BITS,
    B_BITS,
    KIND,
    LowRank,
    quantize_groups,
)
from golfpack.quant.rows import fp16_scale_up


def _damped_cholesky(prep: PreparedHessian) -> torch.Tensor:
    H = prep.H.double().clone()
    live_mean = prep.dead_fill if prep.dead_fill > 0 else float(torch.diagonal(H).mean())
    H[prep.dead, prep.dead] = live_mean
    lam = prep.damp_value if prep.damp_value > 0 else 0.01 * live_mean
    H.diagonal().add_(lam)
    L, info = torch.linalg.cholesky_ex(H)
    if int(info) != 0:
        raise GolfError("LQER: the damped Hessian is not positive definite")
    return L


@dataclass
class ErrorSVD:
    """What every rank of one tensor's correction shares: the SVD of E·L (E = w − ŵ, L the
    damped Hessian's Cholesky factor) and the Hessian-weighted error before any correction.
    A rank-r fit truncates it (the best rank-r part of E·L is its first r singular triples),
    so a ladder of ranks takes one Cholesky and one SVD per tensor and codes, not one per rank."""

    U: torch.Tensor  # float64 [rows, k], k = min(rows, cols)
    S: torch.Tensor  # float64 [k], descending
    err_before: float

    @property
    def max_rank(self) -> int:
        return int(self.S.shape[0])


def error_svd(w: torch.Tensor, w_hat: torch.Tensor, prep: PreparedHessian) -> ErrorSVD:
    """The SVD of the Hessian-weighted quantization error E·L of `w` stored as `w_hat`."""
    W = w.detach().to(torch.float64).reshape(w.shape[0], -1)
    E = W - w_hat.detach().to(torch.float64).reshape(W.shape)
    L = _damped_cholesky(prep)
    U, S, _ = torch.linalg.svd(E @ L, full_matrices=False)
    err_before = float(row_errors(W.float(), w_hat.float().reshape(W.shape), prep.H).sum())
    return ErrorSVD(U, S, err_before)


def fit_lowrank(w: torch.Tensor, w_hat: torch.Tensor, prep: PreparedHessian, rank: int = 4,
                svd: ErrorSVD | None = None) -> LowRank:
    """Rank-`rank` correction of E = w − ŵ, weighted by the calibration Hessian. `svd`: the
    error's SVD (error_svd of the same w, ŵ and Hessian) where several ranks are fitted."""
    if rank < 1:
        raise GolfError(f"LQER rank must be >= 1, got {rank}")
    W = w.detach().to(torch.float64).reshape(w.shape[0], -1)
    E = W - w_hat.detach().to(torch.float64).reshape(W.shape)
    rank = min(rank, *E.shape)
    if svd is None:
        svd = error_svd(w, w_hat, prep)
    A = svd.U[:, :rank] * svd.S[:rank]
    w_hat2 = w_hat.float().reshape(W.shape)
    err_before = svd.err_before
    best = None
    amax = float(A.abs().amax())
    # int2 with one scale is coarse: try a few scales below amax, keep the best measured.
    for frac in A_SCALE_FRACTIONS:
        cand = _quantize_factors(A, E, amax * frac)
        cand.err_before = err_before
        cand.err_after = float(row_errors(W.float(), w_hat2 + cand.correction(), prep.H).sum())
        if best is None or cand.err_after < best.err_after:
            best = cand
    return best


A_SCALE_FRACTIONS = (1.0, 0.5, 0.25, 0.125)


def _quantize_factors(A: torch.Tensor, E: torch.Tensor, clip: float) -> LowRank:
    rank = A.shape[1]
    a_scale = fp16_scale_up(torch.tensor([clip], dtype=torch.float32))
    a_div = a_scale if float(a_scale) > 0 else torch.ones(1)
    a_codes = torch.round(A.float() / a_div).clamp(-1, 1) * (a_scale > 0)
    A_hat = a_codes.double() * a_scale.double()
    if bool(A_hat.any()):
        B = torch.linalg.lstsq(A_hat, E).solution
    else:
        B = torch.zeros(rank, E.shape[1], dtype=torch.float64)
    b_codes, b_scales = quantize_groups(B.float())
    return LowRank((a_codes + 0.0).to(torch.int8), a_scale.to(torch.float16), b_codes, b_scales)


def lqer_entry(base, lr: LowRank):
    """Turn a quant Entry into an lqer Entry carrying the correction `lr`."""
    from golfpack.quant.qmodel import Entry, Part

    parts = dict(base.parts)
    parts["lr_a"] = Part(lr.a_codes.numpy(), "codes", A_BITS, group="lqer")
    parts["lr_as"] = Part(lr.a_scale.numpy(), group="lqer")
    parts["lr_b"] = Part(lr.b_codes.numpy(), "codes", B_BITS, group="lqer")
    parts["lr_bs"] = Part(lr.b_scales.reshape(-1).numpy(), group="lqer")
    stats = dict(base.stats, lqer_rank=lr.rank, lqer_gain=lr.gain, lqer_bytes=lr.nbytes())
    return Entry(base.name, base.shape, base.dtype, KIND, base.scheme, parts,
                 dict(base.meta, rank=lr.rank), stats)


