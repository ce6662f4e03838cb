"""`golfeval`: build data, score artifacts, audit evaluations, verify claims."""

import click

from golfeval import __version__
from golfpack.cli.kit import LazyGroup

# name -> "module:command". Loaded lazily: `golfeval logs` must not import torch.
COMMANDS = {
    "score": "golfeval.cli.score:score",
    "bytes": "golfeval.cli.score:bytes_cmd",
    "data": "golfeval.cli.data:data",
    "audit": "golfeval.cli.audit:audit",
    "logs": "golfeval.cli.logs:logs",
    "verify": "golfeval.cli.logs:verify",
    "significance": "golfeval.cli.logs:significance",
    "seeds-needed": "golfeval.cli.logs:seeds_needed",
    "review": "golfeval.cli.review:review",
}


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="golfeval")
def main():
    """Score Parameter Golf models in bits per byte and check the claims made about them."""
