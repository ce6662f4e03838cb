"""`python -m trainer ...` (and `torchrun ... -m trainer ...`) = `golftrain train ...`."""

import click

from golfpack.cli.kit import LazyGroup


@click.group(cls=LazyGroup, lazy={"train": "trainer.cli.train:train_cmd"})
def _main():
    pass


def main() -> None:
    # Reuse LazyGroup's one-line error handling by dispatching through a one-command group.
    _main(args=["train", *__import__("sys").argv[1:]], prog_name="python -m trainer")


if __name__ == "__main__":
    main()
