"""The whole evaluation behind `golfeval score`: load the model and tokenizer, check them
against each other and the data, pick the byte source, score (and test-time train), and
return the report. The CLI only parses options and prints."""

from __future__ import annotations

import io
import math
import os
import sys

from golfpack.errors import GolfError, NonFiniteError


def default_batch(device_type: str) -> int:
    # CPU: one 1024-token window already keeps the cores busy and its activations stay in
    # cache (batch 4 is ~8% and batch 32 ~50% slower per window); GPU: fill the device.
    return 32 if device_type == "cuda" else 1


def final_label(mode: str, source: str) -> str:
    """The challenge-style label of the result line (so log parsers read it)."""
    if mode == "sliding":
        return "final_sliding_window_exact"
    return "final_roundtrip_exact" if source == "artifact" else "final_flat_exact"


def _sidecars_for(data, sidecar, no_sidecar: bool) -> list[str]:
    from golfeval.data.shards import find_sidecars

    if no_sidecar:
        return []
    if sidecar is not None:
        found = find_sidecars(sidecar) if os.path.isdir(sidecar) else [os.fspath(sidecar)]
        if not found or not all(os.path.isfile(p) for p in found):
            raise GolfError(f"{sidecar}: no byte sidecars (fineweb_val_bytes_*.bin) there")
        return found
    directory = data if os.path.isdir(data) else os.path.dirname(os.fspath(data)) or "."
    return find_sidecars(directory)


def _check_sidecar_shapes(shard_paths, sidecar_paths) -> None:
    from golfeval.data.shards import read_header

    if len(sidecar_paths) != len(shard_paths):
        raise GolfError(f"{len(sidecar_paths)} byte sidecar(s) for {len(shard_paths)} val "
                        "shard(s); they must pair up")
    for shard, side in zip(shard_paths, sidecar_paths, strict=True):
        if read_header(shard) != read_header(side):
            raise GolfError(f"{side} does not have one entry per token of {shard}")


def evaluate(*, artifact=None, checkpoint=None, data, tokenizer, mode="sliding",
             seq_len=1024, stride=64, batch=None, max_tokens=None, doc_isolation=False,
             model_spec=None, config=None, device="auto", per_token_path=None, force=False,
             sidecar=None, no_sidecar=False, compile_model=None, progress=False,
             warn=None, ttt=None) -> dict:
    """Load, check, score; returns the report (per-token file written on rank 0)."""
    from golfeval.data.bytetables import ByteTables, sidecar_target_bytes
    from golfeval.data.shards import find_shards, load_tokens
    from golfeval.score import distributed, modelio
    from golfeval.score.core import score_tokens

    warn = warn or (lambda msg: print(f"warning: {msg}", file=sys.stderr))
    if max_tokens is not None and max_tokens < 2:
        raise GolfError("--max-tokens must be at least 2 (one target)")
    if per_token_path is not None:
        _check_output(per_token_path, [artifact, checkpoint, tokenizer], force)
    ctx = distributed.init(device)
    try:
        loaded, tok_sha, tok_vocab = modelio.load_for_tokenizer(
            artifact=artifact, checkpoint=checkpoint, model_spec=model_spec, config=config,
            device=ctx.device, tokenizer=tokenizer, force=force, warn=warn)
        shard_paths = find_shards(data, "val")
        tokens = load_tokens(data, "val", max_tokens=max_tokens)
        hi = int(tokens.max()) if tokens.size else 0
        if hi >= loaded.vocab_size:
            raise GolfError(f"token id {hi} in {data} is outside the model's "
                            f"{loaded.vocab_size}-token vocabulary")
        sidecars = _sidecars_for(data, sidecar, no_sidecar)
        if sidecars:
            if max_tokens is None:
                _check_sidecar_shapes(shard_paths, sidecars)
            target_bytes, source = sidecar_target_bytes(sidecars, tokens.size), "sidecar"
        else:
            tables = ByteTables.from_tokenizer(tokenizer)
            target_bytes, source = tables.target_bytes(tokens), "tables"
        if compile_model is None:  # 2.9x on an H100; compiling costs seconds, not minutes
            compile_model = ctx.device.type == "cuda"
        if compile_model:
            modelio.compile_model(loaded.model)
        batch = batch or default_batch(ctx.device.type)
        result = score_tokens(loaded.model, tokens, target_bytes, mode=mode, seq_len=seq_len,
                              stride=stride, batch=batch, doc_isolation=doc_isolation,
                              device=ctx.device, rank=ctx.rank, world=ctx.world,
                              per_token=per_token_path is not None,
                              progress=progress and ctx.is_main)
        if result.bytes_sum == 0:
            raise GolfError("the scored targets hold no bytes; nothing to divide by")
        report = {
            **{k: v for k, v in result.to_dict().items()},
            "label": final_label(mode, loaded.source),
            "mode": mode, "seq_len": seq_len, "stride": stride if mode == "sliding" else None,
            "doc_isolation": doc_isolation, "batch": batch, "device": str(ctx.device),
            "amp": "bf16" if ctx.device.type == "cuda" else "off", "compiled": compile_model,
            "tokens": int(tokens.size), "bytes_source": source,
            "model": {"source": loaded.source, "path": loaded.path, "arch": loaded.arch,
                      "vocab_size": loaded.vocab_size},
            "tokenizer": {"path": os.fspath(tokenizer), "sha256": tok_sha,
                          "vocab_size": tok_vocab,
                          "matches_model": (None if not loaded.tokenizer_sha256
                                            else loaded.tokenizer_sha256 == tok_sha)},
            "is_main": ctx.is_main,
        }
        # --- test-time training (golfeval.ttt.settings): `result` above is the pre-TTT score ---
        if ttt is not None:
            from golfeval.ttt import settings as ttt_mod

            ttt = ttt_mod.resolve(ttt, ctx.device)
            result = ttt_mod.run_ttt(loaded.model, tokens, target_bytes, ttt,
                                     device=ctx.device, rank=ctx.rank, world=ctx.world,
                                     per_token=per_token_path is not None,
                                     progress=progress and ctx.is_main,
                                     doc_isolation=doc_isolation)
            report.update(ttt_mod.report_fields(pre=report, post=result, settings=ttt))
        # --- end test-time training ---
        for key in ("val_loss", "val_bpb"):  # the last guard: a NaN is never a score
            if not math.isfinite(report[key]):
                raise NonFiniteError(f"{key} is {report[key]}: the model's loss is not finite")
        if per_token_path is not None and ctx.is_main:
            _write_per_token(per_token_path, result.per_token_nats, target_bytes, force)
            report["per_token"] = os.fspath(per_token_path)
        return report
    finally:
        distributed.shutdown(ctx)


def _check_output(path, inputs, force: bool) -> None:
    from golfpack.fileio import refuse_existing, refuse_same_file

    for inp in inputs:
        if inp is not None and os.path.exists(inp):
            refuse_same_file(inp, path)
    refuse_existing(path, force)


def _write_per_token(path, nats, target_bytes, force: bool) -> None:
    import numpy as np

    from golfpack.fileio import atomic_write_bytes

    buf = io.BytesIO()
    np.savez(buf, nats=nats, bytes=np.asarray(target_bytes, dtype=np.int64))
    atomic_write_bytes(path, buf.getvalue(), force=force)
