"""golf against the challenge baseline's own int8 + zlib export, on the same weights.

The baseline's quantize_state_dict_int8 + torch.save + zlib-9 (imported at run time from
../shared/reference/baseline/train_gpt.py) gives the bytes its `final_model.int8.ptz` would
have. golf then packs the same weights twice: with the scheme that reproduces the baseline's
int8 codes bit for bit (`*=int8:pct(99.99984):baseline`, so the difference is golf's coding
alone: byte-exact accounting, ans/brotli/zstd streams), and with golf's default scheme.
The dequantized weights of the bit-exact artifact are checked equal to the baseline's own
dequantizer's. Writes bench/results/foreign_vs_baseline.json.

    .venv/bin/python bench/bench_foreign.py [--checkpoint CKPT] [--quick]

Without --checkpoint the weights are the baseline's shapes (9 x 512, MLP 2x, vocab 1024)
filled with bench_compress's trained-like statistics, tok_emb in bf16 as the baseline saves it.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import sys
import time
import zlib
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

BASELINE = ROOT.parent / "shared" / "reference" / "baseline" / "train_gpt.py"
SHAPE = dict(vocab_size=1024, num_layers=9, model_dim=512, num_heads=8, num_kv_heads=4,
             mlp_mult=2)
QUICK = dict(SHAPE, num_layers=2, model_dim=256)
EXACT = "@control=fp32;@small=fp16;*=int8:pct(99.99984):baseline"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "foreign_vs_baseline.json"))
    args = ap.parse_args()
    if not BASELINE.is_file():
        sys.exit(f"{BASELINE} is absent: the baseline's own exporter is needed")
    from bench_compress import trained_like_state

    from golfpack.compress import compress_state_dict
    from golfpack.foreign.script import import_script
    from golfpack.quant.qmodel import quantize_state_dict

    torch.set_num_threads(1)
    ref = import_script(BASELINE)
    if args.checkpoint:
        from golfpack.checkpoint import load

        sd, cfg = load(args.checkpoint)
        source = f"checkpoint {args.checkpoint}"
    else:
        cfg = QUICK if args.quick else SHAPE
        sd = trained_like_state(cfg)
        sd["tok_emb.weight"] = sd["tok_emb.weight"].bfloat16()
        source = "synthetic trained-like weights (bench_compress.trained_like_state)"
    t = time.perf_counter()
    obj, stats = ref.quantize_state_dict_int8(sd)
    buf = io.BytesIO()
    torch.save(obj, buf)
    ptz = zlib.compress(buf.getvalue(), level=9)
    t_ref = time.perf_counter() - t
    conf = {**cfg, "arch": "trainer.model:GPT"} if "arch" not in cfg else cfg
    t = time.perf_counter()
    exact, rep_exact = compress_state_dict(sd, conf, EXACT)
    t_exact = time.perf_counter() - t
    golf, rep_golf = compress_state_dict(sd, conf, None)
    want = ref.dequantize_state_dict_int8(obj)
    got = quantize_state_dict(sd, EXACT).state_dict()
    same = all(torch.equal(got[k].to(v.dtype), v) for k, v in want.items())
    out = {
        "machine": f"{platform.machine()} CPU, 1 torch thread (2-core CPU sandbox, shared)",
        "torch": torch.__version__, "source": source,
        "params": int(sum(v.numel() for v in sd.values())),
        "baseline_int8_zlib_bytes": len(ptz), "baseline_payload_bytes":
            int(stats["int8_payload_bytes"]), "baseline_seconds": round(t_ref, 2),
        "golf_same_codes_bytes": len(exact), "golf_same_codes_seconds": round(t_exact, 2),
        "golf_same_codes_vs_baseline": len(exact) / len(ptz),
        "golf_same_codes_dequantize_bit_exact": same,
        "golf_default_bytes": len(golf), "golf_default_vs_baseline": len(golf) / len(ptz),
        "golf_default_scheme": "default (@control=fp32;@small=fp16;tok_emb*=int8:gptq-lite;"
                               "*=int6:gptq-lite)",
    }
    print(json.dumps(out, indent=2))
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
