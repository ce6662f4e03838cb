"""`golfpack bundle`: one submittable file = the user's training script + the golf decoder.

The script reads its artifact with `from golf_decode import load` (the same line works beside
a standalone `golf_decode.py` while developing); the bundle registers the decoder as the
module `golf_decode` before the script's first line, so running the bundle behaves like
running the script. Modes:
  raw       the script verbatim after a 5-line prelude holding the decoder's source;
  minified  the whole file (prelude with the minified decoder + the minified script) as one
            self-extracting wrapper (minified, lzma or brotli, a latin-1 literal), as later
            records ship.
The bundle's size is exactly what `golfpack compress --code BUNDLE --no-decoder` counts (the
default raw code mode counts the file as shipped).

The golf code the script itself runs (what it calls from golfpack, golfeval or trainer: the
encoder at the end of training, the scorer) is carried too, as source: by default only the
functions, classes and constants it reaches (golfpack.closure), or with `whole_modules` the
import closure of whole modules (golfpack.inline); the report gives the bytes of each part.
"""

from __future__ import annotations

import os

from golfpack import decoder as gd
from golfpack.accounting import CODE_MODES, read_source, self_extracting, source_text
from golfpack.errors import GolfError

MODULE = "golf_decode"


def _split_future(source: str) -> tuple[str, str]:
    """(`from __future__` lines, the rest): those must stay the file's first statements."""
    keep, rest = [], []
    for line in source.splitlines(keepends=True):
        (keep if line.startswith("from __future__ import") else rest).append(line)
    return "".join(keep), "".join(rest)


def prelude(decoder_src: str) -> str:
    return (f"import sys as _s, types as _t\n_g = _t.ModuleType({MODULE!r})\n"
            f"_s.modules[{MODULE!r}] = _g\nexec({decoder_src!r}, _g.__dict__)\n"
            "del _s, _t, _g\n")


def golf_sources(script_src: bytes, path: str, whole_modules: bool = False) -> dict:
    """{module: (is_package, source)} of the golf code the script runs: the function-level
    closure (default) or, with `whole_modules`, every module of its import closure."""
    from golfpack.inline import pruned_sources, whole_sources

    return (whole_sources if whole_modules else pruned_sources)(script_src, path)


def build_bundle(script, features=None, mode: str = "raw", *,
                 whole_modules: bool = False) -> tuple[bytes, dict]:
    """-> (bundle bytes, {"bytes", "mode", "parts": {script, decoder, golf:<package>...,
    glue}, "features", "golf_modules", "golf_pruning", "golf_packages": {package:
    {"modules", "raw_bytes", "minified_bytes"?, "bytes"}}}). In raw mode the parts add up to
    the file; in minified mode each part is its marginal bytes inside the one wrapper."""
    from golfpack.inline import PACKAGES, finder_source, module_texts, package_sizes

    if mode not in CODE_MODES:
        raise GolfError(f"unknown code mode {mode!r} (use raw or minified)")
    path = os.fspath(script)
    src = read_source(path)
    sources = golf_sources(src, path, whole_modules)
    future, body = _split_future(source_text(src, path))
    dec = gd.decoder_source(features)
    raw_sizes = package_sizes(sources)
    texts = module_texts(sources, minify=mode == "minified")
    packages = {k: {"modules": v["modules"], "raw_bytes": v["bytes"]}
                for k, v in raw_sizes.items()}
    if mode == "raw":
        out = (future + prelude(dec) + finder_source(texts) + body).encode("utf-8")
        parts = {"script": len(src), "decoder": len(repr(dec))}
        for k, row in packages.items():
            row["bytes"] = parts[f"golf:{k}"] = row["raw_bytes"]
        parts["glue"] = len(out) - sum(parts.values())
    else:
        small = gd.minified_source(features)
        # the decoder's own rule: brotli only where the artifact needs brotli anyway
        compressors = gd.wrapper_compressors(features)

        def wrapped(pkgs) -> bytes:
            sel = {m: t for m, t in texts.items() if m.split(".")[0] in pkgs}
            text = future + prelude(small) + finder_source(sel) + body
            return self_extracting(text.encode("utf-8"), path, compressors)[0]

        # marginal bytes of each part inside the one shared wrapper; the last wrapper built
        # (every package in) is the bundle
        alone = len(self_extracting(src, path, compressors)[0])
        out = wrapped(())
        prev = len(out)
        parts = {"script": alone, "decoder": prev - alone}
        minified = package_sizes(texts)
        done = []
        for k in [p for p in PACKAGES if p in packages]:
            done.append(k)
            out = wrapped(done)
            row = packages[k]
            row["minified_bytes"] = minified[k]["bytes"]
            row["bytes"] = parts[f"golf:{k}"] = len(out) - prev
            prev = len(out)
        parts["glue"] = 0
    feats = sorted(gd.FEATURES if features is None else features)
    return out, {"bytes": len(out), "mode": mode, "parts": parts, "features": feats,
                 "golf_modules": list(sources),
                 "golf_pruning": "whole-modules" if whole_modules else "functions",
                 "golf_packages": packages}


def write_bundle(script, out_path, artifact=None, mode: str = "raw", force: bool = False,
                 max_params: int | None = None, *, whole_modules: bool = False) -> dict:
    """Write the bundle of `script` (decoder pruned to `artifact` when given)."""
    from golfpack.fileio import atomic_write_bytes, refuse_same_file

    refuse_same_file(script, out_path)
    features = None
    if artifact is not None:
        from golfpack.format.reader import load_artifact

        refuse_same_file(artifact, out_path)
        features = gd.features_of(load_artifact(artifact))
    data, report = build_bundle(script, features, mode, whole_modules=whole_modules)
    atomic_write_bytes(out_path, data, force=force)
    report.update(script=os.fspath(script), output=os.fspath(out_path),
                  artifact=None if artifact is None else os.fspath(artifact))
    return report
