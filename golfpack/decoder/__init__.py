"""The standalone decoder a submission ships: one Python file (standard library, numpy,
torch, and only the codec libraries an artifact uses) whose `load(path)` returns exactly the
tensors `golfpack unpack` gives.

The decoder is golfpack.decoder.template: a compact, separate implementation of FORMAT.md
written for size (every byte of it is a byte of model a submission loses), tested against
golfpack's own reader on every codec, entry kind and transform, and on the fuzz corpus.
Sections of it between `# <name` and `# name>` lines hold one codec, transform or entry
kind; `decoder_source(features)` drops the sections an artifact does not need.

    src = decoder_source(features_of(art))          # pruned for one artifact
    data = decoder_file(features, mode="minified")   # the self-extracting wrapper
"""

from __future__ import annotations

import functools
import re

from golfpack.accounting import CODE_MODES, self_extracting, wrapper_file
from golfpack.errors import GolfError
from golfpack.format.layout import parse_slice

# sections of the template, in the order they appear
CODEC_FEATURES = ("zlib", "zstd", "lzma", "brotli", "ans")
TRANSFORM_FEATURES = ("shuffle", "bitpack")
KIND_FEATURES = ("quant", "float", "raw", "lqer", "bank")  # bank: slices `name[i]` stacked
FEATURES = CODEC_FEATURES + TRANSFORM_FEATURES + KIND_FEATURES
API = "load(path, max_params=MAX_PARAMS) -> (state_dict, config); GolfDecodeError"
_OPEN = re.compile(r"# <(\w+)")
_CLOSE = re.compile(r"# (\w+)>")


def template_text() -> str:
    """The template's source, through its loader (a file here; the embedded source when this
    module runs inside a bundle, golfpack.inline)."""
    import importlib.util

    spec = importlib.util.find_spec(__name__ + ".template")
    return spec.loader.get_source(spec.name)


def decoder_source(features=None) -> str:
    """The decoder's Python source holding only `features` (None = the whole format)."""
    feats = set(FEATURES if features is None else features)
    unknown = feats - set(FEATURES)
    if unknown:
        raise GolfError(f"unknown decoder feature(s) {sorted(unknown)}")
    out, stack = [], []
    for line in template_text().splitlines(keepends=True):
        s = line.strip()
        if m := _OPEN.fullmatch(s):
            stack.append(m.group(1))
        elif m := _CLOSE.fullmatch(s):
            if not stack or stack.pop() != m.group(1):
                raise AssertionError(f"decoder template: unbalanced section {m.group(1)}")
        elif all(f in feats for f in stack):
            out.append(line)
    if stack:
        raise AssertionError(f"decoder template: unclosed section {stack[-1]}")
    text = _squeeze_blank_lines("".join(out))
    return text.replace('FEATURES = ""', f'FEATURES = "{" ".join(sorted(feats))}"', 1)


def _squeeze_blank_lines(text: str) -> str:
    return re.sub(r"\n{4,}", "\n\n\n", text)


def features_of(art) -> set[str]:
    """What a parsed artifact needs: its header codec, stream codecs and transforms, the
    kinds of its entries (unknown kinds are left out: no decoder can rebuild them), and
    bank when it holds bank slices."""
    feats = {art.header_codec} | {s.codec for s in art.streams} | \
        {s.transform for s in art.streams} | {e.kind for e in art.entries}
    if any(parse_slice(e.name) for e in art.entries):
        feats.add("bank")
    return feats & set(FEATURES)


def features_of_report(report: dict) -> set[str]:
    """features_of for an artifact report (golfpack.accounting.artifact_report)."""
    feats = {report.get("header_codec") or "zlib"} | {t["kind"] for t in report["tensors"]}
    if any(parse_slice(t["name"]) for t in report["tensors"]):
        feats.add("bank")
    for s in report["streams"]:
        feats |= {s["codec"], s["transform"]}
    return feats & set(FEATURES)


def minified_source(features=None) -> str:
    """The decoder's source minified (python-minifier, literals not hoisted: smaller once
    compressed, measured)."""
    return _minified(None if features is None else frozenset(features))


@functools.lru_cache(maxsize=64)
def _minified(features: frozenset | None) -> str:
    from golfpack.accounting import minify_source

    return minify_source(decoder_source(features).encode("utf-8"), "golf_decode.py",
                         hoist_literals=False).decode("utf-8")


def wrapper_compressors(features=None) -> tuple[str, ...]:
    """What the decoder's self-extracting wrapper may decompress with: lzma (standard
    library), and brotli only when the decoder needs brotli anyway."""
    return ("lzma", "brotli") if features is None or "brotli" in features else ("lzma",)


@functools.lru_cache(maxsize=64)
def _file(features: frozenset | None, mode: str) -> bytes:
    src = decoder_source(features).encode("utf-8")
    if mode == "raw":
        return src
    return self_extracting(src, "golf_decode.py", wrapper_compressors(features),
                           small=_minified(features).encode("utf-8"))[0]


def decoder_file(features=None, mode: str = "raw") -> bytes:
    """The decoder as shipped: its source (raw) or the self-extracting wrapper (minified)."""
    if mode not in CODE_MODES:
        raise GolfError(f"unknown code mode {mode!r} (use raw or minified)")
    return _file(None if features is None else frozenset(features), mode)


def decoder_bytes(features=None, mode: str = "raw") -> int:
    return len(decoder_file(features, mode))


def feature_costs(features, mode: str = "raw", estimate: bool = False) -> dict[str, int]:
    """Bytes each feature adds to the decoder of `features` (what dropping it would save).
    `estimate` (minified mode): from the compressed size of the source without docstrings
    instead of the real wrapper: ~0.2 s instead of ~1 s a build, within ~20% (measured)."""
    feats = frozenset(features)
    size = _estimated_bytes if estimate and mode == "minified" else decoder_bytes
    full = size(feats, mode)
    return {f: full - size(feats - {f}, mode) for f in sorted(feats)}


@functools.lru_cache(maxsize=256)
def _estimated_bytes(features: frozenset, mode: str = "minified") -> int:
    import ast
    import lzma

    tree = ast.parse(decoder_source(features))
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef)) and body and \
                isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            node.body = body[1:] or [ast.Pass()]
    small = ast.unparse(tree).encode()
    if "brotli" in wrapper_compressors(features):
        import brotli

        packed, name = brotli.compress(small, quality=11), "brotli"
    else:
        packed = lzma.compress(small, format=lzma.FORMAT_ALONE, preset=9 | lzma.PRESET_EXTREME)
        name = "lzma"
    return len(wrapper_file(packed, name))


def decoder_features(source: bytes) -> set[str] | None:
    """The features of the golf decoder a code file carries (its own source, or inside a
    self-extracting wrapper, unpacked without running anything: golfpack.wrapped), else
    None. A wrapper past the reader's bounds is a WrapperError."""
    from golfpack.wrapped import unwrapped_text

    text = unwrapped_text(source)
    if not all(re.search(p, text) for p in (r"def load\(", r"class GolfDecodeError\b")):
        return None
    m = re.search(r"""FEATURES\s*=\s*\\?['"]([a-z ]*)\\?['"]""", text)  # maybe in a repr
    return set(m.group(1).split()) if m else None


DECODER_ROW = "(golf decoder)"


def decoder_row(features, mode: str = "raw", code_files=(), included: bool = True) -> dict:
    """The decoder's line of the code accounting. `included=False` means a --code file
    already carries it: that file must really define a decoder holding `features`."""
    feats = sorted(set(features) & set(FEATURES))
    if not included:
        from golfpack.accounting import read_source

        for f in code_files:
            have = decoder_features(read_source(f))
            if have is not None and set(feats) <= have:
                return {"path": DECODER_ROW, "raw_bytes": 0, "bytes": 0,
                        "method": f"inside {f}", "features": feats, "inside": str(f)}
        raise GolfError("no code file defines a golf decoder for this artifact "
                        f"(needs {', '.join(feats)}); build one with the bundle command")
    return {"path": DECODER_ROW, "raw_bytes": len(decoder_source(feats).encode("utf-8")),
            "bytes": decoder_bytes(feats, mode),
            "method": "raw" if mode == "raw" else "minify+wrapper", "features": feats}


def write_decoder(out_path, artifact=None, mode: str = "raw", force: bool = False) -> dict:
    """Write the decoder (pruned to `artifact` when given) -> {output, bytes, features}."""
    from golfpack.fileio import atomic_write_bytes, refuse_same_file

    features = None
    if artifact is not None:
        from golfpack.format.reader import load_artifact

        refuse_same_file(artifact, out_path)
        features = features_of(load_artifact(artifact))
    data = decoder_file(features, mode)
    atomic_write_bytes(out_path, data, force=force)
    return {"output": str(out_path), "bytes": len(data), "mode": mode,
            "features": sorted(FEATURES if features is None else features),
            "artifact": None if artifact is None else str(artifact), "api": API}
