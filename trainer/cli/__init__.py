"""`golftrain`: train the reference model and write checkpoints, logs and artifacts."""

import click

from golfpack.cli.kit import LazyGroup
from trainer import __version__

COMMANDS = {
    "train": "trainer.cli.train:train_cmd",
    "params": "trainer.cli.params:params_cmd",
}


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="golftrain")
def main():
    """Train the reference model (QAT, Muon, EMA) and write challenge-format logs."""
