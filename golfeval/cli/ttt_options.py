"""The --ttt-* options shared by `golfeval score` and `golfeval audit`, and the one check
that they are only given with a test-time-training mode. Defaults live in the settings
dataclasses (golfeval.ttt.lora / sgd / phased); [brackets] in the help show them."""

from __future__ import annotations

import click

from golfpack.cli.kit import NON_NEGATIVE_FLOAT, POSITIVE_FLOAT, POSITIVE_INT
from golfpack.errors import GolfError

_OPTIONS = [
    ("--ttt-rank", dict(type=POSITIVE_INT, help="LoRA rank [8]")),
    ("--ttt-chunk", dict(type=POSITIVE_INT,
                         help="targets per chunk: LoRA/phased [256], SGD [32768]")),
    ("--ttt-lr", dict(type=POSITIVE_FLOAT,
                      help="learning rate: LoRA Adam [0.01], SGD first-chunk [0.002]")),
    ("--ttt-epochs", dict(type=POSITIVE_INT, help="SGD passes over each chunk [3]")),
    ("--ttt-targets", dict(help="LoRA sites, comma-separated from q,k,v,o,up,down,mlp,head "
                                "(mlp: one adapter beside the whole MLP) [q,v,head]")),
    ("--ttt-alpha", dict(type=POSITIVE_FLOAT, help="LoRA output scale alpha/rank [alpha = rank]")),
    ("--ttt-optimizer", dict(type=click.Choice(["adam", "adamw"]),
                             help="LoRA optimizer; adamw decouples the weight decay [adam]")),
    ("--ttt-beta1", dict(type=NON_NEGATIVE_FLOAT, help="LoRA Adam beta1 [0.9]")),
    ("--ttt-beta2", dict(type=NON_NEGATIVE_FLOAT, help="LoRA Adam beta2 [0.95]")),
    ("--ttt-eps", dict(type=POSITIVE_FLOAT, help="LoRA Adam epsilon [1e-8]")),
    ("--ttt-weight-decay", dict(type=NON_NEGATIVE_FLOAT, help="LoRA weight decay [0]")),
    ("--ttt-grad-steps", dict(type=POSITIVE_INT, help="LoRA optimizer steps per scored chunk [1]")),
    ("--ttt-warm-a/--ttt-fresh-a", dict(default=None, help="keep A from the row's previous "
                                        "document (only B reset; stream-order batches) "
                                        "[fresh]")),
    ("--ttt-docs-per-batch", dict(type=POSITIVE_INT,
                                  help="LoRA documents per forward [4 on CPU, 32 on CUDA]; "
                                       "changes results only with --ttt-warm-a")),
    ("--ttt-doc-order", dict(type=click.Choice(["length", "stream"]),
                             help="LoRA batches by document length or in stream order "
                                  "[length; stream with --ttt-warm-a]")),
    ("--ttt-freeze-blocks", dict(type=click.IntRange(min=0),
                                 help="SGD/phased: blocks 0..N-1 never train [0]")),
    ("--ttt-phases", dict(help="phased: global SGD after these documents, counts "
                               "(833,1666,2500) or fractions (0.02,0.04) [833,1666,2500]")),
    ("--ttt-phase-lr", dict(help="phased SGD lr, one or one per phase [0.001]")),
    ("--ttt-phase-momentum", dict(help="phased SGD momentum, one or one per phase [0.9]")),
    ("--ttt-phase-epochs", dict(help="phased SGD passes over the scored documents [1]")),
    ("--ttt-phase-clip", dict(help="phased SGD grad-norm clip, 0 = off [1.0]")),
    ("--ttt-phase-freeze", dict(help="phased SGD frozen blocks, one or one per phase [0]")),
    ("--ttt-phase-batch", dict(type=POSITIVE_INT, help="phased SGD sequences per step [32]")),
]
TTT_FLAGS = tuple(o[0].split("/")[0][2:].replace("-", "_") for o in _OPTIONS)


def ttt_options(f):
    """The --ttt* options shared by `golfeval score` and `golfeval audit`."""
    for decl, kw in reversed(_OPTIONS):
        name = decl.split("/")[0][2:].replace("-", "_")
        f = click.option(decl, name, **{"default": None, **kw})(f)
    return f


def pop_ttt_options(values: dict) -> dict:
    """Take the --ttt-* values out of a command's keyword arguments: {name: value} with
    the `ttt_` prefix dropped (make_settings' option names)."""
    return {k[4:]: values.pop(k) for k in TTT_FLAGS if k in values}


def refuse_stray_ttt_flags(values: dict, needs: str) -> None:
    """--ttt-* given without a TTT mode is a usage error, not a silent no-op. `values` is
    keyed by flag name with or without the ttt_ prefix."""
    given = [k for k in values if values[k] is not None
             and (k in TTT_FLAGS or "ttt_" + k in TTT_FLAGS)]
    if given:
        names = ", ".join("--" + ("ttt_" + k if not k.startswith("ttt_") else k)
                          .replace("_", "-") for k in given)
        raise GolfError(f"{names} need {needs}")
