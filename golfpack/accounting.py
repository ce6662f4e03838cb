"""Exact byte accounting: total = code bytes + artifact bytes against the budget.

Code bytes are the --code files plus, by default, the golf decoder a submission needs to
read the artifact (golfpack.decoder, its own row), counted in one of two modes:
  raw       the UTF-8 bytes of each --code file, as shipped;
  minified  the size of a self-extracting wrapper per file: the source minified with
            python-minifier, compressed with lzma or brotli (the smaller), as a latin-1
            string literal inside `exec(decompress(bytes("...", "l1")))` in a file that
            declares `#coding:l1` (one byte per compressed byte, a few escaped; base85 would
            add 25%). The wrapper is built for real and its length counted, so the figure is
            exactly what a submission would ship.

Artifact bytes are attributed to tensors so that header + sum(tensor bytes) == file size:
each stream's stored bytes are split across the parts in it (by ideal code length for ans
streams, by raw size otherwise) with largest-remainder rounding.
"""

from __future__ import annotations

import lzma
import os

import numpy as np

from golfpack.errors import CheckFailed, GolfError, read_file

DEFAULT_BUDGET = 16_000_000
CODE_MODES = ("raw", "minified")
# the payload is a latin-1 string literal (one byte per byte, a few escaped) in a file that
# declares latin-1: ~2% over the compressed bytes where base85 adds 25%
_WRAPPER = b"#coding:l1\nimport %s;exec(%s.decompress(bytes(%s,'l1')))"
_LZMA_TUNINGS = [(3, 2, 273), (3, 0, 273), (3, 0, 64), (0, 0, 64), (1, 0, 64)]  # lc, pb, nice
_ESCAPES = {0: b"\\0", 10: b"\\n", 13: b"\\r", 92: b"\\\\"}


def latin1_literal(data: bytes) -> bytes:
    """`data` as a Python string literal for a latin-1 source file: bytes(lit, 'l1') == data.
    The shortest of the four quotings: NUL, CR, backslash escaped (NUL as \\x00 before an
    octal digit); LF escaped unless triple-quoted; a quote escaped where it would end the
    literal."""
    return min((_quoted(data, q, triple) for q in b"'\"" for triple in (False, True)), key=len)


def _quoted(data: bytes, q: int, triple: bool) -> bytes:
    out, run = [], 0  # run: unescaped quotes just before (a triple one ends at three)
    for i, b in enumerate(data):
        if b == 0 and i + 1 < len(data) and 48 <= data[i + 1] <= 55:
            out.append(b"\\x00")
        elif b == 10 and triple:
            out.append(b"\n")
        elif b in _ESCAPES:
            out.append(_ESCAPES[b])
        elif b == q and (not triple or run == 2):
            out.append(b"\\" + bytes([q]))
        else:
            out.append(bytes([b]))
        run = run + 1 if out[-1] == bytes([q]) else 0
    for k in range(len(out) - run, len(out)):  # quotes right before the closing ones
        out[k] = b"\\" + out[k]
    end = bytes([q]) * (3 if triple else 1)
    return end + b"".join(out) + end


def source_text(raw: bytes, path: str = "<code>") -> str:
    """Python source bytes -> text, in the encoding the file declares (PEP 263; UTF-8 when
    it declares none, as a self-extracting wrapper declares latin-1)."""
    import io
    import tokenize

    try:
        enc = tokenize.detect_encoding(io.BytesIO(raw).readline)[0]
        return raw.decode(enc)
    except (SyntaxError, UnicodeDecodeError, LookupError):
        raise GolfError(f"code file {path} is not valid UTF-8 (nor in the encoding it "
                        "declares)") from None


def read_source(path) -> bytes:
    path = os.fspath(path)
    raw = read_file(path, "code file")
    source_text(raw, path)
    return raw


def minify_source(source: bytes, path: str = "<code>", hoist_literals: bool = True) -> bytes:
    import python_minifier

    try:
        return python_minifier.minify(source_text(source, path), filename=path,
                                      rename_globals=False, remove_literal_statements=True,
                                      hoist_literals=hoist_literals).encode("utf-8")
    except SyntaxError as exc:
        raise GolfError(f"cannot minify {path}: syntax error on line {exc.lineno}") from None


def self_extracting(source: bytes, path: str = "<code>", compressors=("lzma", "brotli"),
                    small: bytes | None = None) -> tuple[bytes, str]:
    """Minify + compress + latin-1 literal wrapper -> (wrapper bytes, compressor name). The
    smallest of `compressors` wins: lzma (legacy .lzma container, auto-detected by
    lzma.decompress; standard library) and brotli (the wrapper then needs brotli installed).
    `small`: the already minified source."""
    small = minify_source(source, path) if small is None else small
    packed = {}
    if "lzma" in compressors:  # the header carries lc/pb and the dictionary size: free to tune
        packed["lzma"] = min((lzma.compress(small, format=lzma.FORMAT_ALONE, filters=[{
            "id": lzma.FILTER_LZMA1, "preset": 9 | lzma.PRESET_EXTREME, "lc": lc, "lp": 0,
            "pb": pb, "nice_len": nice, "dict_size": 0x1010101}])  # (no NUL byte to escape)
            for lc, pb, nice in _LZMA_TUNINGS), key=len)
    if "brotli" in compressors:
        import brotli

        packed["brotli"] = brotli.compress(small, quality=11)
    best = min(packed, key=lambda k: (len(packed[k]), k))
    return wrapper_file(packed[best], best), best


def wrapper_file(packed: bytes, compressor: str) -> bytes:
    """The self-extracting file around `packed` (compressed by `compressor`: lzma, brotli)."""
    name = compressor.encode()
    return _WRAPPER % (name, name, latin1_literal(packed))


def wrapper_method(compressor: str) -> str:
    """How a self_extracting wrapper was made, as reports name it."""
    return f"minify+{compressor}+l1"


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
                         "method": wrapper_method(method)})
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
