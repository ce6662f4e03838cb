"""`golfpack compress | inspect | unpack | bench`: thin click wrappers over golfpack.compress."""

from __future__ import annotations

import click

from golfpack.accounting import CODE_MODES, DEFAULT_BUDGET
from golfpack.cli.hessian import hessian_options, hessian_requested, print_fit  # issue 4
from golfpack.cli.kit import NonEmptySpec, emit_json
from golfpack.format.codecs import CHOICES
from golfpack.quant.scheme import DEFAULT_PASSTHROUGH, DEFAULT_SPEC

_SCHEME_HELP = (f"Scheme spec: PATTERN=SCHEME rules separated by ';', first match wins; "
                f"unmatched tensors fall back to the default '{DEFAULT_SPEC}'. Schemes: "
                "intN[:amax|pct(p)|gptq-lite|sdclip(k)][:matrix][:floor], fp16, fp32, raw.")


def _code_options(f):
    f = click.option("--code-mode", type=click.Choice(CODE_MODES), default="raw",
                     show_default=True,
                     help="raw: UTF-8 bytes of each --code file; minified: size of a "
                          "self-extracting minify+lzma/brotli+base85 wrapper.")(f)
    f = click.option("--code", "code_files", multiple=True, type=click.Path(dir_okay=False),
                     help="Code file counted against the budget (repeatable).")(f)
    f = click.option("--budget", type=click.IntRange(min=0), default=DEFAULT_BUDGET,
                     show_default=True, help="Byte cap for code + artifact (decimal).")(f)
    return f


def _print_report(r: dict, top: int = 12) -> None:
    click.echo(f"model  {r['model_bytes']:>12,} bytes  ({r['bits_per_param']:.3f} bits/param over "
               f"{r['params']:,} params; header {r['header_bytes']:,})")
    click.echo(f"code   {r['code_bytes']:>12,} bytes  ({r.get('code', {}).get('mode', 'raw')})")
    click.echo(f"total  {r['total_bytes']:>12,} bytes  budget {r['budget']:,}  "
               f"headroom {r['headroom']:,}")
    click.echo("streams:")
    for s in r["streams"]:
        how = s["codec"] + ("" if s["transform"] == "none" else f"+{s['transform']}")
        click.echo(f"  {s['name']:<48} {how:<15} {s['raw_bytes']:>11,} -> {s['bytes']:>11,}")
    big = sorted(r["tensors"], key=lambda t: -t["bytes"])[:top]
    click.echo(f"largest tensors (of {len(r['tensors'])}):")
    for t in big:
        mse = "" if t.get("rel_mse") is None else f"  rel_mse {t['rel_mse']:.2e}"
        click.echo(f"  {t['name']:<36} {t['scheme']:<18} {t['params']:>10,} params "
                   f"{t['bytes']:>10,} B {t['bits_per_param']:6.3f} b/p{mse}")


@click.command("compress")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Artifact file to write.")
@click.option("--scheme", "scheme_spec", type=NonEmptySpec(), default=None, help=_SCHEME_HELP)
@click.option("--codec", type=click.Choice(CHOICES), default="auto", show_default=True,
              help="Codec for every stream; auto picks the smallest per stream.")
@click.option("--tokenizer", type=click.Path(dir_okay=False), default=None,
              help="sentencepiece model whose sha256 and vocab size go into the header.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="Model config JSON (needed for plain torch.save state dicts).")
@_code_options
@click.option("--allow-over", is_flag=True, help="Write the artifact even when over budget.")
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@hessian_options  # issue 4: --gptq / --fit / --calib ... (golfpack.cli.hessian)
def compress_cmd(checkpoint, output, scheme_spec, codec, tokenizer, config_path, code_files,
                 code_mode, budget, allow_over, force, as_json, **hessian):
    """Quantize CHECKPOINT and write an exactly accounted artifact.

    Exit 1 (and no file) when code + artifact exceed --budget, unless --allow-over.
    """
    from golfpack.compress import compress_checkpoint

    if hessian_requested(**hessian):  # issue 4: calibrate, then GPTQ or fit to budget
        from golfpack.hessian.pipeline import compress_with_hessians

        report = compress_with_hessians(
            checkpoint, output, scheme_spec=scheme_spec, codec=codec, tokenizer=tokenizer,
            config_path=config_path, code_files=code_files, code_mode=code_mode, budget=budget,
            allow_over=allow_over, force=force, progress=not as_json, **hessian)
    else:
        report = compress_checkpoint(
            checkpoint, output, scheme_spec=scheme_spec, codec=codec, code_files=code_files,
            code_mode=code_mode, tokenizer=tokenizer, budget=budget, force=force,
            allow_over=allow_over, config=config_path, progress=not as_json)
    if as_json:
        emit_json(report)
    else:
        _print_report(report)
        print_fit(report)  # issue 4: the fit's allocation, predicted vs actual bytes
        click.echo(f"wrote {output}")
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


@click.command("inspect")
@click.argument("artifact", type=click.Path(dir_okay=False))
@_code_options
@click.option("--plot", type=click.Path(dir_okay=False), default=None,
              help="Write a PNG of bytes per tensor family stacked up to the cap.")
@click.option("--force", is_flag=True, help="Overwrite an existing --plot file.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def inspect_cmd(artifact, code_files, code_mode, budget, plot, force, as_json):
    """Account an artifact from the file alone: header, streams, bytes and bits per tensor.

    Every stream's checksum is verified and ans streams are decoded for exact per-tensor
    attribution; header + tensor bytes always add up to the file size.
    """
    from golfpack.compress import inspect_artifact

    if plot:
        from golfpack.fileio import refuse_existing, refuse_same_file

        refuse_same_file(artifact, plot)
        refuse_existing(plot, force)
    report = inspect_artifact(artifact, code_files=code_files, code_mode=code_mode,
                              budget=budget)
    if plot:
        from golfpack.cli.plot import plot_report

        plot_report(report, plot, force=force)
        report["plot"] = plot
    if as_json:
        emit_json(report)
    else:
        _print_report(report)


@click.command("unpack")
@click.argument("artifact", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Checkpoint (safetensors + config) to write.")
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
@click.option("--json", "as_json", is_flag=True, help="Print a summary as JSON.")
def unpack_cmd(artifact, output, force, as_json):
    """Write the dequantized weights and config of ARTIFACT as a checkpoint."""
    from golfpack.compress import unpack_artifact

    out = unpack_artifact(artifact, output, force)
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
