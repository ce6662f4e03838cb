"""Rate–distortion of golfpack's quantizers: bpb gap (round trip minus pre-quant, same flat
evaluation on FineWeb validation documents) against artifact bytes, per scheme:

  (a) intN amax, zstd-22            the records' first recipe
  (b) intN gptq-lite, ans           per-row clip search by weight MSE
  (c) intN full GPTQ, ans           Hessian GPTQ (act-order, block 128, 1% damping)
  (d) --fit at the bytes of (b)     per-tensor width/clip from calibration, real-byte loop
  (r) the records' mix              tok_emb int8, the rest int6 gptq-lite

N runs over --bits for (a)–(c); (d) is fitted to each byte total (b) reached, so (b) and (d)
compare at equal bytes directly and (a)/(c) are interpolated in log-bytes. The model is a
checkpoint (--checkpoint, e.g. the trainer's final.safetensors) or, without one, a FALLBACK
trained here by a minimal AdamW loop (bench/rd_common.py), labelled as such in the output.
Calibration: --calib-batches x --calib-tokens of the C4 training text (a train shard).

    .venv/bin/python bench/bench_rd.py --checkpoint run/final.safetensors --device cuda \\
        --plot bench/results/rd.png
    .venv/bin/python bench/bench_rd.py --fallback-steps 300 --eval-tokens 65536   # CPU
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from rd_common import ROOT, SHARED, load_or_train, machine, prepare_data, score_bpb


def _eval_state(model, state, data, device):
    model.load_state_dict({k: v.float() if v.is_floating_point() else v
                           for k, v in state.items()})
    return score_bpb(model, data, device)


def _interp_gap(points, nbytes):
    """Gap of a scheme at `nbytes`, linear in log-bytes between its two nearest points."""
    pts = sorted(points, key=lambda p: p["bytes"])
    xs = [math.log(p["bytes"]) for p in pts]
    x = math.log(nbytes)
    if x <= xs[0] or x >= xs[-1]:
        return None  # outside the measured range: no extrapolation
    i = next(j for j in range(1, len(xs)) if xs[j] >= x)
    t = (x - xs[i - 1]) / (xs[i] - xs[i - 1])
    return pts[i - 1]["gap"] + t * (pts[i]["gap"] - pts[i - 1]["gap"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", help="trained checkpoint (golfpack.checkpoint format)")
    ap.add_argument("--fallback-size", choices=["small", "27m"], default="small")
    ap.add_argument("--fallback-steps", type=int, default=300)
    ap.add_argument("--fallback-batch", type=int, default=8192)
    ap.add_argument("--save-checkpoint", help="write the fallback model here")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--eval-tokens", type=int, default=0, help="0 = all validation tokens")
    ap.add_argument("--calib-batches", type=int, default=16)
    ap.add_argument("--calib-tokens", type=int, default=16384)
    ap.add_argument("--bits", default="5,6,7,8")
    ap.add_argument("--small", type=int, default=65536,
                    help="float tensors up to this size stay fp16 (the records' rule; lower it "
                         "for small models so that their matrices are quantized at all)")
    ap.add_argument("--fit-bits", default="4,5,6,7,8")
    ap.add_argument("--lqer", type=int, default=0, help="LQER rank offered to --fit (0 = off)")
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

    from golfpack.accounting import code_bytes
    from golfpack.artifact import encode_artifact, parse_artifact
    from golfpack.hessian import calib, gptq
    from golfpack.hessian import pipeline as fitpack
    from golfpack.quant.qmodel import quantize_state_dict

    t_start = time.time()
    log = lambda msg: print(f"[{time.time() - t_start:6.0f}s] {msg}", flush=True)
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
    pre = score_bpb(model, data, args.device)
    log(f"pre-quant val_bpb {pre['val_bpb']:.5f} ({pre['seconds']:.1f}s)")
    batches, label = calib.calibration_batches(model, data["shard_dir"], args.calib_batches,
                                               args.calib_tokens, args.seq_len)
    hs = calib.collect_hessians(model, batches, source=label)
    log(f"calibration: {label}, {hs.seconds:.1f}s")
    code = code_bytes()
    results = {"a": [], "b": [], "c": [], "d": [], "d_hessian": [], "r": []}

    def record(key, label, blob, extra=None):
        state = parse_artifact(blob).state_dict()
        ev = _eval_state(model, state, data, args.device)
        row = {"label": label, "bytes": len(blob), "val_bpb": ev["val_bpb"],
               "gap": ev["val_bpb"] - pre["val_bpb"], **(extra or {})}
        results[key].append(row)
        log(f"({key}) {label:<28} {len(blob):>11,} B  gap {row['gap']:+.5f}")
        return row

    head = f"@control=fp32;@small({args.small})=fp16;"  # passthrough rules, as the records
    bits = [int(b) for b in args.bits.split(",")]
    for b in bits:
        qm = quantize_state_dict(sd, head + f"*=int{b}:amax")
        record("a", f"int{b} amax + zstd-22", encode_artifact(qm, cfg, codec="zstd")[0])
        qm = quantize_state_dict(sd, head + f"*=int{b}:gptq-lite")
        record("b", f"int{b} gptq-lite", encode_artifact(qm, cfg, codec="ans")[0])
        t = time.time()
        qm, rep = gptq.quantize_model(sd, hs, head + f"*=int{b}:gptq-lite")
        record("c", f"int{b} full GPTQ", encode_artifact(qm, cfg, codec="ans")[0],
               {"gptq_seconds": time.time() - t, "fallbacks": rep["fallbacks"]})
    qm = quantize_state_dict(sd, head + "tok_emb*=int8:gptq-lite;*=int6:gptq-lite")
    record("r", "records' mix (emb int8)", encode_artifact(qm, cfg, codec="ans")[0])

    fit_bits = tuple(int(b) for b in args.fit_bits.split(","))
    t = time.time()
    setup_h = fitpack.prepare_fit(sd, hs, head + "*=int6:gptq-lite", fit_bits, args.lqer,
                                  3 if args.lqer else 0)
    t_measure = time.time() - t
    setup_f = copy.copy(setup_h)
    setup_f.choices = copy.deepcopy(setup_h.choices)
    setup_f.sensitivity = "family"
    loss_fn = fitpack.calibration_loss_fn(model, batches[:2])
    t = time.time()
    weights = {n: sd[n].float() for n in setup_f.choices}
    for n, a in fitpack.measure_sensitivity(setup_f.choices, weights, setup_f.preps, loss_fn,
                                            "family", log).items():
        setup_f.choices[n].alpha = a
    model.load_state_dict(sd)
    t_sens = time.time() - t
    log(f"fit setup: candidates {t_measure:.1f}s, family sensitivity {t_sens:.1f}s")
    for row in results["b"]:
        for key, setup in (("d", setup_f), ("d_hessian", setup_h)):
            t = time.time()
            blob, rep = fitpack.run_fit(setup, cfg, row["bytes"], code, codec="ans")
            alloc = {r["name"]: r["scheme"] + (f"+lqer{r['lqer_rank']}" if r["lqer_rank"]
                                               else "") for r in rep["fit"]["allocation"]}
            record(key, f"fit ({setup.sensitivity}) @ {row['label'].split()[0]}", blob,
                   {"budget": row["bytes"], "fill": rep["fit"]["fill"],
                    "encodes": rep["fit"]["iterations"], "seconds": time.time() - t,
                    "allocation": alloc})

    ref = next(r for r in results["b"] if r["label"].startswith("int6"))
    at = {"bytes": ref["bytes"], "b": ref["gap"],
          "a": _interp_gap(results["a"], ref["bytes"]),
          "c": _interp_gap(results["c"], ref["bytes"]),
          "d": next(r["gap"] for r in results["d"] if r["budget"] == ref["bytes"]),
          "d_hessian": next(r["gap"] for r in results["d_hessian"]
                            if r["budget"] == ref["bytes"])}
    out = {"machine": machine(args.device), "model": info, "pre_quant": pre,
           "eval": {"mode": "flat", "seq_len": args.seq_len, "tokens": pre["tokens"],
                    "docs": str(Path(args.val_docs).name)},
           "calibration": {"source": label, "seconds": hs.seconds},
           "fit_setup_seconds": {"candidates": t_measure, "family_sensitivity": t_sens},
           "at_int6_gptq_lite_bytes": at, "points": results,
           "goal": "(d) <= half of (b) at equal bytes",
           "goal_met": at["d"] <= 0.5 * at["b"], "seconds": time.time() - t_start}
    print()
    print(f"model: {info.get('checkpoint') or info.get('trainer')}  ({info.get('params'):,} "
          f"params), pre-quant val_bpb {pre['val_bpb']:.5f} on {pre['tokens']:,} tokens")
    print(f"{'scheme':<34}{'bytes':>12}{'bpb gap':>11}")
    for key in ("a", "b", "c", "d", "d_hessian", "r"):
        for r in results[key]:
            print(f"({key}) {r['label']:<30}{r['bytes']:>12,}{r['gap']:>+11.5f}")
    print(f"\nat {at['bytes']:,} bytes (int6 gptq-lite): a {_fmt(at['a'])}  b {_fmt(at['b'])}  "
          f"c {_fmt(at['c'])}  d {_fmt(at['d'])}  d(hessian) {_fmt(at['d_hessian'])}  "
          f"-> goal d <= b/2: {'met' if out['goal_met'] else 'NOT met'}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2, default=_jsonable) + "\n")
    if args.plot:
        plot(results, args.plot, info)
        print(f"plot: {args.plot}")
    tmp.cleanup()


def _fmt(x):
    return "n/a" if x is None else f"{x:+.5f}"


def _jsonable(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    raise TypeError(type(o).__name__)


def plot(results, path, info):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = {"a": "(a) intN amax + zstd-22", "b": "(b) intN gptq-lite", "c": "(c) intN full GPTQ",
             "d": "(d) --fit (family Δloss)", "d_hessian": "(d') --fit (Hessian sum)",
             "r": "records' mix (emb int8)"}
    floor = 1e-5  # log axis: gaps at or below it (noise around zero) are drawn on it, hollow
    fig, ax = plt.subplots(figsize=(7, 4.5))
    clipped = False
    for key, label in names.items():
        pts = sorted(results[key], key=lambda r: r["bytes"])
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
