"""GPTQ on bank slices vs per-row rounding, on a small banked GPT trained a few CPU steps.

The model is the tests' banked script (tests/golfpack/scripts/banked_gpt.py: qo/kv/mlp banks,
tied head) at L layers x d, trained `--steps` Adam steps on tokens from a random sparse
bigram chain (so the inputs of each slice have structure). Calibration (bankcalib: inputs
caught at F.linear) runs on `--calib` batches; GPTQ (spec int6 or int4, Hessian-selected
clips) is compared with the plain quantizers (same spec) by Σ tr(ΔW H ΔWᵀ) over the bank
slices, with H from the calibration batches (in-sample) and from as many held-out batches,
and by the held-out next-token loss. Writes bench/results/bankcalib.json.

    .venv/bin/python bench/bench_bankcalib.py [--layers 4] [--dim 128] [--steps 60]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from rd_common import machine  # (bench/ is the script's folder)

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "golfpack" / "scripts" / "banked_gpt.py"


def bigram_batches(n, rows, t, vocab, seed):
    g = torch.Generator().manual_seed(1234)  # one chain for every split
    nxt = torch.randint(0, vocab, (vocab, 4), generator=g)
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        x = torch.empty(rows, t, dtype=torch.long)
        x[:, 0] = torch.randint(0, vocab, (rows,), generator=g)
        for j in range(1, t):
            pick = torch.randint(0, 4, (rows,), generator=g)
            x[:, j] = nxt[x[:, j - 1], pick]
        out.append(x)
    return out


def mean_loss(model, batches):
    with torch.no_grad():
        return sum(float(model(b[:, :-1], b[:, 1:])) for b in batches) / len(batches)


def weighted_err(sd, qm, hs, names):
    from golfpack.quant.banks import split_banks

    parts = split_banks(sd)
    deq = split_banks(qm.state_dict())
    tot = 0.0
    for n in names:
        D = (parts[n] - deq[n]).double()
        tot += float(((D @ hs[n]) * D).sum())
    return tot


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--vocab", type=int, default=512)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--calib", type=int, default=8, help="calibration batches (4 x 128)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from golfpack.foreign.script import build_from_script
    from golfpack.hessian import bankcalib, gptq
    from golfpack.quant.qmodel import quantize_state_dict

    hp = dict(vocab_size=args.vocab, num_layers=args.layers, model_dim=args.dim, num_heads=4,
              num_kv_heads=2, mlp_mult=3)
    torch.manual_seed(0)
    model, _, _ = build_from_script(f"{SCRIPT}:GPT", hp)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    t0 = time.perf_counter()
    for b in bigram_batches(args.steps, 8, 129, args.vocab, seed=1):
        loss = model(b[:, :-1], b[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    train_s = time.perf_counter() - t0
    model.eval()
    calib = bigram_batches(args.calib, 4, 128, args.vocab, seed=2)
    held = bigram_batches(args.calib, 4, 128, args.vocab, seed=3)
    with torch.no_grad():
        t0 = time.perf_counter()
        for b in calib:
            model.forward_logits(b)
        fwd_s = time.perf_counter() - t0
    hs = bankcalib.collect_bank_hessians(model, calib)
    hs_held = bankcalib.collect_bank_hessians(model, held)
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    slices = [n for n in hs.names() if "[" in n]
    held_rows = [torch.cat([b, b[:, :1]], 1) for b in held]  # the held-out loss batches
    base = mean_loss(model, held_rows)
    rows = []
    for bits in (6, 4):
        spec = f"@control=fp32;tok_emb*=int8;*=int{bits}"
        t0 = time.perf_counter()
        q_gptq, rep = gptq.quantize_model(sd, hs, spec)
        gptq_s = time.perf_counter() - t0
        q_round = quantize_state_dict(sd, spec)
        row = {"spec": spec, "gptq_seconds": round(gptq_s, 3), "gptq_tensors": rep["gptq_tensors"]}
        for label, H in (("calib", hs), ("held_out", hs_held)):
            eg, er = weighted_err(sd, q_gptq, H, slices), weighted_err(sd, q_round, H, slices)
            row[f"err_ratio_{label}"] = round(eg / er, 4)
        for label, qm in (("gptq", q_gptq), ("round", q_round)):
            model.load_state_dict(qm.state_dict())
            row[f"dloss_{label}"] = round(mean_loss(model, held_rows) - base, 5)
        model.load_state_dict(sd)
        rows.append(row)
    res = {"model": {**hp, "params": sum(p.numel() for p in model.parameters()),
                     "train_steps": args.steps, "train_seconds": round(train_s, 1),
                     "bank_slices": len(slices)},
           "calibration": {"batches": args.calib, "tokens": args.calib * 4 * 128,
                           "seconds": round(hs.seconds, 3), "plain_forward_seconds":
                           round(fwd_s, 3), "overhead": round(hs.seconds / fwd_s, 2)},
           "held_out_loss": round(base, 4), "results": rows,
           "machine": machine("cpu")}
    out = ROOT / "bench" / "results" / "bankcalib.json"
    out.write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
