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
from golfpack.gptq import PreparedHessian, row_errors

GROUP = 64
A_BITS, B_BITS = 2, 4


@dataclass
class LowRank:
    """Quantized factors: A ≈ a_codes·a_scale [rows, r], B ≈ b_codes·b_scales [r, cols]."""

    a_codes: torch.Tensor  # int8 [rows, r], values in [-1, 1]
    a_scale: torch.Tensor  # float16 [1]
    b_codes: torch.Tensor  # int8 [r, cols], values in [-7, 7]
    b_scales: torch.Tensor  # float16 [r, ceil(cols / 64)]
    err_before: float = 0.0
    err_after: float = 0.0

    @property
    def rank(self) -> int:
        return int(self.a_codes.shape[1])

    def nbytes(self) -> int:
        """Stored size: packed 2-bit A, packed 4-bit B, fp16 scales."""
        return lqer_bytes(self.a_codes.shape[0], self.b_codes.shape[1], self.rank)

    def correction(self) -> torch.Tensor:
        """A·B as float32 [rows, cols]."""
        a = self.a_codes.float() * self.a_scale.float()
        return a @ dequantize_groups(self.b_codes, self.b_scales)

    @property
    def gain(self) -> float:
        return self.err_before - self.err_after


def lqer_bytes(rows: int, cols: int, rank: int) -> int:
    groups = -(-cols // GROUP)
    return -(-rows * rank * A_BITS // 8) + 2 + -(-rank * cols * B_BITS // 8) + 2 * rank * groups


def _fp16_up(x: torch.Tensor) -> torch.Tensor:
    from golfpack.quant import fp16_scale_up

    return fp16_scale_up(x)


def quantize_groups(b: torch.Tensor, bits: int = B_BITS, group: int = GROUP):
    """Symmetric intN per group of `group` values along each row -> (codes, fp16 scales)."""
    qmax = (1 << (bits - 1)) - 1
    r, c = b.shape
    g = -(-c // group)
    pad = torch.zeros(r, g * group, dtype=torch.float32)
    pad[:, :c] = b
    blocks = pad.view(r, g, group)
    s = _fp16_up(blocks.abs().amax(dim=2) / qmax)
    div = torch.where(s > 0, s, torch.ones_like(s))
    q = torch.round(blocks / div[..., None]).clamp(-qmax, qmax) * (s > 0)[..., None]
    return (q.view(r, -1)[:, :c] + 0.0).to(torch.int8), s.to(torch.float16)


def dequantize_groups(codes: torch.Tensor, scales: torch.Tensor, group: int = GROUP):
    r, c = codes.shape
    s = scales.float().repeat_interleave(group, dim=1)[:, :c]
    return codes.float() * s


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


def fit_lowrank(w: torch.Tensor, w_hat: torch.Tensor, prep: PreparedHessian, rank: int = 4
                ) -> LowRank:
    """Rank-`rank` correction of E = w − ŵ, weighted by the calibration Hessian."""
    if rank < 1:
        raise GolfError(f"LQER rank must be >= 1, got {rank}")
    W = w.detach().to(torch.float64).reshape(w.shape[0], -1)
    E = W - w_hat.detach().to(torch.float64).reshape(W.shape)
    rank = min(rank, *E.shape)
    L = _damped_cholesky(prep)
    U, S, Vh = torch.linalg.svd(E @ L, full_matrices=False)
    A = U[:, :rank] * S[:rank]
    w_hat2 = w_hat.float().reshape(W.shape)
    err_before = float(row_errors(W.float(), w_hat2, prep.H).sum())
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
    a_scale = _fp16_up(torch.tensor([clip], dtype=torch.float32))
    a_div = a_scale if float(a_scale) > 0 else torch.ones(1)
    a_codes = torch.round(A.float() / a_div).clamp(-1, 1) * (a_scale > 0)
    A_hat = a_codes.double() * a_scale.double()
    if bool(A_hat.any()):
        B = torch.linalg.lstsq(A_hat, E).solution
    else:
        B = torch.zeros(rank, E.shape[1], dtype=torch.float64)
    b_codes, b_scales = quantize_groups(B.float())
    return LowRank((a_codes + 0.0).to(torch.int8), a_scale.to(torch.float16), b_codes, b_scales)


# --------------------------------------------------------------------------- artifact entries
# An "lqer" entry holds a quant entry's parts (codes, scales: pooled with the family's plain
# entries) plus the factors: lr_a (int2 codes [rows, r]), lr_as (its fp16 scale), lr_b (int4
# codes [r, cols]) and lr_bs (fp16 group scales, r x ceil(cols / 64)).
KIND = "lqer"
PARTS = ("codes", "scales", "lr_a", "lr_as", "lr_b", "lr_bs")


def lqer_entry(base, lr: LowRank):
    """Turn a quant Entry into an lqer Entry carrying the correction `lr`."""
    from golfpack.qmodel import Entry, Part

    parts = dict(base.parts)
    parts["lr_a"] = Part(lr.a_codes.numpy(), "codes", A_BITS, group="lqer")
    parts["lr_as"] = Part(lr.a_scale.numpy(), group="lqer")
    parts["lr_b"] = Part(lr.b_codes.numpy(), "codes", B_BITS, group="lqer")
    parts["lr_bs"] = Part(lr.b_scales.reshape(-1).numpy(), group="lqer")
    stats = dict(base.stats, lqer_rank=lr.rank, lqer_gain=lr.gain, lqer_bytes=lr.nbytes())
    return Entry(base.name, base.shape, base.dtype, KIND, base.scheme, parts,
                 dict(base.meta, rank=lr.rank), stats)


def reconstruct_entry(e) -> torch.Tensor:
    """ŵ = codes·scales + (lr_a·lr_as)(lr_b·lr_bs), float32 in the entry's shape. Every size
    is checked first: a damaged table gives an ArtifactError, never another exception."""
    import numpy as np

    from golfpack.errors import ArtifactError
    from golfpack.quant import SchemeError, dequantize, parse_scheme

    def arr(role):
        if role not in e.parts:
            raise ArtifactError(f"entry {e.name!r} ({KIND}) lacks part {role!r}")
        return np.ascontiguousarray(e.parts[role].data)

    rows = int(e.shape[0]) if len(e.shape) >= 1 else 1
    cols = int(np.prod(e.shape[1:], dtype=np.int64)) if len(e.shape) >= 2 else 0
    rank = e.meta.get("rank")
    try:
        qmax = parse_scheme(e.scheme).qmax
    except SchemeError:
        raise ArtifactError(f"entry {e.name!r}: bad scheme {e.scheme!r}") from None
    if len(e.shape) != 2 or not isinstance(rank, int) or not 1 <= rank <= min(rows, cols):
        raise ArtifactError(f"entry {e.name!r} ({KIND}): bad shape {list(e.shape)} or rank")
    groups = -(-cols // GROUP)
    want = {"codes": (rows * cols, 1, qmax), "scales": (rows, 2, None),
            "lr_a": (rows * rank, 1, 1), "lr_as": (1, 2, None),
            "lr_b": (rank * cols, 1, (1 << (B_BITS - 1)) - 1), "lr_bs": (rank * groups, 2, None)}
    got = {}
    for role, (n, size, lim) in want.items():
        a = arr(role)
        if a.size != n or a.dtype.itemsize != size:
            raise ArtifactError(f"entry {e.name!r} ({KIND}): part {role!r} does not match "
                                f"shape {list(e.shape)} and rank {rank}")
        if lim is not None and a.size and int(np.abs(a.astype(np.int16)).max()) > lim:
            raise ArtifactError(f"entry {e.name!r} ({KIND}): {role} codes exceed ±{lim}")
        got[role] = torch.from_numpy(a.copy())
    base = dequantize(got["codes"].view(torch.int8).reshape(rows, cols),
                      got["scales"].view(torch.float16))
    lr = LowRank(got["lr_a"].view(torch.int8).reshape(rows, rank),
                 got["lr_as"].view(torch.float16), got["lr_b"].view(torch.int8).reshape(rank, cols),
                 got["lr_bs"].view(torch.float16).reshape(rank, groups))
    return (base + lr.correction()).reshape(e.shape)
