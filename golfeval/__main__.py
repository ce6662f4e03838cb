"""`python -m golfeval ...` = `golfeval ...`. For K ranks:
`torchrun --nproc_per_node=K -m golfeval score ...`."""

from golfeval.cli import main

if __name__ == "__main__":
    main(prog_name="golfeval")
