"""`golfeval review`: one report a maintainer can paste into a record PR (thin wrapper over
golfeval.records.review)."""

from __future__ import annotations

import os

import click

from golfpack.cli.kit import FINITE_FLOAT, cli_text, emit_json
from golfpack.errors import CheckFailed, GolfError


def _fmt(x, spec: str = "") -> str:
    return "-" if x is None else format(x, spec)


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in rows)


def _code_cell(row: dict) -> str:
    logged = row["code_logged"]
    shown = "/".join(_fmt(logged[k], ",d") for k in ("plain", "compressed") if logged[k]
                     is not None) or "-"
    return shown


def print_review(rv) -> None:
    v = rv.verification
    click.echo(f"{v.name}  [{v.track or 'track unknown'}]  {v.folder}")
    click.echo(f"claim {_fmt(v.claim)} -> {v.classification}" + (f": {v.detail}" if v.detail
                                                                  else ""))
    rows = [["run", "seed", "kind", "val_bpb", "train_s", "eval_s", "post_s", "model_B",
             "code_B(log)", "code_B(recount)", "total_B(recount)", "tokenizer", "val_tokens"]]
    for r in rv.rows:
        rows.append([r["run"] + ("" if r["counted"] else " *"), _fmt(r["seed"], "d"),
                     r["kind"] or "-", _fmt(r["val_bpb"], ".8f"), _fmt(r["train_s"], ".1f"),
                     _fmt(r["eval_s"], ".1f"), _fmt(r["post_clock_s"], ".1f"),
                     _fmt(r["model_bytes"], ",d"), _code_cell(r),
                     _fmt(r["code_recounted"], ",d"), _fmt(r["total_recounted"], ",d"),
                     r["tokenizer"] or "-", _fmt(r["val_tokens"], ",d")])
    click.echo(_table(rows))
    if any(not r["counted"] for r in rv.rows):
        click.echo("  (* not behind the claim)")
    c = rv.code
    if c.files:
        click.echo("code: " + ", ".join(f"{f.path} {f.raw_bytes:,} B ({f.role})" for f in c.files)
                   + (f"; self-extracting ({c.wrapper['codec']}), payload "
                      f"{c.wrapper['payload_bytes']:,} B" if c.wrapper else "")
                   + f"; minified {_fmt(c.minified_bytes, ',d')} B ({c.minified_method or '-'})"
                   + f"; log recipe {_fmt(c.recipe_bytes, ',d')} B")
        for r in rv.rows:
            if r["code_note"] not in ("-", "not recounted"):
                click.echo(f"  {r['run']}: {r['code_note']}")
    if v.n:
        click.echo(f"n = {v.n}  mean {_fmt(v.mean, '.8f')}  std {_fmt(v.std, '.8f')}")
    if rv.significance:
        s = rv.significance
        click.echo(f"significance vs {'OLD runs' if s['old'] else s['sota_bpb']}: delta "
                   f"{s['delta_bpb']:+.6f} bpb (sign: {s['t_convention']})")
        for key in ("welch", "welch_margin", "one_sample", "one_sample_margin"):
            t = s[key]
            if t:
                click.echo(f"  {key.replace('_', ' '):<18} t {_fmt(t['t'], '.3f'):>9}  "
                           f"df {_fmt(t['df'], '.2f')}  p {_fmt(t['p'], '.3g')}")
        for name, vd in s["verdicts"].items():
            word = {True: "significant", False: "NOT significant", None: "cannot tell"}[
                vd["significant"]]
            click.echo(f"  {name} rule ({vd['rule']}): {word}")
    for f in v.flags + rv.flags:
        click.echo(f"  {f['severity']:<7} {f['code']}: {cli_text(f['message'])}")
    click.echo(cli_text(rv.verdict))


@click.command("review")
@click.argument("record_dir", type=click.Path(file_okay=False))
@click.option("--sota", multiple=True, help="state of the art to test against: record folder, "
              "log file or comma-separated val_bpb values (repeat to pool)")
@click.option("--sota-bpb", type=float, default=None, help="fixed SOTA val_bpb")
@click.option("--claim", type=FINITE_FLOAT, default=None,
              help="claimed val_bpb to check (default: submission.json)")
@click.option("--code", "code_files", multiple=True,
              type=click.Path(exists=True, dir_okay=False),
              help="recount these files instead of the folder's train_gpt.py (the first is the "
                   "script; folder-local modules it imports are followed)")
@click.option("--rule", type=click.Choice(["readme", "frontier"]), default="readme",
              show_default=True, help="significance rule behind the verdict")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None,
              help="PNG of the runs against the SOTA (needs --sota or --sota-bpb)")
@click.option("--force", is_flag=True, help="overwrite an existing --plot file")
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
def review(record_dir, sota, sota_bpb, claim, code_files, rule, plot_path, force, as_json):
    """Review a record folder the way maintainers do, in one report.

    verify (the claim, submission.json's or --claim, vs runs, 16,000,000 bytes, 600 s
    training), significance against --sota / --sota-bpb, code bytes recounted from the
    folder (raw, self-extracting payload, minified + compressed) against each log's Code
    size lines and its total, total = model bytes + recounted code, evaluation time per run
    (<= 600 s), calibration after the training clock, tokenizer, val tokens and byte
    sidecars. Ends with a verdict line to paste into the PR.
    A folder holding several record folders prints one verdict line per folder.

    Exit 0 when the record passes, 1 when a check fails (unsupported claim, a limit broken,
    not significant under --rule), 2 on bad input."""
    from golfeval.records.folders import find_record_folders
    from golfeval.records.review import review_record

    if not os.path.isdir(record_dir):
        raise GolfError(f"{record_dir} is not a directory")
    folders = find_record_folders(record_dir)
    if not folders:
        raise GolfError(f"{record_dir}: no submission.json or training logs found")
    single = len(folders) == 1 and os.path.realpath(folders[0]) == os.path.realpath(record_dir)
    if not single:
        if sota or sota_bpb is not None or claim is not None or code_files or plot_path:
            raise GolfError(f"{record_dir} holds {len(folders)} record folders: --sota, "
                            "--sota-bpb, --claim, --code and --plot need a single one")
        _review_tree(folders, as_json)
        return
    if plot_path and not (sota or sota_bpb is not None):
        raise GolfError("--plot needs --sota or --sota-bpb")
    if plot_path and os.path.exists(plot_path) and not force:
        raise GolfError(f"{plot_path} exists; pass --force to overwrite it")
    rv = review_record(record_dir, sota=sota, sota_bpb=sota_bpb, code_files=code_files or None,
                       rule=rule, claim=claim)
    if plot_path and rv.significance:
        from golfeval.cli.logs import _plot
        from golfeval.records.significance import load_sample

        new = load_sample([record_dir], "NEW")
        old = load_sample(list(sota), "OLD") if sota else None
        _plot(rv.significance, new, old, plot_path, force)
    out = rv.to_dict()
    if plot_path and rv.significance:
        out["plot"] = plot_path
    if as_json:
        emit_json(out)
    else:
        print_review(rv)
    if not rv.ok:
        raise CheckFailed(rv.verdict)  # a Note: its params and fallback come along


def _review_tree(folders, as_json: bool) -> None:
    from golfeval.records.review import review_record

    results = [review_record(f) for f in folders]
    failed = [rv.verification.name for rv in results if not rv.ok]
    if as_json:
        emit_json({"records": [rv.to_dict() for rv in results], "failed": failed})
    else:
        for rv in results:
            click.echo(cli_text(rv.verdict))
        click.echo(f"{len(results)} record folder(s): {len(results) - len(failed)} pass, "
                   f"{len(failed)} fail")
    if failed:
        raise CheckFailed("failed: " + ", ".join(failed))
