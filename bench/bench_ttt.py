"""bpb and seconds of every evaluation mode on the same validation tokens: flat, sliding,
the LoRA document/chunk schedule without adaptation, LoRA TTT, chunked SGD TTT and phased
TTT (LoRA with global SGD at document boundaries); seconds per 1M scored tokens, and a
projection of the full validation split on 8xH100 from the recorded H100 figures.

The model is a trainer checkpoint (--checkpoint, e.g. the trainer's OUT/final.safetensors)
or, when none is given, a FALLBACK: a small model trained here for a few minutes on the C4
text in ../shared/data by the minimal AdamW loop of bench/rd_common.py (not the project's
trainer). Validation: the 200 FineWeb documents of ../shared/data (sp1024, BOS-prefixed).

    python bench/bench_ttt.py                          # CPU fallback, ~10 minutes on 2 cores
    python bench/bench_ttt.py --checkpoint OUT/final.safetensors
    python bench/bench_ttt.py --projection-only        # recompute the 8xH100 projection
    python bench/bench_ttt.py --device cuda --size 27m --fallback-steps 300 \
        --val-tokens 0 --seq-len 1024                  # GPU: real settings, all 628k tokens
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from rd_common import SHARED, machine, prepare_data, train_fallback  # noqa: E402

from golfeval.score.core import score_tokens  # noqa: E402
from golfeval.ttt.lora import LoraSettings, evaluate_lora, resolve  # noqa: E402
from golfeval.ttt.phased import PhasedSettings, PhaseSGD, evaluate_phased  # noqa: E402
from golfeval.ttt.settings import parse_list, parse_phases  # noqa: E402
from golfeval.ttt.sgd import SGDSettings, evaluate_sgd  # noqa: E402

FULL_VAL_TARGETS = 62_021_631   # the challenge's validation split (docs/scoring.md)
FULL_VAL_DOCS = 50_000

SIZES = {
    "tiny": dict(vocab_size=1024, num_layers=4, model_dim=128, num_heads=4, num_kv_heads=2,
                 mlp_mult=2.0),
    "small": dict(vocab_size=1024, num_layers=6, model_dim=256, num_heads=4, num_kv_heads=2,
                  mlp_mult=2.0),
    "27m": dict(vocab_size=1024, num_layers=11, model_dim=512, num_heads=8, num_kv_heads=4,
                mlp_mult=3.0),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", type=Path, help="trained checkpoint (skips the fallback)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--val-tokens", type=int, default=32768,
                   help="targets to evaluate (0 = all 628,456 of the 200 documents)")
    p.add_argument("--seq-len", type=int, default=256, help="L for every mode")
    p.add_argument("--stride", type=int, default=64)
    p.add_argument("--batch", type=int, default=0, help="windows per forward (0: auto)")
    p.add_argument("--size", choices=sorted(SIZES), default="tiny", help="fallback model")
    p.add_argument("--fallback-steps", type=int, default=150)
    p.add_argument("--fallback-batch", type=int, default=8192, help="tokens per step")
    p.add_argument("--fallback-lr", type=float, default=3e-3)
    p.add_argument("--lora-chunk", type=int, default=0, help="0: seq_len / 4")
    p.add_argument("--lora-rank", type=int, default=8)
    p.add_argument("--lora-lr", type=float, default=0.01)
    p.add_argument("--lora-batch", type=int, default=0, help="documents per forward (0: auto)")
    p.add_argument("--sgd-chunk", type=int, default=0, help="0: 32768, or val/4 if smaller")
    p.add_argument("--sgd-lr", type=float, default=0.002)
    p.add_argument("--sgd-epochs", type=int, default=3)
    p.add_argument("--phases", default="0.3,0.6",
                   help="phased: document counts or fractions where a global phase runs")
    p.add_argument("--phase-lr", default="0.002", help="phased SGD lr (one or per phase)")
    p.add_argument("--phase-epochs", default="1", help="phased SGD epochs (one or per phase)")
    p.add_argument("--phase-batch", type=int, default=32, help="phased SGD sequences per step")
    p.add_argument("--modes", default="flat,sliding,doc,lora,sgd,phased",
                   help="comma-separated subset of flat,sliding,doc,lora,sgd,phased")
    p.add_argument("--projection-only", action="store_true",
                   help="only recompute the 8xH100 projection in --out from its cuda figures")
    p.add_argument("--prepared", type=Path,
                   help="npz with train/val/target_bytes (made by --write-prepared), for a "
                        "machine without ../shared/data")
    p.add_argument("--write-prepared", type=Path, help="write that npz and stop")
    p.add_argument("--save-checkpoint", type=Path, help="save the fallback model here")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "ttt.json")
    p.add_argument("--key", default=None,
                   help="entry of --out to write (default: cpu or cuda, by --device)")
    return p.parse_args(argv)


def load_model(args, data):
    from golfpack.checkpoint import build_model, load

    if args.checkpoint:
        sd, cfg = load(args.checkpoint)
        model = build_model(cfg, {k: v.float() if v.is_floating_point() else v
                                  for k, v in sd.items()})
        info = {"source": f"checkpoint {args.checkpoint}",
                "params": sum(t.numel() for t in sd.values()), "config": cfg}
    else:
        model, info = train_fallback(data, SIZES[args.size], args.fallback_steps,
                                     args.fallback_batch, args.seq_len, args.device,
                                     lr=args.fallback_lr, log=lambda m: print(m, flush=True))
        info["source"] = "FALLBACK: small model trained here on C4 text (bench/rd_common.py)"
    return model.to(args.device).eval().requires_grad_(False), info


def run_modes(model, val, tb, args) -> list[dict]:
    cuda = args.device.startswith("cuda")
    L = args.seq_len
    batch = args.batch or (32 if cuda else 4)
    chunk = args.lora_chunk or max(1, L // 4)
    lora = resolve(LoraSettings(rank=args.lora_rank, chunk=chunk, context=L, lr=args.lora_lr,
                                batch=args.lora_batch or (64 if cuda else None)), args.device)
    sgd_chunk = args.sgd_chunk or min(32768, max(L, (val.size - 1) // 4 // 64 * 64))
    sgd = SGDSettings(chunk_tokens=sgd_chunk, lr=args.sgd_lr, epochs=args.sgd_epochs,
                      seq_len=L, stride=args.stride, score_batch=batch)
    lrs, epochs = parse_list(args.phase_lr), parse_list(args.phase_epochs, int)
    n = max(len(lrs), len(epochs))
    phased = PhasedSettings(
        lora=lora, phases=parse_phases(args.phases), seq_len=L, train_batch=args.phase_batch,
        sgd=tuple(PhaseSGD(lr=lrs[i % len(lrs)], epochs=epochs[i % len(epochs)])
                  for i in range(n)))
    phases_run = []
    common = {"device": args.device}
    runs = [
        ("flat", "flat", f"L={L}", lambda: score_tokens(model, val, tb, mode="flat",
                                                        seq_len=L, batch=batch, **common)),
        ("sliding", "sliding", f"L={L} S={args.stride}",
         lambda: score_tokens(model, val, tb, mode="sliding", seq_len=L, stride=args.stride,
                              batch=batch, **common)),
        ("doc", "doc chunks (no TTT)", f"C={chunk} L={L}, documents isolated",
         lambda: evaluate_lora(model, val, tb, lora, adapt=False, **common)),
        ("lora", "LoRA TTT", f"r={lora.rank} C={chunk} L={L} Adam lr {lora.lr}, "
                             f"{lora.targets}",
         lambda: evaluate_lora(model, val, tb, lora, **common)),
        ("sgd", "SGD TTT", f"chunk {sgd_chunk} L={L} S={args.stride} lr {sgd.lr} "
                           f"{sgd.epochs} epochs",
         lambda: evaluate_sgd(model, val, tb, sgd, **common)),
        ("phased", "phased TTT", f"LoRA as above; global SGD after documents {args.phases}, "
                                 f"lr {args.phase_lr}, {args.phase_epochs} epoch(s)",
         lambda: evaluate_phased(model, val, tb, phased, on_phase=phases_run.append,
                                 **common)),
    ]
    wanted = set(args.modes.split(","))
    out = []
    for key, name, settings, fn in runs:
        if key not in wanted:
            continue
        t0 = time.perf_counter()
        r = fn()
        wall = time.perf_counter() - t0
        out.append({"mode": name, "settings": settings, "val_bpb": r.val_bpb,
                    "val_loss": r.val_loss, "scored_tokens": r.scored_tokens,
                    "bytes": r.bytes_sum, "seconds": wall,
                    "tokens_per_second": r.scored_tokens / wall if wall else None,
                    "seconds_per_1m_tokens": 1e6 * wall / max(1, r.scored_tokens)})
        print(f"{name:<22} bpb {r.val_bpb:.5f}  loss {r.val_loss:.5f}  "
              f"{r.scored_tokens:,} targets  {wall:7.1f} s", flush=True)
    by = {r["mode"]: r["val_bpb"] for r in out}
    for row in out:
        row["vs_flat"] = row["val_bpb"] - by["flat"] if "flat" in by else None
        row["vs_sliding"] = row["val_bpb"] - by["sliding"] if "sliding" in by else None
    return out, {"lora": lora.to_dict(), "sgd": sgd.to_dict(), "phased": phased.to_dict(),
                 "phases_run": [vars(r) for r in phases_run], "batch": batch}


def project_8xh100(cuda: dict) -> dict:
    """The full validation split on 8xH100 from one H100's measured seconds (the `cuda`
    entry: 26.5M model, 628,456 targets, eager, bf16). Assumptions are in the result."""
    rows = {r["mode"]: r for r in cuda["results"]}
    per_tok = {m: r["seconds"] / r["scored_tokens"] for m, r in rows.items()}
    out = {m: FULL_VAL_TARGETS * t / 8 for m, t in per_tok.items()}
    notes = [
        "time per scored token measured on one H100 (bench/results/ttt.json 'cuda': 26.5M "
        "model, 628,456 FineWeb targets, L=1024, eager, bf16) scales linearly to the "
        f"{FULL_VAL_TARGETS:,} targets of the full split",
        "8 ranks split documents/windows perfectly (no communication cost, no imbalance)",
        "model load, compile warm-up and process-group start-up are not included",
    ]
    if "SGD TTT" in rows and "sliding" in rows:
        sgd, sl = rows["SGD TTT"], rows["sliding"]
        chunk = cuda["settings"]["sgd"]["chunk_tokens"]
        epochs = cuda["settings"]["sgd"]["epochs"]
        trained = epochs * max(0, sgd["scored_tokens"] - chunk)
        train_tok = max(0.0, sgd["seconds"] - sl["seconds"]) / trained
        docs = (833, 1666, 2500)
        per_doc = FULL_VAL_TARGETS / FULL_VAL_DOCS
        global_tokens = sum(docs) * per_doc
        lora = out.get("LoRA TTT")
        if lora is not None:
            out["phased TTT"] = lora + global_tokens * train_tok / 8
        notes += [
            f"phased = LoRA TTT's time plus the global SGD: phases after {docs} documents, "
            f"1 epoch each over every scored document (cumulative: {global_tokens:,.0f} "
            f"trained tokens at {per_doc:,.0f} tokens per document), at "
            f"{train_tok * 1e6:.2f} us per trained token on one H100 ((SGD TTT - sliding "
            "seconds) / trained tokens), split over 8 ranks",
        ]
    return {"seconds_full_val_8xh100": out, "assumptions": notes,
            "budget_s": 600}


def main(argv=None):
    args = parse_args(argv)
    if args.projection_only:
        runs = json.loads(args.out.read_text())
        runs["projection_8xh100"] = project_8xh100(runs["cuda"])
        args.out.write_text(json.dumps(runs, indent=2) + "\n")
        for m, sec in runs["projection_8xh100"]["seconds_full_val_8xh100"].items():
            print(f"{m:<22} {sec:8.1f} s on 8xH100 (projected)")
        return
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.prepared:
        with np.load(args.prepared) as z:
            data = {k: z[k] for k in ("train", "val", "target_bytes")}
        if args.val_tokens and args.val_tokens + 1 < data["val"].size:
            data["val"] = data["val"][: args.val_tokens + 1]
            data["target_bytes"] = data["target_bytes"][: args.val_tokens]
    else:
        tok = SHARED / "fineweb_1024_bpe.model"
        data = prepare_data(Path(tempfile.gettempdir()) / "golf_bench_ttt", tok,
                            SHARED / "c4_2000docs.jsonl", SHARED / "fineweb_val_200docs.jsonl",
                            eval_tokens=args.val_tokens)
    if args.write_prepared:
        np.savez(args.write_prepared, train=data["train"], val=data["val"],
                 target_bytes=data["target_bytes"])
        print(f"wrote {args.write_prepared}")
        return
    val, tb = data["val"].astype(np.int64), data["target_bytes"]
    print(f"validation: {val.size:,} tokens, {int(tb.sum()):,} bytes; "
          f"training text: {data['train'].size:,} C4 tokens", flush=True)
    model, info = load_model(args, data)
    if args.save_checkpoint:
        from golfpack.checkpoint import save

        cfg = dict(info.get("config") or SIZES[args.size])
        save(args.save_checkpoint, {k: v.detach().cpu() for k, v in
                                    model.state_dict().items()}, cfg)
    rows, settings = run_modes(model, val, tb, args)
    print()
    print(f"{'mode':<22} {'val_bpb':>9} {'vs sliding':>10} {'seconds':>9} {'s/1M tok':>9}")
    for r in rows:
        vs = "" if r["vs_sliding"] is None else f"{r['vs_sliding']:+10.5f}"
        print(f"{r['mode']:<22} {r['val_bpb']:9.5f} {vs:>10} {r['seconds']:9.1f} "
              f"{r['seconds_per_1m_tokens']:9.1f}")
    result = {"machine": machine(args.device), "device": args.device,
              "torch": torch.__version__, "model": info,
              "data": {"val_tokens": int(val.size), "val_bytes": int(tb.sum()),
                       "val_source": "fineweb_val_200docs.jsonl (sp1024, BOS-prefixed)"},
              "settings": settings, "results": rows,
              "timer": "wall time of each evaluation call (scoring + adaptation; model "
                       "already loaded, data already tokenized)"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    runs = json.loads(args.out.read_text()) if args.out.exists() else {}
    key = args.key or ("cuda" if args.device.startswith("cuda") else "cpu")
    runs[key] = result
    if "cuda" in runs:
        runs["projection_8xh100"] = project_8xh100(runs["cuda"])
    args.out.write_text(json.dumps(runs, indent=2) + "\n")
    print(f"wrote {args.out} [{key}]")


if __name__ == "__main__":
    main()
