"""`golfeval logs | verify | significance | seeds-needed`: thin click
wrappers over golfeval.records (folders, verify, significance). No torch is imported here."""

from __future__ import annotations

import os
import sys

import click

from golfpack.cli.kit import (
    FINITE_FLOAT,
    NON_NEGATIVE_FLOAT,
    POSITIVE_FLOAT,
    PROBABILITY,
    cli_text,
    emit_json,
)
from golfpack.errors import CheckFailed, GolfError
from golfpack.fileio import refuse_existing


def _fmt(x, spec: str = ".8f") -> str:
    return "-" if x is None else format(x, spec)


def _table(rows: list[list[str]], indent: str = "  ") -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(indent + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in rows)


def _run_rows(runs) -> list[list[str]]:
    rows = [["run", "seed", "kind", "label", "val_loss", "val_bpb", "train_s", "steps",
             "total_bytes", "tag"]]
    for r in runs:
        log = r.log
        label = log.label or (log.status if log.status != "ok" else "-")
        rows.append([r.name + (" (replaced)" if r.superseded_by else ""), _fmt(r.seed, "d"),
                     log.kind or ("?" if log.val_bpb is not None else "-"), label,
                     _fmt(log.val_loss, f".{log.loss_decimals or 8}f"),
                     _fmt(log.val_bpb, f".{log.decimals or 8}f"),
                     _fmt(log.train_time_ms / 1000 if log.train_time_ms else None, ".1f"),
                     _fmt(log.steps, "d"), _fmt(log.total_bytes, ",d"), log.compressor or "-"])
    return rows


def _load(path: str, progress: bool):
    from golfeval.records.folders import read_log_file, read_tree

    if os.path.isfile(path):
        return [read_log_file(path)]
    if os.path.isdir(path):
        return read_tree(path, progress=progress)
    raise GolfError(f"{path}: no such file or directory")


@click.command("logs")
@click.argument("path", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="print every parsed run as JSON")
@click.option("--config", "with_config", is_flag=True,
              help="include each run's echoed hyper-parameters in the JSON")
def logs(path, as_json, with_config):
    """Parse training logs: a log FILE, a record folder, or a tree of record folders.

    For every run: seed, the submitted final val_loss/val_bpb with the label it came from,
    eval kind (flat/sliding/ttt/diagnostic/other), train time and steps, total bytes with the
    compressor tag, code bytes, val tokens and tokenizer. Identical files count once; logs
    whose submitted metric cannot be told are reported as ambiguous, never guessed.
    Exit 1 when a file or submission.json could not be read."""
    folders = _load(path, progress=not as_json and sys.stderr.isatty())
    runs = [r for f in folders for r in f.runs]
    summary = {"folders": len(folders), "runs": len(runs),
               "scored": sum(r.log.status == "ok" for r in runs),
               "ambiguous": sum(r.log.status == "ambiguous" for r in runs),
               "no_final_metric": sum(r.log.status == "no_final_metric" for r in runs),
               "duplicates": sum(len(f.duplicates) for f in folders),
               "bytes": sum(f.bytes_read for f in folders),
               "problems": sum(len(f.problems) for f in folders)}
    if as_json:
        emit_json({"folders": [f.to_dict(config=with_config) for f in folders],
                   "summary": summary}, non_finite="null")  # a log may say val_bpb:nan
    else:
        for f in folders:
            claim = f.submission.claim_bpb if f.submission else None
            click.echo(f"== {f.path}" + (f"  (claim {claim})" if claim is not None else ""))
            if f.runs:
                click.echo(_table(_run_rows(f.runs)))
            for r in f.runs:
                for amb in r.log.ambiguity:
                    click.echo(f"  ambiguous {amb['field']} in {r.name}: {amb['reason']}")
                if r.log.status == "no_final_metric":
                    click.echo(f"  {r.name}: {r.log.reason}")
                for note in r.log.notes:
                    click.echo(f"  note {r.name}: {note}")
            for d in f.duplicates:
                click.echo(f"  counted once: {d['file']} = {d['same_as']} ({d['why']})")
            for s in f.skipped:
                click.echo(f"  skipped {s['file']}: {s['reason']}")
            for p in f.problems:
                click.echo(f"  problem: {p}")
        click.echo(f"{summary['folders']} folder(s), {summary['runs']} run(s): "
                   f"{summary['scored']} scored, {summary['ambiguous']} ambiguous, "
                   f"{summary['no_final_metric']} without a final score; "
                   f"{summary['duplicates']} duplicate(s); {summary['bytes'] / 1e6:.1f} MB read")
    if summary["problems"]:
        raise CheckFailed(f"{summary['problems']} problem(s) while reading the logs")


def _print_verification(v) -> None:
    click.echo(f"{v.name}  [{v.track or 'track unknown'}]  {v.folder}")
    src = f" ({cli_text(v.claim_field)})" if v.claim_field else ""
    click.echo(f"claim {_fmt(v.claim, '')}{src} -> {v.classification}"
               + (f": {v.detail}" if v.detail else ""))
    if v.runs:
        click.echo(_table(_run_rows(v.runs)))
    click.echo(f"n = {v.n}  mean {_fmt(v.mean)}  std {_fmt(v.std)}"
               + (f"  mean val_loss {_fmt(v.mean_val_loss)}" if v.mean_val_loss else ""))
    for f in v.flags:
        click.echo(f"  {f['severity']:<7} {f['code']}: {cli_text(f['message'])}")
    click.echo("OK" if v.ok else "FAIL")


@click.command("verify")
@click.argument("record_dir", type=click.Path(file_okay=False))
@click.option("--claim", type=FINITE_FLOAT, default=None,
              help="claimed val_bpb to check (default: submission.json)")
@click.option("--json", "as_json", is_flag=True, help="print the verification as JSON")
def verify(record_dir, claim, as_json):
    """Check that a record folder's logs support its claimed val_bpb.

    Reads submission.json (all known variants), de-duplicates the logs, recomputes the mean
    and sample std of the runs and classifies the claim as mean, best-run, single-run or
    unsupported (nothing within 6e-5). Flags: total bytes > 16,000,000, train time > 600 s,
    n < 3, runs of different configurations, implied val bytes off 151,077,000 by > 0.01%.
    A folder holding several record folders verifies each. Exit 1 when a claim is
    unsupported or a hard limit is broken."""
    from golfeval.records.folders import find_record_folders, read_folder
    from golfeval.records.verify import verify_record

    if not os.path.isdir(record_dir):
        raise GolfError(f"{record_dir} is not a directory")
    folders = find_record_folders(record_dir)
    if not folders:
        raise GolfError(f"{record_dir}: no submission.json or training logs found")
    if claim is not None and len(folders) > 1:
        raise GolfError("--claim needs a single record folder")
    results = [verify_record(read_folder(f), claim=claim) for f in folders]
    single = len(results) == 1 and os.path.realpath(folders[0]) == os.path.realpath(record_dir)
    if as_json:
        emit_json(results[0].to_dict() if single else
                  {"records": [v.to_dict() for v in results],
                   "failed": [v.name for v in results if not v.ok]}, non_finite="null")
    else:
        for i, v in enumerate(results):
            if i:
                click.echo("")
            _print_verification(v)
    failed = [v.name for v in results if not v.ok]
    if failed:
        raise CheckFailed("not supported or over a limit: " + ", ".join(failed))


def _parse_or_fail(specs, name):
    from golfeval.records.significance import load_sample

    return load_sample(specs, name)


@click.command("significance")
@click.argument("new", nargs=-1, required=True)
@click.option("--sota", "old", multiple=True,
              help="state of the art: record folder, log file or comma-separated val_bpb "
                   "values (repeat to pool)")
@click.option("--sota-bpb", type=FINITE_FLOAT, default=None,
              help="fixed SOTA val_bpb (one-sample test)")
@click.option("--margin-nats", type=NON_NEGATIVE_FLOAT, default=0.005, show_default=True,
              help="README margin in nats per token")
@click.option("--alpha", type=PROBABILITY, default=0.01, show_default=True,
              help="p threshold of the README rule")
@click.option("--frontier-alpha", type=PROBABILITY, default=0.25, show_default=True,
              help="p threshold of the frontier rule (no margin)")
@click.option("--bpb-per-nat", type=POSITIVE_FLOAT, default=None,
              help="bpb per nat for the margin when NEW has no val_loss (challenge val split: "
                   "0.592 sp1024, 0.434 sp4096, 0.388 sp8192)")
@click.option("--rule", type=click.Choice(["readme", "frontier"]), default="readme",
              show_default=True, help="which verdict sets the exit code")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None,
              help="write a PNG of both runs' per-seed values, means and the verdict")
@click.option("--force", is_flag=True, help="overwrite an existing --plot file")
@click.option("--json", "as_json", is_flag=True, help="print every test as JSON")
def significance(new, old, sota_bpb, margin_nats, alpha, frontier_alpha, bpb_per_nat, rule,
                 plot_path, force, as_json):
    """Is NEW significantly better (lower val_bpb) than the state of the art?

    NEW and --sota are record folders, log files or comma-separated val_bpb values; several
    pool their runs. Reports one-sided Welch tests (H1: mean(new) < mean(old) - margin,
    Welch-Satterthwaite df) without and with the margin (nats -> bpb through the new runs'
    bpb/loss), a one-sample test against --sota-bpb, and verdicts under the README rule
    (>= 0.005 nats at p < 0.01) and the frontier rule (p < 0.25, no margin).
    Exit 1 when not significant under --rule."""
    from golfeval.records.significance import compare

    if not old and sota_bpb is None:
        raise GolfError("give the state of the art: --sota OLD or --sota-bpb X")
    if plot_path:
        refuse_existing(plot_path, force)
    new_s = _parse_or_fail(new, "NEW")
    old_s = _parse_or_fail(old, "OLD") if old else None
    res = compare(new_s, old_s, sota_bpb, margin_nats=margin_nats, alpha=alpha,
                  frontier_alpha=frontier_alpha, bpb_per_nat=bpb_per_nat)
    verdict = res["verdicts"][rule]
    res["rule"], res["significant"] = rule, verdict["significant"]
    if plot_path:
        _plot(res, new_s, old_s, plot_path, force)
        res["plot"] = plot_path
    if as_json:
        emit_json(res)
    else:
        _print_significance(res)
    if verdict["significant"] is None:
        raise GolfError(f"the {rule} verdict needs a test that could not run "
                        "(see warnings)")
    if not verdict["significant"]:
        raise CheckFailed(f"not significant under the {rule} rule (p = {verdict['p']:.3g})")


def _print_significance(res: dict) -> None:
    for side in ("new", "old"):
        s = res[side]
        if s:
            click.echo(f"{side.upper():<4} n={s['n']}  mean {_fmt(s['mean'])}  std "
                       f"{_fmt(s['std'])}  ({', '.join(s['runs'][:6])}"
                       f"{' ...' if len(s['runs']) > 6 else ''})")
    if res["sota_bpb"] is not None:
        click.echo(f"SOTA value {res['sota_bpb']}")
    click.echo(f"delta {res['delta_bpb']:+.8f} bpb  ({_fmt(res['delta_nats'], '+.6f')} nats);  "
               f"margin {res['margin_nats']} nats = {_fmt(res['margin_bpb'], '.6f')} bpb")
    rows = [["test", "t", "df", "p"]]
    for key in ("welch", "welch_margin", "one_sample", "one_sample_margin"):
        t = res[key]
        if t and not (key.endswith("margin") and not res["margin_bpb"]):
            rows.append([key.replace("_", " "), _fmt(t["t"], ".4f"), _fmt(t["df"], ".2f"),
                         _fmt(t["p"], ".3g")])
    click.echo(_table(rows, indent=""))
    click.echo(f"sign: {res['t_convention']}")
    for name, v in res["verdicts"].items():
        word = {True: "significant", False: "NOT significant", None: "cannot tell"}[
            v["significant"]]
        click.echo(f"{name} rule ({v['rule']}): {word}")
    for w in res["warnings"]:
        click.echo(f"warning: {cli_text(w)}")


def _plot(res: dict, new_s, old_s, path: str, force: bool) -> None:
    from golfeval.plots import strip_chart

    series = [("NEW", new_s.bpb)] + ([("OLD", old_s.bpb)] if old_s else [])
    refs = []
    if res["sota_bpb"] is not None:
        refs.append((f"SOTA value {res['sota_bpb']}", res["sota_bpb"]))
    base = res["old"]["mean"] if res["old"] else res["sota_bpb"]
    if res["margin_bpb"]:
        refs.append((f"{'OLD mean' if res['old'] else 'SOTA'} - {res['margin_nats']} nats "
                     f"({res['margin_bpb']:.5f} bpb)", base - res["margin_bpb"]))
    words = {True: "significant", False: "NOT significant", None: "n/a"}
    verdicts = " | ".join(f"{k} rule: {words[v['significant']]}"
                          + (f" (p={v['p']:.2g})" if v["p"] is not None else "")
                          for k, v in res["verdicts"].items())
    strip_chart(path, series, title=f"delta {res['delta_bpb']:+.5f} bpb\n{verdicts}",
                ylabel="val_bpb (bits per byte, lower is better)",
                xlabel="runs (one point per seed)", references=refs, force=force)


@click.command("seeds-needed")
@click.option("--delta", type=FINITE_FLOAT, required=True,
              help="expected improvement of the mean, in bpb")
@click.option("--std", type=POSITIVE_FLOAT, required=True,
              help="per-run standard deviation, in bpb")
@click.option("--alpha", type=PROBABILITY, default=0.01, show_default=True)
@click.option("--power", type=PROBABILITY, default=0.8, show_default=True)
@click.option("--margin-bpb", type=NON_NEGATIVE_FLOAT, default=0.0, show_default=True,
              help="margin the test subtracts (e.g. 0.00296 = 0.005 nats on sp1024)")
@click.option("--design", type=click.Choice(["welch", "one-sample"]), default="welch",
              show_default=True, help="Welch two-sample vs SOTA runs, or one-sample vs a value")
@click.option("--old-n", type=click.IntRange(min=2), default=None,
              help="SOTA runs in the Welch design (default: as many as the new side)")
@click.option("--json", "as_json", is_flag=True)
def seeds_needed(delta, std, alpha, power, margin_bpb, design, old_n, as_json):
    """How many runs a submission needs for its one-sided t-test to reach --power.

    Noncentral t power: Welch design (new runs vs --old-n SOTA runs, Welch-Satterthwaite df)
    or one-sample design (df = n - 1), effect = delta - margin, same std on every run."""
    from golfeval.records.significance import seeds_needed as compute

    effect = delta - margin_bpb
    if effect <= 0:
        raise GolfError("--delta must be > 0 and larger than --margin-bpb")
    res = compute(effect, std, alpha=alpha, power=power, design=design, old_n=old_n)
    res["margin_bpb"] = margin_bpb
    if as_json:
        emit_json(res)
        return
    rows = [["n", "df", "power"]] + [[str(r["n"]), f"{r['df']:.2f}", f"{r['power']:.3f}"]
                                     for r in res["table"]]
    click.echo(_table(rows, indent=""))
    who = ("one-sample vs a fixed value" if design == "one-sample" else
           f"Welch vs {old_n} SOTA runs" if old_n else "Welch, as many SOTA runs as new ones")
    if res["n"] is None:
        click.echo(res["note"])
    else:
        click.echo(f"{res['n']} runs reach power {res['power']:.3f} (target {power}) for an "
                   f"effect of {effect:.6g} bpb, std {std:g}, alpha {alpha}, {who}")
