"""`golfpack inspect | decoder | bundle`: thin click wrappers that need no torch."""

from __future__ import annotations

import click

from golfpack.accounting import CODE_MODES
from golfpack.cli.kit import emit_json
from golfpack.cli.report import code_options, max_params_option, print_report


@click.command("inspect")
@click.argument("artifact", type=click.Path(dir_okay=False))
@code_options
@max_params_option
@click.option("--plot", type=click.Path(dir_okay=False), default=None,
              help="Write a PNG of bytes per tensor family stacked up to the cap.")
@click.option("--force", is_flag=True, help="Overwrite an existing --plot file.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def inspect_cmd(artifact, code_files, code_mode, budget, no_decoder, max_params, plot, force,
                as_json):
    """Account an artifact from the file alone: header, streams, bytes and bits per tensor,
    and the decoder a submission needs to read it (counted as code).

    Every stream's checksum is verified and ans streams are decoded for exact per-tensor
    attribution; header + tensor bytes always add up to the file size.
    """
    from golfpack.compress import inspect_artifact

    if plot:
        from golfpack.fileio import refuse_existing, refuse_same_file

        refuse_same_file(artifact, plot)
        refuse_existing(plot, force)
    report = inspect_artifact(artifact, code_files=code_files, code_mode=code_mode,
                              budget=budget, decoder=not no_decoder, max_params=max_params)
    if plot:
        from golfpack.cli.plot import plot_report

        plot_report(report, plot, force=force)
        report["plot"] = plot
    if as_json:
        emit_json(report)
    else:
        print_report(report)
        if not report.get("arch_on_allow_list", True):
            click.echo(f"warning: the artifact names architecture {report['arch']!r}, not "
                       "one of golf's own: scoring it needs --model (or --trust-arch)",
                       err=True)


@click.command("decoder")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Python file to write (e.g. golf_decode.py).")
@click.option("--for", "artifact", type=click.Path(dir_okay=False), default=None,
              help="Hold only what this artifact needs (its codecs, transforms, entry kinds).")
@click.option("--code-mode", type=click.Choice(CODE_MODES), default="raw", show_default=True,
              help="raw: readable source; minified: a self-extracting wrapper (smallest).")
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
@click.option("--json", "as_json", is_flag=True, help="Print a summary as JSON.")
def decoder_cmd(output, artifact, code_mode, force, as_json):
    """Write a standalone decoder: one Python file needing only numpy, torch and the codec
    libraries used, never golfpack. `from golf_decode import load; sd, config =
    load("model.golf")` gives exactly the tensors `golfpack unpack` writes.
    """
    from golfpack.decoder import write_decoder

    out = write_decoder(output, artifact, code_mode, force)
    if as_json:
        emit_json(out)
    else:
        click.echo(f"wrote {output}: {out['bytes']:,} bytes ({code_mode}; "
                   f"{', '.join(out['features'])})")


@click.command("bundle")
@click.argument("script", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="The one file to submit (e.g. train_gpt.py).")
@click.option("--artifact", type=click.Path(dir_okay=False), default=None,
              help="Prune the decoder to what this artifact needs.")
@click.option("--code-mode", type=click.Choice(CODE_MODES), default="raw", show_default=True,
              help="raw: script verbatim + decoder prelude; minified: one self-extracting "
                   "wrapper of both.")
@click.option("--whole-modules", is_flag=True,
              help="Carry every golf module the script imports, whole, instead of only the "
                   "functions it calls.")
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
@click.option("--json", "as_json", is_flag=True, help="Print a summary as JSON.")
def bundle_cmd(script, output, artifact, code_mode, whole_modules, force, as_json):
    """Write SCRIPT and the golf decoder as one submittable file. SCRIPT reads its artifact
    with `from golf_decode import load`; running the bundle behaves like running SCRIPT, and
    its size is what `golfpack compress --code OUTPUT --no-decoder` counts. The golf code
    SCRIPT calls (encoder, scorer) is carried inside it: the functions, classes and
    constants it reaches, or whole modules with --whole-modules.
    """
    from golfpack.bundle import write_bundle

    out = write_bundle(script, output, artifact, code_mode, force,
                       whole_modules=whole_modules)
    if as_json:
        emit_json(out)
    else:
        parts = ", ".join(f"{k} {v:,}" for k, v in out["parts"].items())
        click.echo(f"wrote {output}: {out['bytes']:,} bytes ({code_mode}: {parts})")
        for pkg, row in out["golf_packages"].items():
            click.echo(f"carried {pkg}: {row['modules']} modules, {row['raw_bytes']:,} B "
                       f"source, {row['bytes']:,} B in the bundle ({out['golf_pruning']})")
