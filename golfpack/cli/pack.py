"""`golfpack compress | unpack | bench`: thin click wrappers over golfpack.compress (inspect,
decoder and bundle, which need no torch, are in golfpack.cli.read)."""

from __future__ import annotations

import click

from golfpack.cli.hessian import hessian_options, hessian_requested, print_fit  # issue 4
from golfpack.cli.kit import emit_json
from golfpack.cli.report import code_options, max_params_option, print_report, progress_bar
from golfpack.format.codecs import CHOICES
from golfpack.quant.scheme import DEFAULT_SPEC

_SCHEME_HELP = (f"Scheme spec: PATTERN=SCHEME rules separated by ';', first match wins; "
                f"unmatched tensors fall back to the default '{DEFAULT_SPEC}'. Schemes: "
                "intN[:amax|pct(p)|gptq-lite|sdclip(k)][:matrix][:floor], fp16, fp32, raw.")


@click.command("compress")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Artifact file to write.")
@click.option("--scheme", "scheme_spec", default=None, help=_SCHEME_HELP)
@click.option("--codec", type=click.Choice(CHOICES), default="auto", show_default=True,
              help="Codec for every stream; auto picks the smallest per stream, net of the "
                   "decoder code each codec adds (counted unless --no-decoder).")
@click.option("--tokenizer", type=click.Path(dir_okay=False), default=None,
              help="sentencepiece model whose sha256 and vocab size go into the header.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="Model config JSON (needed for plain torch.save state dicts).")
@code_options
@click.option("--allow-over", is_flag=True, help="Write the artifact even when over budget.")
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--model", "model_spec", default=None,
              help="Model the weights are for (module:factory or PATH/train_gpt.py:GPT); "
                   "built to check the weights fit, and recorded as the artifact's arch.")
@click.option("--trust-arch", is_flag=True,
              help="Build the arch the checkpoint names even if it is not golf's own.")
@hessian_options  # issue 4: --gptq / --fit / --calib ... (golfpack.cli.hessian)
def compress_cmd(checkpoint, output, scheme_spec, codec, tokenizer, config_path, code_files,
                 code_mode, budget, no_decoder, allow_over, force, as_json, model_spec,
                 trust_arch, **hessian):
    """Quantize CHECKPOINT and write an exactly accounted artifact.

    Exit 1 (and no file) when code + artifact exceed --budget, unless --allow-over.
    """
    from golfpack.compress import compress_checkpoint

    if hessian_requested(**hessian):  # issue 4: calibrate, then GPTQ or fit to budget
        from golfpack.hessian.pipeline import compress_with_hessians

        report = compress_with_hessians(
            checkpoint, output, scheme_spec=scheme_spec, codec=codec, tokenizer=tokenizer,
            config_path=config_path, code_files=code_files, code_mode=code_mode, budget=budget,
            allow_over=allow_over, force=force, progress=not as_json,
            decoder=not no_decoder, **hessian)
    else:
        step, bar = progress_bar(not as_json, desc="compress")
        try:
            report = compress_checkpoint(checkpoint, output, scheme_spec, codec, code_files,
                                         code_mode, tokenizer, budget, force, allow_over,
                                         config_path, step, model_spec, trust_arch,
                                         not no_decoder)
        finally:
            if bar is not None:
                bar.close()
    if as_json:
        emit_json(report)
    else:
        print_report(report)
        print_fit(report)  # issue 4: the fit's allocation, predicted vs actual bytes
        click.echo(f"wrote {output}")
        for note in report.get("notes") or []:  # in --json: report["notes"]
            click.echo(f"note: {note}", err=True)
    kept = report.get("kept_by_passthrough") or []
    if kept:
        click.echo(f"note: {len(kept)} tensor(s) named by --scheme (e.g. {kept[0]}) stay in "
                   "float under the default passthrough (@control=fp32;@small=fp16); a spec "
                   "with an @ rule of its own, e.g. '@control=fp32;*=int6', quantizes them",
                   err=True)
    if report.get("over_budget"):
        click.echo(f"warning: over budget by {-report['headroom']:,} bytes (kept: --allow-over)",
                   err=True)


@click.command("unpack")
@click.argument("artifact", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Checkpoint (safetensors + config) to write.")
@max_params_option
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
@click.option("--json", "as_json", is_flag=True, help="Print a summary as JSON.")
def unpack_cmd(artifact, output, max_params, force, as_json):
    """Write the dequantized weights and config of ARTIFACT as a checkpoint."""
    from golfpack.compress import unpack_artifact

    out = unpack_artifact(artifact, output, force, max_params)
    if as_json:
        emit_json(out)
    else:
        click.echo(f"wrote {output}: {out['tensors']} tensors, {out['params']:,} params "
                   f"({out['seconds']['decode']:.2f} s decode)")


@click.command("bench")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--scheme", "scheme_spec", default=None, help=_SCHEME_HELP)
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="Model config JSON (needed for plain torch.save state dicts).")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def bench_cmd(checkpoint, scheme_spec, config_path, as_json):
    """Run the quantized codes of CHECKPOINT through every codec, beside order-0 entropy.

    Slow by design on big models (brotli-11 and lzma-9 run on every full stream).
    """
    from golfpack.compress import bench_checkpoint

    step, bar = progress_bar(not as_json, desc="bench")
    try:
        out = bench_checkpoint(checkpoint, scheme_spec, config_path, step)
    finally:
        if bar is not None:
            bar.close()
    if as_json:
        emit_json(out)
        return
    click.echo(f"{out['codes']:,} codes; order-0 entropy {out['totals']['order0']['bytes']:,.0f} B")
    click.echo(f"{'codec':<8} {'bytes':>12} {'bits/w':>8} {'x order0':>9} {'seconds':>8}")
    if not out["codes"]:
        click.echo("no quantized tensors under this scheme (all passthrough)")
        return
    for name, t in sorted(out["totals"].items(), key=lambda kv: kv[1]["bytes"]):
        click.echo(f"{name:<8} {t['bytes']:>12,.0f} {t['bits_per_weight']:>8.4f} "
                   f"{t['vs_order0']:>9.4f} {t['seconds']:>8.2f}")
