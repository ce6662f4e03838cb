"""The library behind `golfpack compress|inspect|unpack|bench` (the CLI only parses flags).

    data, report = compress_state_dict(state_dict, config, scheme_spec=None, codec="auto")
    report = compress_checkpoint("ckpt.safetensors", "model.golf", budget=16_000_000)
    report = inspect_artifact("model.golf")
    unpack_artifact("model.golf", "roundtrip.safetensors")
"""

from __future__ import annotations

import os
import time

import numpy as np

from golfpack.accounting import (
    DEFAULT_BUDGET,
    add_decoder,
    check_budget,
    code_bytes,
    with_budget,
)
from golfpack.errors import CheckFailed, GolfError
from golfpack.format.layout import MAX_PARAMS
from golfpack.progress import OnStep, step_bar

# torch-bound modules (quant, artifact) are imported inside the functions that need them, so
# `inspect` and the reader run where torch is not installed.


def compress_state_dict(state_dict, config: dict, *, scheme_spec: str | None = None,
                        codec: str = "auto", code_files=(), code_mode: str = "raw",
                        tokenizer=None, budget: int = DEFAULT_BUDGET,
                        progress: bool = False, decoder: bool = True) -> tuple[bytes, dict]:
    """Quantize + encode a state dict -> (artifact bytes, report). Does not enforce the
    budget (see check_budget); the report carries total_bytes and headroom. The decoder a
    submission needs is counted as code (`decoder=False`: a code file already holds it)."""
    from golfpack.artifact import encode_artifact
    from golfpack.quant.qmodel import dtype_name, quantize_state_dict
    from golfpack.quant.scheme import kept_by_passthrough, kept_in_float

    code = code_bytes(code_files, code_mode)  # fail on bad code files before the slow part
    if not decoder:
        require_decoder_file(code_files)
    t0 = time.perf_counter()
    with step_bar(progress, "compress") as on_step:
        qmodel = quantize_state_dict(state_dict, scheme_spec, on_step=on_step)
        t1 = time.perf_counter()
        data, report = encode_artifact(qmodel, config, codec=codec, tokenizer=tokenizer,
                                       on_step=on_step,
                                       decoder_mode=code_mode if decoder else None)
    t2 = time.perf_counter()
    report = with_budget(report, count_decoder(report, code, code_files, decoder), budget)
    report["scheme_spec"] = scheme_spec
    # matrices only: vectors and control tensors in float are what everyone expects
    matrices = {n: (dtype_name(t), int(t.numel())) for n, t in state_dict.items() if t.ndim >= 2}
    report["kept_by_passthrough"] = kept_by_passthrough(scheme_spec, matrices)
    report["kept_in_float"] = kept_in_float(scheme_spec, matrices)  # name -> the rule
    report["seconds"] = {"quantize": round(t1 - t0, 3), "encode": round(t2 - t1, 3)}
    return data, report


def compress_checkpoint(ckpt_path, out_path, *, scheme_spec: str | None = None,
                        codec: str = "auto", code_files=(), code_mode: str = "raw",
                        tokenizer=None, budget: int = DEFAULT_BUDGET, force: bool = False,
                        allow_over: bool = False, config=None,
                        progress: bool = False, model_spec: str | None = None,
                        trust_arch: bool = False, decoder: bool = True) -> dict:
    """Checkpoint -> artifact file. Over budget raises CheckFailed and writes nothing,
    unless allow_over (then the file is written and report["over_budget"] is True).

    Before anything is quantized the model is built and the weights loaded into it
    (check_weights_fit), so a config that does not fit the weights is refused up front."""
    from golfpack.checkpoint import load_with_notes
    from golfpack.fileio import refuse_existing, refuse_same_file

    refuse_same_file(ckpt_path, out_path)
    for f in code_files:
        refuse_same_file(f, out_path)
    refuse_existing(out_path, force)
    state_dict, cfg, notes = load_with_notes(ckpt_path, config, infer=model_spec is None)
    if model_spec is not None:
        cfg = {**cfg, "arch": model_spec}
    checked = check_weights_fit(state_dict, cfg, model_spec, trust_arch, notes)
    data, report = compress_state_dict(state_dict, cfg, scheme_spec=scheme_spec, codec=codec,
                                       code_files=code_files, code_mode=code_mode,
                                       tokenizer=tokenizer, budget=budget, progress=progress,
                                       decoder=decoder)
    report["notes"], report["weights_checked"] = notes, checked
    return write_artifact(out_path, data, report, allow_over, force)


def check_weights_fit(state_dict, cfg: dict, model_spec: str | None = None,
                      trust_arch: bool = False, notes: list | None = None) -> bool:
    """Build the model the config names and load the weights into it (CheckpointError
    naming the first misfit). An arch golf may not import on its own (not on the
    allow-list, not named by the user, not trusted) is left unchecked: False, and a note."""
    from golfpack.checkpoint import DEFAULT_ARCH, arch_trusted, build_model

    arch = cfg.get("arch", DEFAULT_ARCH)
    if model_spec is None and not trust_arch and not arch_trusted(arch):
        if notes is not None:
            notes.append(f"weights not checked against {arch!r}: not one of golf's own "
                         "architectures (name the model, or trust the file, to check)")
        return False
    build_model(cfg, state_dict, arch=model_spec, trust=trust_arch, notes=notes)
    return True


def write_artifact(out_path, data: bytes, report: dict, allow_over: bool, force: bool) -> dict:
    """Write an encoded artifact atomically, unless it is over budget (CheckFailed, no file)
    and `allow_over` is off. Returns the report with `over_budget` and `output` added."""
    from golfpack.fileio import atomic_write_bytes

    report["over_budget"] = report["headroom"] < 0
    if report["over_budget"] and not allow_over:
        check_budget(report)
    atomic_write_bytes(out_path, data, force=force)
    report["output"] = os.fspath(out_path)
    return report


def require_decoder_file(code_files) -> None:
    """`decoder=False` is only honest when a code file really carries a golf decoder."""
    from golfpack.accounting import read_source
    from golfpack.decoder import decoder_features

    if not any(decoder_features(read_source(f)) is not None for f in code_files):
        raise GolfError("none of the code files defines a golf decoder, so its bytes cannot "
                        "be left out (write one into the script with the bundle command)")


def count_decoder(report: dict, code: dict, code_files=(), included: bool = True) -> dict:
    """The code accounting with the decoder the artifact of `report` needs as its own row
    (or, when not included, with the code file that holds it checked)."""
    from golfpack.decoder import decoder_row, features_of_report

    return add_decoder(code, decoder_row(features_of_report(report), code["mode"], code_files,
                                         included))


def inspect_artifact(path, *, code_files=(), code_mode: str = "raw",
                     budget: int = DEFAULT_BUDGET, decoder: bool = True,
                     max_params: int = MAX_PARAMS) -> dict:
    """The accounting of an artifact from the file alone (every stream is verified),
    decoder included, and whether the arch it names is on the allow-list. Needs numpy and
    the codec libraries only."""
    from golfpack.archs import DEFAULT_ARCH, arch_trusted
    from golfpack.format.reader import load_artifact

    code = code_bytes(code_files, code_mode)
    if not decoder:
        require_decoder_file(code_files)
    art = load_artifact(path, max_params)
    report = art.report()
    report = with_budget(report, count_decoder(report, code, code_files, decoder), budget)
    arch = art.config.get("arch", DEFAULT_ARCH) if isinstance(art.config, dict) else None
    report["arch"] = arch
    report["arch_on_allow_list"] = arch_trusted(arch)  # False: a file naming foreign code
    return report


def unpack_artifact(path, out_path, force: bool = False, max_params: int = MAX_PARAMS) -> dict:
    """Artifact -> checkpoint of dequantized weights + config (golfpack.checkpoint format)."""
    from golfpack.artifact import load_artifact
    from golfpack.checkpoint import save
    from golfpack.fileio import refuse_existing, refuse_same_file

    refuse_same_file(path, out_path)
    refuse_existing(out_path, force)
    t0 = time.perf_counter()
    art = load_artifact(path, max_params)
    state = art.state_dict(original_dtypes=True)
    t1 = time.perf_counter()
    save(out_path, state, art.config, force=force)
    return {"artifact": os.fspath(path), "output": os.fspath(out_path), "tensors": len(state),
            "params": sum(int(t.numel()) for t in state.values()),
            "seconds": {"decode": round(t1 - t0, 3), "write": round(time.perf_counter() - t1, 3)}}


def order0_bytes(codes: np.ndarray) -> float:
    """Empirical order-0 entropy of a code stream, in bytes."""
    counts = np.bincount(np.asarray(codes, dtype=np.int64).ravel() + 128, minlength=256)
    counts = counts[counts > 0].astype(np.float64)
    n = counts.sum()
    return float(-(counts * np.log2(counts / n)).sum() / 8) if n else 0.0


def code_streams(qmodel) -> dict:
    """The artifact's code streams (golfpack.artifact.stream_groups, codes parts only):
    {name: (flat int8 codes, Layout, bits)}."""
    from golfpack.ans.fit import Layout
    from golfpack.artifact import matrix_shape, stream_groups

    out = {}
    for name, members in stream_groups(qmodel).items():
        parts = [p for _, _, p in members]
        if parts[0].coding == "codes":
            codes = np.concatenate([np.asarray(p.data).ravel() for p in parts])
            out[name] = (codes, Layout([matrix_shape(p.data) for p in parts]), parts[0].bits)
    return out


def bench_codecs(qmodel, codecs_to_run=("ans", "brotli", "zstd", "lzma", "zlib"),
                 on_step: OnStep = None) -> dict:
    """Every quantized code stream through every codec, side by side with its order-0
    entropy: {"streams": [...], "totals": {codec: {bytes, bits_per_weight, seconds}}}."""
    from golfpack.format.codecs import compress_general

    rows = []
    totals = {c: {"bytes": 0, "seconds": 0.0} for c in codecs_to_run}
    totals["order0"] = {"bytes": 0.0, "seconds": 0.0}
    n_total = 0
    for name, (codes, layout, bits) in code_streams(qmodel).items():
        if on_step:
            on_step(name)
        content = codes.tobytes()
        row = {"name": name, "codes": int(codes.size), "order0_bytes": order0_bytes(codes)}
        for c in codecs_to_run:
            t = time.perf_counter()
            if c == "ans":
                from golfpack.ans import codec as ansmodel
                size = len(ansmodel.encode(codes, layout, bits)[0])
            else:
                size = len(compress_general(c, content))
            dt = time.perf_counter() - t
            row[c] = {"bytes": size, "seconds": round(dt, 3)}
            totals[c]["bytes"] += size
            totals[c]["seconds"] += dt
        totals["order0"]["bytes"] += row["order0_bytes"]
        n_total += codes.size
        rows.append(row)
    for t in totals.values():
        t["bits_per_weight"] = 8.0 * t["bytes"] / n_total if n_total else 0.0
        t["vs_order0"] = t["bytes"] / totals["order0"]["bytes"] if totals["order0"]["bytes"] \
            else None
        t["seconds"] = round(t["seconds"], 3)
    return {"codes": n_total, "streams": rows, "totals": totals}


def bench_checkpoint(ckpt_path, *, scheme_spec: str | None = None, config=None,
                     progress: bool = False) -> dict:
    from golfpack.checkpoint import load
    from golfpack.quant.qmodel import quantize_state_dict

    state_dict, _ = load(ckpt_path, config)
    t = time.perf_counter()
    qmodel = quantize_state_dict(state_dict, scheme_spec)
    quantize_seconds = time.perf_counter() - t
    with step_bar(progress, "bench") as on_step:
        out = bench_codecs(qmodel, on_step=on_step)
    out["quantize_seconds"] = round(quantize_seconds, 3)
    out["scheme_spec"] = scheme_spec
    return out


__all__ = ["compress_state_dict", "compress_checkpoint", "inspect_artifact", "unpack_artifact",
           "bench_codecs", "bench_checkpoint", "order0_bytes", "CheckFailed"]
