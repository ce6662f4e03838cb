"""The Hessian options of `golfpack compress` (--gptq, --fit, --calib ...): the compress
command applies `hessian_options` and hands over to
golfpack.hessian.pipeline.compress_with_hessians when --gptq or --fit is given."""

from __future__ import annotations

import click


def _bits(ctx, param, value):
    try:
        bits = tuple(sorted({int(b) for b in value.split(",") if b.strip()}))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of widths") from None
    if not bits or bits[0] < 2 or bits[-1] > 8:
        raise click.BadParameter("widths must lie in 2..8")
    return bits


def _lookup_mix(ctx, param, value):
    """Refused at parse time, by the library's own rule (pipeline.parse_lookup_mix; the
    default needs no import of it, and so not of torch)."""
    if value == "auto":
        return value
    from golfpack.errors import GolfError
    from golfpack.hessian.pipeline import parse_lookup_mix

    try:
        lam = parse_lookup_mix(value)
    except GolfError:
        raise click.BadParameter(f"{value!r}: use auto or a number >= 0") from None
    return lam


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
        click.option("--lookup-mix", default="auto", show_default=True, callback=_lookup_mix,
                     metavar="auto|0|FLOAT",
                     help="Tied embedding: GPTQ weighs its head H plus this multiple of its "
                          "lookup-role curvature (0: head H only; auto: chosen by calibration "
                          "loss)."),
        click.option("--device", default="auto", show_default=True,
                     help="Device for calibration: auto, cpu, cuda."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def hessian_requested(fit: bool, gptq: bool, **_) -> bool:
    return bool(fit or gptq)


def print_fit(report: dict) -> None:
    """The --fit allocation (predicted vs actual bytes per tensor) or the --gptq summary."""
    if "fit" in report:
        from golfpack.hessian.pipeline import summarize_allocation

        click.echo("fit allocation:")
        for line in summarize_allocation(report):
            click.echo("  " + line)
    elif "gptq" in report:
        g = report["gptq"]
        click.echo(f"gptq: {g['tensors']} tensors in {g['seconds']:.1f}s, calibration "
                   f"{g['calibration']}; fallbacks: {g['fallbacks'] or 'none'}")
