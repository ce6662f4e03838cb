"""The Hessian options of `golfpack compress` (--gptq, --fit, --calib ...) and the run they
select; pack_cli's compress command applies `hessian_options` and hands over to
`compress_with_hessians` when --gptq or --fit is given."""

from __future__ import annotations

import os

import click

from golfpack.errors import GolfError


def _bits(ctx, param, value):
    try:
        bits = tuple(sorted({int(b) for b in value.split(",") if b.strip()}))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of widths") from None
    if not bits or bits[0] < 2 or bits[-1] > 8:
        raise click.BadParameter("widths must lie in 2..8")
    return bits


def hessian_options(f):
    opts = [
        click.option("--fit", is_flag=True,
                     help="Choose each calibrated matrix's width (--fit-bits) and clip to fill "
                          "--budget (code + artifact) within --fit-tol, with full GPTQ."),
        click.option("--gptq", is_flag=True,
                     help="Full Hessian GPTQ with the --scheme widths and clips."),
        click.option("--calib", default=None, metavar="DIR|GLOB|self",
                     help="Calibration tokens: train shards (validation shards are refused) or "
                          "'self' (text the model samples at temperature 0.8)."),
        click.option("--calib-batches", type=click.IntRange(min=1), default=16,
                     show_default=True, help="Calibration batches."),
        click.option("--calib-tokens", type=click.IntRange(min=2), default=16384,
                     show_default=True, help="Tokens per calibration batch."),
        click.option("--calib-seq-len", type=click.IntRange(min=2), default=1024,
                     show_default=True, help="Sequence length of calibration rows."),
        click.option("--seed", type=int, default=0, show_default=True,
                     help="Seed of self-generated calibration text."),
        click.option("--fit-bits", default="4,5,6,7,8", show_default=True, callback=_bits,
                     help="Widths --fit may choose from."),
        click.option("--fit-tol", type=click.FloatRange(0.0001, 0.5), default=0.005,
                     show_default=True, help="--fit lands in [budget·(1−tol), budget]."),
        click.option("--sensitivity", type=click.Choice(["hessian", "family", "tensor"]),
                     default="family", show_default=True,
                     help="--fit's loss model: the plain sum of Hessian-weighted errors, or "
                          "weighted by Δloss measured on calibration batches per family/tensor."),
        click.option("--lqer", "lqer_rank", type=click.IntRange(min=0), default=0,
                     show_default=True,
                     help="With --fit: offer a rank-R low-rank error correction (int2 A, int4 B) "
                          "on the --lqer-top worst tensors; kept only where it pays."),
        click.option("--lqer-top", type=click.IntRange(min=1), default=3, show_default=True,
                     help="Tensors offered an LQER correction."),
        click.option("--device", default="auto", show_default=True,
                     help="Device for calibration: auto, cpu, cuda."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def hessian_requested(fit: bool, gptq: bool, **_) -> bool:
    return bool(fit or gptq)


def compress_with_hessians(checkpoint, output, scheme_spec, codec, tokenizer, config_path,
                           code_files, code_mode, budget, allow_over, force, progress,
                           fit=False, gptq=False, calib=None, calib_batches=16,
                           calib_tokens=16384, calib_seq_len=1024, seed=0,
                           fit_bits=(4, 5, 6, 7, 8), fit_tol=0.005, sensitivity="family",
                           lqer_rank=0, lqer_top=3, device="auto", log=None) -> dict:
    """compress --gptq / --fit: validate everything cheap first, then calibrate and pack."""
    from golfpack.shardread import train_shard_paths

    if calib is None:
        raise GolfError("--gptq and --fit need calibration data: --calib DIR|GLOB|self")
    if lqer_rank and not fit:
        raise GolfError("--lqer works with --fit (it is kept only where it pays)")
    if str(calib) != "self":
        train_shard_paths(calib)  # refuses validation shards before anything slow

    import torch

    from golfpack.accounting import code_bytes
    from golfpack.clikit import refuse_same_file
    from golfpack.compress import write_artifact
    from golfpack.fitpack import calibrate_checkpoint, calibration_loss_fn, compress_hessian

    if log is None and progress:
        log = lambda msg: click.echo(msg, err=True)  # noqa: E731
    refuse_same_file(checkpoint, output)
    if os.path.exists(output) and not force:
        raise GolfError(f"{output} exists; pass --force to overwrite it")
    code = code_bytes(code_files, code_mode)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    state, cfg, model, hs, batches = calibrate_checkpoint(
        checkpoint, config_path, calib, calib_batches, calib_tokens, calib_seq_len, seed,
        device, None, progress)
    loss_fn = None
    if fit and sensitivity != "hessian":
        loss_fn = calibration_loss_fn(model, batches[: max(1, min(2, len(batches)))])
    data, report = compress_hessian(
        state, cfg, hs, budget, code, scheme_spec, do_fit=fit, codec=codec,
        tokenizer=tokenizer, bits=fit_bits, lqer_rank=lqer_rank,
        lqer_top=lqer_top if lqer_rank else 0, sensitivity=sensitivity, loss_fn=loss_fn,
        tol=fit_tol, progress=progress, log=log)
    return write_artifact(output, data, report, allow_over, force)


def print_fit(report: dict) -> None:
    """The --fit allocation (predicted vs actual bytes per tensor) or the --gptq summary."""
    if "fit" in report:
        from golfpack.fitpack import summarize_allocation

        click.echo("fit allocation:")
        for line in summarize_allocation(report):
            click.echo("  " + line)
    elif "gptq" in report:
        g = report["gptq"]
        click.echo(f"gptq: {g['tensors']} tensors in {g['seconds']:.1f}s, calibration "
                   f"{g['calibration']}; fallbacks: {g['fallbacks'] or 'none'}")
