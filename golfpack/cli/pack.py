"""`golfpack compress | unpack | bench`: thin click wrappers over golfpack.compress (inspect,
decoder and bundle, which need no torch, are in golfpack.cli.read)."""

from __future__ import annotations

import click

from golfpack.cli.hessian import hessian_options, hessian_requested, print_fit  # issue 4
from golfpack.cli.kit import NonEmptySpec, emit_json
from golfpack.cli.report import code_options, max_params_option, print_report
from golfpack.format.codecs import CHOICES
from golfpack.quant.scheme import DEFAULT_PASSTHROUGH, DEFAULT_SPEC

_SCHEME_HELP = (f"Scheme spec: PATTERN=SCHEME rules separated by ';', first match wins; "
                f"unmatched tensors fall back to the default '{DEFAULT_SPEC}'. Schemes: "
                "intN[:amax|pct(p)|gptq-lite|sdclip(k)][:matrix][:floor], fp16, fp32, raw.")


@click.command("compress")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Artifact file to write.")
@click.option("--scheme", "scheme_spec", type=NonEmptySpec(), default=None, help=_SCHEME_HELP)
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
            decoder=not no_decoder, model_spec=model_spec, trust_arch=trust_arch, **hessian)
    else:
        report = compress_checkpoint(
            checkpoint, output, scheme_spec=scheme_spec, codec=codec, code_files=code_files,
            code_mode=code_mode, tokenizer=tokenizer, budget=budget, force=force,
            allow_over=allow_over, config=config_path, progress=not as_json,
            model_spec=model_spec, trust_arch=trust_arch, decoder=not no_decoder)
    if as_json:
        emit_json(report)
    else:
        print_report(report)
        print_fit(report)  # issue 4: the fit's allocation, predicted vs actual bytes
        click.echo(f"wrote {output}")
        for note in report.get("notes") or []:  # in --json: report["notes"]
            click.echo(f"note: {note}", err=True)
    _note_kept_in_float(report)
    if report.get("over_budget"):
        click.echo(f"warning: over budget by {-report['headroom']:,} bytes (kept: --allow-over)",
                   err=True)


def _note_kept_in_float(report: dict) -> None:
    """Say which built-in rule kept matrices in float, when one did: on a small model the
    default @small=fp16 keeps every matrix fp16, which nothing else in the output explains."""
    kept = report.get("kept_in_float") or {}
    if not kept:
        return
    named = set(report.get("kept_by_passthrough") or [])
    params = {t["name"]: t["params"] for t in report.get("tensors", [])}
    total = sum(params.values()) or 1
    by_rule: dict[str, list[str]] = {}
    for name, rule in kept.items():
        by_rule.setdefault(rule, []).append(name)
    for rule, names in by_rule.items():
        share = sum(params.get(n, 0) for n in names) / total
        whose = "named by --scheme " if named.issuperset(names) else ""
        click.echo(f"note: {len(names)} matrices {whose}(e.g. {names[0]}; {share:.0%} of the "
                   f"params) stay in float under the default passthrough rule {rule} "
                   f"(the built-in {DEFAULT_PASSTHROUGH}); a spec with an @ rule of its own, "
                   "e.g. '@control=fp32;*=int6:gptq-lite', quantizes them", err=True)


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
@click.option("--scheme", "scheme_spec", type=NonEmptySpec(), default=None, help=_SCHEME_HELP)
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="Model config JSON (needed for plain torch.save state dicts).")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def bench_cmd(checkpoint, scheme_spec, config_path, as_json):
    """Run the quantized codes of CHECKPOINT through every codec, beside order-0 entropy.

    Slow by design on big models (brotli-11 and lzma-9 run on every full stream).
    """
    from golfpack.compress import bench_checkpoint

    out = bench_checkpoint(checkpoint, scheme_spec=scheme_spec, config=config_path,
                           progress=not as_json)
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
