"""Bytes a bundle carries for the golf code its script runs: the function-level closure
(golfpack.closure, the default) against whole modules (`--whole-modules`), for three
scripts a submission may be: one compressing its weights at the end of training
(compress_state_dict, with its report; encode_artifact; the lean golfpack.encode entry
points with ans, auto, zstd, brotli), one quantizing with golfpack.quant.rows, one scoring
with golfeval.score.core.score_tokens.

For each: the golf part's source bytes (raw), minified (python-minifier, before
compression), and wrapped (its marginal bytes inside the self-extracting minified bundle),
and the whole bundle's bytes in raw and minified code modes (the whole-format decoder is
inside both). Writes bench/results/bundle.json.

    .venv/bin/python bench/bench_bundle.py
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SCRIPTS = {
    "compress_state_dict": '''import torch
from golfpack.compress import compress_state_dict
sd = {"a.weight": torch.randn(32, 64), "a.bias": torch.randn(32)}
data, rep = compress_state_dict(sd, {"d": 1}, scheme_spec="@control=fp32;*.bias=fp16;*=int6")
open("model.golf", "wb").write(data)
''',
    "encode_artifact(zstd)": '''import torch
from golfpack.artifact import encode_artifact
from golfpack.quant.qmodel import quantize_state_dict
sd = {"a.weight": torch.randn(32, 64), "a.bias": torch.randn(32)}
qm = quantize_state_dict(sd, "@control=fp32;*.bias=fp16;*=int6")
open("model.golf", "wb").write(encode_artifact(qm, {"d": 1}, codec="zstd")[0])
''',
    **{f"encode.{fn}({codec})": f'''import torch
from golfpack.encode import {fn}, save_artifact
sd = {{"a.weight": torch.randn(32, 64), "a.bias": torch.randn(32)}}
save_artifact("model.golf", {fn}(sd, {{"d": 1}}, codec="{codec}",
              scheme_spec="@control=fp32;*.bias=fp16;*=int6:gptq-lite"))
''' for fn, codec in (("encode_state_dict", "ans"), ("encode_state_dict", "auto"),
                        ("encode_state_dict_general", "zstd"),
                        ("encode_state_dict_general", "brotli"))},
    "quant.rows": '''import torch
from golfpack.quant.rows import dequantize, parse_scheme, quantize
r = quantize(torch.randn(32, 64), parse_scheme("int6:amax"))
print(float(dequantize(r.codes, r.scales).sum()))
''',
    "score_tokens": '''import numpy as np
from golfeval.score.core import score_tokens
def evaluate(model, tokens, target_bytes):
    return score_tokens(model, tokens, target_bytes, mode="sliding", seq_len=1024, stride=64)
''',
}


def measure(script: Path) -> dict:
    from golfpack.bundle import build_bundle

    out = {}
    for pruning, whole in (("functions", False), ("whole_modules", True)):
        _, raw = build_bundle(script, None, "raw", whole_modules=whole)
        _, mini = build_bundle(script, None, "minified", whole_modules=whole)
        pk_raw, pk_min = raw["golf_packages"], mini["golf_packages"]
        out[pruning] = {
            "modules": sum(v["modules"] for v in pk_raw.values()),
            "golf_raw": sum(v["raw_bytes"] for v in pk_raw.values()),
            "golf_minified": sum(v["minified_bytes"] for v in pk_min.values()),
            "golf_wrapped": sum(v["bytes"] for v in pk_min.values()),
            "bundle_raw": raw["bytes"], "bundle_minified": mini["bytes"],
            "packages": {k: {"modules": v["modules"], "raw": v["raw_bytes"],
                             "minified": v["minified_bytes"], "wrapped": v["bytes"]}
                         for k, v in pk_min.items()},
        }
    return out


def main() -> None:
    results, t0 = {}, time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        for name, text in SCRIPTS.items():
            path = Path(d) / f"{name}.py"
            path.write_text(text)
            results[name] = r = measure(path)
            f, w = r["functions"], r["whole_modules"]
            print(f"{name:44s} modules {f['modules']:3d} / {w['modules']:3d}   golf raw "
                  f"{f['golf_raw']:8,} / {w['golf_raw']:8,}   minified {f['golf_minified']:7,}"
                  f" / {w['golf_minified']:7,}   wrapped {f['golf_wrapped']:7,} / "
                  f"{w['golf_wrapped']:7,}   bundle raw {f['bundle_raw']:8,} / "
                  f"{w['bundle_raw']:8,}   minified {f['bundle_minified']:7,} / "
                  f"{w['bundle_minified']:7,}  (functions / whole modules)")
    from rd_common import machine

    out = {"machine": machine("cpu"),
           "seconds": round(time.perf_counter() - t0, 1), "scripts": results}
    dest = ROOT / "bench" / "results" / "bundle.json"
    dest.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
