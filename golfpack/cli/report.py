"""Shared options and printing of the byte-accounting commands (torch-free, so `inspect`
runs where torch is not installed)."""

from __future__ import annotations

import click

from golfpack.accounting import CODE_MODES, DEFAULT_BUDGET
from golfpack.format.layout import MAX_PARAMS


def progress_bar(enabled: bool, total: int | None = None, desc: str = ""):
    """A tqdm bar as a progress(name) callback (None when disabled)."""
    if not enabled:
        return None, None
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit="step", leave=False, disable=None)  # off without a TTY

    def step(name: str) -> None:
        bar.set_postfix_str(name[-40:], refresh=False)
        bar.update(1)

    return step, bar


def code_options(f):
    f = click.option("--no-decoder", is_flag=True,
                     help="Do not add the golf decoder's bytes: a --code file already holds it "
                          "(checked: exit 2 when none does, e.g. a `golfpack bundle` output).")(f)
    f = click.option("--code-mode", type=click.Choice(CODE_MODES), default="raw",
                     show_default=True,
                     help="raw: UTF-8 bytes of each --code file; minified: size of a "
                          "self-extracting wrapper (minified, lzma or brotli, a latin-1 "
                          "literal). The decoder is counted in the same mode.")(f)
    f = click.option("--code", "code_files", multiple=True, type=click.Path(dir_okay=False),
                     help="Code file counted against the budget (repeatable).")(f)
    f = click.option("--budget", type=click.IntRange(min=0), default=DEFAULT_BUDGET,
                     show_default=True, help="Byte cap for code + artifact (decimal).")(f)
    return f


def max_params_option(f):
    return click.option("--max-params", type=click.IntRange(min=1), default=MAX_PARAMS,
                        show_default=True,
                        help="Refuse artifacts declaring more parameters (the bound is also "
                             "at most 256 per file byte, and 8 content bytes per parameter).")(f)


def print_report(r: dict, top: int = 12) -> None:
    click.echo(f"model  {r['model_bytes']:>12,} bytes  ({r['bits_per_param']:.3f} bits/param over "
               f"{r['params']:,} params; header {r['header_bytes']:,})")
    code = r.get("code", {})
    click.echo(f"code   {r['code_bytes']:>12,} bytes  ({code.get('mode', 'raw')})")
    for f in code.get("files", []):
        click.echo(f"  {f['path']:<48} {f['raw_bytes']:>11,} -> {f['bytes']:>11,}  "
                   f"{f['method']}")
    click.echo(f"total  {r['total_bytes']:>12,} bytes  budget {r['budget']:,}  "
               f"headroom {r['headroom']:,}")
    click.echo("streams:")
    for s in r["streams"]:
        how = s["codec"] + ("" if s["transform"] == "none" else f"+{s['transform']}")
        click.echo(f"  {s['name']:<48} {how:<15} {s['raw_bytes']:>11,} -> {s['bytes']:>11,}")
    net = r.get("codec_savings") or {}
    if net:
        click.echo("codecs net of their decoder code (bytes saved over the next best - code):")
        for c, v in net.items():
            saving = "(no alternative)" if v["saving"] is None else f"{v['saving']:,}"
            net_b = "" if v["net"] is None else f"{v['net']:,}"
            click.echo(f"  {c:<10} saves {saving:>16}  decoder {v['decoder_bytes']:>6,}  "
                       f"net {net_b:>10}{'' if v['kept'] else '  (dropped)'}")
    big = sorted(r["tensors"], key=lambda t: -t["bytes"])[:top]
    click.echo(f"largest tensors (of {len(r['tensors'])}):")
    for t in big:
        mse = "" if t.get("rel_mse") is None else f"  rel_mse {t['rel_mse']:.2e}"
        click.echo(f"  {t['name']:<36} {t['scheme']:<18} {t['params']:>10,} params "
                   f"{t['bytes']:>10,} B {t['bits_per_param']:6.3f} b/p{mse}")
