"""`python -m golfeval.score ...` and `torchrun --nproc_per_node=K -m golfeval.score ...`
are `golfeval score ...`."""

import sys

from golfeval.cli import main

if __name__ == "__main__":
    main(args=["score", *sys.argv[1:]], prog_name="golfeval score")
