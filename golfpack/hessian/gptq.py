"""Hessian GPTQ: quantize a weight column by column, pushing each column's rounding error
onto the columns not yet quantized so that the layer's output error ‖(W − Ŵ) X‖² (the
Hessian-weighted error Σ_rows Δw H Δwᵀ with H = Σ xᵀx) stays small.

Method (Frantar et al., "GPTQ", 2022), as used by the records:
- damping: λ = `damp` · mean(diag H) over live columns, added to the diagonal once;
- dead columns (diag H = 0: inputs that were zero on every calibration token) keep their
  weights and are plainly rounded; their rows/columns of H are zeroed and their diagonal
  set to the live mean, so no error flows into or out of them;
- act-order: columns in descending diag H (a stable sort), inverted at the end;
- U = upper Cholesky factor of H⁻¹; blocks of `block` (128) columns: a column's error
  e = (w − ŵ) / U_jj is applied to the rest of its block at once, and the block's errors
  to the remaining columns with one matrix product ("lazy batch" updates);
- if a Cholesky factorisation fails the tensor falls back to plain rounding with the
  scheme's own clip rule, and the result says why.

Scales are fixed before the column loop, in the quantizers' per-row format (fp16 scales,
codes in [−qmax, qmax]), from the scheme's clip candidates. Rows are independent in GPTQ,
so all candidates (and all tensors that share one H, such as q/k/v) run stacked in one pass
and each row keeps the candidate with the lowest Hessian-weighted error (select="hessian");
select="diag" instead picks by Σ_j diag(H)_j (w − ŵ)² of plain rounding and runs GPTQ once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from golfpack.errors import GolfError
from golfpack.quant import rows as quant

SELECTS = ("hessian", "diag")


@dataclass
class PreparedHessian:
    """What GPTQ needs from one H, computed once and shared by every tensor reading it."""

    H: torch.Tensor  # float32 [C, C], undamped, original column order (error metric)
    perm: torch.Tensor  # act-order permutation (identity without act-order)
    U: torch.Tensor | None  # float32 upper Cholesky factor of damped H⁻¹ (permuted order)
    dead: torch.Tensor  # bool [C]: columns with diag H = 0
    fallback: str | None  # why GPTQ cannot run (plain rounding is used instead)
    damp_value: float = 0.0  # λ added to the diagonal
    dead_fill: float = 0.0  # the diagonal given to dead columns (before damping)

    @property
    def diag(self) -> torch.Tensor:
        return torch.diagonal(self.H)


@dataclass
class GPTQResult:
    codes: torch.Tensor  # int8 [rows, cols]
    scales: torch.Tensor  # float16 [rows]
    err: float  # Σ_rows Δw H Δwᵀ (undamped H)
    err_round: float  # the same error for plain rounding with the same scales
    fallback: str | None = None
    floored_rows: int = 0


def prepare_hessian(H: torch.Tensor, damp: float = 0.01, act_order: bool = True
                    ) -> PreparedHessian:
    """Damp, order and factor H (float64 work); never raises on a singular H."""
    if H.dim() != 2 or H.shape[0] != H.shape[1]:
        raise GolfError(f"a Hessian must be square, got shape {tuple(H.shape)}")
    if not bool(torch.isfinite(H).all()):
        raise GolfError("the Hessian holds NaN or inf (calibration overflowed?)")
    if not damp >= 0:
        raise GolfError(f"damping must be >= 0, got {damp}")
    H64 = H.detach().to("cpu", torch.float64)
    n = H64.shape[0]
    d = torch.diagonal(H64)
    dead = d <= 0
    metric = H64.to(torch.float32)
    if bool(dead.all()):
        return PreparedHessian(metric, torch.arange(n), None, dead,
                               "no calibration signal (every column is dead)")
    live_mean = float(d[~dead].mean())
    Hd = H64.clone()
    Hd[dead, :] = 0.0
    Hd[:, dead] = 0.0
    Hd[dead, dead] = live_mean
    Hd.diagonal().add_(damp * live_mean)
    if act_order:
        perm = torch.argsort(torch.diagonal(Hd), descending=True, stable=True)
    else:
        perm = torch.arange(n)
    Hp = Hd[perm][:, perm]
    L, info = torch.linalg.cholesky_ex(Hp)
    if int(info) != 0:
        return PreparedHessian(metric, perm, None, dead,
                               f"Cholesky of the damped Hessian failed (minor {int(info)})")
    # H⁻¹ = L⁻ᵀL⁻¹ from one triangular solve (torch.cholesky_inverse is ~30x slower on CPU).
    Linv = torch.linalg.solve_triangular(L, torch.eye(n, dtype=torch.float64), upper=False)
    U, info = torch.linalg.cholesky_ex(Linv.T @ Linv, upper=True)
    if int(info) != 0 or not bool(torch.isfinite(U).all()):
        return PreparedHessian(metric, perm, None, dead, "Cholesky of the inverse Hessian failed")
    return PreparedHessian(metric, perm, U.to(torch.float32), dead, None,
                           damp * live_mean, live_mean)


def gptq_rows(W: torch.Tensor, scales: torch.Tensor, qmax: torch.Tensor,
              prep: PreparedHessian, block: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """GPTQ for rows W [R, C] with fixed per-row scales [R] and per-row qmax [R] ->
    (codes float32 [R, C] in the original column order, error [R] float64).

    Rows with scale 0 get codes 0. The error is the Hessian-weighted error under the
    *undamped* H, read off the algorithm itself: with U the Cholesky factor of the damped
    H⁻¹, Σ_j ((w_j − q_j s)/U_jj)² is exactly Δw (H + λI) Δwᵀ, so no extra R·C² product
    is needed; λ‖Δw‖² (and the dead columns' stand-in diagonal) are then taken off."""
    if prep.U is None:
        raise GolfError(f"GPTQ cannot run: {prep.fallback}")
    if block < 1:
        raise GolfError(f"GPTQ block size must be >= 1, got {block}")
    perm = prep.perm
    # Transposed layout: a column of W is a contiguous row of WT.
    WT = W.to(torch.float32)[:, perm].T.contiguous()
    C, R = WT.shape
    QT = torch.empty_like(WT)
    s = scales.to(torch.float32)
    live = (s > 0).to(torch.float32)
    div = torch.where(s > 0, s, torch.ones_like(s))
    hi = qmax.to(torch.float32)
    lo = -hi
    U = prep.U
    err = torch.zeros(R, dtype=torch.float64)
    threads = torch.get_num_threads()
    for i1 in range(0, C, block):
        i2 = min(i1 + block, C)
        W1 = WT[i1:i2]  # a view: updates land in WT
        U1 = U[i1:i2, i1:i2]
        E1 = torch.empty(i2 - i1, R, dtype=torch.float32)
        # The column loop is thousands of small ops: one thread avoids a thread-pool
        # hand-off per op (costly on a busy machine) unless the rows are many; the block
        # product below uses all threads.
        torch.set_num_threads(1 if R * (i2 - i1) < (1 << 21) else threads)
        try:
            for j in range(i2 - i1):
                w = W1[j]
                q = torch.minimum(torch.maximum(torch.round(w / div), lo), hi).mul_(live)
                QT[i1 + j] = q
                e = (w - q * s).div_(U1[j, j])
                if j + 1 < i2 - i1:
                    W1[j + 1:].addcmul_(U1[j, j + 1:, None], e[None, :], value=-1.0)
                E1[j] = e
        finally:
            torch.set_num_threads(threads)
        err += E1.square().sum(dim=0, dtype=torch.float64)
        if i2 < C:
            WT[i2:].addmm_(U[i1:i2, i2:].T, E1, alpha=-1.0)
    Q = QT[torch.argsort(perm)].T + 0.0  # + 0.0 turns -0 codes into +0
    D = (W.to(torch.float32) - Q * s[:, None]).square()
    err -= prep.damp_value * D.sum(dim=1, dtype=torch.float64)
    if bool(prep.dead.any()):
        err -= (prep.dead_fill + 0.0) * D[:, prep.dead].sum(dim=1, dtype=torch.float64)
    return Q, err.clamp_(min=0.0)


def row_errors(W: torch.Tensor, What: torch.Tensor, H: torch.Tensor) -> torch.Tensor:
    """Σ over each row of Δw H Δwᵀ (float64 [R]); Δ = W − Ŵ."""
    D = (W.to(torch.float32) - What.to(torch.float32))
    return ((D @ H) * D).sum(dim=1, dtype=torch.float64)


def diag_row_errors(W: torch.Tensor, What: torch.Tensor, diag: torch.Tensor) -> torch.Tensor:
    """Σ_j diag(H)_j (w − ŵ)² per row (float64 [R])."""
    D = (W.to(torch.float32) - What.to(torch.float32))
    return (D.square() * diag.to(torch.float32)).sum(dim=1, dtype=torch.float64)


def candidate_scales(w2: torch.Tensor, scheme: quant.Scheme, codes: bool = True):
    """Per-row scales of each clip candidate of `scheme` -> (scales [K, R] float32 fp16-exact,
    floored [K, R] bool, plain-rounding codes [K, R, C] float32 or None): the quantizers' own
    rules (quant._candidate_clips, quant._scales, quant._grid)."""
    clips = quant._candidate_clips(w2, scheme)
    if not codes:
        out = [quant._scales(c, scheme) for c in clips]
        return torch.stack([o[0] for o in out]), torch.stack([o[1] for o in out]), None
    out = [quant._grid(w2, c, scheme) for c in clips]
    return (torch.stack([o[1] for o in out]), torch.stack([o[2] for o in out]),
            torch.stack([o[0] for o in out]))


def _as_matrix(w: torch.Tensor, prep: PreparedHessian, name: str) -> torch.Tensor:
    if w.dim() != 2:
        raise GolfError(f"{name}: GPTQ needs a 2-D weight, got shape {tuple(w.shape)}")
    if w.shape[1] != prep.H.shape[0]:
        raise GolfError(f"{name}: weight has {w.shape[1]} columns but its Hessian is "
                        f"{prep.H.shape[0]}x{prep.H.shape[0]}")
    w2 = w.detach().to("cpu", torch.float32)
    if not bool(torch.isfinite(w2).all()):
        raise GolfError(f"{name}: cannot quantize a tensor holding NaN or inf")
    return w2


def quantize_group(weights: dict[str, torch.Tensor], schemes: dict[str, quant.Scheme],
                   prep: PreparedHessian, select: str = "hessian", block: int = 128
                   ) -> dict[str, GPTQResult]:
    """GPTQ for tensors that share one H, all clip candidates stacked in a single pass."""
    if select not in SELECTS:
        raise GolfError(f"unknown clip selection {select!r} (use {' or '.join(SELECTS)})")
    mats = {n: _as_matrix(w, prep, n) for n, w in weights.items()}
    if prep.U is None:
        return {n: _plain(mats[n], schemes[n], prep) for n in mats}
    rows_W, rows_s, rows_q, spans, cands = [], [], [], {}, {}
    at = 0
    for n, w2 in mats.items():
        sc = schemes[n]
        if sc.kind != "int":
            raise GolfError(f"{n}: GPTQ needs an integer scheme, got {sc}")
        S, F, Qr = candidate_scales(w2, sc)
        if select == "diag" and S.shape[0] > 1:
            err = torch.stack([diag_row_errors(w2, q * s[:, None], prep.diag)
                               for q, s in zip(Qr, S, strict=True)])
            pick = _pick(err, sc.per_matrix)
            rows = torch.arange(w2.shape[0])
            S, F = S[pick, rows][None], F[pick, rows][None]
        cands[n] = (S, F)
        k = S.shape[0]
        rows_W.append(w2.repeat(k, 1))
        rows_s.append(S.reshape(-1))
        rows_q.append(torch.full((k * w2.shape[0],), float(sc.qmax)))
        spans[n] = (at, at + k * w2.shape[0])
        at += k * w2.shape[0]
    W = torch.cat(rows_W)
    s = torch.cat(rows_s)
    Q, err_all = gptq_rows(W, s, torch.cat(rows_q), prep, block)
    out = {}
    for n, w2 in mats.items():
        a, b = spans[n]
        S, F = cands[n]
        k, R = S.shape
        err = err_all[a:b].view(k, R)
        pick = _pick(err, schemes[n].per_matrix)
        rows = torch.arange(R)
        codes = Q[a:b].view(k, R, -1)[pick, rows]
        scales = S[pick, rows]
        q_round = torch.round(w2 / torch.where(scales > 0, scales, 1.0)[:, None])
        q_round = q_round.clamp(-schemes[n].qmax, schemes[n].qmax) * (scales > 0)[:, None]
        e_round = row_errors(w2, q_round * scales[:, None], prep.H)
        out[n] = GPTQResult(
            codes=codes.to(torch.int8), scales=scales.to(torch.float16),
            err=float(err[pick, rows].sum()), err_round=float(e_round.sum()),
            floored_rows=int(F[pick, rows].sum()) if schemes[n].floor else 0)
    return out


def _pick(err: torch.Tensor, per_matrix: bool) -> torch.Tensor:
    if per_matrix:
        return torch.argmin(err.sum(dim=1)).expand(err.shape[1])
    return torch.argmin(err, dim=0)


def _plain(w2: torch.Tensor, scheme: quant.Scheme, prep: PreparedHessian) -> GPTQResult:
    r = quant.quantize(w2, scheme)
    e = float(row_errors(w2, quant.dequantize(r.codes, r.scales), prep.H).sum())
    return GPTQResult(r.codes, r.scales, e, e, prep.fallback, r.floored_rows)


def quantize_gptq(w: torch.Tensor, H: torch.Tensor | PreparedHessian, scheme: quant.Scheme,
                  select: str = "hessian", block: int = 128, damp: float = 0.01,
                  act_order: bool = True) -> GPTQResult:
    """GPTQ one weight [rows, cols] against H [cols, cols] (or a prepared H)."""
    prep = H if isinstance(H, PreparedHessian) else prepare_hessian(H, damp, act_order)
    return quantize_group({"w": w}, {"w": scheme}, prep, select, block)["w"]


# --------------------------------------------------------------------------- whole models


def gptq_entry(name: str, w: torch.Tensor, r: GPTQResult, scheme: quant.Scheme):
    """A `quant` entry of the artifact (same parts as the plain quantizers' entries)."""
    from golfpack.quant.qmodel import Entry, Part, dtype_name
    from golfpack.quant.scheme import family

    fam = family(name)
    codes = r.codes.numpy()
    hat = quant.dequantize(r.codes, r.scales)
    w64 = w.detach().double().reshape(codes.shape)
    den = float(w64.square().sum())
    rel = float((w64 - hat.double()).square().sum()) / den if den > 0 else 0.0
    stats = {"rel_mse": rel, "floored_rows": r.floored_rows, "rows": int(codes.shape[0]),
             "hessian_err": r.err, "hessian_err_round": r.err_round, "gptq": r.fallback is None}
    if r.fallback:
        stats["fallback"] = r.fallback
    return Entry(name, tuple(int(s) for s in w.shape), dtype_name(w), "quant",
                 quant.format_scheme(scheme),
                 {"codes": Part(codes, "codes", scheme.bits, group=fam),
                  "scales": Part(r.scales.numpy(), group=fam)}, stats=stats)


def prepare_all(hessians, damp: float = 0.01, act_order: bool = True
                ) -> dict[str, PreparedHessian]:
    """One PreparedHessian per distinct H (shared by the names reading it)."""
    by_id: dict[int, PreparedHessian] = {}
    out = {}
    for name, H in hessians.H.items():
        if id(H) not in by_id:
            by_id[id(H)] = prepare_hessian(H, damp, act_order)
        out[name] = by_id[id(H)]
    return out


def quantize_model(state_dict: dict[str, torch.Tensor], hessians, spec: str | None = None,
                   schemes: dict[str, quant.Scheme] | None = None, select: str = "hessian",
                   block: int = 128, damp: float = 0.01, act_order: bool = True,
                   progress: bool = False):
    """Quantize a state dict: GPTQ for every integer-scheme matrix that has a Hessian, the
    plain quantizers for everything else. -> (QuantizedModel, report dict)."""
    import time

    from tqdm import tqdm

    from golfpack.quant.banks import split_banks
    from golfpack.quant.qmodel import QuantizedModel, dtype_name, quant_entry
    from golfpack.quant.scheme import resolve

    t0 = time.perf_counter()
    # banks are quantized per slice; a Hessian keyed "qo_bank[3]" reaches that slice
    state_dict = split_banks(state_dict)
    info = {n: (dtype_name(t), int(t.numel())) for n, t in state_dict.items()}
    chosen = resolve(spec, info)
    chosen.update(schemes or {})
    eligible = {n for n, sc in chosen.items() if sc.kind == "int" and n in hessians
                and state_dict[n].dim() == 2 and state_dict[n].is_floating_point()}
    preps = prepare_all(hessians, damp, act_order)
    results: dict[str, GPTQResult] = {}
    for group in tqdm(hessians.groups, desc="gptq", unit="H", disable=None if progress else True):
        names = [n for n in group if n in eligible]
        if names:
            results.update(quantize_group({n: state_dict[n] for n in names},
                                          {n: chosen[n] for n in names}, preps[names[0]],
                                          select, block))
    entries = [gptq_entry(n, t, results[n], chosen[n]) if n in results
               else quant_entry(n, t, chosen[n]) for n, t in state_dict.items()]
    report = {"seconds": time.perf_counter() - t0, "gptq_tensors": len(results),
              "fallbacks": {n: r.fallback for n, r in results.items() if r.fallback},
              "hessian_err": {n: r.err for n, r in results.items()},
              "hessian_err_round": {n: r.err_round for n, r in results.items()}}
    return QuantizedModel(entries), report
