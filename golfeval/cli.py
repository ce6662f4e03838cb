"""`golfeval`: build data, score artifacts, audit evaluations, verify claims."""

import click

from golfeval import __version__
from golfpack.clikit import LazyGroup

# name -> "module:command". Loaded lazily: `golfeval logs` must not import torch.
COMMANDS = {
    "score": "golfeval.score_cli:score",
    "bytes": "golfeval.score_cli:bytes_cmd",
    "data": "golfeval.data_cli:data",
    "audit": "golfeval.audit_cli:audit",
    "logs": "golfeval.logs_cli:logs",
    "verify": "golfeval.logs_cli:verify",
    "significance": "golfeval.logs_cli:significance",
    "seeds-needed": "golfeval.logs_cli:seeds_needed",
}


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="golfeval")
def main():
    """Score Parameter Golf models in bits per byte and check the claims made about them."""
