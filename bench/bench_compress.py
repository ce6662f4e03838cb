"""Size and speed of `golfpack compress --codec auto` on the 27M-parameter stack
(11 layers x 512, MLP 3x, vocab 1024), against the records' recipe on the same codes.

Reports: quantize + encode seconds, unpack seconds, artifact bytes; the same quantized state
dict through torch.save + zstd-22 and torch.save + brotli-11 (the records' recipe); the code
streams alone through ans / brotli-11 / zstd-22 beside their order-0 entropy.
Writes bench/results/compress.json.

    .venv/bin/python bench/bench_compress.py [--checkpoint CKPT] [--quick] [--scheme SPEC]

Without --checkpoint the weights are the reference model's shapes filled with trained-like
statistics: Student-t (4 dof) entries, log-normal row scales (sigma 0.4), std 0.02 — the
shape of trained weights that the issue's measurements used. --quick shrinks the model to
4 layers x 256 for a fast smoke run.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FULL = dict(vocab_size=1024, num_layers=11, model_dim=512, num_heads=8, num_kv_heads=4,
            mlp_mult=3.0)
QUICK = dict(vocab_size=1024, num_layers=4, model_dim=256, num_heads=4, num_kv_heads=2,
             mlp_mult=3.0)


def trained_like_state(cfg: dict, seed: int = 0) -> dict:
    from trainer.model import GPT

    torch.manual_seed(seed)
    sd = GPT(dict(cfg)).state_dict()
    rng = np.random.default_rng(seed)
    for name, t in sd.items():
        if t.dim() == 2 and name.endswith("weight"):
            rows = np.exp(rng.normal(0.0, 0.4, (t.shape[0], 1)))
            w = rng.standard_t(4.0, t.shape) * rows * 0.02
            sd[name] = torch.from_numpy(w.astype(np.float32))
    return sd


def records_baseline(qmodel) -> dict:
    """The records' container: int8 codes + fp16 scales + passthrough tensors, torch.save."""
    sd = {}
    for e in qmodel.entries:
        if e.kind == "quant":
            sd[e.name] = torch.from_numpy(np.array(e.parts["codes"].data))
            sd[e.name + ".scale"] = torch.from_numpy(np.array(e.parts["scales"].data))
        else:
            sd[e.name] = qmodel_tensor(e)
    buf = io.BytesIO()
    torch.save(sd, buf)
    return buf.getvalue()


def qmodel_tensor(e):
    from golfpack.quant.qmodel import reconstruct

    t = reconstruct(e)
    return t.half() if e.scheme == "fp16" else t


def timed(fn, *a, **k):
    t = time.perf_counter()
    out = fn(*a, **k)
    return out, time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", help="a trained checkpoint (golfpack.checkpoint format)")
    ap.add_argument("--config", help="config JSON for a plain torch.save checkpoint")
    ap.add_argument("--quick", action="store_true", help="4 layers x 256 instead of 11 x 512")
    ap.add_argument("--scheme", default=None, help="scheme spec (default: golfpack's)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "compress.json"))
    ap.add_argument("--label", help="machine description to record (default: this sandbox)")
    ap.add_argument("--note", help="how the checkpoint was made, recorded with the figures")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import brotli
    import zstandard

    from golfpack.artifact import encode_artifact, parse_artifact
    from golfpack.compress import bench_codecs
    from golfpack.quant.qmodel import quantize_state_dict

    if args.checkpoint:
        from golfpack.checkpoint import load

        sd, cfg = load(args.checkpoint, args.config)
        source = f"checkpoint {args.checkpoint}"
    else:
        cfg = QUICK if args.quick else FULL
        sd = trained_like_state(cfg)
        source = "reference shapes, trained-like statistics (Student-t rows, log-normal scales)"
    params = sum(int(t.numel()) for t in sd.values())
    print(f"{params:,} parameters; {source}")

    qmodel, t_quant = timed(quantize_state_dict, sd, args.scheme)
    # auto net of the decoder a submission ships (minified), as `golfpack compress` does
    (data, report), t_enc = timed(encode_artifact, qmodel, dict(cfg), "auto", None, None,
                                  "minified")
    art = parse_artifact(data)
    _, t_unpack = timed(lambda: parse_artifact(data).state_dict())
    model_bytes = len(data)
    print(f"quantize {t_quant:.1f} s + encode {t_enc:.1f} s = {t_quant + t_enc:.1f} s; "
          f"unpack {t_unpack:.2f} s; artifact {model_bytes:,} B")

    saved = records_baseline(qmodel)
    z22, t_z = timed(lambda: len(zstandard.ZstdCompressor(level=22).compress(saved)))
    b11, t_b = timed(lambda: len(brotli.compress(saved, quality=11)))
    print(f"torch.save {len(saved):,} B -> zstd-22 {z22:,} B ({t_z:.0f} s), "
          f"brotli-11 {b11:,} B ({t_b:.0f} s)")

    codes = bench_codecs(qmodel, ("ans", "brotli", "zstd"))
    tot = codes["totals"]
    ours_codes = sum(s["bytes"] for s in report["streams"] if s["name"].startswith("codes:"))
    best_records = min(z22, b11)
    from bench_decoder import RECORDS_DECODER

    from golfpack import decoder as gd
    from golfpack.accounting import self_extracting

    dec_bytes = gd.decoder_bytes(gd.features_of(art), "minified")
    rec_dec = len(self_extracting(RECORDS_DECODER)[0])
    result = {
        "machine": args.label or f"{platform.machine()} CPU, {args.threads} torch threads "
                                 f"({os.cpu_count()}-core CPU sandbox, shared)",
        "source": source,
        "note": args.note,
        "config": dict(cfg),
        "params": params,
        "scheme_spec": args.scheme,
        "seconds": {"quantize": round(t_quant, 2), "encode_auto": round(t_enc, 2),
                    "compress_total": round(t_quant + t_enc, 2), "unpack": round(t_unpack, 2),
                    "torchsave_zstd22": round(t_z, 1), "torchsave_brotli11": round(t_b, 1)},
        "artifact_bytes": model_bytes,
        "header_bytes": art.header_bytes,
        "bits_per_param": 8 * model_bytes / params,
        "torchsave_bytes": len(saved),
        "torchsave_zstd22_bytes": z22,
        "torchsave_brotli11_bytes": b11,
        "artifact_vs_best_records": model_bytes / best_records,
        # net: + the decoder each side ships (golf's pruned to this artifact, minified; the
        # records' few lines from bench_decoder.RECORDS_DECODER)
        "decoder_bytes": dec_bytes,
        "records_decoder_bytes": rec_dec,
        "net_vs_best_records": (model_bytes + dec_bytes) / (best_records + rec_dec),
        "codes": {
            "n": codes["codes"],
            "order0_bytes": round(tot["order0"]["bytes"]),
            "auto_bytes": ours_codes,
            "ans_bytes": tot["ans"]["bytes"], "ans_seconds": tot["ans"]["seconds"],
            "brotli11_bytes": tot["brotli"]["bytes"], "brotli11_seconds": tot["brotli"]["seconds"],
            "zstd22_bytes": tot["zstd"]["bytes"], "zstd22_seconds": tot["zstd"]["seconds"],
            "ans_vs_order0": tot["ans"]["bytes"] / tot["order0"]["bytes"],
            "brotli11_vs_order0": tot["brotli"]["bytes"] / tot["order0"]["bytes"],
            "zstd22_vs_order0": tot["zstd"]["bytes"] / tot["order0"]["bytes"],
            "ans_vs_brotli11": tot["ans"]["bytes"] / tot["brotli"]["bytes"],
            "ans_vs_zstd22": tot["ans"]["bytes"] / tot["zstd"]["bytes"],
            "per_stream": codes["streams"],
        },
        "streams": report["streams"],
        "stream_codecs": {s["name"]: s["codec"] + ("" if s["transform"] == "none"
                                                  else "+" + s["transform"])
                          for s in report["streams"]},
    }
    c = result["codes"]
    print(f"\nthe {c['n']:,} integer codes through each coder")
    print(f"{'coder':<16}{'bytes':>14}{'x order-0':>11}{'seconds':>9}")
    rows = [("order-0 entropy", c["order0_bytes"], None), ("ans", c["ans_bytes"],
            c["ans_seconds"]), ("brotli-11", c["brotli11_bytes"], c["brotli11_seconds"]),
            ("zstd-22", c["zstd22_bytes"], c["zstd22_seconds"])]
    for name, nbytes, secs in rows:
        sec = "" if secs is None else f"{secs:.1f}"
        print(f"{name:<16}{nbytes:>14,.0f}{nbytes / c['order0_bytes']:>11.4f}{sec:>9}")
    print(f"ans / brotli-11 = {c['ans_vs_brotli11']:.4f}; artifact / best records recipe = "
          f"{result['artifact_vs_best_records']:.4f}; net of both decoders "
          f"{result['net_vs_best_records']:.4f} (decoder {dec_bytes:,} B)")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(result, fh, indent=2)
        fh.write("\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
