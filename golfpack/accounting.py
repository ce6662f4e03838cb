"""Exact byte accounting: total = code bytes + artifact bytes against the budget.

Code bytes are the --code files plus, by default, the golf decoder a submission needs to
read the artifact (golfpack.decoder, its own row), counted in one of two modes:
  raw       the UTF-8 bytes of each --code file, as shipped;
  minified  the size of a self-extracting wrapper per file: the source minified with
            python-minifier, compressed with lzma or brotli (the smaller), base85-encoded,
            inside `exec(decompress(b85decode(b"...")))`. The wrapper is built for real and
            its length counted, so the figure is exactly what a submission would ship.

Artifact bytes are attributed to tensors so that header + sum(tensor bytes) == file size:
each stream's stored bytes are split across the parts in it (by ideal code length for ans
streams, by raw size otherwise) with largest-remainder rounding.
"""

from __future__ import annotations

import base64
import lzma
import os

import numpy as np

from golfpack.errors import CheckFailed, GolfError, read_file

DEFAULT_BUDGET = 16_000_000
CODE_MODES = ("raw", "minified")
_WRAPPERS = {
    "lzma": b'import lzma,base64;exec(lzma.decompress(base64.b85decode(b"%s")))',
    "brotli": b'import brotli,base64;exec(brotli.decompress(base64.b85decode(b"%s")))',
}


def read_source(path) -> bytes:
    path = os.fspath(path)
    raw = read_file(path, "code file")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        raise GolfError(f"code file {path} is not valid UTF-8") from None
    return raw


def minify_source(source: bytes, path: str = "<code>") -> bytes:
    import python_minifier

    try:
        return python_minifier.minify(source.decode("utf-8"), filename=path,
                                      rename_globals=False, remove_literal_statements=True
                                      ).encode("utf-8")
    except SyntaxError as exc:
        raise GolfError(f"cannot minify {path}: syntax error on line {exc.lineno}") from None


def self_extracting(source: bytes, path: str = "<code>") -> tuple[bytes, str]:
    """Minify + compress + base85 wrapper -> (wrapper bytes, compressor name). The smaller
    of lzma (legacy .lzma container, auto-detected by lzma.decompress) and brotli wins."""
    import brotli

    small = minify_source(source, path)
    packed = {
        "lzma": lzma.compress(small, format=lzma.FORMAT_ALONE, preset=9 | lzma.PRESET_EXTREME),
        "brotli": brotli.compress(small, quality=11),
    }
    best = min(packed, key=lambda k: (len(packed[k]), k))
    return _WRAPPERS[best] % base64.b85encode(packed[best]), best


def code_bytes(files=(), mode: str = "raw") -> dict:
    """{"code_bytes", "mode", "files": [{path, raw_bytes, bytes, method}]}."""
    if mode not in CODE_MODES:
        raise GolfError(f"unknown code mode {mode!r} (use raw or minified)")
    rows = []
    for f in files:
        src = read_source(f)
        if mode == "raw":
            rows.append({"path": os.fspath(f), "raw_bytes": len(src), "bytes": len(src),
                         "method": "raw"})
        else:
            wrapper, method = self_extracting(src, os.fspath(f))
            rows.append({"path": os.fspath(f), "raw_bytes": len(src), "bytes": len(wrapper),
                         "method": f"minify+{method}+b85"})
    return {"code_bytes": sum(r["bytes"] for r in rows), "mode": mode, "files": rows}


def add_decoder(code: dict, row: dict) -> dict:
    """Count the golf decoder (golfpack.decoder.decoder_row) as one more code file."""
    out = dict(code, files=list(code["files"]) + [row])
    out["decoder_bytes"] = row["bytes"]
    out["code_bytes"] = code["code_bytes"] + row["bytes"]
    return out


def with_budget(report: dict, code: dict, budget: int = DEFAULT_BUDGET) -> dict:
    """Add code_bytes (decoder included when counted), total_bytes, budget, headroom to an
    artifact report."""
    out = dict(report)
    out["code_bytes"] = code["code_bytes"]
    out["decoder_bytes"] = code.get("decoder_bytes", 0)
    out["code"] = code
    out["total_bytes"] = out["model_bytes"] + code["code_bytes"]
    out["budget"] = int(budget)
    out["headroom"] = out["budget"] - out["total_bytes"]
    return out


def check_budget(report: dict) -> None:
    if report["headroom"] < 0:
        raise CheckFailed(
            f"over budget by {-report['headroom']:,} bytes: {report['total_bytes']:,} total "
            f"({report['model_bytes']:,} model + {report['code_bytes']:,} code) > "
            f"{report['budget']:,}")


def apportion(total: int, weights) -> list[int]:
    """Split an integer total proportionally to weights (largest remainder; sums exactly)."""
    w = np.asarray(list(weights), dtype=np.float64)
    if w.size == 0:
        return []
    if w.sum() <= 0:
        w = np.ones_like(w)
    exact = total * w / w.sum()
    base = np.floor(exact).astype(np.int64)
    rest = int(total - base.sum())
    order = np.argsort(-(exact - base), kind="stable")
    base[order[:rest]] += 1
    return [int(v) for v in base]


def artifact_report(art, qmodel=None) -> dict:
    """The accounting of a parsed Artifact (see golfpack.artifact.Artifact.report)."""
    entry_bytes = [0] * len(art.entries)
    for si, s in enumerate(art.streams):
        members = sorted(((p.offset, ei, p) for ei, e in enumerate(art.entries)
                          for p in e.parts if p.stream == si), key=lambda t: t[0])
        seg = art._seg_bits.get(si)
        if seg is not None and len(seg) == len(members):
            weights = list(seg)
        else:
            weights = [p.length for _, _, p in members]
        for (_, ei, _), share in zip(members, apportion(s.stored_len, weights), strict=True):
            entry_bytes[ei] += share
    stats = {e.name: e.stats for e in qmodel.entries} if qmodel is not None else {}
    tensors = []
    for e, nbytes in zip(art.entries, entry_bytes, strict=True):
        st = stats.get(e.name, {})
        row = {"name": e.name, "kind": e.kind, "shape": list(e.shape), "params": e.params,
               "scheme": e.scheme, "bits_per_param": 8.0 * nbytes / e.params if e.params else 0.0,
               "bytes": nbytes, "rel_mse": st.get("rel_mse")}
        if st.get("floored_rows"):
            row["floored_rows"] = st["floored_rows"]
            row["floored_fraction"] = st["floored_rows"] / max(st.get("rows", 1), 1)
        tensors.append(row)
    streams = [{"name": s.name, "codec": s.codec, "transform": s.transform, "raw_bytes": s.raw_len,
                "bytes": s.stored_len, "seconds": round(s.seconds, 3)} for s in art.streams]
    params = sum(e.params for e in art.entries)
    by_codec: dict[str, int] = {}
    for s in art.streams:
        by_codec[s.codec] = by_codec.get(s.codec, 0) + s.stored_len
    return {
        "model_bytes": art.file_bytes,
        "codec": max(by_codec, key=by_codec.get) if by_codec else None,  # holds most bytes
        "header_bytes": art.header_bytes,
        "header_codec": getattr(art, "header_codec", None),
        "params": params,
        "bits_per_param": 8.0 * art.file_bytes / params if params else 0.0,
        "code_bytes": 0,
        "total_bytes": art.file_bytes,
        "budget": DEFAULT_BUDGET,
        "headroom": DEFAULT_BUDGET - art.file_bytes,
        "tokenizer_sha256": art.tokenizer_sha256,
        "vocab_size": art.vocab_size,
        "config": art.config,
        "tensors": tensors,
        "streams": streams,
    }
