"""Training throughput of the trainer's real step (data -> forward/backward -> Muon + Adam ->
EMA) for the tiny and baseline configs, plus the analytic FLOPs per token and the 8xH100
projection of the baseline.

    python bench/bench_train.py                      # CPU: tiny + baseline (reduced batch)
    python bench/bench_train.py --device cuda        # one GPU: compiled, full baseline batch

Data: a 1024-piece tokenizer and shards made from the pydoc corpus in a temp folder (the
token values do not change the step time). Results are merged into
bench/results/train.json under the device's key, so CPU and GPU runs can be recorded
separately.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

H100_BF16_DENSE = 989e12  # FLOP/s, H100 SXM dense bf16 (datasheet)
ANCHOR_MS, ANCHOR_TOKENS = 43.5, 524_288  # the challenge baseline on 8xH100
ANCHOR_1GPU_MS = 428.0  # the same baseline on 1xH100 (grad accumulation 8)


def flops_per_token(cfg) -> dict:
    """Training FLOPs per token: 6 x matmul weights (forward 2, backward 4) + causal
    attention scores and values (forward 2 x T x d per layer on average, x3 for training).
    Looped layers count once per pass."""
    from trainer.model import GPT, layer_order

    model = GPT(cfg.model_config())
    enc, dec = layer_order(model.config, looping=True)
    passes = [(enc + dec).count(i) for i in range(cfg.num_layers)]
    matmul = sum(p.numel() * passes[int(n.split(".")[1])]
                 for n, p in model.named_parameters()
                 if p.dim() == 2 and n.startswith("blocks.") and "resid_mix" not in n)
    head = model.tok_emb.weight.numel()
    attn = 2 * cfg.train_seq_len * cfg.model_dim * sum(passes)
    fwd = 2 * (matmul + head) + attn
    return {"params": model.num_params(), "matmul_params": matmul + head,
            "forward_flops_per_token": fwd, "train_flops_per_token": 3 * fwd}


def make_data(tmp: str) -> tuple[str, str]:
    from golfeval.data.build import build
    from golfeval.data.corpus import pydoc_documents, write_jsonl
    from golfeval.data.tokenizer import train as train_tokenizer

    docs = pydoc_documents()
    tok = train_tokenizer(docs, os.path.join(tmp, "sp1024"), vocab_size=1024)
    build(tok, write_jsonl(docs, os.path.join(tmp, "docs.jsonl")), os.path.join(tmp, "data"),
          val_docs=20, force=True)
    return os.path.join(tmp, "data"), tok


def bench_config(name, overrides, data, tok, device, steps, warm) -> dict:
    from trainer.config import load_config
    from trainer.runtime import init_runtime
    from trainer.train import Trainer
    from trainer.trainlog import TrainLog

    sets = ["final_eval=false", f"device={device}", "warmup_steps=0",
            "val_max_tokens=2048", *overrides]
    cfg = load_config(name, sets)
    rt = init_runtime(device)
    with tempfile.TemporaryDirectory() as out:
        tr = Trainer(cfg, data, tok, out, rt, TrainLog(os.path.join(out, "l"), enabled=False))
        t0 = time.perf_counter()
        for _ in range(warm):
            tr.train_step(1.0)
        rt.sync()
        warm_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(steps):
            tr.train_step(1.0)
        rt.sync()
        secs = time.perf_counter() - t0
        loss = tr.flush_losses()
    ms = 1000 * secs / steps
    f = flops_per_token(cfg)
    row = {"config": name, "overrides": overrides, "device": device, "steps_timed": steps,
           "warm_steps": warm, "warm_seconds": round(warm_s, 2),
           "tokens_per_step": cfg.train_batch_tokens, "step_ms": round(ms, 2),
           "tokens_per_s": round(cfg.train_batch_tokens * steps / secs, 1),
           "achieved_tflops": round(f["train_flops_per_token"] * cfg.train_batch_tokens
                                    * steps / secs / 1e12, 3),
           "last_loss": round(loss, 4), **f}
    if device == "cuda":
        row["gpu"] = torch.cuda.get_device_name()
        row["peak_mem_mib"] = torch.cuda.max_memory_allocated() // 2**20
    return row


def projection(baseline_flops: int, one_gpu_ms: float | None) -> dict:
    """The baseline on 8xH100: what the anchor implies, and what our measured 1-GPU step
    implies. The challenge baseline ran 428 ms/step on 1xH100 and 43.5 ms/step on 8 (the
    8-GPU step is shorter than 1/8 of the 1-GPU one); assuming our trainer scales from 1 to
    8 GPUs the same way, its 8-GPU step is 43.5 ms x (our 1-GPU ms / 428)."""
    anchor_tps = ANCHOR_TOKENS / (ANCHOR_MS / 1000)
    implied = baseline_flops * anchor_tps / 8
    out = {"anchor_step_ms": ANCHOR_MS, "anchor_1gpu_step_ms": ANCHOR_1GPU_MS,
           "anchor_tokens_per_s": round(anchor_tps),
           "anchor_tflops_per_gpu": round(implied / 1e12, 1),
           "anchor_mfu": round(implied / H100_BF16_DENSE, 3),
           "assumptions": "training FLOPs = 6 x matmul weights + causal attention (3 x 2Td "
                          "per layer); 989 TFLOP/s dense bf16 peak per H100 SXM; our trainer "
                          "scales from 1 to 8 GPUs like the challenge baseline did "
                          "(428 -> 43.5 ms/step)"}
    if one_gpu_ms:
        est = ANCHOR_MS * one_gpu_ms / ANCHOR_1GPU_MS
        out.update(measured_1gpu_step_ms=one_gpu_ms, projected_step_ms=round(est, 1),
                   projected_tokens_per_s=round(ANCHOR_TOKENS / (est / 1000)),
                   projected_steps_in_600s=int(600_000 / est))
    return out


def merge_only(out_path: Path, other: Path) -> dict:
    """Take the device entries of another results file (e.g. a GPU run) into ours."""
    results = json.loads(out_path.read_text()) if out_path.exists() else {}
    for key, value in json.loads(other.read_text()).items():
        if key in ("cpu", "cuda"):
            results[key] = value
    return results


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--steps", type=int, default=None, help="timed steps per config")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "train.json"))
    ap.add_argument("--machine", default=None, help="description stored with the results")
    ap.add_argument("--frontier", action="store_true",
                    help="only tiny (4 layers) against tiny_frontier, stored under "
                         "'<device>_frontier'")
    ap.add_argument("--merge", default=None, metavar="JSON",
                    help="run nothing: merge another machine's results file into --out")
    args = ap.parse_args(argv)
    path = Path(args.out)
    if args.merge:
        results = merge_only(path, Path(args.merge))
        return _finish(results, path)
    if args.device == "cpu":
        torch.set_num_threads(2)
    cuda = args.device == "cuda"
    runs = [("tiny", ["compile=true"] if cuda else [], args.steps or (50 if cuda else 10),
             10 if cuda else 2)]
    if cuda:
        runs.append(("baseline", ["compile=true"], args.steps or 20, 8))
        runs.append(("stack", ["compile=true"], args.steps or 10, 6))
    else:  # 8 sequences of 1024 per step instead of 512: the step time scales ~linearly
        runs.append(("baseline", ["train_batch_tokens=8192", "grad_accum_steps=1"],
                     args.steps or 2, 1))
    if args.frontier:  # looping on from step 0: time the model it becomes
        comp = ["compile=true"] if cuda else []
        runs = [("tiny", ["num_layers=4", *comp], args.steps or 10, 2),
                ("tiny_frontier", ["loop_start_frac=0", *comp], args.steps or 10, 2)]
    with tempfile.TemporaryDirectory() as tmp:
        data, tok = make_data(tmp)
        rows = [bench_config(n, o, data, tok, args.device, s, w) for n, o, s, w in runs]
    print(f"{'config':10} {'tokens/step':>11} {'ms/step':>9} {'tokens/s':>11} "
          f"{'TFLOP/s':>8} {'FLOPs/token':>12}")
    for r in rows:
        print(f"{r['config']:10} {r['tokens_per_step']:>11,} {r['step_ms']:>9.1f} "
              f"{r['tokens_per_s']:>11,.0f} {r['achieved_tflops']:>8.3f} "
              f"{r['train_flops_per_token']:>12,}")
    results = json.loads(path.read_text()) if path.exists() else {}
    key = ("cuda" if cuda else "cpu") + ("_frontier" if args.frontier else "")
    results[key] = {"machine": args.machine or (torch.cuda.get_device_name() if cuda else
                    f"{platform.processor() or platform.machine()}, "
                    f"{torch.get_num_threads()} threads"), "torch": torch.__version__,
                    "rows": rows}
    return _finish(results, path)


def _finish(results: dict, path: Path) -> int:
    rows = [r for k in ("cpu", "cuda") for r in results.get(k, {}).get("rows", [])]
    base = next(r for r in rows if r["config"] == "baseline")
    one_gpu_ms = next((r["step_ms"] for r in results.get("cuda", {}).get("rows", [])
                       if r["config"] == "baseline" and r["tokens_per_step"] == ANCHOR_TOKENS),
                      None)
    results["h100x8_projection"] = projection(base["train_flops_per_token"], one_gpu_ms)
    print(json.dumps(results["h100x8_projection"], indent=1))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
