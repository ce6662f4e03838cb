"""`golfeval score` (exact bpb of an artifact or checkpoint) and `golfeval bytes` (check the
byte tables against the text): parse options, call golfeval.score.evaluate.evaluate or
golfeval.data.bytetables.crosscheck_documents, print."""

from __future__ import annotations

import click

from golfeval.cli.ttt_options import refuse_stray_ttt_flags, ttt_options
from golfeval.score.evaluate import evaluate
from golfeval.ttt.settings import make_settings
from golfpack.cli.kit import POSITIVE_INT, emit_json
from golfpack.errors import CheckFailed


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
@click.option("--seq-len", type=POSITIVE_INT, default=1024, show_default=True,
              help="window length L")
@click.option("--stride", type=POSITIVE_INT, default=64, show_default=True,
              help="sliding stride S: later windows score their last S targets")
@click.option("--batch", type=POSITIVE_INT, default=None,
              help="windows per forward (default 1 on CPU, 32 on CUDA); never changes results")
@click.option("--max-tokens", type=click.IntRange(min=2), default=None,
              help="score only the first N tokens")
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
@click.option("--threads", type=POSITIVE_INT, default=None,
              help="CPU threads of this process (default: its share of the cores)")
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
    if ttt is None:
        refuse_stray_ttt_flags(locals(), "--ttt lora or --ttt sgd")
    if threads:
        from golfpack.threads import apply_thread_defaults

        apply_thread_defaults(threads)
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
@click.option("--max-docs", type=POSITIVE_INT, default=None,
              help="check only the first N documents")
@click.option("--show", type=click.IntRange(min=0), default=20, show_default=True,
              help="mismatches to list")
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
def bytes_cmd(tokenizer, docs, max_docs, show, as_json):
    """Check the tokenizer's byte tables against the text: per document, the bytes the
    tables give its BOS-prefixed tokens vs the UTF-8 length of the normalized text.

    Exit 1 when any document differs; 2 when the tokenizer is refused.
    """
    from golfeval.data.bytetables import crosscheck_documents

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
