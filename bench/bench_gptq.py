"""Speed and quality of calibration + full GPTQ on the 27M-parameter stack (11 x 512, MLP 3x).

Calibrates on N batches of T tokens of C4 text (written as a train shard), then runs GPTQ
int6 (Hessian-selected gptq-lite clips, act-order, block 128, 1% damping) on every matrix.
Reports seconds per stage and the Hessian-weighted error of GPTQ against plain rounding
with the quantizers' own clip choice. Writes bench/results/gptq.json.

    .venv/bin/python bench/bench_gptq.py [--checkpoint CKPT] [--batches 16] [--tokens 16384]
        [--autocast] [--threads 2]

Without --checkpoint the model is the reference initialisation with its matrices rescaled
to trained-like statistics (timing does not depend on the values).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch
from rd_common import ROOT, SHARED, STACK_27M, machine, prepare_data


def _model(args):
    from golfpack.checkpoint import build_model, load

    if args.checkpoint:
        sd, cfg = load(args.checkpoint)
        return build_model(cfg, {k: v.float() for k, v in sd.items()}), "checkpoint"
    from trainer.model import GPT

    torch.manual_seed(0)
    m = GPT(dict(STACK_27M))
    with torch.no_grad():
        for name, p in m.named_parameters():
            if p.dim() == 2 and "skip" not in name and "resid" not in name:
                p.normal_(0, 0.5 / p.shape[1] ** 0.5)  # zero-init projections get weights
    return m, "initialisation (rescaled)"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint")
    ap.add_argument("--batches", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=16384, help="tokens per calibration batch")
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--scheme", default="*=int6:gptq-lite")
    ap.add_argument("--select", default="hessian", choices=["hessian", "diag"])
    ap.add_argument("--autocast", action="store_true", help="bf16 autocast for calibration")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--tokenizer", default=str(SHARED / "fineweb_1024_bpe.model"))
    ap.add_argument("--train-text", default=str(SHARED / "c4_2000docs.jsonl"))
    ap.add_argument("--val-docs", default=str(SHARED / "fineweb_val_200docs.jsonl"))
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "gptq.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from golfpack.hessian import calib, gptq
    from golfpack.quant import rows as quant
    from golfpack.quant.qmodel import quantize_state_dict

    model, source = _model(args)
    model.to(args.device)
    sd = {k: v.detach().float().cpu().clone() for k, v in model.state_dict().items()}
    with tempfile.TemporaryDirectory() as tmp:
        data = prepare_data(Path(tmp), Path(args.tokenizer), Path(args.train_text),
                            Path(args.val_docs), eval_tokens=1024)
        t0, c0 = time.perf_counter(), time.process_time()
        hs = calib.calibrate(model, data["shard_dir"], args.batches, args.tokens, args.seq_len,
                             autocast=args.autocast or None, progress=True)
        t_cal, c_cal = time.perf_counter() - t0, time.process_time() - c0
    t1, c1 = time.perf_counter(), time.process_time()
    qm, rep = gptq.quantize_model(sd, hs, args.scheme, select=args.select, progress=True)
    t_gptq, c_gptq = time.perf_counter() - t1, time.process_time() - c1
    plain = quantize_state_dict(sd, args.scheme)
    err_plain = {}
    for e in plain:
        if e.name in rep["hessian_err"]:
            hat = quant.dequantize(torch.from_numpy(e.parts["codes"].data),
                                   torch.from_numpy(e.parts["scales"].data))
            err_plain[e.name] = float(gptq.row_errors(sd[e.name], hat, hs[e.name].float()).sum())
    ratio = {n: rep["hessian_err"][n] / err_plain[n] for n in err_plain if err_plain[n] > 0}
    params = sum(v.numel() for v in sd.values())
    res = {
        "machine": machine(args.device), "threads": args.threads, "model": source,
        "params": params, "calibration": {"batches": args.batches, "tokens_per_batch":
                                          args.tokens, "seq_len": args.seq_len,
                                          "autocast_bf16": bool(args.autocast),
                                          "seconds": t_cal, "cpu_seconds": c_cal,
                                          "distinct_hessians": len(hs.groups)},
        "gptq": {"scheme": args.scheme, "select": args.select, "seconds": t_gptq,
                 "cpu_seconds": c_gptq,
                 "tensors": rep["gptq_tensors"], "fallbacks": rep["fallbacks"]},
        "total_seconds": t_cal + t_gptq, "total_cpu_seconds": c_cal + c_gptq,
        "load_average_1min": os.getloadavg()[0], "target_seconds": 120,
        "hessian_err_gptq_over_plain": {
            "total": sum(rep["hessian_err"].values()) / sum(err_plain.values()),
            "median_tensor": sorted(ratio.values())[len(ratio) // 2],
            "worst_tensor": max(ratio.values())},
    }
    print(f"model {source}, {params:,} params, {res['machine']}")
    print(f"{'stage':<14}{'wall s':>9}{'cpu s':>9}")
    print(f"{'calibration':<14}{t_cal:>9.1f}{c_cal:>9.1f}   {args.batches} x {args.tokens} tokens")
    print(f"{'gptq':<14}{t_gptq:>9.1f}{c_gptq:>9.1f}   {rep['gptq_tensors']} tensors, "
          f"{len(rep['fallbacks'])} fallbacks")
    print(f"{'total':<14}{t_cal + t_gptq:>9.1f}{c_cal + c_gptq:>9.1f}   (target 120 s wall; "
          f"load average {os.getloadavg()[0]:.1f})")
    print(f"Hessian-weighted error, GPTQ / plain rounding: "
          f"{res['hessian_err_gptq_over_plain']['total']:.3f} overall")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    del qm


if __name__ == "__main__":
    main()
