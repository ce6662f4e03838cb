"""`golfeval score` (exact bpb of an artifact or checkpoint) and `golfeval bytes` (check the
byte tables against the text): parse options, call golfeval.score.evaluate.evaluate or
golfeval.data.bytetables.crosscheck_documents, print."""

from __future__ import annotations

import click

from golfeval.cli.ttt_options import pop_ttt_options, refuse_stray_ttt_flags, ttt_options
from golfeval.score.evaluate import evaluate
from golfeval.ttt.settings import make_settings
from golfpack.cli.kit import POSITIVE_FLOAT, POSITIVE_INT, emit_json
from golfpack.errors import CheckFailed


def result_line(report: dict) -> str:
    return (f"{report['label']} val_loss:{report['val_loss']:.8f} "
            f"val_bpb:{report['val_bpb']:.8f}")


@click.command("score")
@click.option("--artifact", type=click.Path(dir_okay=False),
              help=".golf artifact to score, or a challenge .ptz (the baseline's int8+zlib, "
                   "the records' int6/int8 under lzma/brotli/zstd)")
@click.option("--checkpoint", type=click.Path(dir_okay=False),
              help="checkpoint: safetensors with config, or a torch.save state dict (the "
                   "baseline's architecture is inferred from it; else --config)")
@click.option("--config", "config", type=click.Path(dir_okay=False),
              help="model config JSON for a plain state-dict checkpoint")
@click.option("--data", required=True, type=click.Path(),
              help="directory of fineweb_val_*.bin shards, or a glob")
@click.option("--tokenizer", required=True, type=click.Path(dir_okay=False),
              help="sentencepiece .model the data was made with")
@click.option("--mode", type=click.Choice(["flat", "sliding", "sliding-record"]),
              default="sliding", show_default=True,
              help="flat blocks (tail dropped), sliding windows, or sliding-record: the "
                   "records' sliding rule (flaws included) beside the exact sliding score")
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
              help="the model to build: module:factory, or PATH/train_gpt.py:GPT (a "
                   "competitor's script, imported without running its training; "
                   "docs/scoring.md)")
@click.option("--trust-arch", is_flag=True,
              help="build the architecture the file names even when it is not one of "
                   "golf's own (a file never picks code to run without this)")
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
@click.option("--ttt", type=click.Choice(["lora", "sgd", "phased"]), default=None,
              help="then score again with score-first test-time training (--mode is the "
                   "pre-TTT reference; see docs/ttt.md)")
@ttt_options
@click.option("--eval-budget", type=POSITIVE_FLOAT, default=None, metavar="SECONDS",
              help="exit 1 when the whole evaluation (loading, warm-up, scoring, TTT) takes "
                   "longer, e.g. 600")
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
def score(artifact, checkpoint, config, data, tokenizer, mode, seq_len, stride, batch,
          max_tokens, doc_isolation, model_spec, device, per_token_path, sidecar, no_sidecar,
          compile_model, threads, force, as_json, trust_arch, ttt, eval_budget,
          **ttt_flags):
    """Score a model in exact bits per byte on validation shards.

    Every target from the second token on is scored exactly once in sliding mode; the
    same command runs on K ranks under `torchrun --nproc_per_node=K -m golfeval.score`.
    Prints the challenge-style `final_..._exact val_loss:... val_bpb:...` line.
    """
    ttt_opts = pop_ttt_options(ttt_flags)
    if ttt is None:
        refuse_stray_ttt_flags(ttt_opts, "--ttt lora, sgd or phased")
    if threads:
        from golfpack.threads import apply_thread_defaults

        apply_thread_defaults(threads)
    report = evaluate(artifact=artifact, checkpoint=checkpoint, data=data,
                      tokenizer=tokenizer, mode=mode, seq_len=seq_len, stride=stride,
                      batch=batch, max_tokens=max_tokens, doc_isolation=doc_isolation,
                      model_spec=model_spec, config=config, device=device,
                      per_token_path=per_token_path, force=force, sidecar=sidecar,
                      no_sidecar=no_sidecar, compile_model=compile_model,
                      progress=not as_json, trust_arch=trust_arch,
                      eval_budget=eval_budget,
                      ttt=None if ttt is None else make_settings(
                          ttt, seq_len=seq_len, stride=stride,
                          batch=batch if ttt == "sgd" else None, **ttt_opts))
    if not report.pop("is_main"):
        return
    if as_json:
        emit_json({**report, "line": result_line(report)})
        _check_budget(report)
        return
    m = report["model"]
    click.echo(f"model   {m['source']} {m['path']} ({m['arch']}, vocab {m['vocab_size']})")
    for note in m.get("notes") or []:
        click.echo(f"note    {note}")
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
    rc = report.get("record_comparison")
    if rc:
        click.echo(f"record  the records' sliding rule: {rc['record_bpb']:.8f} bpb; exact "
                   f"sliding {rc['exact_bpb']:.8f}; difference {rc['difference_bpb']:+.8f} "
                   f"({rc['double_counted_positions']:,} positions counted more than once, "
                   f"up to {rc['max_times_counted']}x; {rc['trimmed_targets']:,} tail targets "
                   "trimmed)")
    t = report["timing"]
    budget = ("" if report.get("eval_budget") is None else
              f" of a {report['eval_budget']:g} s budget "
              f"({'within' if report['within_budget'] else 'EXCEEDED'})")
    click.echo(f"time    {report['eval_seconds']:.1f} s in all{budget}: start-up "
               f"{t['startup_s']:.1f}, load {t['load_s']:.1f}, data {t['data_s']:.1f}, "
               f"warm-up {t['warmup_s']:.1f}, "
               f"score {t['score_s']:.1f}, TTT {t['ttt_s']:.1f}")
    click.echo(result_line(report))
    _check_budget(report)


def _check_budget(report: dict) -> None:
    if report.get("within_budget") is False:
        raise CheckFailed(f"the evaluation took {report['eval_seconds']:.1f} s, over the "
                          f"{report['eval_budget']:g} s budget")


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
