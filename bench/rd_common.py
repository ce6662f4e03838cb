"""Shared pieces of the rate–distortion and GPTQ benchmarks: real text -> shards and scored
validation tokens, a checkpoint (given, or trained here by a clearly labelled fallback loop),
and the bpb of a state dict on the validation tokens through golfeval.score.core.
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))

STACK_27M = dict(vocab_size=1024, num_layers=11, model_dim=512, num_heads=8, num_kv_heads=4,
                 mlp_mult=3.0)


def machine(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, {os.cpu_count()} CPU cores"
    return f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores, " \
           f"{torch.get_num_threads()} torch threads, load {os.getloadavg()[0]:.1f}"


def read_docs(path: Path, limit: int | None = None) -> list[str]:
    docs = []
    with open(path) as fh:
        for line in fh:
            if line.strip():
                docs.append(json.loads(line)["text"])
                if limit is not None and len(docs) >= limit:
                    break
    return docs


def tokenize_docs(tokenizer: Path, docs: list[str], bos: int = 1) -> np.ndarray:
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(tokenizer))
    out = []
    for ids in sp.encode(docs):
        out.append(bos)
        out.extend(ids)
    return np.asarray(out, dtype=np.uint16)


def prepare_data(work: Path, tokenizer: Path, train_text: Path, val_docs: Path,
                 eval_tokens: int = 0) -> dict:
    """C4 text -> a train shard in `work` (the calibration source); FineWeb docs -> a val
    shard beside it (so `work` can be golftrain's --data), and the scored validation stream
    with its per-target bytes (golfeval.data.bytetables)."""
    from golfeval.data.bytetables import ByteTables
    from golfeval.data.shards import write_shard

    work.mkdir(parents=True, exist_ok=True)
    train = tokenize_docs(tokenizer, read_docs(train_text))
    write_shard(work / "fineweb_train_000000.bin", train, force=True)
    val = tokenize_docs(tokenizer, read_docs(val_docs))
    write_shard(work / "fineweb_val_000000.bin", val, force=True)  # for golftrain --data
    if eval_tokens and eval_tokens + 1 < val.size:
        val = val[: eval_tokens + 1]
    tb = ByteTables.from_tokenizer(str(tokenizer)).target_bytes(val)
    return {"train": train, "val": val, "target_bytes": tb, "shard_dir": work}


def score_bpb(model, data: dict, device: str, seq_len: int = 1024,
              per_token: bool = False) -> dict:
    """Flat evaluation at `seq_len` (per_token: also the per-target nats, for paired SEs)."""
    from golfeval.score.core import score_tokens

    model.to(device).eval()
    r = score_tokens(model, data["val"], data["target_bytes"], mode="flat", seq_len=seq_len,
                     batch=16 if device.startswith("cuda") else 4, device=device,
                     per_token=per_token)
    out = {"val_bpb": r.val_bpb, "val_loss": r.val_loss, "tokens": r.scored_tokens,
           "seconds": r.seconds, "seq_len": seq_len}
    if per_token:
        out["nats"] = r.per_token_nats
    return out


def paired_gap(nats_q: np.ndarray, nats_0: np.ndarray, target_bytes: np.ndarray,
               window: int) -> tuple[float, float]:
    """bpb gap of a round trip over the reference on the same targets, and its standard
    error from the per-window paired differences (a ratio estimator over windows of
    `window` targets, so that correlation inside a window is accounted for)."""
    ok = np.isfinite(nats_q) & np.isfinite(nats_0)
    d = np.where(ok, nats_q - nats_0, 0.0) / math.log(2.0)
    b = np.where(ok, target_bytes[: d.size], 0).astype(np.float64)
    w = np.arange(d.size) // window
    D, Bw = np.bincount(w, d), np.bincount(w, b)
    gap = D.sum() / Bw.sum()
    n = D.size
    se = math.sqrt(n / max(1, n - 1) * float(((D - gap * Bw) ** 2).sum())) / Bw.sum()
    return float(gap), se


def train_fallback(data: dict, config: dict, steps: int, batch_tokens: int, seq_len: int,
                   device: str, lr: float = 3e-3, seed: int = 0, log=print):
    """FALLBACK, not the project's trainer: a minimal AdamW loop (warmup, cosine decay,
    bf16 autocast on CUDA) over the C4 tokens, so the benchmark has trained weights when
    no trainer checkpoint is given. Returns (model, info)."""
    from trainer.model import GPT

    torch.manual_seed(seed)
    model = GPT(dict(config)).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.1)
    tokens = torch.from_numpy(data["train"].astype(np.int64))
    rows = max(1, batch_tokens // seq_len)
    gen = torch.Generator().manual_seed(seed)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda") else None
    t0 = time.time()
    warm = max(1, steps // 20)
    losses = []
    for step in range(steps):
        mult = (step + 1) / warm if step < warm else \
            0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, steps - warm)))
        for g in opt.param_groups:
            g["lr"] = lr * mult
        starts = torch.randint(0, tokens.numel() - seq_len - 1, (rows,), generator=gen)
        batch = torch.stack([tokens[s:s + seq_len + 1] for s in starts.tolist()]).to(device)
        if amp is not None:
            with amp:
                loss = model.loss(batch[:, :-1], batch[:, 1:])
        else:
            loss = model.loss(batch[:, :-1], batch[:, 1:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(float(loss.detach()))
        if step % max(1, steps // 10) == 0 or step == steps - 1:
            log(f"fallback train step {step + 1}/{steps} loss {losses[-1]:.4f} "
                f"({time.time() - t0:.0f}s)")
    info = {"trainer": "FALLBACK minimal AdamW loop in bench/rd_common.py (not trainer/)",
            "steps": steps, "batch_tokens": rows * seq_len, "seq_len": seq_len, "lr": lr,
            "final_train_loss": float(np.mean(losses[-10:])), "seconds": time.time() - t0,
            "params": model.num_params(), "config": dict(config)}
    return model.eval(), info


def load_or_train(args, data: dict, log=print):
    """-> (model, config dict, state_dict fp32 on CPU, info)."""
    from golfpack.checkpoint import build_model, load, save

    if args.checkpoint:
        sd, cfg = load(args.checkpoint)
        model = build_model(cfg, {k: v.float() if v.is_floating_point() else v
                                  for k, v in sd.items()})
        info = {"checkpoint": str(args.checkpoint), "params": sum(t.numel() for t in sd.values())}
    else:
        cfg = dict(STACK_27M) if args.fallback_size == "27m" else dict(
            vocab_size=1024, num_layers=4, model_dim=256, num_heads=4, num_kv_heads=2,
            mlp_mult=3.0)
        model, info = train_fallback(data, cfg, args.fallback_steps, args.fallback_batch,
                                     args.seq_len, args.device, log=log)
        cfg["arch"] = "trainer.model:GPT"
        if args.save_checkpoint:
            save(args.save_checkpoint, {k: v.detach().cpu() for k, v in
                                        model.state_dict().items()}, cfg)
    # Clones: evaluating a round trip loads dequantized weights into the model in place.
    sd = {k: (v.detach().float() if v.is_floating_point() else v.detach()).cpu().clone()
          for k, v in model.state_dict().items()}
    return model.to(args.device).eval(), cfg, sd, info
