"""`golfeval audit`: prove empirically that an evaluation mode is causal. Parses options,
calls golfeval.audit.run.audit_model, prints."""

from __future__ import annotations

import click

from golfeval.audit.run import DEFAULT_MAX_TOKENS, audit_model
from golfeval.cli.ttt_options import pop_ttt_options, refuse_stray_ttt_flags, ttt_options
from golfpack.cli.kit import NON_NEGATIVE_FLOAT, POSITIVE_INT, cli_text, emit_json
from golfpack.errors import CheckFailed


@click.command("audit")
@click.option("--artifact", type=click.Path(dir_okay=False), help=".golf artifact")
@click.option("--checkpoint", type=click.Path(dir_okay=False), help="checkpoint")
@click.option("--config", "config", type=click.Path(dir_okay=False),
              help="model config JSON for a plain state-dict checkpoint")
@click.option("--model", "model_spec", default=None, help="module:factory for the model")
@click.option("--data", required=True, type=click.Path(),
              help="directory of fineweb_val_*.bin shards, or a glob")
@click.option("--tokenizer", required=True, type=click.Path(dir_okay=False),
              help="sentencepiece .model (its byte tables count the random suffixes too)")
@click.option("--mode", required=True,
              help="evaluation mode to audit: flat, sliding, lora, sgd, phased, or any mode "
                   "registered with golfeval.audit.causality.register (see --plugin)")
@click.option("--plugin", "plugins", multiple=True,
              help="import this module (dotted name or .py file) first, so the modes it "
                   "registers can be audited; repeatable")
@click.option("--leak-checks/--no-leak-checks", default=True, show_default=True,
              help="normalization, target independence and (when claimed) document isolation")
@click.option("--sweeps", type=click.IntRange(min=0), default=None,
              help="normalization: positions whose every candidate next token is scored "
                   "(vocab-size evaluations of seq_len + 1 tokens each) [0 for modes with "
                   "whole distributions (flat, sliding), else 1]")
@click.option("--positions", type=POSITIVE_INT, default=8, show_default=True,
              help="cuts t to test (about half at document/chunk/block boundaries)")
@click.option("--max-tokens", default=DEFAULT_MAX_TOKENS, show_default=True,
              help="audit the first N validation tokens")
@click.option("--seq-len", type=POSITIVE_INT, default=1024, show_default=True,
              help="window length (LoRA: context inside a document)")
@click.option("--stride", type=POSITIVE_INT, default=64, show_default=True,
              help="sliding stride")
@click.option("--batch", type=POSITIVE_INT, default=4, show_default=True,
              help="windows (LoRA: documents) per forward")
@click.option("--doc-isolation", is_flag=True, help="flat/sliding/sgd: attention never "
              "crosses a BOS")
@ttt_options
@click.option("--device", default="cpu", show_default=True,
              help="cpu, or cuda (deterministic kernels are switched on, so the comparison "
                   "can stay bitwise)")
@click.option("--atol", type=NON_NEGATIVE_FLOAT, default=0.0, show_default=True,
              help="allowed absolute loss difference (0 = bit-identical)")
@click.option("--seed", default=0, show_default=True, help="random suffixes and cut choice")
@click.option("--threads", type=POSITIVE_INT, default=None,
              help="CPU threads (default: this process's share of the cores)")
@click.option("--force", is_flag=True, help="audit despite a tokenizer hash mismatch")
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
def audit(artifact, checkpoint, config, model_spec, data, tokenizer, mode, plugins,
          leak_checks, sweeps, positions, max_tokens, seq_len, stride, batch, doc_isolation,
          device, atol, seed, threads, force, as_json, **ttt_flags):
    """Prove an evaluation mode causal on real tokens.

    Scores the stream, then copies whose tokens after a cut t are random; the loss of
    every token at positions 1..t must not change (bit for bit on CPU). Also checks that
    each target is scored exactly once and that the bytes equal the tables' sum.

    Leak checks (on by default): normalization (the scored probabilities of every candidate
    next token sum to 1, float64, |sum - 1| <= 1e-6; whole distributions where the mode has
    them, plus --sweeps candidate sweeps for any mode), target independence (replacing the
    next token must not change the distribution that predicts it), and with
    --doc-isolation (or a mode that isolates documents, like lora) document isolation (a
    document's losses do not change when the previous document changes). Prints PASS or
    FAIL with the first offending position; exit 1 on FAIL.
    """
    from golfeval.audit.causality import check_mode, load_plugin
    from golfeval.ttt.settings import make_settings

    for name in plugins:
        load_plugin(name)
    check_mode(mode)
    if threads:
        from golfpack.threads import apply_thread_defaults

        apply_thread_defaults(threads)
    ttt = None
    ttt_opts = pop_ttt_options(ttt_flags)
    if mode in ("lora", "sgd", "phased"):
        ttt = make_settings(mode, seq_len=seq_len, stride=stride, batch=batch, **ttt_opts)
    else:
        refuse_stray_ttt_flags(ttt_opts, "--mode lora, sgd or phased (they apply to those "
                                         "modes)")

    def show(cut):
        if not as_json:
            state = "ok  " if cut.ok else "FAIL"
            extra = "" if cut.ok else f"  first violation at position {cut.first_violation:,}"
            click.echo(f"  cut {cut.cut:>10,} ({cut.source:8}) {state}{extra}")

    if not as_json:
        click.echo(f"auditing {mode}: base evaluation, then {positions} randomised suffixes")
    report, info = audit_model(
        artifact=artifact, checkpoint=checkpoint, config=config, model_spec=model_spec,
        data=data, tokenizer=tokenizer, mode=mode, positions=positions,
        max_tokens=max_tokens, seq_len=seq_len, stride=stride, batch=batch,
        doc_isolation=doc_isolation, device=device, seed=seed, atol=atol, ttt=ttt,
        force=force, on_cut=show, warn=lambda m: click.echo(f"warning: {cli_text(m)}", err=True),
        leaks=leak_checks, sweeps=sweeps)
    if as_json:
        emit_json({**report.to_dict(), **info})
    else:
        for c in report.checks:
            state = "skip" if c.skipped else ("ok  " if c.ok else "FAIL")
            click.echo(f"  {c.name:<22} {state} {c.detail}")
        verdict = "PASS" if report.passed else "FAIL"
        where = ("" if report.first_violation is None
                 else f": first violating position {report.first_violation:,}")
        click.echo(f"{verdict} {mode} on {report.tokens:,} tokens, {len(report.cuts)} cuts, "
                   f"{report.seconds:.1f} s{where}")
    if not report.passed:
        bad = [c.name for c in report.checks if not c.ok]
        what = (f"position {report.first_violation:,}" if report.first_violation is not None
                else ", ".join(bad) or "accounting")
        raise CheckFailed(f"audit of {mode} failed at {what}")
