"""Sliding-window scoring speed (L=1024, S=64) of the baseline 9x512 model, three ways, in
one run on the same windows:

  golfeval   golfeval.score.core.score_windows: equal-length windows batched, output head and
             softmax only at each window's 64 scored positions (float64 head)
  one-window one window per forward, logits and cross-entropy at all 1024 positions
  padded-32  32 windows per forward, logits and cross-entropy at all 32x1024 positions,
             then the scored ones picked out (the records' approach)

Timings interleave the methods over several rounds and keep each method's fastest round
(the best estimate on a shared machine). Also prints the analytic FLOPs per scored token and
the implied time of the full 62,021,632-token val split on 8 GPUs.

    python bench/bench_score.py                      # CPU, 2 threads (a few minutes)
    python bench/bench_score.py --device cuda --windows 512 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from golfeval.score.core import score_windows  # noqa: E402
from golfeval.score.windows import WindowPlan, sliding_plan  # noqa: E402
from trainer.model import GPT, GPTConfig  # noqa: E402

VAL_TOKENS = 62_021_632
L, S = 1024, 64
H100_BF16_DENSE = 989e12  # FLOP/s, H100 SXM dense bf16 spec


def flops(cfg: GPTConfig, seq_len: int = L, stride: int = S) -> dict:
    """Forward FLOPs (2 per multiply-add) of the body per window and of the head per
    position; attention counts the causal half of QK^T and AV."""
    d, kv = cfg.model_dim, cfg.num_kv_heads * cfg.head_dim
    linear = d * d + 2 * d * kv + d * d + 2 * d * cfg.mlp_hidden
    attn_per_pos = 2 * d * (seq_len + 1) / 2  # QK^T + AV over (p+1) keys, averaged
    body_window = 2 * seq_len * cfg.num_layers * (linear + attn_per_pos)
    head = 2 * d * cfg.vocab_size
    return {
        "body_per_window": body_window,
        "head_per_position": head,
        "golfeval_per_scored_token": body_window / stride + head,
        "full_logits_per_scored_token": (body_window + seq_len * head) / stride,
        "flat_per_token": body_window / seq_len + head,
    }


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_stream(n: int) -> tuple[np.ndarray, str]:
    """FineWeb tokens from ../shared/data when present (speed does not depend on them)."""
    data = ROOT.parent / "shared" / "data"
    if (data / "fineweb_1024_bpe.model").is_file():
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor(model_file=str(data / "fineweb_1024_bpe.model"))
        out = []
        with open(data / "fineweb_val_200docs.jsonl", encoding="utf-8") as fh:
            for line in fh:
                out += [1] + sp.encode(json.loads(line)["text"])
                if len(out) >= n:
                    return np.array(out[:n], dtype=np.uint16), "FineWeb (sp1024)"
    rng = np.random.default_rng(0)
    return rng.integers(0, 1024, n).astype(np.uint16), "random tokens"


def one_window(model, tokens, plan, device, amp):
    nats = []
    for s, n, o in zip(plan.starts, plan.lengths, plan.offsets, strict=True):
        x = torch.from_numpy(tokens[s:s + n + 1].astype(np.int64)).to(device)
        with amp():
            logits = model(x[None, :-1])
        per = F.cross_entropy(logits[0].float(), x[1:], reduction="none")
        nats.append(per[o:].double().cpu().numpy())
    return np.concatenate(nats)


def padded_batches(model, tokens, plan, device, amp, batch=32):
    nats = []
    for lo in range(0, len(plan), batch):
        starts = plan.starts[lo:lo + batch]
        grid = np.zeros((batch, L + 1), dtype=np.int64)  # pad to a full batch of windows
        for i, s in enumerate(starts):
            grid[i] = tokens[s:s + L + 1]
        x = torch.from_numpy(grid).to(device)
        with amp():
            logits = model(x[:, :-1])
        per = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(),
                              x[:, 1:].reshape(-1), reduction="none").view(batch, L)
        for i, o in enumerate(plan.offsets[lo:lo + batch]):
            nats.append(per[i, o:].double().cpu().numpy())
    return np.concatenate(nats)


def golfeval_way(model, tokens, plan, device, batch):
    tb = np.zeros(plan.n_targets, dtype=np.int64)
    nats = score_windows(model, tokens, plan, tb, batch=batch, device=device,
                         per_token=True).per_token_nats
    return nats[~np.isnan(nats)]  # later windows score contiguous runs, in window order


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--windows", type=int, default=32, help="windows for golfeval/padded-32")
    ap.add_argument("--one-window", type=int, default=8, help="windows for one-window")
    ap.add_argument("--batch", type=int, default=None, help="golfeval batch (default: CLI's)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--compile", action="store_true", help="also time golfeval compiled")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "score.json"))
    ap.add_argument("--key", default=None, help="entry name in the JSON (default: device)")
    args = ap.parse_args()

    from golfeval.score.evaluate import default_batch

    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    batch = args.batch or default_batch(device.type)
    torch.manual_seed(0)
    cfg = GPTConfig()
    model = GPT(cfg)
    with torch.no_grad():  # move off the zero-initialised projections
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    model = model.eval().requires_grad_(False).to(device)
    amp_on = device.type == "cuda"

    def amp():
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp_on)

    n_win = max(args.windows, args.one_window)
    tokens, source = load_stream(L + S * (n_win + 1) + 1)
    full = sliding_plan(tokens.size, L, S)
    later = WindowPlan(full.starts[1:n_win + 1], full.lengths[1:n_win + 1],
                       full.offsets[1:n_win + 1], full.n_targets, "sliding")

    def sub(k):
        return WindowPlan(later.starts[:k], later.lengths[:k], later.offsets[:k],
                          later.n_targets, "sliding")

    plans = {"golfeval": sub(args.windows), "padded-32": sub(args.windows),
             "one-window": sub(args.one_window)}
    methods = {
        "golfeval": lambda p: golfeval_way(model, tokens, p, device, batch),
        "padded-32": lambda p: padded_batches(model, tokens, p, device, amp),
        "one-window": lambda p: one_window(model, tokens, p, device, amp),
    }
    if args.compile:
        from golfeval.score.modelio import compile_model

        cmodel = compile_model(GPT(cfg).to(device).eval().requires_grad_(False))
        cmodel.load_state_dict(model.state_dict())
        plans["golfeval+compile"] = plans["padded-32+compile"] = plans["golfeval"]
        methods["golfeval+compile"] = lambda p: golfeval_way(cmodel, tokens, p, device, batch)
        methods["padded-32+compile"] = lambda p: padded_batches(cmodel, tokens, p, device, amp)

    warmup = {}
    with torch.inference_mode():  # warm-up; compiled variants compile on their whole plan
        for name, fn in methods.items():
            if name == "padded-32" and device.type == "cpu":
                continue  # a warm-up costs a full 32-window forward; CPU needs none
            t0 = time.perf_counter()
            fn(plans[name] if "compile" in name else sub(min(batch, 2)))
            warmup[name] = time.perf_counter() - t0
    best = {k: math.inf for k in methods}
    best_cpu = {k: math.inf for k in methods}  # CPU time of all threads: robust to sharing
    outputs = {}
    for _ in range(args.rounds):
        for name, fn in methods.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0, c0 = time.perf_counter(), time.process_time()
            with torch.inference_mode():
                outputs[name] = fn(plans[name])
            best_cpu[name] = min(best_cpu[name], time.process_time() - c0)
            if device.type == "cuda":
                torch.cuda.synchronize()
            best[name] = min(best[name], time.perf_counter() - t0)

    rows = {}
    for name in methods:
        scored = int(plans[name].scored_tokens)
        rows[name] = {"windows": len(plans[name]), "scored_tokens": scored,
                      "seconds": best[name], "tokens_per_second": scored / best[name],
                      "cpu_seconds": best_cpu[name],
                      "tokens_per_cpu_second": scored / best_cpu[name]}
    ours = rows["golfeval"]["tokens_per_second"]
    ours_cpu = rows["golfeval"]["tokens_per_cpu_second"]
    for r in rows.values():
        r["golfeval_speedup"] = ours / r["tokens_per_second"]
        r["golfeval_speedup_cpu_time"] = ours_cpu / r["tokens_per_cpu_second"]
    k = args.one_window
    agree = {name: float(np.max(np.abs(outputs[name][:k * S] - outputs["golfeval"][:k * S])))
             for name in methods if name != "golfeval"}
    f = flops(cfg)
    n_scored = VAL_TOKENS - 1
    n_windows = len(sliding_plan(VAL_TOKENS, L, S))
    total_flops = n_windows * f["body_per_window"] + n_scored * f["head_per_position"]
    implied = {
        "val_targets": n_scored, "windows": n_windows, "total_flops": total_flops,
        "at_40pct_of_bf16_peak_8xH100_s": total_flops / (8 * 0.4 * H100_BF16_DENSE),
    }
    if device.type == "cuda":  # the fastest golfeval variant, 8 ranks scaling linearly
        fastest = max((n for n in rows if n.startswith("golfeval")),
                      key=lambda n: rows[n]["tokens_per_second"])
        implied["from_this_gpu_x8_s"] = n_scored / (8 * rows[fastest]["tokens_per_second"])
        implied["from_this_gpu_method"] = fastest
    entry = {
        "machine": (f"{_cpu_name()}, {args.threads} threads"
                    if device.type == "cpu" else torch.cuda.get_device_name(device)),
        "device": device.type, "torch": torch.__version__, "tokens": source,
        "golfeval_batch": batch, "seq_len": L, "stride": S, "rounds": args.rounds,
        "methods": rows, "warmup_seconds": warmup,
        "max_abs_nats_diff_vs_golfeval": agree, "flops": f,
        "full_val_split": implied,
    }

    print(f"sliding L={L} S={S}, baseline 9x512, {entry['machine']}, {source}")
    print(f"{'method':18} {'windows':>7} {'seconds':>8} {'tokens/s':>10} {'golfeval x':>10} "
          f"{'cpu s':>8} {'x (cpu time)':>12}")
    for name, r in rows.items():
        print(f"{name:18} {r['windows']:7d} {r['seconds']:8.2f} {r['tokens_per_second']:10.1f} "
              f"{r['golfeval_speedup']:10.2f} {r['cpu_seconds']:8.2f} "
              f"{r['golfeval_speedup_cpu_time']:12.2f}")
    print("max |nats - golfeval|:", {k: f"{v:.2e}" for k, v in agree.items()})
    print(f"FLOPs per scored token: golfeval {f['golfeval_per_scored_token'] / 1e9:.3f} G, "
          f"full logits {f['full_logits_per_scored_token'] / 1e9:.3f} G, "
          f"flat {f['flat_per_token'] / 1e6:.1f} M")
    print(f"full val split: {n_windows:,} windows, {total_flops:.3e} FLOPs; 8xH100 at 40% of "
          f"bf16 peak: {implied['at_40pct_of_bf16_peak_8xH100_s']:.1f} s"
          + (f"; {implied['from_this_gpu_method']} on this GPU x8: "
             f"{implied['from_this_gpu_x8_s']:.1f} s" if "from_this_gpu_x8_s" in implied else ""))

    out = Path(args.out)
    results = json.loads(out.read_text()) if out.is_file() else {}
    results[args.key or device.type] = entry
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    os.replace(tmp, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
