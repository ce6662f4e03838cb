"""Net bytes: artifact + the decoder a submission must ship, against the records' recipe
(torch.save of the same codes + brotli-11 / zstd-22) + the few lines that decode it.

Two parts:
  1. the decoder itself: bytes (raw source and self-extracting wrapper) of the whole-format
     decoder and of the decoders pruned to typical feature sets, and each feature's cost;
  2. net ratios for the artifacts measured by bench_compress.py (bench/results/compress*.json):
     their recorded bytes + the exact decoder for the codecs each used, against the records'
     recipe + its decoder. The trained checkpoints behind those files are not on the CPU
     sandbox; their artifact bytes are the recorded ones, the decoder bytes are measured now.
Writes bench/results/decoder.json.

    .venv/bin/python bench/bench_decoder.py [--live quick|full] [--baseline OLD_CHECKOUT]
"""

from __future__ import annotations

import glob
import json
import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# What the records' recipe needs to read its file back: decompress, torch.load, dequantize
# (the int8 codes times the per-row fp16 scales); a generous minimal version of it.
RECORDS_DECODER = b'''import io, brotli, torch
def load(path):
    sd = torch.load(io.BytesIO(brotli.decompress(open(path, "rb").read())))
    out = {}
    for k, v in sd.items():
        if k.endswith(".scale"):
            continue
        s = sd.get(k + ".scale")
        out[k] = v.float() * s.float()[:, None] if s is not None else v
    return out
'''


# typical feature sets: what `--for ARTIFACT` keeps for artifacts golfpack writes
KINDS = {"quant", "float", "raw"}
SETS = {
    "full": None,
    "zstd only": {"zstd"} | KINDS,
    "brotli only": {"brotli"} | KINDS,
    "ans+brotli (typical auto)": {"ans", "brotli", "shuffle"} | KINDS,
    "ans+lqer": {"ans", "brotli", "shuffle", "lqer"} | KINDS,
    "ans+brotli+bank (a record's banks)": {"ans", "brotli", "shuffle", "bank"} | KINDS,
    "ans+brotli+zstd+lzma (1.53M auto)": {"ans", "brotli", "zstd", "lzma", "shuffle",
                                          "bitpack"} | KINDS,
}


def decoder_sizes(gd, feats) -> dict:
    """Raw source and minified self-extracting wrapper bytes of the decoder of `feats`
    (features golfpack.decoder does not know, e.g. bank before it existed, are dropped)."""
    feats = None if feats is None else feats & set(gd.FEATURES)
    return {"raw_bytes": gd.decoder_bytes(feats, "raw"),
            "minified_bytes": gd.decoder_bytes(feats, "minified"),
            "features": sorted(gd.FEATURES if feats is None else feats)}


def live(quick: bool = True) -> dict:
    """Encode the synthetic stack (bench_compress's trained-like weights) and decode it with
    golfpack and with the standalone decoder: seconds, and whether the tensors are equal."""
    import time
    import types

    import torch
    from bench_compress import FULL, QUICK, trained_like_state

    from golfpack import decoder as gd
    from golfpack.artifact import encode_artifact, parse_artifact
    from golfpack.quant.qmodel import quantize_state_dict

    cfg = QUICK if quick else FULL
    qm = quantize_state_dict(trained_like_state(cfg))
    data, _ = encode_artifact(qm, dict(cfg), "auto", decoder_mode="minified")
    art = parse_artifact(data)
    mod = types.ModuleType("golf_decode")
    exec(compile(gd.decoder_source(gd.features_of(art)), "golf_decode.py", "exec"), mod.__dict__)
    t0 = time.perf_counter()
    want = parse_artifact(data).state_dict(original_dtypes=True)  # what unpack writes
    t1 = time.perf_counter()
    got, _ = mod.parse(data)
    t2 = time.perf_counter()
    same = list(got) == list(want) and all(
        got[k].dtype == v.dtype and torch.equal(got[k].view(-1).view(torch.uint8) if v.numel()
                                                else got[k], v.view(-1).view(torch.uint8)
                                                if v.numel() else v) for k, v in want.items())
    return {"config": dict(cfg), "params": sum(e.params for e in art.entries),
            "artifact_bytes": len(data), "features": sorted(gd.features_of(art)),
            "golfpack_decode_seconds": round(t1 - t0, 2),
            "decoder_decode_seconds": round(t2 - t1, 2), "bit_identical": bool(same)}


def baseline(checkout: str) -> dict:
    """decoder_sizes of SETS measured in a subprocess importing `checkout`'s golfpack."""
    import subprocess

    prog = ("import json, sys; sys.path.insert(0, sys.argv[1]); import bench_decoder as b\n"
            "sys.path.insert(0, sys.argv[2]); from golfpack import decoder as gd\n"
            "print(json.dumps({n: b.decoder_sizes(gd, f) for n, f in b.SETS.items()}))")
    res = subprocess.run([sys.executable, "-c", prog, str(ROOT / "bench"),
                          os.path.abspath(checkout)], capture_output=True, text=True,
                         check=True, env={k: v for k, v in os.environ.items()
                                          if k != "PYTHONPATH"})
    rev = subprocess.run(["git", "-C", checkout, "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True).stdout.strip()
    return {"checkout": os.path.abspath(checkout), "commit": rev,
            "decoders": json.loads(res.stdout)}


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--live", choices=["quick", "full"], default=None,
                    help="also encode the synthetic stack and time both decoders on it")
    ap.add_argument("--baseline", metavar="DIR", default=None,
                    help="also measure the same sets with the golfpack of another checkout "
                         "(a worktree of an earlier commit): before/after figures")
    args = ap.parse_args()
    from golfpack import decoder as gd
    from golfpack.accounting import self_extracting

    dec = {name: decoder_sizes(gd, feats) for name, feats in SETS.items()}
    costs = gd.feature_costs(gd.FEATURES, "minified")
    records_dec = len(self_extracting(RECORDS_DECODER)[0])
    rows = []
    for path in sorted(glob.glob(str(ROOT / "bench" / "results" / "compress*.json"))):
        d = json.load(open(path))
        if "stream_codecs" not in d:
            continue
        feats = {"brotli", "quant", "float", "raw"}  # header codec and kinds, conservatively
        for how in d["stream_codecs"].values():
            feats |= set(how.split("+")) - {"store", "none"}
        golf = d["artifact_bytes"] + gd.decoder_bytes(feats, "minified")
        best = min(d["torchsave_zstd22_bytes"], d["torchsave_brotli11_bytes"]) + records_dec
        rows.append({"results": os.path.basename(path), "source": d.get("source"),
                     "params": d.get("params"), "artifact_bytes": d["artifact_bytes"],
                     "decoder_bytes": gd.decoder_bytes(feats, "minified"),
                     "net_bytes": golf, "records_best_net_bytes": best,
                     "gross_ratio": d["artifact_bytes"] / min(d["torchsave_zstd22_bytes"],
                                                             d["torchsave_brotli11_bytes"]),
                     "net_ratio": golf / best, "features": sorted(feats)})
    out = {"machine": f"{platform.machine()} CPU (2-core sandbox)", "decoders": dec,
           "feature_costs_minified": costs, "records_decoder_bytes": records_dec,
           "net": rows}
    if args.baseline:
        out["baseline"] = baseline(args.baseline)
    if args.live:
        out["live"] = live(args.live == "quick")
        print("live:", json.dumps(out["live"]))
    dest = ROOT / "bench" / "results" / "decoder.json"
    dest.write_text(json.dumps(out, indent=1) + "\n")
    for name, v in dec.items():
        print(f"decoder {name:<36} raw {v['raw_bytes']:>6,} B  "
              f"minified {v['minified_bytes']:>6,} B")
    if args.baseline:
        print(f"baseline ({args.baseline}): the same sets with that checkout's golfpack")
        for name, v in out["baseline"]["decoders"].items():
            now = dec[name]["minified_bytes"]
            print(f"decoder {name:<36} raw {v['raw_bytes']:>6,} B  "
                  f"minified {v['minified_bytes']:>6,} B  -> now {now:,} B "
                  f"({now - v['minified_bytes']:+,})")
    print("feature costs (minified):", ", ".join(f"{k} {v}" for k, v in costs.items()))
    print(f"records' decoder: {records_dec} B minified")
    for r in rows:
        print(f"{r['results']:<40} gross {r['gross_ratio']:.4f}x  net {r['net_ratio']:.4f}x  "
              f"(artifact {r['artifact_bytes']:,} + decoder {r['decoder_bytes']:,})")
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
