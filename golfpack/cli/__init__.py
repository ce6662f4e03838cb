"""`golfpack`: compress checkpoints into artifacts, inspect and unpack them."""

import click

from golfpack import __version__
from golfpack.cli.kit import LazyGroup

# name -> "module:command"; each command is a thin wrapper over library functions.
COMMANDS = {
    **{c: f"golfpack.cli.pack:{c}_cmd" for c in ("compress", "unpack", "bench")},
    **{c: f"golfpack.cli.read:{c}_cmd" for c in ("inspect", "decoder", "bundle")},
}


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="golfpack")
def main():
    """Shrink a Parameter Golf checkpoint into an exactly accounted artifact.

    Quantizes weights per row (int2..int8), packs and entropy-codes the codes, and counts
    code + model bytes against the 16,000,000-byte cap.
    """
