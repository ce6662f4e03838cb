"""golf's artifact against the leaderboard's best compressor, on the same quantized codes.

The top record's recipe, reproduced as a baseline: the integer codes are grouped by tensor
role (golf's code streams: one per family and width), the rows of each large group are
sorted by a greedy L1 nearest-neighbour chain (the permutation stored as uint16, 2 bytes a
row, counted), each group is compressed with lrzip's ZPAQ back-end (`lrzip -z -L 9`), once
with lrzip's default LZ4 pre-test (which stores data it judges incompressible as is) and
once with `-T` (no pre-test); everything else (scales, float passthrough) is torch.save'd
and brotli-11'd. Beside it: the records' plain torch.save + brotli-11 / + zstd-22 of the
same quantized state dict, golf's artifact (`--codec auto`) gross and net of its decoder
(golfpack.decoder.decoder_bytes, minified), and a bound on the code bytes: per group the
best of xz -9e, zstd --ultra -22 --long, brotli -q 11 -w 24 and lrzip ZPAQ (-T), sorted or
not. Net means with the code that reads the file back: golf's decoder on one side, on the
other the records' ~10-line torch.load + decompress + dequantize loader (bench_decoder's,
minified the same way) for every recipe — the lrzip recipe's extra code (running lrzip,
undoing the row sort) is left out, in its favour.

    .venv/bin/python bench/bench_lrzip.py CKPT [CKPT ...] [--out bench/results/lrzip.json]

Skips (exit 0, with the reason) when lrzip is not installed (Debian: apt-get install lrzip).
"""

from __future__ import annotations

import argparse
import io
import json
import lzma
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from bench_compress import timed  # noqa: E402  (bench/ on the path first)

SPEC = "@control=fp32;@small(4096)=fp16;tok_emb*=int8:gptq-lite;*=int6:gptq-lite"
SORT_MIN_BYTES = 1 << 16  # "large" groups get the similarity sort


def nn_chain(x: np.ndarray) -> np.ndarray:
    """Greedy nearest-neighbour order of the rows of x by L1 (start at row 0)."""
    n = x.shape[0]
    xi = x.astype(np.int16)
    left = np.ones(n, bool)
    order = np.empty(n, np.int64)
    cur = 0
    for k in range(n):
        order[k] = cur
        left[cur] = False
        if k == n - 1:
            break
        cand = np.flatnonzero(left)
        d = np.abs(xi[cand] - xi[cur]).sum(1, dtype=np.int64)
        cur = int(cand[int(np.argmin(d))])
    return order


def lrzip_bytes(data: bytes, tmp: Path, threshold_off: bool) -> tuple[int, float, float]:
    """-> (compressed bytes, compress seconds, decompress seconds) of `lrzip -z -L 9`."""
    src, dst, back = tmp / "g.bin", tmp / "g.lrz", tmp / "g.out"
    src.write_bytes(data)
    base = ["lrzip", "-N", "0", "-q", "-f"]  # normal priority (lrzip's default is nice 19)
    cmd = base + ["-z", "-L", "9", "-o", str(dst)] + (["-T"] if threshold_off else [])
    _, tc = timed(subprocess.run, cmd + [str(src)], check=True, capture_output=True)
    _, td = timed(subprocess.run, base + ["-d", "-o", str(back), str(dst)], check=True,
                  capture_output=True)
    assert back.read_bytes() == data
    return dst.stat().st_size, tc, td


def general_bytes(data: bytes, tmp: Path, zpaq_t: int | None = None) -> dict:
    """The best general-purpose compressors at their strongest settings on `data`;
    `zpaq_t`: lrzip -T's size of these very bytes where the caller already measured it."""
    import brotli
    import zstandard

    out = {"xz-9e": len(lzma.compress(data, preset=9 | lzma.PRESET_EXTREME))}
    params = zstandard.ZstdCompressionParameters.from_level(
        22, window_log=27, enable_ldm=True, source_size=len(data))
    out["zstd-22-long"] = len(zstandard.ZstdCompressor(compression_params=params)
                              .compress(data))
    out["brotli-11-w24"] = len(brotli.compress(data, quality=11, lgwin=24))
    out["lrzip-zpaq-T"] = lrzip_bytes(data, tmp, True)[0] if zpaq_t is None else zpaq_t
    return out


def torch_bytes(sd: dict) -> bytes:
    buf = io.BytesIO()
    torch.save(sd, buf)
    return buf.getvalue()


def bench_one(ckpt: str, spec: str, tmp: Path, log=print) -> dict:
    import brotli
    import zstandard
    from bench_compress import qmodel_tensor, records_baseline

    from golfpack.ans import codec as ansmodel
    from golfpack.artifact import encode_artifact, parse_artifact
    from golfpack.checkpoint import load
    from golfpack.compress import code_streams
    from golfpack.decoder import decoder_bytes, features_of

    sd, cfg = load(ckpt)
    params = sum(int(t.numel()) for t in sd.values())
    from golfpack.quant.qmodel import quantize_state_dict

    qm = quantize_state_dict(sd, spec)
    (data, report), t_enc = timed(encode_artifact, qm, dict(cfg), "auto", None, None,
                                  "minified")
    art = parse_artifact(data)
    _, t_unpack = timed(lambda: parse_artifact(data).state_dict())
    feats = features_of(art)
    dec = decoder_bytes(feats, "minified")
    saved = records_baseline(qm)
    (b11, t_b11) = timed(lambda: len(brotli.compress(saved, quality=11)))
    (z22, t_z22) = timed(lambda: len(zstandard.ZstdCompressor(level=22).compress(saved)))
    golf_streams = {s["name"]: s for s in report["streams"]}

    groups, t_lr, t_lr_d = [], 0.0, 0.0
    for name, (codes, layout, bits) in code_streams(qm).items():
        widths = {c for _, c in layout.shapes}
        rows = layout.n_rows
        x = codes.reshape(rows, -1) if len(widths) == 1 and rows else None
        raw = codes.tobytes()
        g = {"name": name, "codes": int(codes.size), "rows": rows, "bits": bits}
        sort = x is not None and codes.size >= SORT_MIN_BYTES and 1 < rows <= 65536
        if sort:
            order = nn_chain(x)
            body, perm = x[order].tobytes(), 2 * rows
        else:
            body, perm = raw, 0
        g["sorted"], g["perm_bytes"] = bool(sort), perm
        for flag, key in ((False, "lrzip"), (True, "lrzip_T")):
            size, tc, td = lrzip_bytes(body, tmp, flag)
            g[key] = size + perm
            t_lr += tc
            t_lr_d += td
        body_t = g["lrzip_T"] - perm  # lrzip -T of `body`, measured just above
        gen = general_bytes(raw, tmp, None if sort else body_t)
        if sort:
            gen.update({k + "+sort": v + perm
                        for k, v in general_bytes(body, tmp, body_t).items()})
        g["general"] = gen
        g["bound"] = min(gen.values())
        g["golf_ans"] = golf_streams[name]["bytes"] if name in golf_streams else None
        g["golf_codec"] = golf_streams[name]["codec"] if name in golf_streams else None
        p = ansmodel.prepare(codes, layout, bits, refs=())
        g["ans_without_rowrefs_est"] = round(p.est_bytes)
        groups.append(g)
        log(f"  {name}: golf {g['golf_ans']:,} ({g['golf_codec']}), lrzip {g['lrzip']:,}, "
            f"lrzip -T {g['lrzip_T']:,}, bound {g['bound']:,} "
            f"({min(gen, key=gen.get)}), ans w/o row refs ~{g['ans_without_rowrefs_est']:,}")

    rest = {}
    for e in qm.entries:
        if e.kind == "quant":
            rest[e.name + ".scale"] = torch.from_numpy(np.array(e.parts["scales"].data))
        else:
            rest[e.name] = qmodel_tensor(e)
    rest_b = len(brotli.compress(torch_bytes(rest), quality=11))
    recipe = {k: sum(g[k] for g in groups) + rest_b for k in ("lrzip", "lrzip_T")}
    golf_codes = sum(g["golf_ans"] for g in groups)
    out = {
        "checkpoint": ckpt, "params": params, "spec": spec,
        "torchsave_brotli11": b11, "torchsave_zstd22": z22,
        "recipe_lrzip": recipe["lrzip"], "recipe_lrzip_T": recipe["lrzip_T"],
        "recipe_rest_brotli11": rest_b,
        "golf_gross": len(data), "golf_decoder_bytes": dec, "golf_net": len(data) + dec,
        "decoder_features": sorted(feats),
        "codes": {"golf": golf_codes, "lrzip": sum(g["lrzip"] for g in groups),
                  "lrzip_T": sum(g["lrzip_T"] for g in groups),
                  "bound": sum(g["bound"] for g in groups)},
        "seconds": {"golf_encode": round(t_enc, 2), "golf_unpack": round(t_unpack, 2),
                    "recipe_lrzip_compress": round(t_lr, 2),
                    "recipe_lrzip_decompress": round(t_lr_d, 2),
                    "torchsave_brotli11": round(t_b11, 2), "torchsave_zstd22": round(t_z22, 2)},
        "groups": groups,
    }
    from bench_decoder import RECORDS_DECODER

    from golfpack.accounting import self_extracting

    loader = len(self_extracting(RECORDS_DECODER)[0])
    best_recipe = min(recipe.values()) + loader
    out["records_loader_bytes"] = loader
    out["net_vs_brotli11"] = out["golf_net"] / (b11 + loader)
    out["net_vs_recipe"] = out["golf_net"] / best_recipe
    out["goal_met"] = out["net_vs_brotli11"] <= 0.98 and out["golf_net"] < best_recipe
    out["codes_golf_vs_bound"] = golf_codes / out["codes"]["bound"]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--scheme", default=SPEC)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "lrzip.json"))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if shutil.which("lrzip") is None:
        print("SKIP: lrzip is not installed (Debian: apt-get install -y lrzip)")
        return
    torch.set_num_threads(args.threads)
    results = []
    with tempfile.TemporaryDirectory() as td:
        for ck in args.checkpoints:
            print(f"{ck}:")
            r = bench_one(ck, args.scheme, Path(td))
            results.append(r)
            print(f"  torch.save+brotli-11 {r['torchsave_brotli11']:,}  +zstd-22 "
                  f"{r['torchsave_zstd22']:,}  recipe lrzip {r['recipe_lrzip']:,} / -T "
                  f"{r['recipe_lrzip_T']:,}  golf {r['golf_gross']:,} gross, "
                  f"{r['golf_net']:,} net  ({r['net_vs_brotli11']:.4f}x brotli-11, "
                  f"{r['net_vs_recipe']:.4f}x recipe; goal met: {r['goal_met']})")
            print(f"  codes: golf {r['codes']['golf']:,}, bound {r['codes']['bound']:,} "
                  f"({r['codes_golf_vs_bound']:.4f}x)")
    lr = subprocess.run(["lrzip", "-V"], capture_output=True, text=True)
    from rd_common import machine

    meta = {"machine": machine("cpu"),
            "lrzip": (lr.stdout or lr.stderr).strip()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
