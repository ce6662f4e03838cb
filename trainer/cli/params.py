"""`golftrain params`: a config's parameter count, total and per family, without training."""

from __future__ import annotations

import click

from golfpack.cli.kit import emit_json


@click.command("params")
@click.option("--config", "config", default="baseline", show_default=True,
              help="shipped config (baseline, stack, tiny, frontier, tiny_frontier) or a "
                   "TOML/JSON file")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="override a config key (typed like its default); repeatable")
@click.option("--json", "as_json", is_flag=True, help="print the counts as JSON")
def params_cmd(config, overrides, as_json):
    """Print the parameter count of a config's model (what a run logs as model_params:N),
    split into families: embed, head, attn, mlp, control (gains, scales, gates, skip and
    lane weights). Builds the model's shapes only: instant, no memory.

    \b
      golftrain params --config frontier
      golftrain params --config tiny --set vocab_size=1024 --json
    """
    from trainer.config import load_config
    from trainer.params import count_params

    cfg = load_config(config, overrides)
    counts = count_params(cfg)
    if as_json:
        emit_json({"config": config, **counts})
        return
    click.echo(f"model_params:{counts['total']}")
    for fam, n in counts["families"].items():
        click.echo(f"  {fam}: {n:,} ({100.0 * n / counts['total']:.2f}%)")
