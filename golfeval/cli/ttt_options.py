"""The --ttt-* options shared by `golfeval score` and `golfeval audit`, and the one check
that they are only given with a test-time-training mode."""

from __future__ import annotations

import click

from golfpack.cli.kit import POSITIVE_FLOAT, POSITIVE_INT
from golfpack.errors import GolfError

TTT_FLAGS = ("ttt_rank", "ttt_chunk", "ttt_lr", "ttt_epochs", "ttt_targets")


def ttt_options(f):
    """The --ttt* options shared by `golfeval score` and `golfeval audit`."""
    opts = [
        click.option("--ttt-rank", type=POSITIVE_INT, default=None,
                     help="LoRA rank [8]"),
        click.option("--ttt-chunk", type=POSITIVE_INT, default=None,
                     help="targets per chunk: LoRA [256], SGD [32768]"),
        click.option("--ttt-lr", type=POSITIVE_FLOAT, default=None,
                     help="learning rate: LoRA Adam [0.01], SGD first-chunk [0.002]"),
        click.option("--ttt-epochs", type=POSITIVE_INT, default=None,
                     help="SGD passes over each chunk [3]"),
        click.option("--ttt-targets", default=None,
                     help="LoRA sites, comma-separated from q,k,v,o,up,down,head [q,v,head]"),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def refuse_stray_ttt_flags(values: dict, needs: str) -> None:
    """--ttt-* given without a TTT mode is a usage error, not a silent no-op."""
    given = [k for k in TTT_FLAGS if values.get(k) is not None]
    if given:
        names = ", ".join("--" + k.replace("_", "-") for k in given)
        raise GolfError(f"{names} need {needs}")
