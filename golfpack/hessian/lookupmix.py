"""The tied embedding's two roles in one GPTQ metric: H_tied = H_head + λ·G_lookup.

GPTQ of the tied embedding with the head H alone (Σ h hᵀ of the final-norm states) pushes
rounding error into the directions the head barely reads — which can be the directions the
input lookup depends on most (the head H is often dominated by one direction). Adding the
lookup-role curvature G (calib.lookup_curvature, already in the head H's units) weighs both
roles; λ = 1 weighs them as their loss curvatures say, and `choose_lookup_mix` picks λ
among a few candidates by the calibration loss of the model with only the embedding
quantized (λ = 0 is always a candidate, so the choice never does worse on those batches).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import torch

from golfpack.errors import GolfError
from golfpack.hessian import gptq
from golfpack.hessian.calib import TIED_KEY, Hessians, LookupCurvature
from golfpack.quant.rows import dequantize

MIX_CANDIDATES = (0.0, 0.1, 0.3, 1.0, 3.0, 10.0)
# a fit chooses λ at this scheme when its spec stores the embedding in float (the fit may
# still quantize it)
FIT_SCHEME = "int6:gptq-lite"


def mix_hessians(hessians: Hessians, curvature: LookupCurvature, lam: float) -> Hessians:
    """A copy of `hessians` whose tied-embedding H is H_head + lam·G (the others shared)."""
    if lam < 0 or lam != lam:
        raise GolfError(f"the lookup mix must be a number >= 0, got {lam}")
    if TIED_KEY not in hessians or lam == 0:
        return hessians
    H = hessians[TIED_KEY]
    G = curvature.in_head_units(hessians.n_tokens[TIED_KEY]).to(H.dtype)
    if G.shape != H.shape:
        raise GolfError(f"lookup curvature {tuple(G.shape)} does not match the tied "
                        f"embedding's H {tuple(H.shape)}")
    return replace(hessians, H={**hessians.H, TIED_KEY: H + lam * G},
                   source=f"{hessians.source}; lookup mix {lam:g}")


def choose_lookup_mix(weight: torch.Tensor, hessians: Hessians, curvature: LookupCurvature,
                      scheme, loss_fn: Callable[[dict], float],
                      candidates=MIX_CANDIDATES, damp: float = 0.01, block: int = 128
                      ) -> tuple[float, Hessians, dict]:
    """GPTQ the tied embedding (`weight`, under `scheme`) with each candidate λ and keep
    the one with the lowest calibration loss -> (λ, mixed hessians, report)."""
    cands = sorted({0.0, *(float(c) for c in candidates)})
    losses = {}
    for lam in cands:
        H = mix_hessians(hessians, curvature, lam)[TIED_KEY]
        r = gptq.quantize_gptq(weight.float(), H, scheme, damp=damp, block=block)
        w_hat = dequantize(r.codes, r.scales).reshape(weight.shape)
        losses[lam] = loss_fn({TIED_KEY: w_hat.to(weight.dtype)})
    best = min(cands, key=lambda lam: (losses[lam], lam))
    report = {"lambda": best, "losses": {f"{k:g}": v for k, v in losses.items()},
              "base_loss": loss_fn({}), "head_scale": curvature.head_scale}
    return best, mix_hessians(hessians, curvature, best), report
