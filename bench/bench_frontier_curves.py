"""Learning curves on CPU: the reduced frontier config (`tiny_frontier`) against the reduced
baseline (`tiny` at the same 4 layers x 64 dims) for the same number of steps on the same
tokens: C4 documents to train, FineWeb documents to validate, the sp1024 tokenizer (all from
../shared/data). Writes bench/results/frontier_curves.json.

    python bench/bench_frontier_curves.py [--steps 150] [--every 25]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data"
RUNS = (("baseline", "tiny", ["num_layers=4"]), ("frontier", "tiny_frontier", []))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--every", type=int, default=25, help="validation every N steps")
    ap.add_argument("--val-docs", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "frontier_curves.json"))
    args = ap.parse_args(argv)
    if not SHARED.is_dir():
        print(f"{SHARED} is absent: nothing to train on", file=sys.stderr)
        return 2
    from golfeval.data.build import build
    from trainer.config import load_config
    from trainer.train import train

    tok = SHARED / "fineweb_1024_bpe.model"
    out = {"machine": f"{platform.machine()}, {args.threads} thread(s), torch {torch.__version__}",
           "steps": args.steps, "data": "train: 2,000 C4 docs; val: first "
           f"{args.val_docs} FineWeb docs; sp1024", "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        build(tok, SHARED / "c4_2000docs.jsonl", data, val_docs=0, force=True)
        build(tok, SHARED / "fineweb_val_200docs.jsonl", data, val_docs=args.val_docs,
              max_docs=args.val_docs, force=True)
        for label, name, sets in RUNS:
            cfg = load_config(name, [*sets, f"iterations={args.steps}",
                                     f"val_loss_every={args.every}", "val_max_tokens=0",
                                     "final_eval=false", "checkpoint_every=0",
                                     f"train_log_every={args.every}"])
            t0 = time.perf_counter()
            res = train(cfg, data, tok, Path(tmp) / label, echo=False, threads=args.threads)
            from trainer.params import count_params

            out["runs"][label] = {
                "config": name, "overrides": sets, "seconds": round(time.perf_counter() - t0, 1),
                "params": count_params(load_config(name, [*sets, "vocab_size=1024"]))["total"],
                "step_ms": round(res.train_time_ms / max(res.steps, 1), 1),
                "val": [[v["step"], round(v["val_loss"], 4), round(v["val_bpb"], 4)]
                        for v in res.val_history],
                "train_loss_every": [[i + 1, round(v, 4)] for i, v in
                                     enumerate(res.train_losses) if (i + 1) % args.every == 0]}
            print(label, out["runs"][label]["val"], flush=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
