"""Rate–distortion of golfpack's quantizers: bpb gap (round trip minus pre-quant, the same
flat evaluation on FineWeb validation documents) against artifact bytes, per bit width N:

  (a) intN amax, zstd-22            the records' first recipe
  (b) intN gptq-lite, ans           per-row clip search by weight MSE
  (c) intN full GPTQ, ans           Hessian GPTQ, the tied embedding by its head H only
  (e) intN full GPTQ + lookup       the tied embedding's H mixed with its lookup-role
                                    curvature, λ chosen by calibration loss (--lookup-mix auto)
  (d) --fit at the bytes of (b)     per-tensor width/clip/passthrough, real-byte loop

Every gap carries a standard error from paired per-window differences against the
pre-quant model on the same targets (bench/rd_common.paired_gap). No interpolation: (b),
(c) and (e) of one width are compared as they are, with their byte difference printed
beside the gap difference; (d) is fitted to (b)'s exact byte total (it lands at or under
it). The evaluation runs at --eval-seq-len (default: --seq-len, the calibration row
length, so the label says what is scored); --extra-eval-seq-len scores (b), (c), (e) again
at a second length; --calib-sizes repeats (c)/(e) with fewer calibration batches.

    .venv/bin/python bench/bench_rd.py --checkpoint run/final.safetensors --seq-len 256 \
        --eval-tokens 131072 --bits 5,6,7 --small 4096 --calib-sizes 4
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from rd_common import ROOT, SHARED, load_or_train, machine, paired_gap, prepare_data, score_bpb


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", help="trained checkpoint (golfpack.checkpoint format)")
    ap.add_argument("--fallback-size", choices=["small", "27m"], default="small")
    ap.add_argument("--fallback-steps", type=int, default=300)
    ap.add_argument("--fallback-batch", type=int, default=8192)
    ap.add_argument("--save-checkpoint", help="write the fallback model here")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--seq-len", type=int, default=1024, help="calibration row length")
    ap.add_argument("--eval-seq-len", type=int, default=0, help="0 = --seq-len")
    ap.add_argument("--extra-eval-seq-len", type=int, default=0,
                    help="also score (b), (c), (e) at this length (0 = off)")
    ap.add_argument("--se-window", type=int, default=0,
                    help="targets per window of the paired SE (0 = the eval length)")
    ap.add_argument("--eval-tokens", type=int, default=0, help="0 = all validation tokens")
    ap.add_argument("--calib-batches", type=int, default=16)
    ap.add_argument("--calib-tokens", type=int, default=16384)
    ap.add_argument("--calib-sizes", default="",
                    help="comma list of smaller calibration batch counts to repeat (c)/(e) with")
    ap.add_argument("--bits", default="5,6,7")
    ap.add_argument("--small", type=int, default=65536,
                    help="float tensors up to this size stay fp16 in (a)-(c), (e) (the records' "
                         "rule; lower it for small models so that their matrices are quantized)")
    ap.add_argument("--fit-bits", default="4,5,6,7,8")
    ap.add_argument("--no-fit", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data-dir", help="keep the C4 train / FineWeb val shards here (usable "
                                       "as golftrain --data); default: a temporary folder")
    ap.add_argument("--prepare-only", action="store_true",
                    help="write the shards to --data-dir and stop")
    ap.add_argument("--tokenizer", default=str(SHARED / "fineweb_1024_bpe.model"))
    ap.add_argument("--train-text", default=str(SHARED / "c4_2000docs.jsonl"))
    ap.add_argument("--val-docs", default=str(SHARED / "fineweb_val_200docs.jsonl"))
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "rd.json"))
    ap.add_argument("--plot", help="write a bpb-gap-vs-bytes PNG here")
    ap.add_argument("--replot", metavar="JSON",
                    help="run nothing: redraw --plot from an earlier results file")
    args = ap.parse_args()
    if args.replot:
        done = json.loads(Path(args.replot).read_text())
        plot(done["points"], args.plot or str(Path(args.replot).with_suffix(".png")),
             done["model"])
        return
    torch.set_num_threads(args.threads)
    import tempfile

    from golfpack.accounting import add_decoder, code_bytes
    from golfpack.artifact import encode_artifact, parse_artifact
    from golfpack.decoder import FEATURES, decoder_bytes, decoder_row, features_of
    from golfpack.hessian import calib, gptq, lookupmix
    from golfpack.hessian import pipeline as fitpack
    from golfpack.quant.qmodel import quantize_state_dict
    from golfpack.quant.rows import parse_scheme

    t_start = time.time()
    log = lambda msg: print(f"[{time.time() - t_start:6.0f}s] {msg}", flush=True)  # noqa: E731
    tmp = tempfile.TemporaryDirectory()
    data = prepare_data(Path(args.data_dir or tmp.name), Path(args.tokenizer),
                        Path(args.train_text), Path(args.val_docs), args.eval_tokens)
    log(f"data: {data['train'].size:,} train tokens (C4), {data['val'].size - 1:,} scored "
        "validation targets (FineWeb)")
    if args.prepare_only:
        if not args.data_dir:
            raise SystemExit("--prepare-only needs --data-dir")
        return
    model, cfg, sd, info = load_or_train(args, data, log)
    # calibration first: scoring runs under inference mode, whose cached tensors (rotary
    # tables) a later backward pass could not use
    sizes = [args.calib_batches] + [int(x) for x in args.calib_sizes.split(",") if x.strip()]
    cal = {}
    for nb in sizes:
        batches, label = calib.calibration_batches(model, data["shard_dir"], nb,
                                                   args.calib_tokens, args.seq_len)
        hs = calib.collect_hessians(model, batches, source=label)
        # the lookup mix exactly as `--lookup-mix auto` runs it (pipeline.apply_lookup_mix):
        # G on the first LOOKUP_BATCHES batches (taken here, before any inference-mode
        # scoring), λ by the loss on loss_batches; one loss per calibration size
        lc = calib.lookup_curvature(model, batches[:fitpack.LOOKUP_BATCHES])
        cal[nb] = (batches, hs, lc,
                   fitpack.calibration_loss_fn(model, fitpack.loss_batches(batches)))
        log(f"calibration {nb}x{args.calib_tokens} (rows of {args.seq_len}): H {hs.seconds:.1f}s, "
            f"lookup curvature {lc.seconds:.1f}s (head scale {lc.head_scale:.3f})")
    T = args.eval_seq_len or args.seq_len
    lens = [T] + ([args.extra_eval_seq_len] if args.extra_eval_seq_len else [])
    pre = {L: score_bpb(model, data, args.device, L, per_token=True) for L in lens}
    for L in lens:
        log(f"pre-quant val_bpb {pre[L]['val_bpb']:.5f} at seq_len {L} "
            f"({pre[L]['seconds']:.1f}s)")

    nats_of: dict[int, np.ndarray] = {}  # id(row) -> per-target nats at T (paired diffs)

    def evaluate(state, L):
        model.load_state_dict({k: v.float() if v.is_floating_point() else v
                               for k, v in state.items()})
        ev = score_bpb(model, data, args.device, L, per_token=True)
        model.load_state_dict(sd)
        g = paired_gap(ev["nats"], pre[L]["nats"], data["target_bytes"], args.se_window or L)
        return g, ev["nats"]

    # the code a --fit artifact is budgeted with, as compress --fit counts it: the whole-
    # format decoder; every row's bytes are net: the artifact + the decoder pruned to it
    code = add_decoder(code_bytes(), decoder_row(FEATURES, "minified"))
    results: dict[str, list] = {k: [] for k in ("a", "b", "c", "e", "d")}

    def record(key, label, blob, extra=None, lens_=(T,)):
        art = parse_artifact(blob)
        state = art.state_dict()
        dec = decoder_bytes(features_of(art), "minified")
        row = {"label": label, "bytes": len(blob) + dec, "artifact_bytes": len(blob),
               "decoder_bytes": dec, **(extra or {})}
        for L in lens_:
            (g, se), nats = evaluate(state, L)
            row[f"gap@{L}"], row[f"se@{L}"] = g, se
            if L == T:
                nats_of[id(row)] = nats
        row["gap"], row["se"] = row[f"gap@{T}"], row[f"se@{T}"]
        results[key].append(row)
        log(f"({key}) {label:<34} {row['bytes']:>10,} B  gap {row['gap']:+.5f} ± {row['se']:.5f}"
            + "".join(f"  @{L}: {row[f'gap@{L}']:+.5f} ± {row[f'se@{L}']:.5f}"
                      for L in lens_ if L != T))
        return row

    head = f"@control=fp32;@small({args.small})=fp16;"  # passthrough rules, as the records
    bits = [int(b) for b in args.bits.split(",")]
    for b in bits:
        qm = quantize_state_dict(sd, head + f"*=int{b}:amax")
        record("a", f"int{b} amax + zstd-22", encode_artifact(qm, cfg, codec="zstd")[0])
        qm = quantize_state_dict(sd, head + f"*=int{b}:gptq-lite")
        record("b", f"int{b} gptq-lite", encode_artifact(qm, cfg, codec="ans")[0],
               {"bits": b}, lens)
        for nb in sizes:
            batches, hs, lc, loss_fn = cal[nb]
            full = nb == args.calib_batches
            qm, rep = gptq.quantize_model(sd, hs, head + f"*=int{b}:gptq-lite")
            record("c", f"int{b} full GPTQ (calib {nb})",
                   encode_artifact(qm, cfg, codec="ans")[0], {"bits": b, "calib": nb},
                   lens if full else (T,))
            t = time.time()
            mixed, mrep = fitpack.apply_lookup_mix(model, sd, hs, batches,
                                                   head + f"*=int{b}:gptq-lite", "auto",
                                                   loss_fn=loss_fn, curvature=lc)
            lam = mrep["lambda"]
            qm, rep = gptq.quantize_model(sd, mixed, head + f"*=int{b}:gptq-lite")
            record("e", f"int{b} GPTQ+lookup λ={lam:g} (calib {nb})",
                   encode_artifact(qm, cfg, codec="ans")[0],
                   {"bits": b, "calib": nb, "lambda": lam, "mix_losses": mrep["losses"],
                    "mix_seconds": time.time() - t}, lens if full else (T,))

    t_measure = 0.0
    if not args.no_fit:
        batches, hs, lc, loss_fn = cal[args.calib_batches]
        mixed, mrep = fitpack.apply_lookup_mix(model, sd, hs, batches, head + "*=int6:gptq-lite",
                                               "auto", loss_fn=loss_fn, curvature=lc,
                                               float_scheme=parse_scheme(lookupmix.FIT_SCHEME))
        lam = mrep["lambda"]
        fit_bits = tuple(int(x) for x in args.fit_bits.split(","))
        t = time.time()
        setup = fitpack.prepare_fit(sd, mixed, head + "*=int6:gptq-lite", fit_bits,
                                    sensitivity="family", loss_fn=loss_fn)
        t_measure = time.time() - t
        log(f"fit setup (lookup mix {lam:g}, family sensitivity): {t_measure:.1f}s")
        for row in results["b"]:
            t = time.time()
            blob, rep = fitpack.run_fit(setup, cfg, row["bytes"], code, codec="ans")
            alloc = {r["name"]: r["scheme"] for r in rep["fit"]["allocation"]}
            record("d", f"fit @ int{row['bits']} gptq-lite bytes", blob,
                   {"budget": row["bytes"], "bits": row["bits"], "fill": rep["fit"]["fill"],
                    "encodes": len(rep["fit"]["iterations"]), "seconds": time.time() - t,
                    "allocation": alloc})

    # per width, at the full calibration: GPTQ gaps relative to GPTQ-lite's
    summary = []
    for rb in results["b"]:
        b = rb["bits"]
        pick = {k: next((r for r in results[k] if r.get("bits") == b
                         and r.get("calib", args.calib_batches) == args.calib_batches), None)
                for k in ("c", "e", "d")}
        line = {"bits": b, "b_bytes": rb["bytes"], "b_gap": rb["gap"], "b_se": rb["se"]}
        for k, r in pick.items():
            if r is None:
                continue
            line[f"{k}_bytes_minus_b"] = r["bytes"] - rb["bytes"]
            line[f"{k}_gap"], line[f"{k}_se"] = r["gap"], r["se"]
            line[f"{k}_over_b"] = r["gap"] / rb["gap"] if rb["gap"] > 0 else None
            # the difference to (b) with its own paired SE (same targets, both quantized)
            line[f"{k}_minus_b"], line[f"{k}_minus_b_se"] = paired_gap(
                nats_of[id(r)], nats_of[id(rb)], data["target_bytes"], args.se_window or T)
        # the goal compares gaps; the byte difference of (e) is reported beside it, never
        # traded against the gap by interpolation
        line["goal_e_le_0.6b"] = line.get("e_gap", 1.0) <= 0.6 * rb["gap"]
        line["e_bytes_pct"] = 100.0 * line.get("e_bytes_minus_b", 0) / rb["bytes"]
        summary.append(line)
    out = {"machine": machine(args.device), "model": info,
           "pre_quant": {L: {k: v for k, v in p.items() if k != "nats"} for L, p in pre.items()},
           "eval": {"mode": "flat", "seq_len": T, "extra_seq_len": args.extra_eval_seq_len,
                    "se_window": args.se_window or T, "tokens": pre[T]["tokens"],
                    "docs": str(Path(args.val_docs).name)},
           "calibration": {"sizes": sizes, "tokens_per_batch": args.calib_tokens,
                           "seq_len": args.seq_len,
                           "seconds": {nb: c[1].seconds + c[2].seconds for nb, c in cal.items()}},
           "fit_setup_seconds": t_measure, "points": results, "summary": summary,
           "goal": "(e) GPTQ+lookup gap <= 0.6 x (b) gptq-lite gap (bytes: e_bytes_pct)",
           "seconds": time.time() - t_start}
    print()
    print(f"model: {info.get('checkpoint') or info.get('trainer')}  ({info.get('params'):,} "
          f"params), pre-quant val_bpb {pre[T]['val_bpb']:.5f} on {pre[T]['tokens']:,} targets "
          f"(flat, seq_len {T})")
    print(f"{'scheme':<44}{'bytes':>11}{'bpb gap':>11}{'± SE':>9}")
    for key in results:
        for r in results[key]:
            print(f"({key}) {r['label']:<40}{r['bytes']:>11,}{r['gap']:>+11.5f}{r['se']:>9.5f}")
    for s_ in summary:
        print(f"int{s_['bits']}: (b) {s_['b_gap']:+.5f}  " + "  ".join(
            f"({k}) {s_[k + '_gap']:+.5f} = {_fmt(s_.get(k + '_over_b'), '.2f')}x b "
            f"(−b {s_[k + '_minus_b']:+.5f} ± {s_[k + '_minus_b_se']:.5f}), "
            f"{s_[k + '_bytes_minus_b']:+,} B" for k in ("c", "e", "d") if k + "_gap" in s_)
            + f"  goal (e) <= 0.6 (b): {'met' if s_['goal_e_le_0.6b'] else 'NOT met'} "
            f"(at {s_['e_bytes_pct']:+.3f}% bytes)")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2, default=_jsonable) + "\n")
    if args.plot:
        plot(results, args.plot, info)
        print(f"plot: {args.plot}")
    tmp.cleanup()


def _fmt(x, spec="+.5f"):
    return "n/a" if x is None else format(x, spec)


def _jsonable(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    raise TypeError(type(o).__name__)


def plot(results, path, info):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = {"a": "(a) intN amax + zstd-22", "b": "(b) intN gptq-lite",
             "c": "(c) intN full GPTQ (head H)", "e": "(e) intN GPTQ + lookup mix",
             "d": "(d) --fit (family Δloss)"}
    floor = 1e-5  # log axis: gaps at or below it (noise around zero) are drawn on it, hollow
    fig, ax = plt.subplots(figsize=(7, 4.5))
    clipped = False
    for key, label in names.items():
        pts = sorted((r for r in results.get(key, []) if "calib" not in r or r["calib"]
                      == max(x.get("calib", 0) for x in results[key])),
                     key=lambda r: r["bytes"])
        if pts:
            xs = [p["bytes"] / 1e6 for p in pts]
            line, = ax.plot(xs, [max(p["gap"], floor) for p in pts],
                            "o-" if len(pts) > 1 else "s", label=label)
            low = [x for x, p in zip(xs, pts, strict=True) if p["gap"] <= floor]
            if low:
                clipped = True
                ax.plot(low, [floor] * len(low), "o", ms=11, mfc="none", color=line.get_color())
    ax.set_yscale("log")
    ax.set_xlabel("artifact bytes (MB, decimal)")
    ax.set_ylabel("bpb gap (round trip − pre-quant)")
    top = max(p["bytes"] for pts in results.values() for p in pts)
    cap = "" if top >= 8e6 else "; the 16,000,000-byte cap is far off-scale"
    if top >= 8e6:
        ax.axvline(16.0, color="red", ls="--", lw=1, label="16,000,000-byte cap")
    ax.set_title(f"Rate–distortion, {info.get('params', 0) / 1e6:.2f}M-param model{cap}",
                 fontsize=10)
    if clipped:
        ax.text(0.01, 0.02, f"hollow rings: gap ≤ {floor:g} (noise around zero), drawn at "
                f"{floor:g}", transform=ax.transAxes, fontsize=7)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = Path(str(path) + ".tmp")
    fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    tmp.replace(path)  # atomic: a reader never sees half a PNG


if __name__ == "__main__":
    main()
