"""`golfpack compress --gptq | --fit`: checkpoint -> calibration -> Hessian GPTQ (and, with
--fit, the per-tensor allocation of golfpack.hessian.fit) -> one artifact in the usual format.

Tensors that the spec stores as passthrough (control tensors, small tensors, non-floats)
and matrices without a Hessian keep the plain quantizers; every calibrated integer matrix
goes through GPTQ. With --fit, the bit width and clip of each calibrated matrix are chosen
to fill the byte budget, and LQER corrections are added where they pay for their bytes.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from golfpack.errors import GolfError
from golfpack.hessian import fill, fit, gptq, lqer
from golfpack.hessian.sensitivity import (  # noqa: F401 (re-exported)
    calibration_loss_fn,
    measure_sensitivity,
)
from golfpack.quant.rows import format_scheme

Log = Callable[[str], None] | None
LOOKUP_BATCHES = 4  # calibration batches the lookup curvature is measured on
LOSS_BATCHES = 2  # calibration batches the measured losses (lookup mix, sensitivities) use


def loss_batches(batches: list) -> list:
    """The calibration batches a measured loss runs on (at least one)."""
    return batches[: max(1, min(LOSS_BATCHES, len(batches)))]


class PlanEncoder:
    """Builds the artifact for a fit plan (each tensor's GPTQ/LQER entry is cached in the
    setup, so later budgets reuse it) and reports real bytes back to the fit."""

    def __init__(self, setup, config, codec, tokenizer, code_bytes: int, block: int = 128):
        self.setup, self.config, self.codec, self.tokenizer = setup, config, codec, tokenizer
        self.code_bytes, self.block = code_bytes, block

    def entries_for(self, plan: dict[str, fit.Option]) -> dict:
        from golfpack.quant.qmodel import quant_entry

        st, cache = self.setup, self.setup.cache
        todo = {n: o for n, o in plan.items() if (n, o.scheme, o.lqer_rank) not in cache}
        for n in [n for n, o in todo.items() if o.passthrough]:  # float storage: no GPTQ
            sc = todo.pop(n).scheme
            cache[(n, sc, 0)] = quant_entry(n, st.state_dict[n], sc)
        for group in st.groups:
            names = [n for n in group if n in todo]
            if not names:
                continue
            res = gptq.quantize_group({n: st.state_dict[n] for n in names},
                                      {n: todo[n].scheme for n in names}, st.preps[names[0]],
                                      block=self.block)
            for n in names:
                e = gptq.gptq_entry(n, st.state_dict[n], res[n], todo[n].scheme)
                if todo[n].lqer_rank:
                    w_hat = res[n].codes.float() * res[n].scales.float()[:, None]
                    lr = lqer.fit_lowrank(st.state_dict[n], w_hat, st.preps[n],
                                          todo[n].lqer_rank)
                    e = lqer.lqer_entry(e, lr)
                cache[(n, todo[n].scheme, todo[n].lqer_rank)] = e
        return {n: cache[(n, o.scheme, o.lqer_rank)] for n, o in plan.items()}

    def __call__(self, plan: dict[str, fit.Option]) -> fit.Encoded:
        from golfpack.artifact import encode_artifact
        from golfpack.quant.qmodel import QuantizedModel

        chosen = self.entries_for(plan)
        qm = QuantizedModel([chosen.get(n) or self.setup.fixed[n] for n in self.setup.state_dict])
        data, report = encode_artifact(qm, self.config, codec=self.codec,
                                       tokenizer=self.tokenizer)
        tb = {t["name"]: float(t["bytes"]) for t in report["tensors"] if t["name"] in plan}
        return fit.Encoded(len(data) + self.code_bytes, tb, data)


@dataclass
class FitSetup:
    """Everything measured once before fitting: any number of budgets can then be fitted."""

    state_dict: dict
    choices: dict[str, fit.TensorChoices]
    preps: dict
    groups: list[list[str]]
    fixed: dict  # entries of the tensors that are not fitted (passthrough, no Hessian)
    skipped: dict[str, str]
    bits: tuple[int, ...]
    n_candidates: int
    sensitivity: str
    lqer_rank: int
    source: str
    seconds: dict
    cache: dict = field(default_factory=dict)  # (name, scheme, lqer rank) -> Entry


def prepare_fit(state_dict, hessians, spec: str | None = None, bits=fit.DEFAULT_BITS,
                lqer_rank: int = 0, lqer_top: int = 0, sensitivity: str = "hessian",
                loss_fn=None, block: int = 128, damp: float = 0.01, progress: bool = False,
                log: Log = None) -> FitSetup:
    """Measure every candidate of every calibrated integer matrix (+ sensitivities)."""
    from golfpack.quant.qmodel import dtype_name, quant_entry
    from golfpack.quant.scheme import resolve

    if sensitivity not in fit.SENSITIVITIES:
        raise GolfError(f"unknown sensitivity {sensitivity!r} (use {', '.join(fit.SENSITIVITIES)})")
    if sensitivity != "hessian" and loss_fn is None:
        raise GolfError(f"`sensitivity={sensitivity}` needs calibration batches",
                        param="sensitivity")
    from golfpack.quant.banks import split_banks

    sd = split_banks({k: v.detach().cpu() for k, v in state_dict.items()})  # banks per slice
    schemes = resolve(spec, {n: (dtype_name(t), int(t.numel())) for n, t in sd.items()})
    # every calibrated float matrix is fitted, whatever the spec says for it (an int scheme
    # or a float passthrough): float storage is one of its candidates, not a rule that
    # removes it from the allocation
    fitted = [n for n, sc in schemes.items() if sc.kind in ("int", "fp16", "fp32")
              and n in hessians and sd[n].dim() == 2 and sd[n].is_floating_point()]
    if not fitted:
        raise GolfError("`fit=True`: the model has no calibrated float matrices to allocate "
                        "bytes to", param="fit")
    t0 = time.perf_counter()
    preps = gptq.prepare_all(hessians, damp)
    bad = {n: preps[n].fallback for n in fitted if preps[n].fallback}
    weights = {n: sd[n].float() for n in fitted if n not in bad}
    groups = [g for g in ([n for n in g if n in weights] for g in hessians.groups) if g]
    cands = fit.candidate_schemes(bits)
    choices = fit.measure_options(weights, preps, groups, cands, lqer_rank, lqer_top, block,
                                  progress)
    fit.add_passthrough_options(choices, weights, preps, {
        n: ("fp16", "fp32") if schemes[n].kind == "fp32" else ("fp16",) for n in weights})
    t1 = time.perf_counter()
    if sensitivity != "hessian":
        for n, a in measure_sensitivity(choices, weights, preps, loss_fn, sensitivity,
                                        log).items():
            choices[n].alpha = a
    t2 = time.perf_counter()
    fixed = {n: quant_entry(n, t, schemes[n]) for n, t in sd.items() if n not in choices}
    return FitSetup(sd, choices, preps, groups, fixed, bad, tuple(bits), len(cands),
                    sensitivity, lqer_rank, hessians.source,
                    {"calibration": round(hessians.seconds, 3), "candidates": round(t1 - t0, 3),
                     "sensitivity": round(t2 - t1, 3)})


def run_fit(setup: FitSetup, config: dict, budget: int, code: dict, codec: str = "auto",
            tokenizer=None, tol: float = 0.005, block: int = 128,
            log: Log = None) -> tuple[bytes, dict]:
    """Fit one budget with real encodes -> (artifact bytes, report with the allocation)."""
    from golfpack.accounting import with_budget
    from golfpack.artifact import parse_artifact

    t0 = time.perf_counter()
    for tc in setup.choices.values():
        tc.ratio = tc.pass_ratio = 1.0  # every budget starts from the same byte model (determinism)
    enc = PlanEncoder(setup, config, codec, tokenizer, int(code["code_bytes"]), block)
    sd = setup.state_dict
    other_guess = sum(2.0 * t.numel() for n, t in sd.items() if n not in setup.choices) + \
        code["code_bytes"] + 4096
    res = fit.fit_to_budget(setup.choices, budget, enc, other_guess, tol, log=log)
    landed, ranks = res.encoded.total_bytes, sum(o.lqer_rank for o in res.picks.values())
    loss_before = fill.predicted_loss(setup.choices, res.picks)
    if landed < budget * (1.0 - tol):  # the candidates' steps were too coarse: fill
        res = fill.fill_slack(res, enc, fill.LqerLadder(enc), tol, log)
    data = res.encoded.blob
    entries = enc.entries_for(res.picks)
    report = with_budget(parse_artifact(data).report(), code, budget)
    table = res.table()
    report["fit"] = {
        "budget": budget, "fill": report["total_bytes"] / budget, "tolerance": tol,
        "sensitivity": setup.sensitivity, "bits": list(setup.bits),
        "candidates": setup.n_candidates, "calibration": setup.source,
        "iterations": res.iterations, "predicted_loss": sum(r["pred_loss"] for r in table),
        "skipped": setup.skipped, "allocation": table,
        "filler": {"before": landed, "fill_before": landed / budget,
                   "predicted_loss_before": loss_before,
                   "lqer_ranks_added": sum(o.lqer_rank for o in res.picks.values()) - ranks},
        "lqer": {n: e.stats.get("lqer_gain") for n, e in entries.items() if e.kind == "lqer"},
        "seconds": dict(setup.seconds, fit_and_encode=round(time.perf_counter() - t0, 3)),
    }
    return data, report


def compress_hessian(state_dict, config: dict, hessians, budget: int, code: dict,
                     spec: str | None = None, do_fit: bool = False, codec: str = "auto",
                     tokenizer=None, bits=fit.DEFAULT_BITS, select: str = "hessian",
                     lqer_rank: int = 0, lqer_top: int = 0, sensitivity: str = "hessian",
                     loss_fn=None, tol: float = 0.005, block: int = 128, damp: float = 0.01,
                     progress: bool = False, log: Log = None) -> tuple[bytes, dict]:
    """GPTQ (with the spec's schemes) or fit-to-budget -> (artifact bytes, report)."""
    from golfpack.accounting import with_budget
    from golfpack.artifact import encode_artifact

    if do_fit:
        setup = prepare_fit(state_dict, hessians, spec, bits, lqer_rank, lqer_top, sensitivity,
                            loss_fn, block, damp, progress, log)
        return run_fit(setup, config, budget, code, codec, tokenizer, tol, block, log)
    sd = {k: v.detach().cpu() for k, v in state_dict.items()}
    qm, rep = gptq.quantize_model(sd, hessians, spec, select=select, block=block, damp=damp,
                                  progress=progress)
    data, report = encode_artifact(qm, config, codec=codec, tokenizer=tokenizer)
    report = with_budget(report, code, budget)
    report["gptq"] = {"seconds": round(rep["seconds"], 3), "tensors": rep["gptq_tensors"],
                      "fallbacks": rep["fallbacks"], "calibration": hessians.source,
                      "left_out": dict(getattr(hessians, "left_out", {}))}
    return data, report


def summarize_allocation(report: dict, top: int = 0) -> list[str]:
    """Text lines: the chosen allocation with predicted vs actual bytes per tensor."""
    f = report["fit"]
    rows = f["allocation"] if not top else sorted(f["allocation"],
                                                   key=lambda r: -r["actual_bytes"])[:top]
    lines = [f"{'tensor':<34} {'scheme':<20} {'lqer':>4} {'pred B':>10} {'actual B':>10} "
             f"{'b/p':>6} {'pred Δloss':>11}"]
    for r in rows:
        lines.append(f"{r['name']:<34} {r['scheme']:<20} {r['lqer_rank'] or '':>4} "
                     f"{r['est_bytes']:>10,} {r['actual_bytes']:>10,} "
                     f"{8 * r['actual_bytes'] / r['params']:>6.3f} {r['pred_loss']:>11.3e}")
    pred = sum(r["est_bytes"] for r in f["allocation"])
    act = sum(r["actual_bytes"] for r in f["allocation"])
    lines.append(f"{'fitted tensors':<34} {'':<20} {'':>4} {pred:>10,} {act:>10,} "
                 f"(actual/predicted {act / pred if pred else math.nan:.4f})")
    lines.append(f"total {report['total_bytes']:,} of {f['budget']:,} bytes "
                 f"({f['fill']:.3%}), {len(f['iterations'])} real encodes")
    return lines


def calibrate_checkpoint(ckpt_path, config, source, n_batches: int, batch_tokens: int,
                         seq_len: int, seed: int = 0, device: str = "cpu",
                         autocast: bool | None = None, progress: bool = False,
                         arch: str | None = None, trust: bool = False):
    """Load + rebuild the model, collect its Hessians -> (state, config, model, hessians,
    batches). Train shards are validated before the model is even built. `arch`: the model
    the user names (a script's class too); banked models calibrate through bankcalib."""
    from golfpack.checkpoint import build_model, load
    from golfpack.hessian import bankcalib, calib

    if str(source) != "self":
        from golfpack.hessian.shardread import train_shard_paths

        train_shard_paths(source)
    state, cfg = load(ckpt_path, config, infer=arch is None)
    if arch is not None:
        cfg = {**cfg, "arch": arch}
    model = build_model(cfg, {k: v.float() if v.is_floating_point() else v
                              for k, v in state.items()}, arch=arch, trust=trust).to(device)
    banked = bankcalib.has_banks(model)
    if banked:
        from golfpack.foreign.records import rebank_like

        state = rebank_like(state, model.state_dict())
    batches, label = calib.calibration_batches(model, source, n_batches, batch_tokens, seq_len,
                                               seed, autocast, progress)
    collect = bankcalib.collect_bank_hessians if banked else calib.collect_hessians
    hs = collect(model, batches, autocast, progress, label)
    return state, cfg, model, hs, batches


def parse_lookup_mix(mix) -> float | None:
    """`lookup_mix`: "auto" -> None, else the number λ >= 0 it names (a declared error)."""
    if str(mix) == "auto":
        return None
    try:
        lam = float(mix)
    except (TypeError, ValueError):
        lam = -1.0
    if not 0 <= lam < math.inf:
        raise GolfError(f"`lookup_mix` must be 'auto' or a number >= 0, got {mix!r}",
                        param="lookup_mix")
    return lam


def apply_lookup_mix(model, state_dict, hessians, batches, spec: str | None, mix="auto",
                     autocast: bool | None = None, log: Log = None, float_scheme=None,
                     loss_fn=None, curvature=None):
    """The tied embedding's H with its lookup role mixed in (golfpack.hessian.lookupmix):
    `mix` a number λ >= 0 (0: the head H alone) or "auto" (λ chosen by calibration loss at
    the spec's scheme for the embedding; `float_scheme` instead where the spec stores it in
    float, e.g. for a fit, which may still quantize it) -> (hessians, report or None).
    `loss_fn`: the calibration loss to choose by, where the caller measures with it too
    (one model copy, one base loss); None: built here on `loss_batches(batches)`.
    `curvature`: the lookup curvature already measured on `batches[:LOOKUP_BATCHES]` (a
    caller that must take it before an inference-mode pass); None: measured here."""
    from golfpack.hessian import calib, lookupmix
    from golfpack.quant.qmodel import dtype_name
    from golfpack.quant.scheme import resolve

    lam = parse_lookup_mix(mix)
    auto = lam is None
    if lam == 0 or calib.TIED_KEY not in hessians or not calib._has_tied_head(model):
        return hessians, None
    w = state_dict[calib.TIED_KEY]
    scheme = resolve(spec, {calib.TIED_KEY: (dtype_name(w), int(w.numel()))})[calib.TIED_KEY]
    if scheme.kind != "int":
        if float_scheme is None:
            return hessians, None
        scheme = float_scheme
    # a backward pass costs ~2 forwards: G from the first LOOKUP_BATCHES batches (it is
    # normalised per token, so it needs no more than the head H's batches)
    curv = curvature if curvature is not None else \
        calib.lookup_curvature(model, batches[:LOOKUP_BATCHES], autocast)
    if not auto:
        return lookupmix.mix_hessians(hessians, curv, lam), {"lambda": lam, "chosen": "given",
                                                             "head_scale": curv.head_scale}
    if loss_fn is None:
        loss_fn = calibration_loss_fn(model, loss_batches(batches), autocast)
    lam, mixed, rep = lookupmix.choose_lookup_mix(w, hessians, curv, scheme, loss_fn)
    rep.update(chosen="auto", scheme=format_scheme(scheme), seconds=round(curv.seconds, 3))
    if log:
        log(f"lookup mix: λ = {lam:g} (calibration loss by λ: {rep['losses']})")
    return mixed, rep


__all__ = ["compress_hessian", "apply_lookup_mix", "prepare_fit", "run_fit", "FitSetup",
           "calibrate_checkpoint", "calibration_loss_fn", "measure_sensitivity",
           "summarize_allocation", "PlanEncoder"]


def compress_with_hessians(checkpoint, output, *, scheme_spec, codec, tokenizer, config_path,
                           code_files, code_mode, budget, allow_over, force, progress,
                           fit=False, gptq=False, calib=None, calib_batches=16,
                           calib_tokens=16384, calib_seq_len=1024, seed=0,
                           fit_bits=(4, 5, 6, 7, 8), fit_tol=0.005, sensitivity="family",
                           lqer_rank=0, lqer_top=3, device="auto", log=None,
                           decoder=True, model_spec=None, trust_arch=False,
                           lookup_mix="auto") -> dict:
    """compress --gptq / --fit: validate everything cheap first, then calibrate and pack."""
    from golfpack.hessian.shardread import train_shard_paths

    if calib is None:
        raise GolfError("`gptq` and `fit` need calibration data: `calib=DIR|GLOB|self`",
                        param=("gptq", "fit", "calib"))
    if lqer_rank and not fit:
        raise GolfError("`lqer_rank` works with `fit=True` (it is kept only where it pays)",
                        param=("lqer_rank", "fit"))
    parse_lookup_mix(lookup_mix)  # before the slow calibration
    if str(calib) != "self":
        train_shard_paths(calib)  # refuses validation shards before anything slow
    from golfpack.accounting import code_bytes
    from golfpack.compress import write_artifact
    from golfpack.fileio import refuse_existing, refuse_same_file

    if log is None and progress:
        log = lambda msg: print(msg, file=sys.stderr)  # noqa: E731
    refuse_same_file(checkpoint, output)
    refuse_existing(output, force)
    code = code_bytes(code_files, code_mode)
    # the decoder a submission ships, counted before fitting (the whole format: an upper
    # bound, as the fit does not know its codecs yet); decoder=False: a code file holds it
    from golfpack.accounting import add_decoder
    from golfpack.compress import require_decoder_file
    from golfpack.decoder import FEATURES, decoder_row

    if not decoder:
        require_decoder_file(code_files)
    code = add_decoder(code, decoder_row(FEATURES, code_mode, code_files, decoder))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    state, cfg, model, hs, batches = calibrate_checkpoint(
        checkpoint, config_path, calib, calib_batches, calib_tokens, calib_seq_len, seed,
        device, None, progress, arch=model_spec, trust=trust_arch)
    from golfpack.hessian.lookupmix import FIT_SCHEME
    from golfpack.quant.rows import parse_scheme

    # one calibration loss for the lookup mix and the sensitivities: the same batches, one
    # copy of the weights, the unquantized model's loss measured once
    loss_fn = None
    if fit and sensitivity != "hessian":
        loss_fn = calibration_loss_fn(model, loss_batches(batches))
    hs, mix_report = apply_lookup_mix(  # (`fit` is the flag here, not the module)
        model, state, hs, batches, scheme_spec, lookup_mix, log=log,
        float_scheme=parse_scheme(FIT_SCHEME) if fit else None, loss_fn=loss_fn)
    data, report = compress_hessian(
        state, cfg, hs, budget, code, scheme_spec, do_fit=fit, codec=codec,
        tokenizer=tokenizer, bits=fit_bits, lqer_rank=lqer_rank,
        lqer_top=lqer_top if lqer_rank else 0, sensitivity=sensitivity, loss_fn=loss_fn,
        tol=fit_tol, progress=progress, log=log)
    if mix_report is not None:
        report["lookup_mix"] = mix_report
    return write_artifact(output, data, report, allow_over, force)
