"""`golfeval score` (exact bpb of an artifact or checkpoint) and `golfeval bytes` (check the
byte tables against the text). `evaluate` and `crosscheck_documents` do the work; the click
commands only parse options and print."""

from __future__ import annotations

import io
import os

import click

from golfeval.ttt import make_settings, ttt_options
from golfpack.clikit import emit_json
from golfpack.errors import CheckFailed, GolfError


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
    from golfeval.shards import find_sidecars

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
    from golfeval.shards import read_header

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
    from golfeval import distributed, modelio
    from golfeval.bytetables import ByteTables, sidecar_target_bytes
    from golfeval.score import score_tokens
    from golfeval.shards import find_shards, load_tokens
    from golfeval.tokenizer import file_sha256, load

    warn = warn or (lambda msg: click.echo(f"warning: {msg}", err=True))
    if max_tokens is not None and max_tokens < 2:
        raise GolfError("--max-tokens must be at least 2 (one target)")
    if per_token_path is not None:
        _check_output(per_token_path, [artifact, checkpoint, tokenizer], force)
    sp = load(tokenizer)
    tok_sha, tok_vocab = file_sha256(tokenizer), sp.vocab_size()
    ctx = distributed.init(device)
    try:
        loaded = modelio.load_model(artifact, checkpoint, model_spec, config, ctx.device)
        if loaded.tokenizer_sha256 and loaded.tokenizer_sha256 != tok_sha:
            msg = (f"{loaded.path} was made with tokenizer sha256 "
                   f"{loaded.tokenizer_sha256[:16]}... ({loaded.tokenizer_vocab} pieces), "
                   f"{tokenizer} is {tok_sha[:16]}... ({tok_vocab} pieces)")
            if not force:
                raise GolfError(msg + "; pass --force to score anyway")
            warn(msg)
        if loaded.vocab_size < tok_vocab:
            raise GolfError(f"model vocab {loaded.vocab_size} is smaller than the "
                            f"tokenizer's {tok_vocab}")
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
        # --- test-time training (golfeval.ttt): `result` above is the pre-TTT score ---
        if ttt is not None:
            from golfeval import ttt as ttt_mod

            ttt = ttt_mod.resolve(ttt, ctx.device)
            result = ttt_mod.run_ttt(loaded.model, tokens, target_bytes, ttt,
                                     device=ctx.device, rank=ctx.rank, world=ctx.world,
                                     per_token=per_token_path is not None,
                                     progress=progress and ctx.is_main,
                                     doc_isolation=doc_isolation)
            report.update(ttt_mod.report_fields(pre=report, post=result, settings=ttt))
        # --- end test-time training ---
        if per_token_path is not None and ctx.is_main:
            _write_per_token(per_token_path, result.per_token_nats, target_bytes, force)
            report["per_token"] = os.fspath(per_token_path)
        return report
    finally:
        distributed.shutdown(ctx)


def _check_output(path, inputs, force: bool) -> None:
    from golfpack.clikit import refuse_same_file

    for inp in inputs:
        if inp is not None and os.path.exists(inp):
            refuse_same_file(inp, path)
    if os.path.exists(path) and not force:
        raise GolfError(f"{path} exists; pass --force to overwrite it")


def _write_per_token(path, nats, target_bytes, force: bool) -> None:
    import numpy as np

    from golfpack.clikit import atomic_write_bytes

    buf = io.BytesIO()
    np.savez(buf, nats=nats, bytes=np.asarray(target_bytes, dtype=np.int64))
    atomic_write_bytes(path, buf.getvalue(), force=force)


def result_line(report: dict) -> str:
    return (f"{report['label']} val_loss:{report['val_loss']:.8f} "
            f"val_bpb:{report['val_bpb']:.8f}")


@click.command("score")
@click.option("--artifact", type=click.Path(dir_okay=False), help=".golf artifact to score")
@click.option("--checkpoint", type=click.Path(dir_okay=False),
              help="checkpoint (safetensors with config, or torch.save state dict + --config)")
@click.option("--config", "config", type=click.Path(dir_okay=False),
              help="model config JSON for a plain state-dict checkpoint")
@click.option("--data", required=True, type=click.Path(),
              help="directory of fineweb_val_*.bin shards, or a glob")
@click.option("--tokenizer", required=True, type=click.Path(dir_okay=False),
              help="sentencepiece .model the data was made with")
@click.option("--mode", type=click.Choice(["flat", "sliding"]), default="sliding",
              show_default=True, help="flat blocks (tail dropped) or sliding windows")
@click.option("--seq-len", default=1024, show_default=True, help="window length L")
@click.option("--stride", default=64, show_default=True,
              help="sliding stride S: later windows score their last S targets")
@click.option("--batch", type=int, default=None,
              help="windows per forward (default 1 on CPU, 32 on CUDA); never changes results")
@click.option("--max-tokens", type=int, default=None, help="score only the first N tokens")
@click.option("--doc-isolation", is_flag=True, help="attention never crosses a BOS")
@click.option("--model", "model_spec", default=None,
              help="module:factory building the model from the config dict")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda or auto")
@click.option("--per-token", "per_token_path", type=click.Path(dir_okay=False),
              help="write .npz with per-target `nats` (NaN if unscored) and `bytes`")
@click.option("--sidecar", type=click.Path(),
              help="byte sidecar file or directory (default: any in the data directory)")
@click.option("--no-sidecar", is_flag=True, help="use the tokenizer's byte tables even if "
              "sidecars sit beside the data")
@click.option("--compile/--no-compile", "compile_model", default=None,
              help="torch.compile the model body (default: on for CUDA, off for CPU)")
@click.option("--threads", type=int, default=None, help="CPU threads (torch.set_num_threads)")
@click.option("--force", is_flag=True,
              help="score despite a tokenizer hash mismatch; overwrite --per-token")
@click.option("--ttt", type=click.Choice(["lora", "sgd"]), default=None,
              help="then score again with score-first test-time training (--mode is the "
                   "pre-TTT reference; see docs/ttt.md)")
@ttt_options
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
def score(artifact, checkpoint, config, data, tokenizer, mode, seq_len, stride, batch,
          max_tokens, doc_isolation, model_spec, device, per_token_path, sidecar, no_sidecar,
          compile_model, threads, force, as_json, ttt, ttt_rank, ttt_chunk, ttt_lr,
          ttt_epochs, ttt_targets):
    """Score a model in exact bits per byte on validation shards.

    Every target from the second token on is scored exactly once in sliding mode; the
    same command runs on K ranks under `torchrun --nproc_per_node=K -m golfeval.score`.
    Prints the challenge-style `final_..._exact val_loss:... val_bpb:...` line.
    """
    if ttt is None and any(v is not None for v in (ttt_rank, ttt_chunk, ttt_lr, ttt_epochs,
                                                   ttt_targets)):
        raise GolfError("--ttt-* options need --ttt lora or --ttt sgd")
    if threads:
        import torch

        torch.set_num_threads(threads)
    report = evaluate(artifact=artifact, checkpoint=checkpoint, data=data,
                      tokenizer=tokenizer, mode=mode, seq_len=seq_len, stride=stride,
                      batch=batch, max_tokens=max_tokens, doc_isolation=doc_isolation,
                      model_spec=model_spec, config=config, device=device,
                      per_token_path=per_token_path, force=force, sidecar=sidecar,
                      no_sidecar=no_sidecar, compile_model=compile_model,
                      progress=not as_json,
                      ttt=None if ttt is None else make_settings(
                          ttt, rank=ttt_rank, chunk=ttt_chunk, lr=ttt_lr, epochs=ttt_epochs,
                          targets=ttt_targets, seq_len=seq_len, stride=stride,
                          batch=batch if ttt == "sgd" else None))
    if not report.pop("is_main"):
        return
    if as_json:
        emit_json({**report, "line": result_line(report)})
        return
    m = report["model"]
    click.echo(f"model   {m['source']} {m['path']} ({m['arch']}, vocab {m['vocab_size']})")
    click.echo(f"data    {report['tokens']:,} tokens, bytes from {report['bytes_source']}")
    stride_txt = f", stride {report['stride']}" if report["stride"] else ""
    iso = ", doc isolation" if report["doc_isolation"] else ""
    click.echo(f"plan    {report['mode']}, seq_len {report['seq_len']}{stride_txt}{iso}: "
               f"{report['windows']:,} windows, batch {report['batch']}, "
               f"{report['ranks']} rank(s) on {report['device']}")
    # with --ttt, `seconds` and the rate are the TTT pass's; this line is the plain pass
    plain_s = report.get("pre_ttt_seconds", report["seconds"])
    click.echo(f"scored  {report['scored_tokens']:,} of {report['targets']:,} targets, "
               f"{report['bytes']:,} bytes in {plain_s:.1f} s "
               f"({report['scored_tokens'] / max(plain_s, 1e-9):,.0f} tokens/s)")
    if "ttt" in report:
        click.echo(f"ttt     {report['ttt']['kind']}: pre-TTT val_bpb "
                   f"{report['pre_ttt_bpb']:.8f} -> {report['val_bpb']:.8f} "
                   f"({report['ttt_gain_bpb']:+.5f}) in {report['ttt_seconds']:.1f} s")
    if "per_token" in report:
        click.echo(f"wrote   {report['per_token']}")
    click.echo(result_line(report))


@click.command("bytes")
@click.option("--tokenizer", required=True, type=click.Path(dir_okay=False),
              help="sentencepiece .model")
@click.option("--docs", required=True, type=click.Path(dir_okay=False),
              help='JSONL documents, one {"text": ...} per line')
@click.option("--max-docs", type=int, default=None, help="check only the first N documents")
@click.option("--show", default=20, show_default=True, help="mismatches to list")
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
def bytes_cmd(tokenizer, docs, max_docs, show, as_json):
    """Check the tokenizer's byte tables against the text: per document, the bytes the
    tables give its BOS-prefixed tokens vs the UTF-8 length of the normalized text.

    Exit 1 when any document differs; 2 when the tokenizer is refused.
    """
    from golfeval.bytetables import crosscheck_documents

    r = crosscheck_documents(tokenizer, docs, max_docs=max_docs)
    if as_json:
        emit_json(r.to_dict(limit=show))
    else:
        click.echo(f"documents            {r.documents:,} ({r.tokens:,} tokens with BOS)")
        click.echo(f"bytes by tables      {r.table_bytes:,}")
        click.echo(f"normalized UTF-8     {r.normalized_bytes:,}")
        click.echo(f"raw UTF-8            {r.raw_bytes:,} "
                   f"(the normalizer changes {r.raw_bytes - r.normalized_bytes:+,})")
        click.echo(f"mismatched documents {len(r.mismatches):,}")
        for d in r.mismatches[:show]:
            click.echo(f"  line {d.line}: tables {d.table_bytes:,}, normalized text "
                       f"{d.normalized_bytes:,} ({d.table_bytes - d.normalized_bytes:+,})")
    if r.mismatches:
        raise CheckFailed(f"{len(r.mismatches)} document(s) where the tables miscount bytes")
